"""Reading ``nix-store --export`` streams without Nix: each exported store path and
the SHA-256 of its NAR, i.e. what ``nix path-info`` calls its ``narHash``.

``nxc verify`` uses this to check that an archive's closure holds exactly the store
paths its record lists, byte for byte, on a machine without Nix and without
importing anything. No Python library reads this format (it is Nix's own wire
format: little-endian 64-bit integers and length-prefixed strings padded to 8
bytes); what is read here is documented in Nix's ``exportPath``/``exportPaths`` and
the NAR grammar (``nix-archive-1``, ``(``, ``type``, ``regular``/``symlink``/
``directory``…). Streaming: a closure of any size is read in bounded memory.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

__all__ = ["ExportedPath", "NarError", "nar_hash_hex", "read_export"]

EXPORT_MAGIC = 0x4558494E  # "NIXE"
NAR_MAGIC = b"nix-archive-1"
# Names, targets and store paths are short; a huge length means a corrupt stream.
MAX_NAME = 1 << 16
MAX_REFERENCES = 1 << 20
_CHUNK = 1 << 20
_NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


class NarError(ValueError):
    """The stream is not a well-formed ``nix-store --export`` stream."""


@dataclass(frozen=True)
class ExportedPath:
    path: str
    nar_sha256: str  # hex
    nar_size: int
    references: tuple[str, ...]
    deriver: str | None
    start: int = 0  # byte range of this path's entry in the export stream
    end: int = 0


def nar_hash_hex(nar_hash: str) -> str:
    """``sha256-<base64>`` (SRI) or ``sha256:<nix base32 or hex>`` → hex digest."""
    algo, sep, value = nar_hash.partition("-")
    if sep and algo == "sha256":
        try:
            raw = base64.b64decode(value, validate=True)
        except ValueError:
            raise ValueError(f"not a SHA-256 hash: {nar_hash!r}") from None
        if len(raw) == 32:
            return raw.hex()
    algo, sep, value = nar_hash.partition(":")
    if sep and algo == "sha256":
        if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
            return value
        if len(value) == 52 and all(c in _NIX32 for c in value):
            return _nix32_decode(value).hex()
    raise ValueError(f"not a SHA-256 hash: {nar_hash!r}")


def _nix32_decode(text: str) -> bytes:
    out = bytearray(32)
    for n in range(len(text)):
        digit = _NIX32.index(text[len(text) - n - 1])
        bit = n * 5
        i, j = divmod(bit, 8)
        out[i] |= (digit << j) & 0xFF
        if i + 1 < 32:
            out[i + 1] |= digit >> (8 - j)
        elif digit >> (8 - j):
            raise ValueError(f"not a nix base32 SHA-256: {text!r}")
    return bytes(out)


class _Reader:
    """Exact reads from a stream, counting the offset, feeding an optional hasher."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.offset = 0
        self.hasher: hashlib._Hash | None = None
        self.hashed = 0

    def fail(self, what: str) -> NarError:
        return NarError(f"byte {self.offset}: {what}")

    def read(self, size: int) -> bytes:
        data = self.stream.read(size)
        while len(data) < size:
            more = self.stream.read(size - len(data))
            if not more:
                raise self.fail(f"the stream ends early (wanted {size} bytes)")
            data += more
        self.offset += size
        if self.hasher is not None:
            self.hasher.update(data)
            self.hashed += size
        return data

    def u64(self) -> int:
        value: int = struct.unpack("<Q", self.read(8))[0]
        return value

    def _padding(self, length: int) -> None:
        pad = (-length) % 8
        if pad and self.read(pad) != b"\0" * pad:
            raise self.fail("non-zero padding")

    def string(self, limit: int = MAX_NAME) -> bytes:
        length = self.u64()
        if length > limit:
            raise self.fail(f"a string of {length} bytes (corrupt length?)")
        data = self.read(length)
        self._padding(length)
        return data

    def skip_contents(self) -> None:
        length = self.u64()
        left = length
        while left:
            step = min(left, _CHUNK)
            self.read(step)
            left -= step
        self._padding(length)

    def expect(self, token: bytes) -> None:
        found = self.string()
        if found != token:
            raise self.fail(f"expected {token.decode()!r}, found {found[:40]!r}")


def _node(reader: _Reader, depth: int = 0) -> None:
    if depth > 256:
        raise reader.fail("directories nested too deep")
    reader.expect(b"(")
    reader.expect(b"type")
    kind = reader.string()
    if kind == b"regular":
        tag = reader.string()
        if tag == b"executable":
            reader.expect(b"")
            tag = reader.string()
        if tag != b"contents":
            raise reader.fail(f"expected 'contents', found {tag[:40]!r}")
        reader.skip_contents()
        reader.expect(b")")
    elif kind == b"symlink":
        reader.expect(b"target")
        reader.string()
        reader.expect(b")")
    elif kind == b"directory":
        previous = b""
        while True:
            tag = reader.string()
            if tag == b")":
                break
            if tag != b"entry":
                raise reader.fail(f"expected 'entry' or ')', found {tag[:40]!r}")
            reader.expect(b"(")
            reader.expect(b"name")
            name = reader.string()
            if not name or name in (b".", b"..") or b"/" in name or name <= previous:
                raise reader.fail(f"bad or unsorted entry name {name[:40]!r}")
            previous = name
            reader.expect(b"node")
            _node(reader, depth + 1)
            reader.expect(b")")
    else:
        raise reader.fail(f"unknown node type {kind[:40]!r}")


def read_export(stream: IO[bytes]) -> Iterator[ExportedPath]:
    """Each store path of a ``nix-store --export`` stream, with its NAR's SHA-256.

    Raises :class:`NarError` (with the byte offset) on anything malformed, including
    bytes after the end marker.
    """
    reader = _Reader(stream)
    while True:
        start = reader.offset
        more = reader.u64()
        if more == 0:
            break
        if more != 1:
            raise reader.fail(f"expected 0 or 1 before a path, found {more}")
        reader.hasher = hashlib.sha256()
        reader.hashed = 0
        reader.expect(NAR_MAGIC)
        _node(reader)
        digest, size = reader.hasher.hexdigest(), reader.hashed
        reader.hasher = None
        if reader.u64() != EXPORT_MAGIC:
            raise reader.fail("missing the export marker after a NAR")
        path = reader.string().decode(errors="replace")
        count = reader.u64()
        if count > MAX_REFERENCES:
            raise reader.fail(f"{count} references (corrupt count?)")
        references = tuple(reader.string().decode(errors="replace") for _ in range(count))
        deriver = reader.string().decode(errors="replace") or None
        if reader.u64() != 0:
            raise reader.fail("signed exports are not supported")
        yield ExportedPath(path, digest, size, references, deriver, start, reader.offset)
    if stream.read(1):
        raise reader.fail("data after the end of the export")
