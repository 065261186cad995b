"""Run records: one directory per ``nxc start`` attempt, kept after ``nxc stop``.

``<state>/runs/<run id>/run.json`` (``nxc_run: 1``) says what was started, with which
options, how it went (``starting`` → ``running`` → ``stopped``, or ``failed`` with
the error) and when; the build manifest and the deployment (public parts only)
sit next to it, node console logs under ``nodes/``, and each driver session writes
its own report under ``driver/<n>-<time>/`` so that no report overwrites another.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nxc
from nxc.errors import StateError
from nxc.fsutil import atomic_write, private_dir, read_state, write_state
from nxc.project import Project

__all__ = ["RUN_VERSION", "RunRecord", "list_runs", "now"]

RUN_VERSION = 1


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
        write_state(
            record.file,
            "run",
            RUN_VERSION,
            {
                "id": run_id,
                "composition": composition,
                "flavour": flavour,
                "status": "starting",
                "started_at": now(),
                "nxc_version": nxc.__version__,
                "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
                "project": str(project.root),
                **facts,
            },
        )
        return record

    def load(self) -> dict[str, Any]:
        return read_state(self.file, "run", RUN_VERSION, ("id", "status"))

    def update(self, **fields: Any) -> None:
        document = self.load()
        document.update(fields)
        document.pop("nxc_run", None)
        write_state(self.file, "run", RUN_VERSION, document)

    def mark(self, status: str, error: str | None = None, **fields: Any) -> None:
        extra: dict[str, Any] = {"status": status, f"{status}_at": now(), **fields}
        if error is not None:
            extra["error"] = error
        self.update(**extra)

    def write(self, name: str, text: str) -> Path:
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


def list_runs(project: Project) -> list[tuple[RunRecord, dict[str, Any]]]:
    """Every run record of the project, oldest first (unreadable ones skipped)."""
    if not project.runs_dir.is_dir():
        return []
    found = []
    for directory in project.runs_dir.iterdir():
        record = RunRecord(directory)
        try:
            found.append((record, record.load()))
        except StateError:
            continue
    found.sort(key=lambda item: (str(item[1].get("started_at", "")), item[0].id))
    return found
