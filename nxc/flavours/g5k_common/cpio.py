"""A small newc cpio writer: the per-node archive appended to a role's initrd.

Linux unpacks every archive of a concatenation into the initramfs (each one may be
compressed or not; zero bytes between them are skipped), so one node's inputs — its
deployment, its rendered agent inputs and its private host key — travel as a few
kilobytes appended to the role's initrd given to ``kexec``: nothing on the kernel
command line, no size limit but memory.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One archive member: a directory (``data is None``) or a regular file."""

    path: str  # relative, no leading slash
    mode: int  # permission bits
    data: bytes | None = None


def _pad(length: int) -> bytes:
    return b"\0" * ((4 - length % 4) % 4)


def _header(inode: int, mode: int, size: int, name: bytes) -> bytes:
    fields = (inode, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name) + 1, 0)
    return MAGIC + b"".join(f"{v:08X}".encode() for v in fields)


def newc_archive(entries: Iterable[Entry]) -> bytes:
    """The archive bytes (owner root, mtime 0), padded to a 512-byte multiple."""
    out = bytearray()
    inode = 1
    for entry in [*entries, Entry(TRAILER, 0)]:
        if entry.path.startswith("/") or ".." in entry.path.split("/"):
            raise ValueError(f"cpio: {entry.path!r} must be a relative path inside the archive")
        name = entry.path.encode()
        if entry.path == TRAILER:
            mode, data = 0, b""
        elif entry.data is None:
            mode, data = stat.S_IFDIR | entry.mode, b""
        else:
            mode, data = stat.S_IFREG | entry.mode, entry.data
        header = _header(inode if entry.path != TRAILER else 0, mode, len(data), name)
        out += header + name + b"\0"
        out += _pad(len(header) + len(name) + 1)
        out += data + _pad(len(data))
        inode += 1
    out += b"\0" * ((512 - len(out) % 512) % 512)
    return bytes(out)
