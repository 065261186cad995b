"""What ``nxc runs`` and ``nxc runs show`` print: one row per run, or one run in
full (phases and timings, each driver session's result, where the files are)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nxc.runs import RunRecord, parse_time

__all__ = ["SessionResult", "duration_of", "run_row", "sessions", "show_lines"]


def duration_of(document: dict[str, Any]) -> float | None:
    """Seconds from start to stop (or failure); None while the run goes on."""
    end = document.get("stopped_at") or document.get("failed_at")
    try:
        return (parse_time(str(end)) - parse_time(document["started_at"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f}s"
    minutes, seconds = divmod(int(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def _when(text: str | None) -> str:
    if not text:
        return "-"
    try:
        return parse_time(text).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return text


def run_row(record: RunRecord, document: dict[str, Any]) -> dict[str, Any]:
    nodes = document.get("nodes") or []
    count = len(nodes) or sum((document.get("roles") or {}).values())
    return {
        "id": record.id,
        "composition": document.get("composition", "?"),
        "flavour": document.get("flavour", "?"),
        "status": document.get("status", "?"),
        "started": _when(document.get("started_at")),
        "duration": duration_of(document),
        "nodes": count,
    }


def row_cells(row: dict[str, Any]) -> list[str]:
    return [
        row["id"],
        row["composition"],
        row["flavour"],
        row["status"],
        row["started"],
        _seconds(row["duration"]),
        str(row["nodes"]),
    ]


@dataclass(frozen=True)
class SessionResult:
    """One driver session of a run: where it is, its command and its outcome."""

    directory: Path
    script: str | None  # None: an interactive session (no scenario run)
    success: bool | None
    duration: float | None
    subtests: int
    passed: int
    error: str | None
    command: list[str]

    def line(self) -> str:
        where = self.directory.name
        command = " ".join(self.command) if self.command else "?"
        if self.script is None:
            return f"{where}  interactive (no scenario)  [{command}]"
        verdict = "PASSED" if self.success else "FAILED"
        text = (
            f"{where}  {self.script}: {verdict} in {_seconds(self.duration)}, "
            f"{self.passed}/{self.subtests} subtests  [{command}]"
        )
        return text + (f"\n      {self.error}" if self.error else "")


def _report(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def sessions(record: RunRecord, document: dict[str, Any]) -> list[SessionResult]:
    commands = {
        c.get("dir"): list(c.get("argv", []))
        for c in document.get("commands", [])
        if c.get("what") == "driver"
    }
    found = []
    for directory in record.driver_dirs():
        report = _report(directory / "report.json")
        relative = str(directory.relative_to(record.directory))
        command = commands.get(relative, [])
        if report is None:
            found.append(SessionResult(directory, None, None, None, 0, 0, None, command))
            continue
        subtests = report.get("subtests") or []
        error = report.get("error") or {}
        found.append(
            SessionResult(
                directory=directory,
                script=str(report.get("script", "?")),
                success=bool(report.get("success")),
                duration=report.get("duration"),
                subtests=len(subtests),
                passed=sum(1 for s in subtests if s.get("success")),
                error=str(error.get("message")) if isinstance(error, dict) and error else None,
                command=command,
            )
        )
    return found


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _host_line(host: dict[str, Any]) -> str:
    parts = [
        str(host.get("cpu_model") or "unknown CPU"),
        f"{host.get('cores')} cores" if host.get("cores") else "",
        _human(host["memory_mb"] * 1024 * 1024) if host.get("memory_mb") else "",
        f"Linux {host.get('kernel')}" if host.get("kernel") else "",
        str(host.get("os") or ""),
        f"nix {host['nix_version']}" if host.get("nix_version") else "",
        f"accelerator {host['accelerator']}" if host.get("accelerator") else "",
    ]
    return ", ".join(p for p in parts if p)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def show_lines(record: RunRecord, document: dict[str, Any]) -> list[str]:
    """``nxc runs show``: the run in a page of plain text."""
    d = document
    lines = [
        f"run {record.id}: {d.get('composition')} on {d.get('flavour')}, {d.get('status')}",
        f"  started   {_when(d.get('started_at'))}  ({' '.join(d.get('command', []))})",
        f"  duration  {_seconds(duration_of(d))}",
    ]
    if d.get("error"):
        lines.append(f"  error     {d['error']}")
    roles = ", ".join(f"{r}={n}" for r, n in (d.get("roles") or {}).items())
    lines.append(f"  nodes     {' '.join(d.get('nodes') or []) or '-'} ({roles})")
    options = ", ".join(f"{k}={v}" for k, v in (d.get("options") or {}).items())
    if options:
        lines.append(f"  options   {options}")
    if d.get("host"):
        lines.append(f"  host      {_host_line(d['host'])}")
    lines.append(f"  nxc       {d.get('nxc_version')}")
    build = d.get("build")
    if build:
        command = " ".join(build.get("command", [])) or "?"
        lines.append(f"  build     {build.get('output')} -> {build.get('out_path')}  ({command})")
    inputs = _json(record.directory / "inputs.json")
    if isinstance(inputs, dict):
        for item in inputs.get("inputs", []):
            rev = (item.get("rev") or "")[:12] or "-"
            lines.append(
                f"  input     {item['name']}: {item.get('type')} {item.get('url')} "
                f"rev {rev} {item.get('nar_hash') or ''}".rstrip()
            )
    store = _json(record.directory / "store-paths.json")
    if isinstance(store, dict):
        paths = store.get("paths", [])
        total = sum(int(p.get("narSize", 0)) for p in paths)
        lines.append(f"  images    {len(paths)} store paths, {_human(total)} (store-paths.json)")
    g5k = d.get("grid5000")
    if g5k:
        jobs = ", ".join(f"{j['site']}:{j['id']}" for j in g5k.get("jobs", []))
        lines.append(f"  grid5000  jobs {jobs or '-'}")
        lines.append(f"            sites {', '.join(g5k.get('sites', [])) or '-'}")
        lines.append(f"            clusters {', '.join(g5k.get('clusters', [])) or '-'}")
        lines.append(f"            nodes {' '.join(g5k.get('nodes', [])) or '-'}")
    phases = d.get("phases") or []
    if phases:
        lines.append("phases")
        for phase in phases:
            mark = "" if phase.get("ok") else f"  FAILED: {phase.get('error', '')}"
            lines.append(f"  {phase['name']:<9} {phase['duration']:>8.2f}s{mark}")
    found = sessions(record, d)
    lines.append("driver sessions" + ("" if found else ": none"))
    lines += [f"  {s.line()}" for s in found]
    logs = d.get("logs") or {}
    if logs:
        lines.append("node logs")
        for node, entry in logs.items():
            console, journal = entry.get("console", "-"), entry.get("journal", "-")
            lines.append(f"  {node}: console {console}; journal {journal}")
    lines.append(f"files in {record.directory}")
    for path in sorted(record.directory.iterdir()):
        if path.name.startswith("."):
            continue
        suffix = "/" if path.is_dir() else ""
        lines.append(f"  {path.name + suffix:<24} {_human(_size(path))}")
    for note in d.get("notes") or []:
        lines.append(f"note: {note}")
    return lines
