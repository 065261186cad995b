"""The scenario's handle on the deployment's sync service (the ``sync`` global).

The driver is one more participant of the same service the nodes use (``nxc-sync``
on nodes, :class:`~nxc.sync.client.SyncClient` in programs): a scenario and programs
on nodes meet at the same barriers and read the same topics. Every call is logged,
and errors are nxc errors (a timeout is a :class:`~nxc.errors.WaitTimeout` saying how
far the wait got).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from nxc.errors import NxcError, WaitTimeout
from nxc.log import Logger
from nxc.sync.client import DEFAULT_TIMEOUT, SyncClient, SyncError, SyncTimeout

__all__ = ["Sync", "SyncUnavailable"]

T = TypeVar("T")


class SyncUnavailable(NxcError):
    """The deployment has no sync service (or the driver was built without one)."""


class Sync:
    """Signals, barriers, topics and discovery, from the scenario.

    ``nodes``: how many nodes the deployment has (a barrier's default count) and
    ``roles``: nodes per role (discovery's default count).
    """

    def __init__(
        self, client: SyncClient, logger: Logger, nodes: int, roles: dict[str, int]
    ) -> None:
        self.client = client
        self.logger = logger
        self.nodes = nodes
        self.roles = dict(roles)

    def _do(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except SyncTimeout as exc:
            raise WaitTimeout(f"sync: {what}: timed out: {exc}") from None
        except SyncError as exc:
            raise NxcError(f"sync: {what}: {exc}") from None

    def signal(self, state: str) -> int:
        """Record the driver's arrival at ``state``; return its sequence number."""
        seq = self._do(f"signal {state}", lambda: self.client.signal(state))
        self.logger.info(f"sync: signalled {state} (#{seq})")
        return seq

    def barrier(
        self, state: str, count: int | None = None, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        """Wait until ``state`` was signalled ``count`` times (default: once per node)."""
        want = self.nodes if count is None else count
        with self.logger.nested(f"sync: barrier {state} ({want})"):
            self._do(f"barrier {state}", lambda: self.client.barrier(state, want, timeout))

    def signal_and_wait(
        self, state: str, count: int | None = None, timeout: float | None = DEFAULT_TIMEOUT
    ) -> int:
        """Signal ``state``, then wait for ``count`` signals (default: nodes + the driver)."""
        want = self.nodes + 1 if count is None else count
        seq = self.signal(state)
        self.barrier(state, want, timeout)
        return seq

    def count(self, state: str) -> int:
        return self._do(f"count {state}", lambda: self.client.count(state))

    def arrivals(self, state: str) -> list[tuple[str, float]]:
        """``[(who, epoch seconds on the service's clock)]`` for each signal of ``state``."""
        return self._do(f"arrivals {state}", lambda: self.client.arrivals(state))

    def publish(self, topic: str, value: str | bytes) -> int:
        seq = self._do(f"publish {topic}", lambda: self.client.publish(topic, value))
        self.logger.info(f"sync: published #{seq} on {topic}")
        return seq

    def subscribe(
        self, topic: str, start: int = 1, timeout: float | None = DEFAULT_TIMEOUT
    ) -> Iterator[str]:
        """Every message of ``topic`` from number ``start`` on, in order (text)."""
        stream = self.client.subscribe(topic, start, timeout)
        while True:
            value = self._do(f"subscribe {topic}", lambda: next(stream))
            yield value.decode(errors="replace")

    def messages(
        self, topic: str, count: int, timeout: float | None = DEFAULT_TIMEOUT
    ) -> list[str]:
        """The first ``count`` messages of ``topic`` (waiting for them)."""
        with self.logger.nested(f"sync: {count} message(s) of {topic}"):
            values = self._do(
                f"messages of {topic}", lambda: self.client.messages(topic, count, timeout)
            )
        return [v.decode(errors="replace") for v in values]

    def discover(
        self, tag: str, count: int | None = None, timeout: float | None = DEFAULT_TIMEOUT
    ) -> list[dict[str, Any]]:
        """The records of ``count`` nodes registered under ``tag`` (a role: every node
        announces itself under its role when it starts; default: the role's size)."""
        want = self.roles.get(tag) if count is None else count
        if want is None:
            raise NxcError(f"sync: discover {tag}: not a role: give a count")
        with self.logger.nested(f"sync: discover {tag} ({want})"):
            return self._do(f"discover {tag}", lambda: self.client.discover(tag, want, timeout))

    def close(self) -> None:
        self.client.close()
