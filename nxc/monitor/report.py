"""``nxc report``: PNG plots and one self-contained HTML page for a run.

The page embeds its plots as ``data:`` URIs and its style inline: it loads nothing from
anywhere, so it opens from a file (or an e-mail, or an archive) without a server.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jinja2

from nxc import __version__
from nxc.fsutil import atomic_write
from nxc.monitor.hook import METRICS_FILE
from nxc.monitor.live import human_bytes
from nxc.monitor.rundata import RunData, load_run, parse_time

__all__ = ["REPORT_DIR", "ReportFiles", "render_html", "write_report"]

REPORT_DIR = "report"
_TITLES = {
    "cpu.png": "CPU busy per node",
    "memory.png": "Memory in use per node",
    "network.png": "Network throughput per node",
}


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    images: list[Path]


def _fmt_time(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%H:%M:%S.%f")[:-3] + " UTC"


@dataclass(frozen=True)
class _Phase:
    name: str
    at: str
    offset: float  # seconds after the run started
    duration: float | None
    ok: bool
    error: str


def _run_phases(run: dict[str, Any]) -> list[_Phase]:
    """The start phases the run record timed (check, record, expand, acquire, launch,
    ready, netem), then its status changes (running, stopped, failed), in time order."""
    rows: list[tuple[float, _Phase]] = []
    for phase in run.get("phases", []):
        try:
            when = parse_time(str(phase["started_at"]))
        except (KeyError, ValueError):
            continue
        duration = phase.get("duration")
        ok = bool(phase.get("ok", True))
        item = _Phase(
            str(phase.get("name", "?")),
            str(phase["started_at"]),
            0.0,
            float(duration) if duration is not None else None,
            ok,
            str(phase.get("error", "")),
        )
        rows.append((when, item))
    for key in ("started_at", "running_at", "stopped_at", "failed_at"):
        value = run.get(key)
        if isinstance(value, str):
            try:
                when = parse_time(value)
            except ValueError:
                continue
            name = key[: -len("_at")]
            rows.append((when, _Phase(f"status: {name}", value, 0.0, None, name != "failed", "")))
    if not rows:
        return []
    first = min(when for when, _ in rows)
    rows.sort(key=lambda row: row[0])
    return [replace(item, offset=when - first) for when, item in rows]


def render_html(data: RunData, images: list[Path]) -> str:
    """The report page for ``data`` with ``images`` embedded."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = environment.get_template("report.html.j2")
    plots = [
        {
            "name": path.name,
            "title": _TITLES.get(path.name, path.stem),
            "data": base64.b64encode(path.read_bytes()).decode("ascii"),
        }
        for path in images
    ]
    store = data.store
    summaries = data.summaries
    context: dict[str, Any] = {
        "version": __version__,
        "run_id": data.run_dir.name,
        "composition": data.composition,
        "nodes": data.nodes,
        "start": data.start,
        "end": data.end,
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "scenarios": [
            {"session": s.session, **s.report, "subtests": s.report.get("subtests", [])}
            for s in data.scenarios
        ],
        "several_sessions": len(data.scenarios) > 1,
        "run": data.run,
        "subtests": data.subtests,
        "summaries": summaries,
        "interval": data.interval,
        "total_samples": sum(s.samples for s in summaries),
        "metrics_file": METRICS_FILE,
        "metrics_size": human_bytes(store.size()) if store is not None else "-",
        "gaps": data.gaps,
        "marks": data.marks,
        "plots": plots,
        "netem": data.netem,
        "driver_log": data.driver_log,
        "node_log": data.node_log,
        "consoles": data.consoles,
        "journals": data.journals,
        "fmt_time": _fmt_time,
        "run_phases": _run_phases,
    }
    return template.render(context)


def write_report(run_dir: Path, out_dir: Path | None = None) -> ReportFiles:
    """Write the plots and ``index.html`` of the run in ``run_dir`` (default output:
    ``run_dir/report/``)."""
    from nxc.monitor.plots import plot_all  # matplotlib: only when a report is made

    target = out_dir if out_dir is not None else run_dir / REPORT_DIR
    data = load_run(run_dir)
    try:
        images = plot_all(data, target)
        html = render_html(data, images)
    finally:
        data.close()
    target.mkdir(parents=True, exist_ok=True)
    page = target / "index.html"
    atomic_write(page, html)
    return ReportFiles(page, images)
