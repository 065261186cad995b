"""The project: a user's flake directory, and nxc's state for it kept *outside* it.

nxc's state (keys, ledger, runtime state, run records) never lives inside the
project directory: a project that is not a git work tree is copied whole into the
world-readable Nix store by every ``nix build``, and with it anything lying there.
The state of a project lives in ``$NXC_STATE_HOME/<name>-<hash>/`` (default
``${XDG_STATE_HOME:-~/.local/state}/nxc``), a 0700 directory:

    project                  the project's path (for people)
    builds.json              the last build of each flavour      (nxc_builds: 1)
    ledger.jsonl             every resource of the running deployment
    current/                 the running deployment; removed by ``nxc stop``
        deployment.json  runtime.json  run.json  keys/  netem-topology.json
    runs/<run id>/           one record per ``nxc start`` attempt (kept)

Sockets and other per-run files live in a short runtime directory (unix socket
paths are limited to 108 bytes) marked as nxc's own, so that ``nxc stop`` removes
only directories nxc created.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nxc.errors import StateError
from nxc.fsutil import atomic_write, private_dir, read_state, write_state, writing
from nxc.ledger import Ledger, ReleaseContext

__all__ = ["Project", "runtime_base_dir", "state_home"]

OWNED_MARK = ".nxc-owned"
BUILDS_VERSION = 1
# Longest unix socket path nxc creates inside a runtime dir, beyond the dir itself.
_SOCKET_NAME_ROOM = 40
_UNIX_PATH_MAX = 107


def state_home() -> Path:
    explicit = os.environ.get("NXC_STATE_HOME")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "nxc"


def runtime_base_dir() -> Path:
    """Where per-run sockets go: short paths, outside any flake."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if (
        base
        and len(base) + 1 + 32 + _SOCKET_NAME_ROOM <= _UNIX_PATH_MAX
        and os.access(base, os.W_OK)
    ):
        return Path(base)
    return Path("/tmp")


class Project:
    """A user's experiment directory (the one holding flake.nix) and its state."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        stem = re.sub(r"[^A-Za-z0-9._-]", "-", self.root.name)[:32] or "root"
        self.state_dir = state_home() / f"{stem}-{digest}"

    @classmethod
    def find(cls, start: Path | None = None) -> Project:
        """The nearest directory at or above ``start`` holding a flake.nix."""
        here = (start or Path.cwd()).resolve()
        for directory in (here, *here.parents):
            if (directory / "flake.nix").is_file():
                return cls(directory)
        raise StateError(
            f"no flake.nix in {here} or any parent: run nxc inside a composition "
            "(create one with 'nxc init -t selftest DIR')"
        )

    # -- layout -------------------------------------------------------------------

    @property
    def builds_file(self) -> Path:
        return self.state_dir / "builds.json"

    @property
    def current_dir(self) -> Path:
        """The running deployment's files; removed by ``nxc stop``."""
        return self.state_dir / "current"

    @property
    def deployment_file(self) -> Path:
        return self.current_dir / "deployment.json"

    @property
    def runtime_file(self) -> Path:
        return self.current_dir / "runtime.json"

    @property
    def run_file(self) -> Path:
        return self.current_dir / "run.json"

    @property
    def keys_dir(self) -> Path:
        return self.current_dir / "keys"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.state_dir / "ledger.jsonl")

    def ensure_state_dir(self) -> None:
        private_dir(self.state_dir)
        marker = self.state_dir / "project"
        if not marker.exists():
            atomic_write(marker, str(self.root) + "\n", 0o600)

    def has_deployment(self) -> bool:
        return self.deployment_file.exists()

    # -- owned directories ----------------------------------------------------------

    def make_runtime_dir(self, name: str) -> Path:
        """A new private directory for sockets and logs, marked as this project's."""
        path = runtime_base_dir() / f"nxc-{name}"
        with writing(path, "create runtime directory"):
            path.mkdir(mode=0o700)
            os.chmod(path, 0o700)
            atomic_write(path / OWNED_MARK, str(self.state_dir) + "\n", 0o600)
        return path

    def owns(self, path: Path) -> bool:
        """Whether ``path`` lies in a directory nxc created for this project.

        That is the state directory, or a directory holding nxc's mark (written when
        nxc created it, naming this project's state directory, owned by this user).
        """
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError):
            return False
        root = self.state_dir.resolve()
        if resolved == root or root in resolved.parents:
            return True
        for directory in (resolved, *resolved.parents):
            mark = directory / OWNED_MARK
            try:
                if mark.stat().st_uid != os.getuid():
                    return False
                return mark.read_text().strip() == str(self.state_dir)
            except OSError:
                continue
        return False

    def marked_runtime_dirs(self) -> list[Path]:
        """The runtime directories nxc made for this project that still exist (found by
        their mark, e.g. to stop what a lost ledger no longer lists)."""
        found = []
        for base in {runtime_base_dir(), Path("/tmp")}:
            with contextlib.suppress(OSError):
                for directory in base.glob("nxc-*"):
                    mark = directory / OWNED_MARK
                    with contextlib.suppress(OSError):
                        if mark.stat().st_uid == os.getuid() and self.owns(directory):
                            found.append(directory)
        return found

    def release_context(self, grace: float = 5.0) -> ReleaseContext:
        return ReleaseContext(owns=self.owns, grace=grace)

    # -- locking --------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, wait: float = 0.0) -> Iterator[None]:
        """Serialise commands that change the state (start, stop, clean, build records).

        With ``wait`` > 0, wait that long for another command to finish first.
        """
        self.ensure_state_dir()
        path = self.state_dir / "lock"
        with writing(path, "lock"):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StateError(
                            f"another nxc command is changing the state of {self.root} "
                            "right now (wait for it to finish)"
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # -- builds ---------------------------------------------------------------------

    def record_build(self, flavour: str, record: dict[str, Any]) -> None:
        with self.lock(wait=30):
            builds = self.builds()
            builds[flavour] = record
            write_state(self.builds_file, "builds", BUILDS_VERSION, {"builds": builds})

    def builds(self) -> dict[str, Any]:
        if not self.builds_file.exists():
            return {}
        document = read_state(self.builds_file, "builds", BUILDS_VERSION, ("builds",))
        builds = document["builds"]
        if not isinstance(builds, dict):
            raise StateError(f"{self.builds_file}: corrupt state file (builds is not a mapping)")
        return builds
