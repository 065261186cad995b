"""The monitoring part of the command line: ``nxc monitor``, ``nxc report`` and the
``--no-monitor`` / ``--monitor-interval`` options of ``nxc start`` and ``nxc driver``.

Kept apart from ``nxc/cli.py`` (which only registers these commands and adds the two
options) so that the monitoring front end changes in one place. Heavy imports
(matplotlib, the scraper) happen inside the commands.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from nxc.errors import NxcError

__all__ = ["monitor_cmd", "monitor_options", "monitor_settings", "report_cmd"]

F = TypeVar("F", bound=Callable[..., Any])


def monitor_options(function: F) -> F:
    """Add ``--no-monitor`` and ``--monitor-interval`` to a command."""
    function = click.option(
        "--monitor-interval",
        type=float,
        default=1.0,
        show_default=True,
        metavar="SECONDS",
        help="Seconds between two scrapes of every node's metrics.",
    )(function)
    function = click.option(
        "--no-monitor", is_flag=True, help="Do not scrape the nodes' metrics during the run."
    )(function)
    return function


def monitor_settings(no_monitor: bool, interval: float) -> Any:
    """The :class:`~nxc.monitor.hook.MonitorOptions` the two options ask for."""
    from nxc.monitor.hook import MonitorOptions

    return MonitorOptions(enabled=not no_monitor, interval=interval)


def _project(directory: str | None) -> Any:
    from nxc.project import Project

    return Project.find(Path(directory) if directory else None)


_project_option = click.option(
    "-p",
    "--project",
    "project_dir",
    metavar="DIR",
    help="Composition directory (default: nearest directory with a flake.nix).",
)


@click.command("monitor")
@_project_option
@click.option(
    "-i", "--interval", type=float, default=1.0, show_default=True, metavar="SECONDS",
    help="Refresh (and, when nxc monitor scrapes itself, scrape) period.",
)  # fmt: skip
@click.option("--once", is_flag=True, help="Print the table once and exit.")
@click.option("-d", "--duration", type=float, metavar="SECONDS", help="Exit after SECONDS.")
def monitor_cmd(
    project_dir: str | None, interval: float, once: bool, duration: float | None
) -> None:
    """Live view of the running nodes: CPU, memory, network rates (Ctrl-C to quit).

    While a driver runs (nxc driver, nxc start -t/-I) the view follows what it scrapes
    into the run's metrics.sqlite; otherwise nxc monitor scrapes the nodes itself (and
    records it in the same file).

    \b
    Examples:
      nxc monitor                 # until Ctrl-C
      nxc monitor --once          # one table (after a first scrape round)
      nxc monitor -i 2 -d 60
    """
    from rich.console import Console

    from nxc.monitor.hook import METRICS_FILE, MonitorOptions, active_session
    from nxc.monitor.live import render, snapshot, watch
    from nxc.monitor.store import MetricsStore
    from nxc.running import running

    if interval <= 0:
        raise NxcError(f"--interval must be positive, got {interval:g}")
    current = running(_project(project_dir))
    title = f"deployment {current.deployment.id} ({current.deployment.flavour})"
    console = Console()
    path = current.run_dir / METRICS_FILE
    if path.is_file():
        store = MetricsStore.open(path)
        try:
            writer = active_session(store)
            if writer is not None:
                title += f" · scraped every {writer.interval:g}s by process {writer.pid}"
                if once:
                    console.print(
                        render(snapshot(store, window=max(15, 5 * writer.interval)), title)
                    )
                    return
                _watch(
                    lambda: watch(
                        store,
                        title,
                        interval,
                        console=console,
                        duration=duration,
                        keep_going=lambda: active_session(store) is not None,
                    )
                )
                if active_session(store) is None:
                    click.echo(
                        f"the driver (process {writer.pid}) stopped scraping; "
                        "run nxc monitor again to scrape the nodes from here",
                        err=True,
                    )
                return
        finally:
            store.close()

    from nxc.driver.session import open_driver

    with open_driver(current, monitor=MonitorOptions(True, interval)) as driver:
        watcher = driver.extra_globals["monitor"]
        title += f" · scraped every {interval:g}s by this process"
        if once:
            # CPU % and rates need two scrapes.
            watcher.sync()
            watcher.sync()
            console.print(render(snapshot(watcher.store, window=max(15, 5 * interval)), title))
            return
        _watch(lambda: watch(watcher.store, title, interval, console=console, duration=duration))


def _watch(run: Callable[[], None]) -> None:
    try:
        run()
    except KeyboardInterrupt:
        click.echo("", err=True)


@click.command("report")
@_project_option
@click.option(
    "-o", "--output", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
    help="Write the report there (default: RUN/report/).",
)  # fmt: skip
@click.argument("run", required=False)
def report_cmd(project_dir: str | None, output: Path | None, run: str | None) -> None:
    """Write PNG plots and a self-contained HTML page for a run.

    RUN is a run id (a directory of .nxc/runs/) or a run directory; default: the
    running deployment's run, else the latest run.

    \b
    Examples:
      nxc report                        # the current (or latest) run
      nxc report selftest-3f2a1c -o /tmp/report
      nxc report /path/to/run-record
    """
    from nxc.monitor.report import write_report

    run_dir = _run_dir(project_dir, run)
    files = write_report(run_dir, output)
    for image in files.images:
        click.echo(f"plot: {image}")
    click.echo(f"report: {files.html}")


def _run_dir(project_dir: str | None, run: str | None) -> Path:
    if run is not None:
        path = Path(run)
        if path.is_dir() and ("/" in run or run in (".", "..")):
            return path
        project = _project(project_dir)
        candidate = Path(project.runs_dir) / run
        if candidate.is_dir():
            return candidate
        if path.is_dir():
            return path
        known = ", ".join(sorted(p.name for p in _runs(project.runs_dir))) or "none"
        raise NxcError(f"no run {run!r} in {project.runs_dir} (runs: {known})")
    project = _project(project_dir)
    if project.deployment_file.exists():
        from nxc.running import running

        return Path(running(project).run_dir)
    runs = _runs(project.runs_dir)
    if not runs:
        raise NxcError(f"no run in {project.runs_dir} (start one with 'nxc start')")
    return max(runs, key=lambda p: p.stat().st_mtime)


def _runs(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.is_dir()] if directory.is_dir() else []
