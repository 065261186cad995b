"""``nxc monitor``: a live table of the cluster, read from the run's metrics store.

The view only reads ``metrics.sqlite``: whoever scrapes (a driver running a scenario, or
``nxc monitor`` itself) writes there, so the view shows the same numbers the report
will, and never needs its own channel to the nodes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from nxc.monitor.series import (
    Point,
    counter_rate,
    cpu_busy_percent,
    memory_used,
    network_devices,
)
from nxc.monitor.store import FAILURE_KINDS, NODE_JOB, MetricsStore, Sample

__all__ = ["NodeView", "human_bytes", "render", "snapshot", "watch"]


@dataclass(frozen=True)
class NodeView:
    """One node's line: latest CPU %, memory, network rates and whether it answers."""

    node: str
    role: str
    answering: bool | None  # None: no scrape yet
    failing_since: float | None
    reason: str
    cpu_percent: float | None
    memory_used: float | None
    memory_total: float | None
    rx_rate: float | None  # bytes/s over every NIC but lo
    tx_rate: float | None
    last_scrape: float | None
    source: str


def _by_node(samples: list[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.node].append(sample)
    return groups


def _last(points: Sequence[Point]) -> float | None:
    return points[-1][1] if points else None


def snapshot(store: MetricsStore, now: float | None = None, window: float = 15.0) -> list[NodeView]:
    """Every node's latest numbers, from the samples of the last ``window`` seconds."""
    now = time.time() if now is None else now
    since = now - window
    cpu = _by_node(store.samples("node_cpu_seconds_total", since=since))
    total = _by_node(store.samples("node_memory_MemTotal_bytes", since=since))
    avail = _by_node(store.samples("node_memory_MemAvailable_bytes", since=since))
    rx = _by_node(store.samples("node_network_receive_bytes_total", since=since))
    tx = _by_node(store.samples("node_network_transmit_bytes_total", since=since))
    last = store.last_scrape_times()
    sources = {s.node: s.detail for s in store.sources() if s.job == NODE_JOB}
    views = []
    for node, role, _index in store.nodes():
        last_ok = last.get(node)
        failures = [
            e
            for e in store.errors(node, NODE_JOB, since=last_ok)
            if e.kind in FAILURE_KINDS and (last_ok is None or e.t > last_ok)
        ]
        answering = (not failures) if (failures or last_ok) else None
        devices = network_devices(rx.get(node, []))

        def rate(samples: list[Sample], devices: list[str] = devices) -> float | None:
            chosen = [s for s in samples if s.labels.get("device") in devices]
            return _last(counter_rate(chosen))

        totals = total.get(node, [])
        views.append(
            NodeView(
                node=node,
                role=role,
                answering=answering,
                failing_since=failures[0].t if failures else None,
                reason=f"{failures[-1].kind}: {failures[-1].message}" if failures else "",
                cpu_percent=_last(cpu_busy_percent(cpu.get(node, []))),
                memory_used=_last(memory_used(totals, avail.get(node, []))),
                memory_total=totals[-1].value if totals else None,
                rx_rate=rate(rx.get(node, [])),
                tx_rate=rate(tx.get(node, [])),
                last_scrape=last_ok,
                source=sources.get(node, ""),
            )
        )
    return views


def human_bytes(value: float | None, suffix: str = "B") -> str:
    if value is None:
        return "-"
    for unit in ("", "Ki", "Mi", "Gi", "Ti"):
        if abs(value) < 1024 or unit == "Ti":
            return f"{value:.0f} {unit}{suffix}" if unit == "" else f"{value:.1f} {unit}{suffix}"
        value /= 1024
    return f"{value:.1f} Ti{suffix}"  # not reached


def _cpu_cell(value: float | None) -> Text:
    if value is None:
        return Text("-")
    width = 10
    filled = round(value / 100 * width)
    style = "green" if value < 50 else "yellow" if value < 85 else "red"
    return Text("█" * filled + "·" * (width - filled) + f" {value:5.1f}%", style=style)


def render(views: list[NodeView], title: str, now: float | None = None) -> Table:
    now = time.time() if now is None else now
    table = Table(title=title, title_justify="left")
    for column, justify in (
        ("node", "left"),
        ("role", "left"),
        ("CPU", "left"),
        ("memory used", "right"),
        ("rx", "right"),
        ("tx", "right"),
        ("last scrape", "right"),
        ("state", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for view in views:
        if view.answering is None:
            state = Text("waiting for a first scrape", style="dim")
        elif view.answering:
            state = Text("ok", style="green")
        else:
            since = now - (view.failing_since or now)
            state = Text(f"no answer for {since:.0f}s ({view.reason})"[:80], style="bold red")
        memory = (
            f"{human_bytes(view.memory_used)} / {human_bytes(view.memory_total)}"
            if view.memory_used is not None
            else "-"
        )
        age = f"{now - view.last_scrape:.1f}s ago" if view.last_scrape is not None else "-"
        table.add_row(
            view.node,
            view.role,
            _cpu_cell(view.cpu_percent),
            memory,
            human_bytes(view.rx_rate, "B/s"),
            human_bytes(view.tx_rate, "B/s"),
            age,
            state,
        )
    return table


def watch(
    store: MetricsStore,
    title: str,
    refresh: float,
    *,
    console: Console | None = None,
    duration: float | None = None,
    keep_going: Callable[[], bool] | None = None,
) -> None:
    """Redraw the table every ``refresh`` seconds until Ctrl-C, ``duration`` or
    ``keep_going()`` turns false. On a terminal the table is redrawn in place; otherwise
    one table is printed per refresh.
    """
    out = console or Console()
    deadline = None if duration is None else time.monotonic() + duration
    window = max(15.0, 5 * refresh)

    def going() -> bool:
        if deadline is not None and time.monotonic() >= deadline:
            return False
        return keep_going() if keep_going is not None else True

    if not out.is_terminal:
        while going():
            out.print(render(snapshot(store, window=window), title))
            time.sleep(refresh)
        return
    with Live(
        render(snapshot(store, window=window), title), console=out, auto_refresh=False
    ) as live:
        while going():
            time.sleep(refresh)
            live.update(render(snapshot(store, window=window), title), refresh=True)
