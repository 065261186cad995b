"""What nix copies into the Nix store from a local flake, and refusing to copy secrets.

Evaluating a local flake copies its source into ``/nix/store``, where every user of the
machine can read it (mode 0444):

- in a git work tree, the files git tracks (``git ls-files``) of the whole repository,
  even when the flake sits in a subdirectory;
- anywhere else (a ``path:`` flake, e.g. a directory made by ``nxc init``), *every*
  file under the flake's directory, hidden ones included.

The same holds for local inputs (``--override-input NAME path:/dir``, or
``inputs.x.url = "path:…"`` in flake.nix). Before nxc runs nix on such a source it
checks the files that would be copied and refuses, in one line, when one of them

- holds a private key (a PEM/OpenSSH ``BEGIN … PRIVATE KEY`` block near its start), or
- in a non-git source, is not readable by other users (or sits in a directory others
  cannot enter): its owner made it private; the store would publish it.

nxc's own state (deployment keys, ledger, runs) must never be inside a flake source
at all; the private keys in it would be caught here anyway.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from nxc.errors import BuildError

# The opening of a PEM or OpenSSH private key block (not a mere mention of one).
KEY_BLOCK = re.compile(
    rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n(?:Proc-Type:|[A-Za-z0-9+/=]{16,})"
)
HEAD_BYTES = 8192


@dataclass(frozen=True)
class Source:
    """A local directory nix would copy, and how (``git`` or ``path``)."""

    root: Path
    kind: str


@dataclass(frozen=True)
class Finding:
    path: Path
    reason: str


def git_toplevel(directory: Path) -> Path | None:
    """The git work tree holding ``directory``, as nix finds it (a ``.git`` above)."""
    for candidate in (directory, *directory.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def source_of(directory: Path, url_kind: str | None = None) -> Source:
    """How nix copies ``directory``: ``path:`` URLs always whole, plain paths by git."""
    directory = directory.resolve()
    if url_kind == "path":
        return Source(directory, "path")
    top = git_toplevel(directory)
    if top is not None:
        return Source(top, "git")
    return Source(directory, "path")


def copied_files(source: Source) -> Iterator[Path]:
    """The regular files nix copies from ``source`` (symlinks are copied as links)."""
    if source.kind == "git":
        try:
            done = subprocess.run(
                ["git", "-C", str(source.root), "ls-files", "-z", "--cached"],
                capture_output=True,
                check=False,
            )
        except FileNotFoundError:
            return
        if done.returncode != 0:
            return
        for name in done.stdout.decode(errors="surrogateescape").split("\0"):
            if name:
                path = source.root / name
                if path.is_file() and not path.is_symlink():
                    yield path
        return
    for directory, subdirs, files in os.walk(source.root):
        subdirs.sort()
        for name in sorted(files):
            path = Path(directory, name)
            if not path.is_symlink():
                yield path


def _private_by_mode(path: Path, root: Path) -> bool:
    """Readable by its owner only, or behind a directory (inside ``root``) others cannot enter."""
    try:
        if not os.stat(path).st_mode & stat.S_IROTH:
            return True
        parent = path.parent
        while parent != root and root in parent.parents:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return True
            parent = parent.parent
    except OSError:
        return False
    return False


def _holds_private_key(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return KEY_BLOCK.search(handle.read(HEAD_BYTES)) is not None
    except OSError:
        return False


def findings(source: Source) -> list[Finding]:
    found: list[Finding] = []
    for path in copied_files(source):
        if _holds_private_key(path):
            found.append(Finding(path, "holds a private key"))
        elif source.kind == "path" and _private_by_mode(path, source.root):
            found.append(Finding(path, "is not readable by other users"))
    return found


def check(source: Source, what: str) -> None:
    """Raise :class:`BuildError` if nix would publish a secret from ``source``."""
    found = findings(source)
    if not found:
        return
    first = found[0]
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    if source.kind == "git":
        hint = f"remove it from git (git rm --cached {first.path.relative_to(source.root)})"
    else:
        hint = (
            f"move it out of {source.root}, or make the directory a git repository "
            "(nix then copies only the files you git add)"
        )
        if first.reason.startswith("is not readable"):
            hint += f"; if it holds no secret: chmod o+r {first.path}"
    raise BuildError(
        f"{first.path} {first.reason}{more}, but nix would copy {what} into the "
        f"world-readable Nix store: {hint}"
    )


def local_input_dir(url: str, base: Path) -> tuple[Path, str | None] | None:
    """The directory a flake input URL names on this machine, with its fetch kind."""
    if url.startswith("path:"):
        raw, kind = url[len("path:") :], "path"
    elif url.startswith("git+file://"):
        raw, kind = url[len("git+file://") :], "git"
    elif url.startswith(("/", "./", "../")):
        raw, kind = url, None
    else:
        return None
    raw = raw.split("?", 1)[0].split("#", 1)[0]
    if not raw:
        return None
    directory = Path(raw) if raw.startswith("/") else base / raw
    return (directory, kind) if directory.is_dir() else None


def check_inputs(urls: Iterable[tuple[str, str]], base: Path, trusted: Iterable[Path] = ()) -> None:
    """Check every local input (name, url) the same way as the flake itself.

    ``trusted`` directories (nxc's own flake) are not the user's files: skipped.
    """
    skip = {t.resolve() for t in trusted}
    for name, url in urls:
        local = local_input_dir(url, base)
        if local is None or local[0].resolve() in skip:
            continue
        directory, kind = local
        check(source_of(directory, kind), f"input '{name}' ({directory})")


def private_values(value: object, where: str = "") -> list[str]:
    """Names of parameter values (nested) that hold a private key."""
    if isinstance(value, str):
        found = KEY_BLOCK.search(value.encode(errors="surrogateescape"))
        return [where or "value"] if found else []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in private_values(v, f"{where}.{k}".strip("."))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in private_values(v, f"{where}[{i}]")]
    return []
