"""What a driver session does for monitoring: the ``monitoring(...)`` context manager.

``nxc.driver.session.open_driver`` enters it once the machines exist: it opens the run's
``metrics.sqlite``, starts the background scraper (unless monitoring is off), gives the
``monitor`` object to scenarios, and on the way out stops the scraper and closes the
store.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nxc.errors import NxcError
from nxc.log import Logger
from nxc.log import log as default_log
from nxc.monitor.api import Monitor
from nxc.monitor.scraper import DEFAULT_INTERVAL, Scraper
from nxc.monitor.store import MetricsStore, Session
from nxc.runtime.transport import CommandResult

__all__ = ["METRICS_FILE", "MonitorOptions", "active_session", "monitoring"]

METRICS_FILE = "metrics.sqlite"


@dataclass(frozen=True)
class MonitorOptions:
    """``enabled``: scrape in the background; ``interval``: seconds between scrapes."""

    enabled: bool = True
    interval: float = DEFAULT_INTERVAL

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise NxcError(f"--monitor-interval must be positive, got {self.interval:g}")


class MonitoredNode(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def index(self) -> int: ...

    def is_up(self) -> bool: ...

    def run(self, command: str, timeout: float | None = 900) -> CommandResult: ...


@contextlib.contextmanager
def monitoring(
    run_dir: Path,
    nodes: Sequence[MonitoredNode],
    options: MonitorOptions | None = None,
    *,
    deployment_id: str = "",
    logger: Logger | None = None,
) -> Iterator[Monitor]:
    """Monitor ``nodes`` into ``run_dir/metrics.sqlite`` for the duration of the block."""
    opts = options or MonitorOptions()
    say = logger if logger is not None else default_log
    store = MetricsStore.create(run_dir / METRICS_FILE)
    scraper: Scraper | None = None
    try:
        store.set_meta({"deployment": deployment_id} if deployment_id else {})
        store.set_nodes((n.name, n.role, n.index) for n in nodes)
        if opts.enabled:
            scraper = Scraper(nodes, store, interval=opts.interval, logger=say)
            scraper.start()
            say.info(
                f"monitor: scraping {len(nodes)} nodes every {opts.interval:g}s into {store.path}"
            )
        yield Monitor(store, scraper, nodes, say)
    finally:
        if scraper is not None:
            scraper.stop()
        store.close()


def active_session(store: MetricsStore) -> Session | None:
    """The session of a driver process scraping into ``store`` now, if there is one."""
    for session in reversed(store.sessions()):
        if session.stopped is None and _alive(session.pid):
            return session
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
