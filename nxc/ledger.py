"""The ledger: every resource a run creates, recorded before it can leak, released by kind.

A run appends one JSON line per resource *as it creates it* (a process right after
``Popen``, a container right after its create call, an OAR job right after submit),
so ``nxc stop`` can release everything even after nxc itself was killed. Each line
names a *kind*; a :class:`Kind` knows how to release resources of that kind. nxc
provides ``process``, ``path`` and ``netns``; a flavour adds its own kinds
(containers, networks, OAR jobs…) through its runtime's ``resource_kinds()``.

The ledger is not trusted blindly: a process is signalled only if its pid still has
the kernel start time recorded with it (a reused pid belongs to a stranger), and a
path is removed only if it lies under a directory nxc owns for this project. A line
that cannot be read is reported, not guessed at; runtimes can recover what such a
line described from their own state (see ``Runtime.recover``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nxc.errors import NxcError, StateError
from nxc.fsutil import atomic_write, private_append

__all__ = [
    "BUILTIN_KINDS",
    "Kind",
    "Ledger",
    "Refused",
    "ReleaseContext",
    "ReleaseError",
    "ReleaseReport",
    "Resource",
    "process_start_time",
]

LEDGER_VERSION = 1


def process_start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` (clock ticks since boot), None if it is gone.

    Together with the pid it identifies a process: a pid reused by an unrelated
    process has another start time, so we never signal a stranger. Zombies count
    as gone (this machine's PID 1 may be slow to reap them).
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
    """One thing a run created. ``owner`` is the flavour whose kinds release it."""

    kind: str
    ident: str
    description: str
    start_time: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.ident)

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
        if self.owner:
            document["owner"] = self.owner
        return document

    @classmethod
    def from_dict(cls, document: Any) -> Resource:
        if not isinstance(document, dict):
            raise ValueError("not an object")
        kind, ident = document.get("kind"), document.get("ident")
        if not isinstance(kind, str) or not kind or ident is None:
            raise ValueError("no kind or ident")
        start = document.get("start_time")
        extra = document.get("extra") or {}
        owner = document.get("owner")
        if start is not None and not isinstance(start, int):
            raise ValueError("start_time is not an integer")
        if not isinstance(extra, dict) or (owner is not None and not isinstance(owner, str)):
            raise ValueError("malformed extra or owner")
        return cls(kind, str(ident), str(document.get("description", "")), start, extra, owner)

    def label(self) -> str:
        return f"{self.description or self.kind} ({self.kind} {self.ident})"


class ReleaseError(NxcError):
    """A resource could not be released; the message says which and why."""


class Refused(ReleaseError):
    """nxc will not release this (it is not nxc's to touch): reported, then forgotten."""


class Kind(Protocol):
    """How to release resources of one kind (idempotent: gone already is success)."""

    name: str

    def release(self, resource: Resource, ctx: ReleaseContext) -> str | None:
        """Release ``resource``; return what was done, or None if it was already gone.

        Raise :class:`ReleaseError` (or any exception) when it cannot be released.
        """
        ...


@dataclass(frozen=True)
class ReleaseContext:
    """What release handlers may rely on: which paths nxc owns, a grace time, and the
    kinds the user asked to keep (``nxc stop --keep-job``): those are forgotten, not
    released."""

    owns: Callable[[Path], bool]
    grace: float = 5.0
    keep: frozenset[str] = frozenset()


class PathKind:
    """Files and directories nxc created (removed only under directories nxc owns)."""

    name = "path"

    def release(self, resource: Resource, ctx: ReleaseContext) -> str | None:
        path = Path(resource.ident)
        if not path.is_absolute():
            raise Refused(f"refusing to remove {resource.ident!r}: not an absolute path")
        if not (path.exists() or path.is_symlink()):
            return None
        # A symlink itself may sit under an owned root while pointing anywhere: judge
        # the link's own location, and never follow it.
        where = path.parent if path.is_symlink() else path
        if not ctx.owns(where):
            raise Refused(
                f"refusing to remove {path}: not under a directory nxc owns for this project"
            )
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return f"removed {path}"


class NetnsKind:
    """Network namespaces nxc created (``ip netns add``), named ``nxc-…``."""

    name = "netns"

    def release(self, resource: Resource, ctx: ReleaseContext) -> str | None:
        name = resource.ident
        if not name.startswith("nxc") or "/" in name:
            raise Refused(f"refusing to delete network namespace {name!r}: not nxc's")
        if not Path("/run/netns", name).exists():
            return None
        done = subprocess.run(
            ["ip", "netns", "delete", name], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise ReleaseError(f"ip netns delete {name}: {done.stderr.strip()}")
        return f"deleted network namespace {name}"


def stop_processes(resources: Sequence[Resource], grace: float) -> list[str]:
    """SIGTERM every live process at once, wait up to ``grace``, then SIGKILL the rest."""
    alive = [r for r in resources if _alive(r)]
    for resource in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(resource.ident), signal.SIGTERM)
    deadline = time.monotonic() + grace
    pending = list(alive)
    while pending and time.monotonic() < deadline:
        time.sleep(0.05)
        pending = [r for r in pending if _alive(r)]
    for resource in pending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(resource.ident), signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pending and time.monotonic() < deadline:
        time.sleep(0.02)
        pending = [r for r in pending if _alive(r)]
    if pending:
        names = ", ".join(r.label() for r in pending)
        raise ReleaseError(f"still running after SIGKILL: {names}")
    return [f"stopped {r.description or 'process'} (pid {r.ident})" for r in alive]


def _alive(resource: Resource) -> bool:
    try:
        pid = int(resource.ident)
    except ValueError:
        return False
    return resource.start_time is not None and process_start_time(pid) == resource.start_time


BUILTIN_KINDS: dict[str, Kind] = {k.name: k for k in (PathKind(), NetnsKind())}


@dataclass
class ReleaseReport:
    """What a release did, what failed (with why), and what could not be read."""

    done: list[str] = field(default_factory=list)
    failed: list[tuple[Resource, str]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def lines(self) -> list[str]:
        out = list(self.done)
        out += [f"could not release {r.label()}: {why}" for r, why in self.failed]
        out += self.refused
        out += [f"ignored unreadable ledger line: {line}" for line in self.unreadable]
        return out


class Ledger:
    """Append-only record of what a run created, released in reverse order."""

    def __init__(self, path: Path) -> None:
        self.path = path

    # -- recording ----------------------------------------------------------------

    def add(self, resource: Resource) -> Resource:
        """Record ``resource`` durably (fsync) before the caller relies on it."""
        line = json.dumps(resource.to_dict()) + "\n"
        if not self.path.exists():
            line = json.dumps({"nxc_ledger": LEDGER_VERSION}) + "\n" + line
        private_append(self.path, line)
        return resource

    def record_process(
        self, pid: int, description: str, owner: str | None = None, **extra: Any
    ) -> Resource:
        start = process_start_time(pid)
        if start is None:
            # It exited already (or is a zombie): nothing to stop, but say so.
            start = -1
        return self.add(Resource("process", str(pid), description, start, extra, owner))

    def record_path(self, path: Path, description: str) -> Resource:
        return self.add(Resource("path", str(path), description))

    def record(
        self, kind: str, ident: str, description: str, owner: str | None = None, **extra: Any
    ) -> Resource:
        return self.add(Resource(kind, ident, description, None, extra, owner))

    # -- reading ------------------------------------------------------------------

    def read(self) -> tuple[list[Resource], list[str]]:
        """The resources recorded, and the lines that could not be read (shortened)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            raise StateError(f"{self.path}: cannot read the ledger: {exc.strerror}") from None
        entries: list[Resource] = []
        bad: list[str] = []
        for number, line in enumerate(raw.splitlines(), 1):
            text = line.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                document = json.loads(text)
                if isinstance(document, dict) and "nxc_ledger" in document:
                    if document["nxc_ledger"] != LEDGER_VERSION:
                        bad.append(f"line {number}: ledger version {document['nxc_ledger']}")
                    continue
                entries.append(Resource.from_dict(document))
            except (json.JSONDecodeError, ValueError) as exc:
                shown = text if len(text) <= 60 else text[:59] + "…"
                bad.append(f"line {number}: {shown!r} ({exc})")
        return entries, bad

    def entries(self) -> list[Resource]:
        return self.read()[0]

    def live_processes(self) -> list[Resource]:
        return [r for r in self.entries() if r.kind == "process" and _alive(r)]

    def exists(self) -> bool:
        return self.path.exists()

    # -- releasing ----------------------------------------------------------------

    def release(
        self,
        kinds: Mapping[str, Kind],
        ctx: ReleaseContext,
        extra: Iterable[Resource] = (),
        on_progress: Callable[[str], None] | None = None,
    ) -> ReleaseReport:
        """Release every recorded resource (plus ``extra`` ones recovered elsewhere).

        Walks the ledger backwards (last created, first released); consecutive
        processes are stopped together. A failing resource does not stop the
        others: it is reported, and kept in the ledger so that a later release can
        try again. Returns what was done.
        """
        entries, bad = self.read()
        seen = {r.key for r in entries}
        merged = [r for r in extra if r.key not in seen] + entries
        report = ReleaseReport(unreadable=bad)
        kept: list[Resource] = []
        todo = list(reversed(merged))
        i = 0
        while i < len(todo):
            resource = todo[i]
            if resource.kind == "process":
                batch = []
                while i < len(todo) and todo[i].kind == "process":
                    batch.append(todo[i])
                    i += 1
                try:
                    report.done += stop_processes(batch, ctx.grace)
                except Exception as exc:
                    failed = [r for r in batch if _alive(r)]
                    report.failed += [(r, str(exc)) for r in failed]
                    kept += failed
                continue
            i += 1
            if resource.kind in ctx.keep:
                report.done.append(f"kept {resource.label()} (as asked)")
                continue
            kind = kinds.get(resource.kind)
            if kind is None:
                why = f"no handler for resource kind '{resource.kind}'"
                if resource.owner:
                    why += f" (flavour '{resource.owner}' is not installed?)"
                report.failed.append((resource, why))
                kept.append(resource)
                continue
            if on_progress:
                on_progress(f"releasing {resource.label()}")
            try:
                message = kind.release(resource, ctx)
            except Refused as exc:
                report.refused.append(str(exc))
                continue
            except Exception as exc:
                report.failed.append(
                    (resource, str(exc).splitlines()[0] if str(exc) else repr(exc))
                )
                kept.append(resource)
                continue
            if message:
                report.done.append(message)
        if kept:
            # Keep what failed, oldest first, for the next attempt.
            kept.reverse()
            text = json.dumps({"nxc_ledger": LEDGER_VERSION}) + "\n"
            text += "".join(json.dumps(r.to_dict()) + "\n" for r in kept)
            atomic_write(self.path, text, 0o600)
        else:
            self.clear()
        return report

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
