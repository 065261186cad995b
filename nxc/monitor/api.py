"""``monitor``: what scenarios (and the interactive shell) use of the monitoring.

    monitor.mark("phase 2")                                   # a mark on the time axis
    t0 = monitor.mark("load").t
    busy = monitor.cpu_percent(server, since=t0)              # [Point(t, %), ...]
    sent = monitor.increase(client1, "node_network_transmit_bytes_total",
                            since=t0, labels={"device": "eth0"})
    rows = monitor.query("server1", "node_load1", since=t0)   # [Sample(...), ...]
    monitor.scrape("server", 8080)                            # the app's own /metrics too
    monitor.sync()                                            # wait for fresh samples

Results are lists of frozen dataclasses (:class:`~nxc.monitor.store.Sample`,
:class:`~nxc.monitor.series.Point`): no pandas needed. With pandas installed,
``pandas.DataFrame(monitor.query(...))`` makes a frame of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from nxc.errors import NxcError
from nxc.log import Logger
from nxc.log import log as default_log
from nxc.monitor.scraper import Endpoint, Scraper
from nxc.monitor.series import (
    Gap,
    Point,
    counter_increase,
    counter_rate,
    cpu_busy_percent,
    find_gaps,
)
from nxc.monitor.store import NODE_JOB, Mark, MetricsStore, Sample

__all__ = ["Monitor"]


class _Named(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...


def _name(node: Any) -> str:
    """A node given by name or as a Machine."""
    return node if isinstance(node, str) else str(node.name)


def _time(since: float | Mark | None) -> float | None:
    return since.t if isinstance(since, Mark) else since


class Monitor:
    """The run's metrics, seen from a scenario (see the module docs).

    ``scraper`` is None when monitoring is off (``--no-monitor``): marks are still
    recorded, queries see whatever an earlier session stored.
    """

    def __init__(
        self,
        store: MetricsStore,
        scraper: Scraper | None,
        nodes: Sequence[_Named],
        logger: Logger | None = None,
    ) -> None:
        self.store = store
        self.scraper = scraper
        self._roles = {n.name: n.role for n in nodes}
        self.logger = logger if logger is not None else default_log

    def __repr__(self) -> str:
        state = f"every {self.interval:g}s" if self.enabled else "off"
        return f"<Monitor {state}, {len(self._roles)} nodes, {self.store.path}>"

    @property
    def enabled(self) -> bool:
        return self.scraper is not None and self.scraper.running

    @property
    def interval(self) -> float:
        return self.scraper.interval if self.scraper is not None else 0.0

    def _check_node(self, node: Any) -> str:
        name = _name(node)
        if name not in self._roles:
            known = ", ".join(sorted(self._roles)) or "none"
            raise NxcError(f"monitor: no node named {name!r} (nodes: {known})")
        return name

    # -- marks ---------------------------------------------------------------------

    def mark(self, label: str, node: Any = None) -> Mark:
        """Record ``label`` at this instant (shown on the report's time axis)."""
        name = self._check_node(node) if node is not None else None
        mark = self.store.add_mark(str(label), node=name)
        self.logger.info(f"monitor: mark {label!r}", **({"node": name} if name else {}))
        return mark

    def marks(self) -> list[Mark]:
        return self.store.marks()

    # -- queries -------------------------------------------------------------------

    def query(
        self,
        node: Any,
        metric: str,
        since: float | Mark | None = None,
        labels: Mapping[str, str] | None = None,
        *,
        until: float | Mark | None = None,
        job: str = NODE_JOB,
    ) -> list[Sample]:
        """Stored samples of ``metric`` on ``node`` (name or Machine), oldest first.

        ``since``/``until``: epoch seconds or a :class:`Mark`; ``labels``: keep series
        with at least these label values; ``job``: ``node`` or an endpoint's name.
        """
        return self.store.samples(
            metric,
            self._check_node(node),
            since=_time(since),
            until=_time(until),
            labels=labels,
            job=job,
        )

    def _window(
        self,
        node: Any,
        metric: str,
        since: float | Mark | None,
        labels: Mapping[str, str] | None,
        until: float | Mark | None,
        job: str,
    ) -> list[Sample]:
        """The samples in the window plus, per series, the last one before it."""
        return self.store.samples(
            metric,
            self._check_node(node),
            since=_time(since),
            until=_time(until),
            labels=labels,
            job=job,
            previous=True,
        )

    def rate(
        self,
        node: Any,
        metric: str,
        since: float | Mark | None = None,
        labels: Mapping[str, str] | None = None,
        *,
        until: float | Mark | None = None,
        job: str = NODE_JOB,
    ) -> list[Point]:
        """Per-second rate of a counter (summed over the matching series) over time.

        The first rate in the window is computed from the last sample before it.
        """
        return counter_rate(self._window(node, metric, since, labels, until, job))

    def increase(
        self,
        node: Any,
        metric: str,
        since: float | Mark | None = None,
        labels: Mapping[str, str] | None = None,
        *,
        until: float | Mark | None = None,
        job: str = NODE_JOB,
    ) -> float:
        """How much a counter grew between ``since`` and ``until`` (resets accounted).

        Counted from the last sample before ``since`` to the last one before ``until``,
        so that a window between two scrapes still sees what happened in it.
        """
        return counter_increase(self._window(node, metric, since, labels, until, job))

    def cpu_percent(
        self, node: Any, since: float | Mark | None = None, *, until: float | Mark | None = None
    ) -> list[Point]:
        """Busy CPU % of ``node`` between consecutive scrapes (the first from the last
        scrape before ``since``)."""
        return cpu_busy_percent(
            self._window(node, "node_cpu_seconds_total", since, None, until, NODE_JOB)
        )

    def metrics(self, node: Any = None, job: str = NODE_JOB) -> list[str]:
        """Names of the metrics stored for ``node`` (every node if None)."""
        name = self._check_node(node) if node is not None else None
        return self.store.metrics(name, job)

    def gaps(self) -> list[Gap]:
        """Times nodes did not answer (so far)."""
        return find_gaps(self.store.scrapes(), self.store.errors(), self.store.sessions())

    # -- scraping ------------------------------------------------------------------

    def scrape(
        self, role_or_node: Any, port: int, path: str = "/metrics", name: str | None = None
    ) -> Endpoint:
        """Also scrape ``http://127.0.0.1:PORT/PATH`` on a role's nodes (or one node).

        Fetched on the node (curl or wget) through its transport at every tick, stored
        under job ``name`` (default ``app:PORT/PATH``): query it with ``job=name``.
        """
        target = _name(role_or_node)
        if target in self._roles:
            nodes = frozenset({target})
        else:
            nodes = frozenset(n for n, role in self._roles.items() if role == target)
        if not nodes:
            known = ", ".join(sorted(set(self._roles.values()) | set(self._roles)))
            raise NxcError(f"monitor.scrape: no role or node named {target!r} (known: {known})")
        if not 0 < int(port) < 65536:
            raise NxcError(f"monitor.scrape: bad port {port!r}")
        if not path.startswith("/"):
            path = "/" + path
        endpoint = Endpoint(name or f"app:{int(port)}{path}", int(port), path, nodes)
        if endpoint.job == NODE_JOB:
            raise NxcError(f"monitor.scrape: the name {NODE_JOB!r} is the nodes' own metrics")
        if self.scraper is None:
            self.logger.warning(f"monitor: off (--no-monitor): {endpoint.url} will not be scraped")
            return endpoint
        self.scraper.add_endpoint(endpoint)
        self.logger.info(
            f"monitor: scraping {endpoint.url} on {', '.join(sorted(nodes))} as {endpoint.job}"
        )
        return endpoint

    def sync(self, nodes: Sequence[Any] | None = None, timeout: float | None = None) -> None:
        """Wait until every (given) running node has been scraped after this call."""
        if self.scraper is None:
            raise NxcError("monitor: off (--no-monitor): nothing to wait for")
        names = [self._check_node(n) for n in nodes] if nodes is not None else None
        self.scraper.sync(names, timeout)
