"""Pure computations on stored samples: rates, CPU %, memory in use, gaps.

Everything here takes lists of :class:`~nxc.monitor.store.Sample` (or scrape and error
records) and returns plain typed values, so the live view, the report and scenarios
compute the same numbers the same way, and tests check them without a node.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from nxc.monitor.store import FAILURE_KINDS, Sample, ScrapeError, ScrapeRecord, Session

__all__ = [
    "IDLE_MODES",
    "Gap",
    "Point",
    "counter_increase",
    "counter_rate",
    "cpu_busy_percent",
    "find_gaps",
    "gauge",
    "memory_used",
    "network_devices",
]

# CPU modes that count as not busy (iowait: idle while waiting for I/O, as top counts it).
IDLE_MODES = frozenset({"idle", "iowait"})


class Point(NamedTuple):
    t: float
    value: float


def _by_series(samples: Iterable[Sample]) -> dict[tuple[tuple[str, str], ...], list[Sample]]:
    groups: dict[tuple[tuple[str, str], ...], list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[(("node", sample.node), *sorted(sample.labels.items()))].append(sample)
    for group in groups.values():
        group.sort(key=lambda s: s.t)
    return groups


def gauge(samples: Iterable[Sample]) -> list[Point]:
    """The values of one gauge series over time (summed if several series share a time)."""
    totals: dict[float, float] = defaultdict(float)
    for sample in samples:
        totals[sample.t] += sample.value
    return [Point(t, v) for t, v in sorted(totals.items())]


def counter_rate(samples: Iterable[Sample]) -> list[Point]:
    """Per-second rate of counters, summed over the series given, at each scrape time.

    A rate is computed per series between consecutive samples; a decrease (the counter
    was reset: the node rebooted) gives no rate for that interval. A time at which only
    some series have a rate sums those.
    """
    totals: dict[float, float] = defaultdict(float)
    for series in _by_series(samples).values():
        for before, after in itertools.pairwise(series):
            dt = after.t - before.t
            if dt <= 0 or after.value < before.value:
                continue
            totals[after.t] += (after.value - before.value) / dt
    return [Point(t, v) for t, v in sorted(totals.items())]


def counter_increase(samples: Iterable[Sample]) -> float:
    """How much the counters grew over the samples given, summed over their series.

    A decrease means a reset: the value after it counts from zero (as Prometheus'
    ``increase`` does).
    """
    total = 0.0
    for series in _by_series(samples).values():
        for before, after in itertools.pairwise(series):
            total += after.value - before.value if after.value >= before.value else after.value
    return total


def cpu_busy_percent(samples: Iterable[Sample]) -> list[Point]:
    """Busy CPU % of one node (all its CPUs together) between consecutive scrapes.

    ``samples`` are that node's ``node_cpu_seconds_total``; busy is every mode but idle
    and iowait, as a share of all time the CPUs accounted, so that the number does not
    depend on how exactly the scrapes were spaced.
    """
    total: dict[float, float] = defaultdict(float)
    idle: dict[float, float] = defaultdict(float)
    for sample in samples:
        total[sample.t] += sample.value
        if sample.labels.get("mode") in IDLE_MODES:
            idle[sample.t] += sample.value
    times = sorted(total)
    points = []
    for before, after in itertools.pairwise(times):
        d_total = total[after] - total[before]
        d_idle = idle[after] - idle[before]
        if d_total <= 0 or d_idle < 0:
            continue  # reset (reboot) or no time accounted
        points.append(Point(after, max(0.0, min(100.0, 100.0 * (1 - d_idle / d_total)))))
    return points


def memory_used(total: Sequence[Sample], available: Sequence[Sample]) -> list[Point]:
    """MemTotal - MemAvailable (bytes) at each time both were sampled."""
    avail = {s.t: s.value for s in available}
    return [Point(s.t, s.value - avail[s.t]) for s in total if s.t in avail]


def network_devices(samples: Iterable[Sample], include_loopback: bool = False) -> list[str]:
    """The NICs named in network samples (``lo`` left out unless asked)."""
    names = {s.labels.get("device", "") for s in samples}
    return sorted(n for n in names if n and (include_loopback or n != "lo"))


@dataclass(frozen=True)
class Gap:
    """A time a node did not answer: from ``first_failure`` to ``recovered`` (or never).

    ``last_ok`` is when it last answered before (None: not in that session),
    ``recovered`` when it answered again;
    ``kind`` and ``message`` are those of the first failure.
    """

    node: str
    job: str
    last_ok: float | None
    first_failure: float
    recovered: float | None
    failures: int
    kind: str
    message: str
    recording_ended: float | None = None  # the scraping session ended before it answered

    def end(self, default: float) -> float:
        """When the gap ended: the answer, else the end of its recording, else ``default``."""
        for candidate in (self.recovered, self.recording_ended):
            if candidate is not None:
                return candidate
        return default

    def duration(self, end: float) -> float:
        return self.end(end) - self.first_failure


def find_gaps(
    scrapes: Sequence[ScrapeRecord],
    errors: Sequence[ScrapeError],
    sessions: Sequence[Session] = (),
) -> list[Gap]:
    """Spans where a node failed to answer, per node and job, in time order.

    A gap opens at the first failure after a success (kinds in ``FAILURE_KINDS``; busy
    ticks do not count) and closes at the next success; the end of a scraping session
    ends a gap too (nobody was asking), recorded as not recovered.
    """
    events: dict[tuple[str, str], list[tuple[float, bool, ScrapeError | None]]] = defaultdict(list)
    for scrape in scrapes:
        events[(scrape.node, scrape.job)].append((scrape.t, True, None))
    for error in errors:
        if error.kind in FAILURE_KINDS:
            events[(error.node, error.job)].append((error.t, False, error))
    ends = sorted(s.stopped for s in sessions if s.stopped is not None)
    gaps: list[Gap] = []
    for (node, job), items in sorted(events.items()):
        items.sort(key=lambda item: item[0])
        last_ok: float | None = None
        current: tuple[float, int, ScrapeError] | None = None  # first failure, count, error
        for t, ok, failure in items:
            closing = [end for end in ends if current is not None and current[0] <= end < t]
            if current is not None and closing:
                first, count, err = current
                gaps.append(
                    Gap(node, job, last_ok, first, None, count, err.kind, err.message, closing[0])
                )
                current = None
                last_ok = None
            if ok:
                if current is not None:
                    first, count, err = current
                    gaps.append(Gap(node, job, last_ok, first, t, count, err.kind, err.message))
                    current = None
                last_ok = t
            elif failure is not None:
                if current is None:
                    current = (t, 1, failure)
                else:
                    current = (current[0], current[1] + 1, current[2])
        if current is not None:
            first, count, err = current
            after = [end for end in ends if end >= first]
            gaps.append(
                Gap(
                    node, job, last_ok, first, None, count, err.kind, err.message,
                    after[0] if after else None,
                )
            )  # fmt: skip
    gaps.sort(key=lambda g: (g.first_failure, g.node))
    return gaps


def finite(points: Iterable[Point]) -> list[Point]:
    """The points whose value is a number (NaN and infinities dropped)."""
    return [p for p in points if math.isfinite(p.value)]
