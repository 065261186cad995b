"""The project: a user's flake directory and nxc's state next to it.

State lives in ``<project>/nxc/`` (JSON files written atomically); sockets and other
per-run runtime files live in a short runtime directory (unix socket paths are
limited to 108 bytes, and sockets must not sit inside a flake Nix may copy).
Every resource a run creates is appended to the *ledger* before it is relied on,
so ``nxc stop`` can undo everything even after a crash or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nxc.errors import StateError

STATE_DIR_NAME = ".nxc"


def atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_json(path: Path, document: Any) -> None:
    atomic_write(path, json.dumps(document, indent=2) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StateError(f"{path}: not found") from None
    except json.JSONDecodeError as exc:
        raise StateError(f"{path}: corrupt state file ({exc.msg} at line {exc.lineno})") from None


def process_start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` (clock ticks since boot), None if it is gone.

    Together with the pid it identifies a process: a pid reused by an unrelated
    process has another start time, so we never signal a stranger.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


@dataclass(frozen=True)
class Resource:
    kind: str  # process | path | netns | container | job
    ident: str  # pid, path, name…
    description: str
    start_time: int | None = None
    extra: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "kind": self.kind,
            "ident": self.ident,
            "description": self.description,
        }
        if self.start_time is not None:
            document["start_time"] = self.start_time
        if self.extra:
            document["extra"] = self.extra
        return document

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Resource:
        return cls(
            kind=document["kind"],
            ident=str(document["ident"]),
            description=document.get("description", ""),
            start_time=document.get("start_time"),
            extra=document.get("extra"),
        )


class Ledger:
    """Append-only record of what a run created, undone in reverse order."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _append(self, resource: Resource) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(resource.to_dict()) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def record_process(self, pid: int, description: str) -> Resource:
        resource = Resource("process", str(pid), description, process_start_time(pid))
        self._append(resource)
        return resource

    def record_path(self, path: Path, description: str) -> Resource:
        resource = Resource("path", str(path), description)
        self._append(resource)
        return resource

    def entries(self) -> list[Resource]:
        if not self.path.exists():
            return []
        entries = []
        for line in self.path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                entries.append(Resource.from_dict(json.loads(line)))
            except (json.JSONDecodeError, KeyError):
                # A line cut by a crash mid-write: everything before it is intact.
                continue
        return entries

    def live_processes(self) -> list[Resource]:
        return [
            r
            for r in self.entries()
            if r.kind == "process" and process_start_time(int(r.ident)) == r.start_time
        ]

    def undo(self, grace: float = 5.0) -> list[str]:
        """Stop every recorded process (SIGTERM, then SIGKILL) and remove every path.

        Returns what was undone, for the user. Safe to call again: resources that are
        already gone are skipped.
        """
        done: list[str] = []
        entries = self.entries()
        processes = [r for r in entries if r.kind == "process"]
        alive = [r for r in processes if process_start_time(int(r.ident)) == r.start_time]
        for resource in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(resource.ident), signal.SIGTERM)
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            alive = [r for r in alive if process_start_time(int(r.ident)) == r.start_time]
            if alive:
                time.sleep(0.05)
        for resource in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(resource.ident), signal.SIGKILL)
        for resource in processes:
            if process_start_time(int(resource.ident)) != resource.start_time:
                done.append(f"stopped {resource.description} (pid {resource.ident})")
        for resource in reversed(entries):
            if resource.kind != "path":
                continue
            path = Path(resource.ident)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                done.append(f"removed {path}")
            elif path.exists() or path.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                done.append(f"removed {path}")
        return done

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class Project:
    """A user's experiment directory (the one holding flake.nix) and its state."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.state_dir = self.root / STATE_DIR_NAME

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

    # Files in the state directory.
    @property
    def builds_file(self) -> Path:
        return self.state_dir / "builds.json"

    @property
    def deployment_file(self) -> Path:
        return self.state_dir / "deployment.json"

    @property
    def runtime_file(self) -> Path:
        return self.state_dir / "runtime.json"

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.state_dir / "ledger.jsonl")

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    def ensure_state_dir(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ignore = self.state_dir / ".gitignore"
        if not ignore.exists():
            # Keep run state out of the user's git history and of the flake's sources.
            atomic_write(ignore, "*\n")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise commands that change the run state (start, stop, clean)."""
        self.ensure_state_dir()
        with open(self.state_dir / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StateError(
                    f"another nxc command is changing {self.state_dir} right now"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # Builds.
    def record_build(self, flavour: str, record: dict[str, Any]) -> None:
        builds = self.builds() if self.builds_file.exists() else {}
        builds[flavour] = record
        write_json(self.builds_file, builds)

    def builds(self) -> dict[str, Any]:
        if not self.builds_file.exists():
            return {}
        data = read_json(self.builds_file)
        return data if isinstance(data, dict) else {}

    def has_deployment(self) -> bool:
        return self.deployment_file.exists()


def runtime_base_dir() -> Path:
    """Where per-run sockets go: short paths, outside the flake."""
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return Path(base)
