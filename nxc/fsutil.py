"""Writing nxc's own files safely: atomic, private, and with one-line errors.

Readers never see a half-written file (write to a temporary name, fsync, rename),
modes never depend on the user's umask, and a full disk, a read-only file system or
a permission problem becomes a :class:`~nxc.errors.StateError` naming the file
instead of a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nxc.errors import NxcError, StateError

__all__ = [
    "atomic_write",
    "private_append",
    "private_dir",
    "read_json",
    "read_state",
    "read_text",
    "write_json",
    "write_state",
    "writing",
]


def _explain(exc: OSError, path: Path, doing: str) -> StateError:
    reasons = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.ENAMETOOLONG: "file name too long",
    }
    why = reasons.get(exc.errno or 0, exc.strerror or str(exc))
    return StateError(f"{path}: cannot {doing}: {why}")


@contextlib.contextmanager
def writing(path: Path, doing: str = "write") -> Iterator[None]:
    """Turn OS errors raised in the block into one-line errors about ``path``."""
    try:
        yield
    except OSError as exc:
        raise _explain(exc, path, doing) from None


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700 whatever the umask."""
    with writing(path, "create directory"):
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
    return path


def atomic_write(path: Path, text: str | bytes, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` atomically with exactly ``mode`` (default private)."""
    data = text.encode() if isinstance(text, str) else text
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise


def private_append(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` (created 0600) and fsync it."""
    with writing(path, "append to"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def read_text(path: Path, what: str, error: type[NxcError] = NxcError) -> str:
    """The UTF-8 text of a file the user gave, or a one-line ``error`` naming it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: {what} is a directory, not a file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} is not UTF-8 text (bad byte at offset {exc.start})") from None


def write_json(path: Path, document: Any, mode: int = 0o600) -> None:
    atomic_write(path, json.dumps(document, indent=2) + "\n", mode)


def read_json(path: Path) -> Any:
    """A JSON file nxc wrote, or a one-line error (missing, unreadable, corrupt)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StateError(f"{path}: not found") from None
    except OSError as exc:
        raise _explain(exc, path, "read") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise StateError(f"{path}: corrupt state file (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise StateError(f"{path}: corrupt state file ({exc.msg} at line {exc.lineno})") from None


def write_state(path: Path, kind: str, version: int, body: dict[str, Any]) -> None:
    """A versioned state file: ``{"nxc_<kind>": version, ...body}``, atomic and private."""
    write_json(path, {f"nxc_{kind}": version, **body})


def read_state(
    path: Path, kind: str, version: int, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Read a state file written by :func:`write_state`, checking its version and shape."""
    document = read_json(path)
    if not isinstance(document, dict):
        raise StateError(f"{path}: corrupt state file (expected a JSON object)")
    found = document.get(f"nxc_{kind}")
    if found != version:
        raise StateError(
            f"{path}: {kind} state version {found!r} is not {version} "
            "(written by another nxc version? run 'nxc stop' with that version)"
        )
    missing = [k for k in required if k not in document]
    if missing:
        raise StateError(f"{path}: corrupt state file (field {missing[0]!r} is missing)")
    return document
