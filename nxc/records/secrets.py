"""Find key material and credentials in files before they are published.

A run record never holds a secret by construction (keys live in ``current/keys``,
reach nodes through fw_cfg or files, and the deployment carries public halves only);
this scan is the check that it stays so. ``nxc publish`` refuses an archive in which
it finds anything, ``nxc verify`` reports it. It looks for:

- PEM/OpenSSH private key blocks (``-----BEGIN … PRIVATE KEY-----`` + body), PuTTY
  key files;
- the same keys base64-encoded once more (as on a kernel command line:
  ``b64:LS0tLS1CRUdJTi…``) and the OpenSSH key body alone (``b3BlbnNzaC1rZXktdjE``);
- credentials written as values: ``"password": "…"``, ``token = …``, HTTP
  ``Authorization`` headers, ``user:password@`` in URLs, and the token formats of
  common services (GitHub, GitLab, AWS access keys).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from nxc.flakesource import KEY_BLOCK

__all__ = ["Finding", "scan_file", "scan_stream", "scan_tree"]

_CHUNK = 1 << 20
_OVERLAP = 4096


def _b64_prefixes(texts: Iterable[bytes]) -> list[bytes]:
    """The base64 text that starts the encoding of each of ``texts`` (at offset 0)."""
    prefixes = []
    for text in texts:
        encoded = base64.b64encode(text)
        # Only the characters that do not depend on what follows the text.
        prefixes.append(encoded[: (len(text) // 3) * 4])
    return prefixes


_ARMOURED = [
    f"-----BEGIN {kind}PRIVATE KEY-----".encode()
    for kind in ("OPENSSH ", "RSA ", "EC ", "DSA ", "ENCRYPTED ", "")
]
_CREDENTIAL_NAMES = rb"(?:password|passwd|passphrase|secret|token|api[_-]?key|private[_-]?key)"

PATTERNS: list[tuple[str, re.Pattern[bytes]]] = [
    ("a private key block", KEY_BLOCK),
    ("a PuTTY private key", re.compile(rb"PuTTY-User-Key-File-\d+: ")),
    (
        "a base64-encoded private key file",
        re.compile(b"|".join(re.escape(p) for p in _b64_prefixes(_ARMOURED))),
    ),
    ("an OpenSSH private key body", re.compile(rb"b3BlbnNzaC1rZXktdjEA[A-Za-z0-9+/]{8}")),
    (
        # "password": "s3cret", token = 'abc…' (a literal, not code naming a variable)
        "a credential value",
        re.compile(
            _CREDENTIAL_NAMES + rb"[\w-]{0,32}[\"']?[ \t]*[:=][ \t]*[\"']"
            rb"(?!\*{3}|<|\$\{)[^\s\"']{6,}[\"']",
            re.IGNORECASE,
        ),
    ),
    (
        # NXC_G5K_PASSWORD=s3cret (environment, shell)
        "a credential in an environment assignment",
        re.compile(rb"(?:PASSWORD|PASSWD|TOKEN|SECRET|API_KEY)=(?!\$|\*{3})[^\s\"']{6,}"),
    ),
    (
        # password: s3cret (YAML)
        "a credential in a YAML value",
        re.compile(
            rb"(?im)^[ \t-]*" + _CREDENTIAL_NAMES + rb"[ \t]*:[ \t]+(?!\*{3}|<|\$\{|null\b)"
            rb"[^\s\"'#]{6,}[ \t]*$"
        ),
    ),
    (
        "an HTTP Authorization header",
        re.compile(rb"Authorization:\s*(?:Basic|Bearer|token)\s+[A-Za-z0-9+/=._~-]{8,}", re.I),
    ),
    (
        "a password in a URL",
        re.compile(rb"\b[a-z][a-z0-9+.-]{0,15}://[^\s/:@\"']{1,64}:[^\s/@\"']{1,128}@[^\s/]"),
    ),
    (
        "a service token",
        re.compile(rb"\b(?:gh[pousr]_[A-Za-z0-9]{36}|glpat-[A-Za-z0-9_-]{20}|AKIA[0-9A-Z]{16})\b"),
    ),
]


@dataclass(frozen=True)
class Finding:
    name: str  # the file (or archive member)
    offset: int
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.name}: {self.what} at line {self.line} (byte {self.offset})"


def scan_stream(stream: IO[bytes], name: str) -> list[Finding]:
    """Every pattern match in ``stream`` (read in chunks; bounded memory)."""
    found: list[Finding] = []
    seen: set[tuple[int, str]] = set()
    tail = b""
    base = 0  # offset of tail[0] in the stream
    lines_before = 0  # newlines before tail[0]
    while True:
        chunk = stream.read(_CHUNK)
        window = tail + chunk
        for what, pattern in PATTERNS:
            for match in pattern.finditer(window):
                offset = base + match.start()
                if (offset, what) in seen:
                    continue
                seen.add((offset, what))
                line = lines_before + window.count(b"\n", 0, match.start()) + 1
                found.append(Finding(name, offset, line, what))
        if not chunk:
            break
        keep = min(len(window), _OVERLAP)
        lines_before += window.count(b"\n", 0, len(window) - keep)
        base += len(window) - keep
        tail = window[len(window) - keep :]
    found.sort(key=lambda f: f.offset)
    return found


def scan_file(path: Path, name: str | None = None) -> list[Finding]:
    with open(path, "rb") as handle:
        return scan_stream(handle, name or str(path))


def scan_tree(root: Path) -> Iterator[Finding]:
    """Findings in every regular file under ``root`` (names relative to it)."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield from scan_file(path, str(path.relative_to(root)))
