"""Run records: one directory per ``nxc start`` attempt, kept after ``nxc stop``.

``<state>/runs/<run id>/run.json`` (``nxc_run: 1``, schema
``nxc/contracts/schemas/run-1.json``, validated on every read and write) says what
was started, with which options, how it went (``starting`` → ``running`` →
``stopped``, or ``failed`` with the error), when, how long each phase of the start
took, on which host, and every nxc command that acted on the run. Next to it:

    manifest.json  deployment.json (public parts only)  netem-topology.json
    flake.lock  inputs.json  store-paths.json  source/   (what was built, from what)
    nodes/<node>.console.log  nodes/<node>.journal.log   (per node)
    driver/<n>-<time>/  scenario.py report.json report.xml log.jsonl netem-*.json

each driver session in its own directory so that no report overwrites another.
What fills these is :mod:`nxc.records`; ``nxc runs``, ``nxc publish`` and
``nxc verify`` read them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nxc
from nxc.contracts.validate import validate_document
from nxc.errors import ContractError, NxcError, StateError
from nxc.fsutil import atomic_write, private_dir, read_state, write_state
from nxc.project import Project

__all__ = [
    "RUN_VERSION",
    "PhaseClock",
    "RunRecord",
    "find_run",
    "list_runs",
    "now",
]

RUN_VERSION = 1
SCENARIO_FILE = "scenario.py"
DRIVER_LOG_FILE = "log.jsonl"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> dt.datetime:
    """A time nxc wrote (``...Z`` or with an offset) as an aware datetime."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def argv() -> list[str]:
    """This process's command line as a user typed it (``nxc start -r node=3``)."""
    program = Path(sys.argv[0]).name
    # `python -m nxc.cli …` is nxc too; a researcher's own script keeps its name.
    if program in ("cli.py", "__main__.py", "nxc"):
        program = "nxc"
    return [program, *sys.argv[1:]]


@dataclass(frozen=True)
class RunRecord:
    directory: Path

    @property
    def file(self) -> Path:
        return self.directory / "run.json"

    @property
    def id(self) -> str:
        return self.directory.name

    @classmethod
    def create(
        cls, project: Project, run_id: str, composition: str, flavour: str, **facts: Any
    ) -> RunRecord:
        directory = project.runs_dir / run_id
        private_dir(project.runs_dir)
        private_dir(directory)
        record = cls(directory)
        started = now()
        command = argv()
        record._write(
            {
                "id": run_id,
                "composition": composition,
                "flavour": flavour,
                "status": "starting",
                "started_at": started,
                "nxc_version": nxc.__version__,
                "command": command,
                "commands": [{"argv": command, "at": started, "what": "start"}],
                "project": str(project.root),
                **facts,
            }
        )
        return record

    def load(self) -> dict[str, Any]:
        """run.json, checked against its schema (one-line error naming the field)."""
        document = read_state(self.file, "run", RUN_VERSION, ("id", "status"))
        try:
            return validate_document(document, "run", str(self.file))
        except ContractError as exc:
            raise StateError(str(exc)) from None

    def _write(self, body: dict[str, Any]) -> None:
        body = {k: v for k, v in body.items() if k != "nxc_run"}
        # Validate what is written too: a record nxc itself cannot read back is a bug
        # that should show where it is made, not at the next read.
        validate_document({"nxc_run": RUN_VERSION, **body}, "run", str(self.file))
        write_state(self.file, "run", RUN_VERSION, body)

    def update(self, **fields: Any) -> None:
        document = self.load()
        document.update(fields)
        self._write(document)

    def mark(self, status: str, error: str | None = None, **fields: Any) -> None:
        extra: dict[str, Any] = {"status": status, f"{status}_at": now(), **fields}
        if error is not None:
            extra["error"] = error
        self.update(**extra)

    def add_command(self, what: str, **extra: Any) -> None:
        """Note that this process's command acted on the run (driver, stop…)."""
        document = self.load()
        commands = list(document.get("commands", []))
        commands.append({"argv": argv(), "at": now(), "what": what, **extra})
        document["commands"] = commands
        self._write(document)

    def note(self, text: str) -> None:
        """Something the record could not hold, and why (shown by ``nxc runs show``)."""
        document = self.load()
        notes = list(document.get("notes", []))
        if text not in notes:
            notes.append(text)
        document["notes"] = notes
        self._write(document)

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.directory / name
        atomic_write(path, text, 0o600)
        return path

    def write_json(self, name: str, document: Any) -> Path:
        return self.write(name, json.dumps(document, indent=2) + "\n")

    def new_driver_dir(self) -> Path:
        """A fresh directory for one driver session's reports (never overwritten)."""
        base = private_dir(self.directory / "driver")
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        for n in range(1, 100000):
            candidate = base / f"{n:03d}-{stamp}"
            try:
                candidate.mkdir(mode=0o700)
            except FileExistsError:
                continue
            return candidate
        raise StateError(f"{base}: too many driver sessions")

    def driver_dirs(self) -> list[Path]:
        """The driver sessions' directories, oldest first."""
        base = self.directory / "driver"
        if not base.is_dir():
            return []
        return sorted(p for p in base.iterdir() if p.is_dir())

    @staticmethod
    def save_scenario(session_dir: Path, text: str) -> Path:
        """Keep the source of the scenario a driver session runs, next to its report."""
        path = session_dir / SCENARIO_FILE
        atomic_write(path, text, 0o600)
        return path


class PhaseClock:
    """Times the phases of one start (expand, acquire, launch, ready, netem…) into
    run.json as each ends, so that a failed start says which phase failed and when.

    ``phase(name)`` brackets a phase; inside it, :meth:`begin` ends the open phase and
    opens the next one: a runtime calls ``ctx.begin_phase("ready")`` when it starts
    waiting for its nodes, which splits ``launch`` from ``ready``.
    """

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.phases: list[dict[str, Any]] = []
        self._open: tuple[str, str, float] | None = None

    def add(self, name: str, started_at: str, duration: float, ok: bool = True) -> None:
        self.phases.append(
            {"name": name, "started_at": started_at, "duration": round(duration, 3), "ok": ok}
        )
        self._save()

    def begin(self, name: str) -> None:
        if self._open is not None:
            self._close(ok=True)
        self._open = (name, now(), time.monotonic())

    def _close(self, ok: bool, error: str | None = None) -> None:
        if self._open is None:
            return
        name, started_at, t0 = self._open
        self._open = None
        entry: dict[str, Any] = {
            "name": name,
            "started_at": started_at,
            "duration": round(time.monotonic() - t0, 3),
            "ok": ok,
        }
        if error:
            entry["error"] = error
        self.phases.append(entry)
        self._save()

    def _save(self) -> None:
        # Timing is a record, not the start's purpose: a record that cannot be
        # written must not turn a good start into a failure (the error shows later).
        with contextlib.suppress(NxcError):
            self.record.update(phases=self.phases)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.begin(name)
        try:
            yield
        except BaseException as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._close(ok=False, error=reason)
            raise
        self._close(ok=True)


def list_runs(project: Project) -> list[tuple[RunRecord, dict[str, Any]]]:
    """Every run record of the project, oldest first (unreadable ones skipped)."""
    if not project.runs_dir.is_dir():
        return []
    found = []
    for directory in project.runs_dir.iterdir():
        record = RunRecord(directory)
        try:
            found.append((record, record.load()))
        except NxcError:
            continue
    found.sort(key=lambda item: (str(item[1].get("started_at", "")), item[0].id))
    return found


def find_run(project: Project, ident: str) -> RunRecord:
    """The run called ``ident`` (or whose id starts with it, if only one does); a
    directory holding a run.json is taken as it is."""
    given = Path(ident)
    if (given / "run.json").is_file():
        return RunRecord(given.resolve())
    exact = project.runs_dir / ident
    if ident and "/" not in ident and (exact / "run.json").is_file():
        return RunRecord(exact)
    candidates = (
        sorted(p for p in project.runs_dir.iterdir() if p.name.startswith(ident))
        if ident and project.runs_dir.is_dir()
        else []
    )
    if len(candidates) == 1:
        return RunRecord(candidates[0])
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates[:5])
        raise StateError(f"run '{ident}' is ambiguous in {project.root}: {names}")
    raise StateError(f"no run '{ident}' in {project.root} ('nxc runs' lists them)")
