"""PNG plots of a run with matplotlib (Agg: no display needed).

Per node over time: CPU busy %, memory in use, network throughput (received and sent,
every NIC but lo). On each plot: the scenario's subtests as shaded spans, its marks as
dashed lines, and the times a node did not answer as red spans. Lines break where
samples are missing rather than drawing across a gap.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: never try to open a display

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from nxc.monitor.rundata import RunData
from nxc.monitor.series import (
    Point,
    counter_rate,
    cpu_busy_percent,
    memory_used,
    network_devices,
)
from nxc.monitor.store import MetricsStore, Sample

__all__ = ["PLOTS", "plot_all"]

_SUBTEST_COLOURS = ("#4c72b0", "#55a868")


def _by_node(samples: list[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.node].append(sample)
    return groups


def _broken(points: Sequence[Point], max_step: float) -> tuple[list[float], list[float]]:
    """x, y lists with a NaN wherever two points are further apart than ``max_step``."""
    xs: list[float] = []
    ys: list[float] = []
    previous: float | None = None
    for t, value in points:
        if previous is not None and t - previous > max_step:
            xs.append(previous + (t - previous) / 2)
            ys.append(math.nan)
        xs.append(t)
        ys.append(value)
        previous = t
    return xs, ys


def _scale(peak: float, units: Sequence[tuple[float, str]]) -> tuple[float, str]:
    chosen = units[0]
    for factor, name in units:
        if peak >= factor:
            chosen = (factor, name)
    return chosen


def _annotate(ax: Axes, data: RunData, top: bool) -> None:
    """Subtests, marks and gaps on the time axis (labels only on the top axes)."""
    start = data.start
    label_y = 1.0
    for i, subtest in enumerate(data.subtests):
        colour = _SUBTEST_COLOURS[i % 2] if subtest.success else "#c44e52"
        ax.axvspan(subtest.start - start, subtest.end - start, color=colour, alpha=0.08, lw=0)
        if top:
            ax.text(
                subtest.start - start,
                label_y,
                f" {subtest.name}" + ("" if subtest.success else " ✗"),
                transform=ax.get_xaxis_transform(),
                fontsize=7,
                va="bottom",
                ha="left",
                rotation=20,
                color=colour,
                clip_on=False,
            )
    for i, mark in enumerate(data.marks):
        ax.axvline(mark.t - start, color="#555555", ls="--", lw=0.8)
        if top:
            ax.text(
                mark.t - start,
                0.98 - 0.08 * (i % 3),  # staggered: close marks keep readable labels
                f" {mark.label}",
                transform=ax.get_xaxis_transform(),
                fontsize=7,
                va="top",
                ha="left",
                color="#333333",
            )
    for gap in data.gaps:
        end = gap.end(data.end)
        ax.axvspan(gap.first_failure - start, end - start, color="#d62728", alpha=0.15, lw=0)
        if top:
            ax.text(
                gap.first_failure - start,
                0.5,
                f" {gap.node}: no answer",
                transform=ax.get_xaxis_transform(),
                fontsize=7,
                color="#d62728",
                rotation=90,
                va="center",
            )


def _figure(rows: int, data: RunData, title: str) -> tuple[Figure, list[Axes]]:
    fig, axes = plt.subplots(rows, 1, figsize=(10, 3.2 * rows), sharex=True, squeeze=False)
    flat = [row[0] for row in axes]
    fig.suptitle(title, fontsize=11, y=0.995)
    when = dt.datetime.fromtimestamp(data.start, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    flat[-1].set_xlabel(f"seconds since {when}")
    for ax in flat:
        ax.grid(True, alpha=0.3)
        ax.set_xlim(0, max(1.0, data.end - data.start))
    return fig, flat


def _lines(
    ax: Axes, series: dict[str, list[Point]], data: RunData, factor: float, style: str = "-"
) -> None:
    step = max(2.5 * data.interval, data.interval + 2.0)
    for node, _role, _index in data.nodes:
        points = series.get(node)
        if not points:
            continue
        xs, ys = _broken(points, step)
        ax.plot([x - data.start for x in xs], [y / factor for y in ys], style, lw=1.2, label=node)


def _legend(ax: Axes, count: int) -> None:
    if count:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_cpu(store: MetricsStore, data: RunData, path: Path) -> Path:
    per_node = {
        node: cpu_busy_percent(samples)
        for node, samples in _by_node(store.samples("node_cpu_seconds_total")).items()
    }
    fig, (ax,) = _figure(1, data, "CPU busy (all CPUs of each node)")
    _lines(ax, per_node, data, 1.0)
    ax.set_ylabel("busy %")
    ax.set_ylim(0, 105)
    _annotate(ax, data, top=True)
    _legend(ax, len(per_node))
    return _save(fig, path)


def plot_memory(store: MetricsStore, data: RunData, path: Path) -> Path:
    total = _by_node(store.samples("node_memory_MemTotal_bytes"))
    avail = _by_node(store.samples("node_memory_MemAvailable_bytes"))
    per_node = {node: memory_used(total[node], avail.get(node, [])) for node in total}
    peak = max((p.value for points in per_node.values() for p in points), default=0.0)
    factor, unit = _scale(
        peak, [(1.0, "B"), (1024.0, "KiB"), (1024.0**2, "MiB"), (1024.0**3, "GiB")]
    )
    fig, (ax,) = _figure(1, data, "Memory in use (MemTotal - MemAvailable)")
    _lines(ax, per_node, data, factor)
    ax.set_ylabel(unit)
    ax.set_ylim(bottom=0)
    _annotate(ax, data, top=True)
    _legend(ax, len(per_node))
    return _save(fig, path)


def _network(store: MetricsStore, metric: str) -> dict[str, list[Point]]:
    out = {}
    for node, samples in _by_node(store.samples(metric)).items():
        devices = set(network_devices(samples))
        out[node] = counter_rate([s for s in samples if s.labels.get("device") in devices])
    return out


def plot_network(store: MetricsStore, data: RunData, path: Path) -> Path:
    received = _network(store, "node_network_receive_bytes_total")
    sent = _network(store, "node_network_transmit_bytes_total")
    peak = max((p.value for s in (received, sent) for pts in s.values() for p in pts), default=0.0)
    factor, unit = _scale(peak, [(1.0, "B/s"), (1e3, "kB/s"), (1e6, "MB/s"), (1e9, "GB/s")])
    fig, axes = _figure(2, data, "Network throughput (every NIC but lo)")
    for ax, series, what in ((axes[0], received, "received"), (axes[1], sent, "sent")):
        _lines(ax, series, data, factor)
        ax.set_ylabel(f"{what}, {unit}")
        ax.set_ylim(bottom=0)
        _annotate(ax, data, top=ax is axes[0])
        _legend(ax, len(series))
    return _save(fig, path)


PLOTS: dict[str, Callable[[MetricsStore, RunData, Path], Path]] = {
    "cpu.png": plot_cpu,
    "memory.png": plot_memory,
    "network.png": plot_network,
}


def plot_all(data: RunData, out_dir: Path) -> list[Path]:
    """Write every plot into ``out_dir``; none without a metrics store."""
    if data.store is None:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    return [plot(data.store, data, out_dir / name) for name, plot in PLOTS.items()]
