"""Everything a report shows about one run, read from its run record.

A run directory (``<state>/runs/<run id>/``, see ``nxc/runs.py``) holds what the run left:
``run.json`` and ``manifest.json``, the metrics store, one ``driver/<n>-<time>/report.json``
per driver session that ran a scenario, the nodes' consoles in ``nodes/<node>.console.log``
(and ``.console.log.prev`` for the boot before a restart) and ``nodes/<node>.journal.log``,
and netem validation reports
(any ``*.json`` with ``"nxc_netem_validation": 1``, e.g. written by
``netem.validate(report=...)``). Missing parts are simply absent from the report.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nxc.errors import NxcError
from nxc.monitor.hook import METRICS_FILE
from nxc.monitor.series import Gap, find_gaps
from nxc.monitor.store import NODE_JOB, Mark, MetricsStore, Session, Source

__all__ = ["NodeSummary", "RunData", "Scenario", "Subtest", "load_run", "parse_time"]

# Where the runtime keeps each node's console in the run record.
NODES_DIR = "nodes"


def parse_time(text: str) -> float:
    """Epoch seconds of an ISO 8601 time as the driver writes them."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Subtest:
    name: str
    start: float
    duration: float
    success: bool
    error: str
    session: str = ""

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True)
class NodeSummary:
    node: str
    role: str
    source: str
    scrapes: int
    samples: int
    median_scrape_ms: float | None
    errors: int
    gaps: int


@dataclass(frozen=True)
class Scenario:
    """One driver session's scenario report (``report.json``); ``session`` names it."""

    session: str
    report: dict[str, Any]

    @property
    def start(self) -> float:
        return parse_time(self.report["started_at"])


@dataclass
class RunData:
    run_dir: Path
    store: MetricsStore | None
    nodes: list[tuple[str, str, int]]
    scenarios: list[Scenario]
    subtests: list[Subtest]
    marks: list[Mark]
    gaps: list[Gap]
    sessions: list[Session]
    sources: list[Source]
    summaries: list[NodeSummary]
    netem: list[tuple[str, dict[str, Any]]]
    consoles: dict[str, str]
    journals: dict[str, str] = field(default_factory=dict)
    composition: str = ""
    run: dict[str, Any] = field(default_factory=dict)
    node_log: dict[str, list[str]] = field(default_factory=dict)
    driver_log: list[str] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0

    @property
    def interval(self) -> float:
        return self.sessions[-1].interval if self.sessions else 1.0

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _log_line(record: dict[str, Any]) -> str:
    when = dt.datetime.fromtimestamp(float(record.get("time", 0)), dt.UTC).strftime("%H:%M:%S.%f")
    attrs = record.get("attrs") or {}
    node = f"{attrs['node']}: " if isinstance(attrs, dict) and "node" in attrs else ""
    kind = record.get("kind")
    text = str(record.get("msg", ""))
    if kind == "end":
        verdict = "failed" if record.get("ok") is False else "finished"
        text = f"({verdict}: {text}, {record.get('duration', 0):.2f}s)"
    level = record.get("level", "info")
    prefix = f"{level}: " if level in ("warning", "error") else ""
    return f"{when[:-3]} {'  ' * int(record.get('depth', 0))}{node}{prefix}{text}"


def _scenarios(run_dir: Path) -> list[Scenario]:
    """Every scenario report of the run, oldest first."""
    candidates = [run_dir / "report.json", *sorted(run_dir.glob("driver/*/report.json"))]
    found = []
    for path in candidates:
        document = _read_json(path)
        if isinstance(document, dict) and document.get("nxc_report") == 1:
            session = path.parent.name if path.parent != run_dir else "run"
            found.append(Scenario(session, document))
    found.sort(key=lambda s: s.start)
    return found


def _consoles(run_dir: Path, nodes: list[tuple[str, str, int]]) -> dict[str, str]:
    consoles = {}
    for name, _role, _index in nodes:
        parts = []
        for suffix, title in ((".console.log.prev", "previous boot"), (".console.log", "")):
            path = run_dir / NODES_DIR / f"{name}{suffix}"
            if path.is_file():
                text = path.read_text(errors="replace")
                parts.append(f"--- {title} ---\n{text}" if title else text)
        if parts:
            consoles[name] = "".join(parts)
    return consoles


def _journals(run_dir: Path, nodes: list[tuple[str, str, int]]) -> dict[str, str]:
    """Each node's systemd journal, saved by ``nxc stop`` (nodes with systemd only)."""
    found = {}
    for name, _role, _index in nodes:
        path = run_dir / NODES_DIR / f"{name}.journal.log"
        if path.is_file():
            found[name] = path.read_text(errors="replace")
    return found


def load_run(run_dir: Path) -> RunData:
    """Read a run directory; raise :class:`NxcError` if it holds nothing to report."""
    if not run_dir.is_dir():
        raise NxcError(f"no run directory {run_dir}")
    metrics = run_dir / METRICS_FILE
    store = MetricsStore.open(metrics) if metrics.is_file() else None
    scenarios = _scenarios(run_dir)
    if store is None and not scenarios:
        raise NxcError(
            f"{run_dir}: nothing to report (no {METRICS_FILE}, no scenario report): "
            "run a scenario with `nxc driver -t` first"
        )
    nodes = store.nodes() if store is not None else []
    if not nodes:
        for scenario in scenarios:
            nodes = [(m["name"], m["role"], int(m["index"])) for m in scenario.report["machines"]]

    subtests = []
    node_log: dict[str, list[str]] = defaultdict(list)
    driver_log = []
    for scenario in scenarios:
        for item in scenario.report.get("subtests", []):
            error = item.get("error") or {}
            subtests.append(
                Subtest(
                    item["name"],
                    parse_time(item["started_at"]),
                    float(item.get("duration", 0)),
                    bool(item.get("success")),
                    str(error.get("message", "")) if isinstance(error, dict) else "",
                    scenario.session,
                )
            )
        if len(scenarios) > 1:
            driver_log.append(f"--- driver session {scenario.session} ---")
        for record in scenario.report.get("log", []):
            line = _log_line(record)
            driver_log.append(line)
            attrs = record.get("attrs") or {}
            if isinstance(attrs, dict) and attrs.get("node"):
                node_log[str(attrs["node"])].append(line)

    netem = []
    for path in sorted(run_dir.rglob("*.json")):
        if "report" in path.relative_to(run_dir).parts[:-1]:
            continue
        document = _read_json(path)
        if isinstance(document, dict) and document.get("nxc_netem_validation") == 1:
            netem.append((str(path.relative_to(run_dir)), document))

    run = _read_json(run_dir / "run.json")
    run = run if isinstance(run, dict) else {}
    manifest = _read_json(run_dir / "manifest.json")
    composition = run.get("composition") or (
        manifest.get("composition", "") if isinstance(manifest, dict) else ""
    )
    data = RunData(
        run_dir=run_dir,
        store=store,
        nodes=nodes,
        scenarios=scenarios,
        subtests=subtests,
        marks=store.marks() if store else [],
        gaps=[],
        sessions=store.sessions() if store else [],
        sources=store.sources() if store else [],
        summaries=[],
        netem=netem,
        consoles=_consoles(run_dir, nodes),
        journals=_journals(run_dir, nodes),
        composition=str(composition),
        run=run,
        node_log=dict(node_log),
        driver_log=driver_log,
    )
    if store is not None:
        scrapes = store.scrapes()
        errors = store.errors()
        data.gaps = find_gaps(scrapes, errors, data.sessions)
        data.summaries = _summaries(data, scrapes, errors)
    _time_span(data)
    return data


def _summaries(data: RunData, scrapes: list[Any], errors: list[Any]) -> list[NodeSummary]:
    sources = {s.node: s.detail for s in data.sources if s.job == NODE_JOB}
    by_node: dict[str, list[Any]] = defaultdict(list)
    for scrape in scrapes:
        if scrape.job == NODE_JOB:
            by_node[scrape.node].append(scrape)
    errors_by_node: dict[str, int] = defaultdict(int)
    for error in errors:
        if error.job == NODE_JOB and error.kind != "busy":
            errors_by_node[error.node] += 1
    out = []
    for name, role, _index in data.nodes:
        mine = by_node.get(name, [])
        out.append(
            NodeSummary(
                node=name,
                role=role,
                source=sources.get(name, "-"),
                scrapes=len(mine),
                samples=sum(s.samples for s in mine),
                median_scrape_ms=statistics.median(s.duration for s in mine) * 1000
                if mine
                else None,
                errors=errors_by_node.get(name, 0),
                gaps=sum(1 for g in data.gaps if g.node == name and g.job == NODE_JOB),
            )
        )
    return out


def _time_span(data: RunData) -> None:
    times: list[float] = []
    for session in data.sessions:
        times.append(session.started)
        if session.stopped is not None:
            times.append(session.stopped)
    if data.store is not None:
        times.extend(data.store.last_scrape_times().values())
    times.extend(s.start for s in data.subtests)
    times.extend(s.end for s in data.subtests)
    times.extend(m.t for m in data.marks)
    for scenario in data.scenarios:
        times.extend([scenario.start, scenario.start + float(scenario.report.get("duration", 0))])
    if times:
        data.start, data.end = min(times), max(times)
