"""The agent's JSON flattener (awk inside nxc/agent/nxc-agent), run by busybox awk.

The agent cannot rely on jq or python on a node, so it flattens the deployment with
awk. These tests feed it tricky documents (escapes, unicode, surrogates, nesting,
pretty-printed and minified, dots in keys, commas inside strings…) and compare its
output with a Python reference of the documented format:

    PATH<TAB>KIND<TAB>VALUE    (containers after their members)
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

AGENT = Path(__file__).resolve().parents[2] / "nxc" / "agent" / "nxc-agent"


def _busybox() -> str:
    path = shutil.which("busybox")
    if path is None:
        pytest.fail("busybox is not installed (apt-get install busybox-static)")
    return path


# awks the agent must work with: busybox's (the test images) and any other installed
AWKS = ["busybox awk"] + [name for name in ("mawk", "gawk") if shutil.which(name)]


def flatten(document: str | bytes, awk: str = "busybox awk") -> subprocess.CompletedProcess[bytes]:
    data = document.encode() if isinstance(document, str) else document
    return subprocess.run(
        [_busybox(), "sh", str(AGENT), "json"],
        input=data,
        capture_output=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NXC_AWK": awk},
        timeout=120,
        check=False,
    )


# --- the reference ------------------------------------------------------------------


class _Num(str):
    """A JSON number, kept as its source text."""


class _Obj(list[tuple[str, Any]]):
    """A JSON object, as its (key, value) pairs in document order (duplicates kept)."""


def _parse(text: str) -> Any:
    return json.loads(text, parse_int=_Num, parse_float=_Num, object_pairs_hook=_Obj)


def _escape(text: str, key: bool = False) -> str:
    out = []
    for ch in text:
        code = ord(ch)
        if 0xD800 <= code <= 0xDFFF:  # a lone surrogate: not encodable, U+FFFD
            out.append("\ufffd")
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif key and ch == ".":
            out.append("\\.")
        elif code < 32:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def reference(text: str) -> bytes:
    lines: list[str] = []

    def join(path: str, key: str) -> str:
        return key if path == "" else f"{path}.{key}"

    def walk(path: str, value: Any) -> None:
        if isinstance(value, _Obj):
            for key, member in value:
                walk(join(path, _escape(key, key=True)), member)
            lines.append(f"{path}\to\t{len(value)}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(join(path, str(index)), item)
            lines.append(f"{path}\ta\t{len(value)}")
        elif isinstance(value, _Num):
            lines.append(f"{path}\tn\t{value}")
        elif value is True or value is False:
            lines.append(f"{path}\tb\t{'true' if value else 'false'}")
        elif value is None:
            lines.append(f"{path}\tz\t")
        else:
            lines.append(f"{path}\ts\t{_escape(value)}")

    walk("", _parse(text))
    return "".join(line + "\n" for line in lines).encode("utf-8")


# --- fixed documents -------------------------------------------------------------------

TRICKY = [
    "{}",
    "[]",
    '""',
    "0",
    "-0.5e-7",
    "true",
    "null",
    '{"a": 1}',
    ' \n\t {"a" :\r\n [ 1 , 2 ] }  \n',
    '{"nested": [[[]], [{}], {"": 0}, [[[[["deep"]]]]]]}',
    '{"k,e,y": "v,a,l,u,e", ",": [",", ",,", "a,b"], "x": ","}',
    '{"a.b": {"c.d": "e.f"}, "dots...": 1}',
    r'{"esc": "q\" b\\ s\/ b\b f\f n\n r\r t\t"}',
    r'{"uni": "\u00e9\u20ac\ud83d\ude00 \u0041\u0000\u001f\u007f"}',
    r'{"surrogates": ["\ud83d", "\ude00", "\ud83dx", "\ud83d\ud83d\ude00"]}',
    '{"raw": "déjà vu — 日本語 😀"}',
    r'{"backslash at end\\": "\\", "quote\"key": "\"\""}',
    '{"dup": 1, "dup": 2}',
    '{"numbers": [0, -0, 1.5, -2.25e+10, 3E-2, 123456789012345678901234567890]}',
    '{"literals": [true, false, null, [true], {"t": false}]}',
    '[{"a": [{"b": [{"c": "d"}]}]}]',
    '{"long": "' + "x" * 200000 + '"}',
    '{"esc-dense": "' + "\\n" * 2000 + '"}',
]


@pytest.mark.parametrize("awk", AWKS)
@pytest.mark.parametrize("document", TRICKY, ids=lambda d: d[:30])
def test_tricky_documents_match_the_reference(document: str, awk: str) -> None:
    result = flatten(document, awk)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == reference(document)


def test_output_format_is_as_documented() -> None:
    document = '{"id": "d1", "n": [1, {"x.y": "a\\tb"}], "ok": true, "none": null}'
    assert flatten(document).stdout.decode().splitlines() == [
        "id\ts\td1",
        "n.0\tn\t1",
        "n.1.x\\.y\ts\ta\\tb",
        "n.1\to\t1",
        "n\ta\t2",
        "ok\tb\ttrue",
        "none\tz\t",
        "\to\t4",
    ]


def test_unicode_escapes_become_utf8() -> None:
    out = flatten(r'["\u00e9", "\u20ac", "\ud83d\ude00", "\ud83d"]').stdout
    assert out == "0\ts\té\n1\ts\t€\n2\ts\t😀\n3\ts\t\ufffd\n\ta\t4\n".encode()


# --- random documents ---------------------------------------------------------------------

ALPHABET = 'ab.,:{}[]" \\/\t\n\r\x00\x01\x1f\x7féü€😀日'
LONE_SURROGATE = "\ud83d"  # only representable as a \u escape (ensure_ascii)


def _random_string(rng: random.Random, alphabet: str) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))


def _random_value(rng: random.Random, depth: int, alphabet: str) -> Any:
    kind = rng.randint(0, 7 if depth < 4 else 4)
    if kind == 0:
        return rng.choice([True, False, None])
    if kind == 1:
        return rng.randint(-(10**12), 10**12)
    if kind == 2:
        return rng.uniform(-1e6, 1e6)
    if kind in (3, 4):
        return _random_string(rng, alphabet)
    if kind in (5, 6):
        return {
            _random_string(rng, alphabet): _random_value(rng, depth + 1, alphabet)
            for _ in range(rng.randint(0, 4))
        }
    return [_random_value(rng, depth + 1, alphabet) for _ in range(rng.randint(0, 4))]


@pytest.mark.parametrize("awk", AWKS)
def test_random_documents_in_every_layout(awk: str) -> None:
    rng = random.Random(20240501)
    for round_ in range(60):
        ascii_only = rng.choice([True, False])
        value = _random_value(rng, 0, ALPHABET + LONE_SURROGATE if ascii_only else ALPHABET)
        text = json.dumps(
            value,
            ensure_ascii=ascii_only,
            indent=rng.choice([None, 0, 2, "\t"]),
            separators=rng.choice([(",", ":"), (", ", ": "), (" ,\n ", " :\r\n")]),
        )
        result = flatten(text, awk)
        assert result.returncode == 0, (round_, text, result.stderr.decode())
        assert result.stdout == reference(text), (round_, text)


# --- malformed documents ------------------------------------------------------------------

MALFORMED = {
    "": "no JSON value",
    "   \n": "no JSON value",
    "[1,]": "unexpected ]",
    '{"a":1,}': "unexpected }",
    '{"a" 1}': "expected :",
    "{1: 2}": "expected a string as object key",
    "[1 2]": "expected , or the end of the array",
    '{"a": [}': "unexpected }",
    "]": "unexpected ]",
    '{"a": 1} {"b": 2}': "after the end of the document",
    '{"a": 1': "unexpected end of input inside an object",
    "[[[": "unexpected end of input inside an array",
    '"abc': "unterminated string",
    '{"a":\n"b': "line 2: unterminated string",
    '"a\\x"': "invalid escape",
    '"\\u12G4"': "invalid \\u escape",
    '"tab\there"': "control character",
    "01": "invalid literal 01",
    "tru": "invalid literal tru",
    "1.": "invalid literal 1.",
    "+1": "invalid literal +1",
    "[1,\n2,\n@]": "line 3: unexpected character @",
}


@pytest.mark.parametrize(("document", "message"), MALFORMED.items(), ids=list(MALFORMED))
def test_malformed_documents_fail_with_a_message(document: str, message: str) -> None:
    result = flatten(document)
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert stderr.startswith("json: "), stderr
    assert message in stderr, stderr


# --- size -------------------------------------------------------------------------------------


def _big_deployment(nodes: int) -> dict[str, Any]:
    return {
        "nxc_deployment": 1,
        "id": "big-one",
        "nodes": [
            {
                "name": f"node{i}",
                "role": "node",
                "index": i,
                "ipv4": f"198.18.{i // 256}.{i % 256}",
                "ipv6": f"fd00::{i:x}",
                "mac": f"52:54:00:00:{i // 256:02x}:{i % 256:02x}",
                "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + "k" * 40,
            }
            for i in range(1, nodes + 1)
        ],
    }


@pytest.mark.parametrize("indent", [None, 2], ids=["minified", "pretty"])
def test_large_deployment_is_fast(indent: int | None) -> None:
    text = json.dumps(_big_deployment(2000), indent=indent)
    started = time.monotonic()
    result = flatten(text)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == reference(text)
    assert elapsed < 10, f"flattening {len(text)} bytes took {elapsed:.1f}s"
