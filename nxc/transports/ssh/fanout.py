"""Fan-out: one command (or copy) on N nodes at once, with a result or an error per node.

    fleet = SshFleet(["node-1.example", "node-2.example"], settings)
    result = fleet.run("uname -r", timeout=30)
    for outcome in result:            # in the fleet's node order
        print(outcome.node, outcome.status, outcome.error)
    result.check()                     # raises FanoutFailed naming every failed node

A node that cannot be reached, times out or exits non-zero is reported by name; the
others' results are there all the same. ``max_parallel`` bounds how many nodes are
worked on at once (connections included), e.g. to spare a jump host.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from nxc.errors import NxcError
from nxc.runtime.transport import CommandResult
from nxc.transports.ssh.loop import EventLoopThread, shared_loop
from nxc.transports.ssh.node import NodeLink, SshHub, short
from nxc.transports.ssh.settings import SshEndpoint, SshSettings
from nxc.transports.ssh.transport import SshTransport


@dataclass(frozen=True)
class NodeOutcome:
    """What happened on one node: a ``result`` (the command ran) or an ``error``."""

    node: str
    result: CommandResult | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and (self.result is None or self.result.status == 0)

    @property
    def status(self) -> int | None:
        return None if self.result is None else self.result.status

    @property
    def stdout(self) -> str:
        return "" if self.result is None else self.result.output

    def describe(self) -> str:
        if self.error is not None:
            return self.error
        if self.result is not None and self.result.status != 0:
            detail = self.result.stderr.decode(errors="replace").strip().splitlines()
            return f"{self.node}: exit status {self.result.status}" + (
                f" ({detail[-1][:120]})" if detail else ""
            )
        return f"{self.node}: ok"


class FanoutFailed(NxcError):
    """Some nodes of a fan-out failed; ``outcomes`` holds every node's outcome."""

    def __init__(self, message: str, outcomes: Sequence[NodeOutcome]) -> None:
        super().__init__(message)
        self.outcomes = tuple(outcomes)


@dataclass(frozen=True)
class FanoutResult:
    """Every node's :class:`NodeOutcome`, in the order the nodes were given."""

    what: str
    outcomes: tuple[NodeOutcome, ...]
    seconds: float

    def __iter__(self) -> Iterator[NodeOutcome]:
        return iter(self.outcomes)

    def __len__(self) -> int:
        return len(self.outcomes)

    def __getitem__(self, node: str) -> NodeOutcome:
        for outcome in self.outcomes:
            if outcome.node == node:
                return outcome
        raise KeyError(node)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    @property
    def results(self) -> dict[str, CommandResult]:
        """Nodes where the command ran (whatever its status) → result."""
        return {o.node: o.result for o in self.outcomes if o.result is not None}

    @property
    def errors(self) -> dict[str, str]:
        """Nodes that could not run it (unreachable, timed out, channel broke) → why."""
        return {o.node: o.error for o in self.outcomes if o.error is not None}

    @property
    def failed(self) -> list[str]:
        """Nodes with an error or a non-zero status."""
        return [o.node for o in self.outcomes if not o.ok]

    def check(self) -> FanoutResult:
        """Return self if every node succeeded; else raise :class:`FanoutFailed`."""
        bad = [o for o in self.outcomes if not o.ok]
        if bad:
            shown = "; ".join(o.describe() for o in bad[:5])
            more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise FanoutFailed(
                f"{self.what} failed on {len(bad)} of {len(self.outcomes)} nodes: {shown}{more}",
                self.outcomes,
            )
        return self


class SshFleet:
    """Ssh transports to many nodes, sharing one event loop and the jump hosts.

    ``nodes``: names (looked up in the ssh config) or :class:`SshEndpoint`s.
    ``max_parallel``: default bound on the nodes worked on at once (``None``: all).
    """

    def __init__(
        self,
        nodes: Iterable[SshEndpoint | str],
        settings: SshSettings,
        *,
        max_parallel: int | None = None,
        loop: EventLoopThread | None = None,
    ) -> None:
        self.settings = settings
        self.loop = shared_loop() if loop is None else loop
        self.hub = SshHub(settings)
        self.max_parallel = max_parallel
        self._transports: dict[str, SshTransport] = {}
        for node in nodes:
            endpoint = SshEndpoint.of(node)
            if endpoint.name in self._transports:
                raise ValueError(f"node {endpoint.name} given twice")
            self._transports[endpoint.name] = SshTransport(
                endpoint, settings, hub=self.hub, loop=self.loop
            )

    @property
    def names(self) -> list[str]:
        return list(self._transports)

    def __getitem__(self, name: str) -> SshTransport:
        try:
            return self._transports[name]
        except KeyError:
            raise KeyError(f"no node {name!r} in this fleet") from None

    def __iter__(self) -> Iterator[SshTransport]:
        return iter(self._transports.values())

    def __len__(self) -> int:
        return len(self._transports)

    # -- fan-out ----------------------------------------------------------------------

    def _links(self, nodes: Iterable[str] | None) -> list[NodeLink]:
        names = self.names if nodes is None else list(nodes)
        return [self[name].link for name in names]

    def _fan(
        self,
        what: str,
        nodes: Iterable[str] | None,
        max_parallel: int | None,
        action: Callable[[NodeLink], Awaitable[CommandResult | None]],
    ) -> FanoutResult:
        links = self._links(nodes)
        limit = max_parallel if max_parallel is not None else self.max_parallel
        if limit is not None and limit < 1:
            raise ValueError(f"max_parallel must be >= 1, got {limit}")

        async def fan() -> FanoutResult:
            gate = asyncio.Semaphore(limit or max(1, len(links)))
            began = time.monotonic()

            async def one(link: NodeLink) -> NodeOutcome:
                async with gate:
                    start = time.monotonic()
                    try:
                        result = await action(link)
                    except (TimeoutError, NxcError) as err:
                        return NodeOutcome(link.name, error=str(err), seconds=_since(start))
                    except Exception as err:  # reported per node, never hidden
                        message = f"{link.name}: {type(err).__name__}: {err}"
                        return NodeOutcome(link.name, error=message, seconds=_since(start))
                    return NodeOutcome(link.name, result=result, seconds=_since(start))

            outcomes = await asyncio.gather(*(one(link) for link in links))
            return FanoutResult(what, tuple(outcomes), _since(began))

        return self.loop.call(fan())

    def run(
        self,
        command: str,
        timeout: float | None = None,
        *,
        nodes: Iterable[str] | None = None,
        max_parallel: int | None = None,
    ) -> FanoutResult:
        """Run ``command`` on every node (or on ``nodes``) at once.

        ``timeout`` bounds the command on each node (killed there on expiry; the node's
        outcome is then an error). Ctrl-C kills the command on every node.
        """
        return self._fan(
            f"`{short(command)}`",
            nodes,
            max_parallel,
            lambda link: link.run(command, timeout),
        )

    def connect(
        self, *, nodes: Iterable[str] | None = None, max_parallel: int | None = None
    ) -> FanoutResult:
        """Connect to every node now; per-node errors say which could not be reached."""

        async def connect(link: NodeLink) -> None:
            await link.connection()

        return self._fan("connect", nodes, max_parallel, connect)

    def put(
        self,
        source: Path,
        target: str,
        *,
        nodes: Iterable[str] | None = None,
        max_parallel: int | None = None,
    ) -> FanoutResult:
        """Copy host file ``source`` to ``target`` on every node (sftp, atomic, mode kept)."""

        async def put(link: NodeLink) -> None:
            await link.put(Path(source), target)

        return self._fan(f"copy of {source} to {target}", nodes, max_parallel, put)

    def get(
        self,
        source: str,
        target_dir: Path,
        *,
        nodes: Iterable[str] | None = None,
        max_parallel: int | None = None,
    ) -> FanoutResult:
        """Copy ``source`` from every node to ``target_dir/<node>/<basename>``."""
        base = Path(source).name

        async def get(link: NodeLink) -> None:
            directory = Path(target_dir) / link.name
            directory.mkdir(parents=True, exist_ok=True)
            await link.get(source, directory / base)

        return self._fan(f"copy of {source} from the nodes", nodes, max_parallel, get)

    def close(self) -> None:
        """Close every connection (idempotent)."""

        async def close() -> None:
            await asyncio.gather(*(t.link.close() for t in self._transports.values()))
            await self.hub.close()

        self.loop.call(close())

    def __enter__(self) -> SshFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _since(start: float) -> float:
    return time.monotonic() - start
