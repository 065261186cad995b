"""The background scraper: every node, at every tick, through its own transport.

One scheduling thread (``nxc-monitor``) ticks at a fixed interval; at each tick it hands
every node whose previous scrape is over to a small pool, so nodes are scraped in
parallel and a slow node delays only itself (its next ticks are recorded as ``busy``).
Results come back on a queue and the scheduling thread alone writes them to the
store, so SQLite sees one writer.

Scrapes go through ``Machine.run`` (the node's transport: the VM backdoor, docker exec,
ssh), never through a process of their own. A node that stops answering is recorded
(``errors`` table, one row per failed attempt, timed at the attempt's start), logged
once when it stops and once when it answers again; nothing raises out of the thread.
"""

from __future__ import annotations

import queue
import shlex
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from nxc.errors import NxcError, WaitTimeout
from nxc.log import Logger
from nxc.log import log as default_log
from nxc.monitor.parse import MetricsFormatError, ParsedSample, parse_metrics
from nxc.monitor.sampler import (
    INSTALLED_SAMPLER,
    DetectedSource,
    NoMetricsSource,
    detect_command,
    fetch_command,
    install_command,
    parse_detection,
)
from nxc.monitor.store import NODE_JOB, MetricsStore
from nxc.runtime.transport import CommandResult, TransportError

__all__ = ["DEFAULT_INTERVAL", "Endpoint", "ScrapeTarget", "Scraper"]

DEFAULT_INTERVAL = 1.0
# Longest a stopping scraper waits for scrapes in flight before it leaves them.
STOP_GRACE = 5.0
# A node the runtime says is running but whose channel fails ("unreachable": its agent's
# loop died, another driver holds its VM's backdoor…) is tried again after this long,
# doubling up to the cap: each attempt may cost a connection timeout, and QEMU queues
# connections to a backdoor held by another client.
UNREACHABLE_BACKOFF = 30.0
UNREACHABLE_BACKOFF_MAX = 120.0


class ScrapeTarget(Protocol):
    """What the scraper needs of a node (a :class:`~nxc.driver.machine.Machine` is one)."""

    @property
    def name(self) -> str: ...

    def is_up(self) -> bool: ...

    def run(self, command: str, timeout: float | None = 900) -> CommandResult: ...


@dataclass(frozen=True)
class Endpoint:
    """An application's metrics endpoint, fetched on ``nodes`` at ``127.0.0.1:port/path``."""

    job: str
    port: int
    path: str
    nodes: frozenset[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


@dataclass
class _Outcome:
    node: str
    job: str
    started: float  # epoch seconds when the attempt began
    duration: float
    samples: list[ParsedSample] | None = None
    kind: str = ""  # error kind when samples is None
    message: str = ""
    source: DetectedSource | None = None  # newly detected: to record

    @property
    def t(self) -> float:
        """The sample time: when the answer arrived. (Not the middle of the attempt: an
        attempt may wait seconds for the node's channel, e.g. while it boots, and the
        node reads its counters only once the command reaches it.)"""
        return self.started + self.duration


class _Failure(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _first_line(text: str, limit: int = 300) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass
class _NodeState:
    source: DetectedSource | None = None
    answering: bool | None = None  # None: not scraped yet
    failed_since: float | None = None
    last_ok_started: float = 0.0
    last_error: str = ""
    unreachable: int = 0  # consecutive "unreachable" failures
    retry_at: float = 0.0  # monotonic time before which the node is left alone
    inflight: Future[list[_Outcome]] | None = field(default=None, repr=False)


class Scraper:
    """Scrape ``targets`` every ``interval`` seconds into ``store`` (see module docs).

    ``timeout``: bound of one scrape command on the node (default: five intervals,
    between 5 and 60 s). Use :meth:`start` / :meth:`stop`, or as a context manager.
    """

    def __init__(
        self,
        targets: Sequence[ScrapeTarget],
        store: MetricsStore,
        *,
        interval: float = DEFAULT_INTERVAL,
        timeout: float | None = None,
        logger: Logger | None = None,
        install_path: str = INSTALLED_SAMPLER,
    ) -> None:
        if interval <= 0:
            raise NxcError(f"monitor interval must be positive, got {interval:g}")
        self.targets = list(targets)
        self.store = store
        self.interval = float(interval)
        self.timeout = timeout if timeout is not None else min(60.0, max(5.0, 5 * interval))
        self.logger = logger if logger is not None else default_log
        self.install_path = install_path
        self._states = {t.name: _NodeState() for t in self.targets}
        self._endpoints: list[Endpoint] = []
        self._results: queue.Queue[list[_Outcome] | None] = queue.Queue()
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._session: int | None = None
        self.rounds = 0

    # -- control -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._session = self.store.begin_session(self.interval)
        self._pool = ThreadPoolExecutor(
            max(1, min(32, len(self.targets))), thread_name_prefix="nxc-monitor-scrape"
        )
        self._thread = threading.Thread(target=self._loop, name="nxc-monitor", daemon=True)
        self._thread.start()

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop ticking, store what scrapes in flight bring within ``grace`` seconds."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        self._results.put(None)  # wake the loop
        thread.join(grace + self.interval + 1)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._session is not None:
            self.store.end_session(self._session)
            self._session = None
        with self._progress:
            self._progress.notify_all()

    def __enter__(self) -> Scraper:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def add_endpoint(self, endpoint: Endpoint) -> None:
        unknown = sorted(endpoint.nodes - set(self._states))
        if unknown:
            raise NxcError(f"monitor: no node named {', '.join(unknown)}")
        self._endpoints = [e for e in self._endpoints if e.job != endpoint.job] + [endpoint]

    @property
    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints)

    def answering(self) -> dict[str, bool | None]:
        """Per node: answered its last scrape (None: not scraped yet)."""
        return {name: state.answering for name, state in self._states.items()}

    def sync(self, nodes: Sequence[str] | None = None, timeout: float | None = None) -> None:
        """Wait until each node (default: every running one) was scraped after this call.

        Raise :class:`~nxc.errors.WaitTimeout` naming the nodes still waited for and
        their last error.
        """
        if not self.running:
            raise NxcError("monitor: the scraper is not running (started with --no-monitor?)")
        since = time.time()
        wanted = list(nodes) if nodes is not None else [t.name for t in self.targets if t.is_up()]
        unknown = sorted(set(wanted) - set(self._states))
        if unknown:
            raise NxcError(f"monitor: no node named {', '.join(unknown)}")
        limit = timeout if timeout is not None else 3 * self.interval + self.timeout + 15
        deadline = time.monotonic() + limit

        def missing() -> list[str]:
            return [n for n in wanted if self._states[n].last_ok_started < since]

        with self._progress:
            while missing():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.running:
                    seen = ", ".join(
                        f"{n} ({self._states[n].last_error or 'no answer yet'})" for n in missing()
                    )
                    raise WaitTimeout(f"monitor: no scrape of {seen} completed within {limit:g}s")
                self._progress.wait(min(remaining, 0.5))

    def scrape_round(self) -> float:
        """Scrape every node once now, in parallel, store the results; return the
        round's wall time in seconds (for one-off views and benchmarks: not while the
        background thread runs)."""
        if self.running:
            raise NxcError("monitor: scrape_round() while the background scraper runs")
        endpoints = list(self._endpoints)
        begin = time.monotonic()
        with ThreadPoolExecutor(max(1, min(32, len(self.targets)))) as pool:
            futures = [
                pool.submit(
                    self._scrape_node,
                    target,
                    self._states[target.name].source,
                    [e for e in endpoints if target.name in e.nodes],
                )
                for target in self.targets
            ]
            outcomes = [future.result() for future in futures]
        elapsed = time.monotonic() - begin
        for outcome in outcomes:
            self._record(outcome)
        return elapsed

    # -- the scheduling thread -----------------------------------------------------

    def _loop(self) -> None:
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_tick:
                    self._tick()
                    next_tick += self.interval
                    if next_tick <= now:  # we fell behind: skip the missed ticks
                        next_tick = now + self.interval
                try:
                    outcome = self._results.get(timeout=max(0.0, next_tick - time.monotonic()))
                except queue.Empty:
                    continue
                if outcome is not None:
                    self._record(outcome)
            self._drain()
        except Exception as exc:  # the thread must not die silently: say why, stop cleanly
            self.logger.error(f"monitor: scraper stopped: {type(exc).__name__}: {exc}")

    def _drain(self) -> None:
        deadline = time.monotonic() + STOP_GRACE
        while any(s.inflight is not None and not s.inflight.done() for s in self._states.values()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                outcome = self._results.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                continue
            if outcome is not None:
                self._record(outcome)
        while True:
            try:
                outcome = self._results.get_nowait()
            except queue.Empty:
                return
            if outcome is not None:
                self._record(outcome)

    def _tick(self) -> None:
        assert self._pool is not None
        self.rounds += 1
        now = time.time()
        endpoints = list(self._endpoints)
        for target in self.targets:
            state = self._states[target.name]
            if state.inflight is not None and not state.inflight.done():
                self.store.add_error(
                    target.name, NODE_JOB, now, "busy", "the previous scrape is still running"
                )
                continue
            if state.retry_at and time.monotonic() < state.retry_at:
                if self._still_up(target):
                    continue  # backing off an unreachable node (see UNREACHABLE_BACKOFF)
                state.retry_at, state.unreachable = 0.0, 0  # down now: say so at once
            mine = [e for e in endpoints if target.name in e.nodes]
            future = self._pool.submit(self._scrape_node, target, state.source, mine)
            future.add_done_callback(self._deliver)
            state.inflight = future

    @staticmethod
    def _still_up(target: ScrapeTarget) -> bool:
        try:
            return target.is_up()
        except Exception:  # the runtime could not tell: keep backing off
            return True

    def _deliver(self, future: Future[list[_Outcome]]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:  # a bug in _scrape_node: report it as a failure, not a crash
            self.logger.error(f"monitor: scrape failed unexpectedly: {error!r}")
            return
        self._results.put(future.result())

    def _record(self, outcomes: list[_Outcome]) -> None:
        for outcome in outcomes:
            state = self._states[outcome.node]
            if outcome.source is not None and outcome.job == NODE_JOB:
                self.store.set_source(
                    outcome.node, NODE_JOB, outcome.source.kind, outcome.source.detail
                )
            if outcome.samples is not None:
                self.store.add_scrape(
                    outcome.node, outcome.job, outcome.t, outcome.duration, outcome.samples
                )
            else:
                self.store.add_error(
                    outcome.node, outcome.job, outcome.started, outcome.kind, outcome.message
                )
            if outcome.job == NODE_JOB:
                self._transition(outcome, state)
        with self._progress:
            self._progress.notify_all()

    def _transition(self, outcome: _Outcome, state: _NodeState) -> None:
        ok = outcome.samples is not None
        if outcome.source is not None:
            state.source = outcome.source
        if ok:
            state.last_ok_started = outcome.started
            if state.answering is False and state.failed_since is not None:
                answered = outcome.started + outcome.duration
                self.logger.info(
                    f"monitor: {outcome.node} answers again "
                    f"(after {answered - state.failed_since:.1f}s without metrics)",
                    node=outcome.node,
                )
            state.answering, state.failed_since, state.last_error = True, None, ""
            state.unreachable, state.retry_at = 0, 0.0
            return
        state.source = None  # detect again: the node may have rebooted into another image
        state.last_error = f"{outcome.kind}: {_first_line(outcome.message)}"
        if outcome.kind == "unreachable":
            state.unreachable += 1
            pause = min(UNREACHABLE_BACKOFF_MAX, UNREACHABLE_BACKOFF * 2 ** (state.unreachable - 1))
            state.retry_at = time.monotonic() + pause
            self.logger.info(
                f"monitor: {outcome.node} is running but unreachable; next try in {pause:g}s "
                "(at once if it stops)",
                node=outcome.node,
            )
        else:
            state.unreachable, state.retry_at = 0, 0.0
        if outcome.kind == "no-source":
            if state.answering is not False:
                self.logger.warning(f"monitor: {outcome.message}", node=outcome.node)
            state.answering = False
            return
        if state.answering is not False:
            self.logger.warning(
                f"monitor: {outcome.node} stopped answering ({state.last_error})",
                node=outcome.node,
            )
            state.failed_since = outcome.started
        state.answering = False

    # -- one node (pool threads) ---------------------------------------------------

    def _scrape_node(
        self, target: ScrapeTarget, source: DetectedSource | None, endpoints: list[Endpoint]
    ) -> list[_Outcome]:
        started = time.time()
        clock = time.monotonic()
        name = target.name

        def failed(job: str, kind: str, message: str) -> _Outcome:
            return _Outcome(name, job, started, time.monotonic() - clock, None, kind, message)

        try:
            up = target.is_up()
        except Exception as exc:  # the runtime could not tell: count it as unreachable
            up, why = False, f"cannot tell whether it runs: {exc}"
        else:
            why = "the runtime reports the node is not running"
        if not up:
            return [failed(NODE_JOB, "down", why)] + [failed(e.job, "down", why) for e in endpoints]
        detected: DetectedSource | None = None
        try:
            if source is None:
                source = detected = self._detect(target)
            text = self._run(target, source.command, source.detail)
            samples = parse_metrics(text, f"{name}: {source.detail}")
        except NoMetricsSource as exc:
            return [failed(NODE_JOB, "no-source", str(exc))]
        except MetricsFormatError as exc:
            outcome = failed(NODE_JOB, "parse", str(exc))
            outcome.source = detected
            return [outcome]
        except _Failure as exc:
            broken = exc.kind in ("unreachable", "timeout")
            return [failed(NODE_JOB, exc.kind, exc.message)] + [
                failed(e.job, exc.kind, exc.message) for e in endpoints if broken
            ]
        outcomes = [
            _Outcome(name, NODE_JOB, started, time.monotonic() - clock, samples, source=detected)
        ]
        for endpoint in endpoints:
            outcomes.append(self._scrape_endpoint(target, source, endpoint))
        return outcomes

    def _scrape_endpoint(
        self, target: ScrapeTarget, source: DetectedSource, endpoint: Endpoint
    ) -> _Outcome:
        started = time.time()
        clock = time.monotonic()
        try:
            command = fetch_command(source.fetcher, endpoint.url)
            text = self._run(target, command, endpoint.url)
            samples = parse_metrics(text, f"{target.name}: {endpoint.url}")
        except NoMetricsSource as exc:
            kind, message = "no-source", f"{target.name}: {exc}"
        except MetricsFormatError as exc:
            kind, message = "parse", str(exc)
        except _Failure as exc:
            kind, message = exc.kind, exc.message
        else:
            return _Outcome(target.name, endpoint.job, started, time.monotonic() - clock, samples)
        return _Outcome(
            target.name, endpoint.job, started, time.monotonic() - clock, None, kind, message
        )

    def _detect(self, target: ScrapeTarget) -> DetectedSource:
        path = self.install_path
        answer = self._run(target, detect_command(path), "detection")
        found = parse_detection(target.name, answer, path)
        if found.kind != "install":
            return found
        self._run(target, install_command(path), f"installing {path}")
        self.logger.info(
            f"monitor: {target.name} has no node_exporter nor nxc-metrics: "
            f"installed nxc-metrics at {path}",
            node=target.name,
        )
        return DetectedSource("exec", shlex.quote(path), found.detail, found.fetcher)

    def _run(self, target: ScrapeTarget, command: str, what: str) -> str:
        try:
            result = target.run(command, self.timeout)
        except (NxcError, TransportError, OSError) as exc:  # MachineError is an NxcError
            message = _first_line(str(exc))
            if not message.startswith(f"{target.name}:"):
                message = f"{target.name}: {message}"
            raise _Failure("unreachable", message) from None
        if result.status == 124:
            raise _Failure("timeout", f"{target.name}: {what}: no answer within {self.timeout:g}s")
        if result.status != 0:
            stderr = result.stderr.decode(errors="replace")
            raise _Failure(
                "failed",
                f"{target.name}: {what}: exit status {result.status}"
                + (f": {_first_line(stderr)}" if stderr.strip() else ""),
            )
        return result.output
