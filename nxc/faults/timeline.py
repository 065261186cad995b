"""Fault timelines: faults and heals at given offsets, from a scenario or a YAML file.

::

    nxc_faults: 1
    seed: 7                       # optional: random choices are reproducible
    events:
      - at: 2                     # seconds from the timeline's start (fractions allowed)
        fault: pause
        nodes: [node2]            # node or role names (default: every node)
        name: worker              # the fault's parameters (see docs/faults.md)
        for: 3                    # heal 3 s later (else: a `heal` event, or the end)
      - at: 4.5
        fault: partition
        pattern: halves
        id: split                 # a name to heal it by
      - at: 8
        heal: split               # or `heal: all`

Run it with ``nxc driver --faults FILE [SCRIPT]`` or ``faults.timeline(FILE)`` in a
scenario. Events fire in time order on one thread (each waits for its offset on the
monotonic clock, so they are as punctual as the previous event's commands allow);
each is recorded with its actual offset in the run record's ``faults.jsonl``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from nxc.errors import ContractError
from nxc.faults.plans import KINDS, FaultError

if TYPE_CHECKING:
    from nxc.faults.injector import Injector

__all__ = ["Timeline", "TimelineEntry", "TimelineRun"]

VERSION = 1
_EVENT_KEYS = {"at", "fault", "heal", "nodes", "id", "for"}


@dataclass(frozen=True)
class TimelineEntry:
    at: float
    action: str  # "fault" | "heal"
    kind: str = ""  # fault kind
    target: str = ""  # fault id (for heal; "all" heals everything)
    nodes: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    id: str = ""


@dataclass(frozen=True)
class Timeline:
    entries: tuple[TimelineEntry, ...]
    seed: int | None = None
    source: str = "timeline"

    @classmethod
    def load(cls, path: Path) -> Timeline:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ContractError(f"{path}: cannot read the fault timeline: {exc.strerror}") from None
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark else ""
            raise ContractError(f"{path}: malformed YAML{at}") from None
        return cls.from_dict(document, str(path))

    @classmethod
    def from_dict(cls, document: Any, source: str = "timeline") -> Timeline:
        if not isinstance(document, dict) or document.get("nxc_faults") != VERSION:
            raise ContractError(f"{source}: not a fault timeline (expected nxc_faults: {VERSION})")
        unknown = set(document) - {"nxc_faults", "seed", "events", "description"}
        if unknown:
            raise ContractError(f"{source}: unknown key {sorted(unknown)[0]!r}")
        seed = document.get("seed")
        if seed is not None and not isinstance(seed, int):
            raise ContractError(f"{source}: seed must be a whole number")
        raw = document.get("events")
        if not isinstance(raw, list) or not raw:
            raise ContractError(f"{source}: events must be a non-empty list")
        entries: list[TimelineEntry] = []
        ids: set[str] = set()
        for number, event in enumerate(raw):
            entries += _parse_event(event, f"{source}: events[{number}]", ids, number)
        for entry in entries:
            if entry.action == "heal" and entry.target != "all" and entry.target not in ids:
                raise ContractError(
                    f"{source}: heal {entry.target!r}: no fault has that id "
                    f"(ids: {', '.join(sorted(ids)) or 'none'})"
                )
        # Stable: same-offset events keep the file's order.
        ordered = tuple(sorted(entries, key=lambda e: e.at))
        return cls(ordered, seed, source)

    @classmethod
    def of(cls, events: list[dict[str, Any]], seed: int | None = None) -> Timeline:
        """A timeline from Python (the same keys as the YAML events)."""
        return cls.from_dict({"nxc_faults": VERSION, "seed": seed, "events": events}, "timeline")


def _parse_event(event: Any, where: str, ids: set[str], number: int) -> list[TimelineEntry]:
    if not isinstance(event, dict):
        raise ContractError(f"{where}: must be a mapping with at and fault (or heal)")
    at = event.get("at")
    if isinstance(at, bool) or not isinstance(at, int | float) or at < 0:
        raise ContractError(f"{where}: at must be a number of seconds >= 0")
    if ("fault" in event) == ("heal" in event):
        raise ContractError(f"{where}: give either fault: KIND or heal: ID")
    if "heal" in event:
        extra = set(event) - {"at", "heal"}
        if extra:
            raise ContractError(f"{where}: a heal takes only at and heal (not {sorted(extra)[0]})")
        return [TimelineEntry(float(at), "heal", target=str(event["heal"]))]
    kind = event["fault"]
    if kind not in KINDS:
        raise ContractError(f"{where}: unknown fault {kind!r} (known: {', '.join(KINDS)})")
    fault_id = str(event.get("id") or f"e{number + 1}")
    if fault_id in ids:
        raise ContractError(f"{where}: id {fault_id!r} is used twice")
    ids.add(fault_id)
    params = {k: v for k, v in event.items() if k not in _EVENT_KEYS}
    entry = TimelineEntry(float(at), "fault", kind, nodes=event.get("nodes"),
                          params=params, id=fault_id)  # fmt: skip
    out = [entry]
    duration = event.get("for")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, int | float) or duration <= 0:
            raise ContractError(f"{where}: for must be a positive number of seconds")
        out.append(TimelineEntry(float(at) + float(duration), "heal", target=fault_id))
    return out


class TimelineRun:
    """One run of a timeline on an injector.

    A scheduler thread dispatches each event at its offset to a thread of its own, so
    that a slow action (a command on a busy node, a crash) never delays the events
    after it; a heal waits for its fault's application to finish first.
    """

    def __init__(self, timeline: Timeline, injector: Injector) -> None:
        self.timeline = timeline
        self.injector = injector
        self.errors: list[str] = []
        self.done = threading.Event()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nxc-faults", daemon=True)
        self._workers: list[threading.Thread] = []
        self._applied: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.started = 0.0

    def start(self) -> None:
        if self.timeline.seed is not None:
            self.injector.rng.seed(self.timeline.seed)
        self.started = time.monotonic()
        self._thread.start()

    def run(self) -> None:
        """Run in the calling thread (blocking) — what ``nxc driver --faults`` does alone."""
        if self.timeline.seed is not None:
            self.injector.rng.seed(self.timeline.seed)
        self.started = time.monotonic()
        self._run()
        self.raise_errors()

    def cancel(self) -> None:
        """Dispatch nothing more; wait for the actions under way."""
        self._cancel.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=COMMAND_WAIT)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for every event to have fired; raise if some failed."""
        if not self.done.wait(timeout):
            raise FaultError(f"the fault timeline {self.timeline.source} is still running")
        self.raise_errors()

    def raise_errors(self) -> None:
        if self.errors:
            raise FaultError(
                f"{len(self.errors)} timeline event(s) failed: " + "; ".join(self.errors)
            )

    def _run(self) -> None:
        try:
            for entry in self.timeline.entries:
                delay = self.started + entry.at - time.monotonic()
                if delay > 0 and self._cancel.wait(delay):
                    break
                if self._cancel.is_set():
                    break
                offset = time.monotonic() - self.started
                if entry.action == "fault":
                    with self._lock:
                        self._applied[entry.id] = threading.Event()
                worker = threading.Thread(
                    target=self._fire, args=(entry, offset), name="nxc-fault", daemon=True
                )
                self._workers.append(worker)
                worker.start()
            for worker in self._workers:
                worker.join(timeout=COMMAND_WAIT)
        finally:
            self.done.set()

    def _fire(self, entry: TimelineEntry, offset: float) -> None:
        injector = self.injector
        try:
            if entry.action == "fault":
                try:
                    injector.inject(
                        entry.kind, entry.nodes, id=entry.id, offset_s=offset, **entry.params
                    )
                finally:
                    self._applied[entry.id].set()
                return
            # A heal acts once what it heals is in place (applied, or failed).
            with self._lock:
                pending = (
                    list(self._applied.values())
                    if entry.target == "all"
                    else [self._applied[entry.target]]
                    if entry.target in self._applied
                    else []
                )
            for applied in pending:
                applied.wait(COMMAND_WAIT)
            if entry.target == "all":
                for active in reversed(injector.active):
                    injector.heal(active, offset)
                return
            injector.heal(injector.find(entry.target), offset)
        except Exception as exc:
            with self._lock:
                self.errors.append(f"at {entry.at:g}s: {str(exc).splitlines()[0]}")


COMMAND_WAIT = 300.0
