"""``SshTransport``: the synchronous :class:`~nxc.runtime.transport.Transport` over ssh."""

from __future__ import annotations

from pathlib import Path

from nxc.runtime.transport import CommandResult
from nxc.transports.ssh.loop import EventLoopThread, shared_loop
from nxc.transports.ssh.node import NodeLink, SshHub
from nxc.transports.ssh.settings import SshEndpoint, SshSettings


class SshTransport:
    """Commands and file copies to one node over one persistent ssh connection.

    ``node``: the node's name (looked up in the ssh config) or an :class:`SshEndpoint`.
    Connects on first use (or :meth:`connect`); reconnects on the next call after the
    node rebooted or its sshd restarted. Thread-safe: calls from several threads run
    as concurrent channels (at most ``settings.sessions_per_node`` at once).
    ``hub`` shares jump-host connections between transports (:class:`SshFleet` does it);
    by default each transport has its own.
    """

    def __init__(
        self,
        node: SshEndpoint | str,
        settings: SshSettings,
        *,
        hub: SshHub | None = None,
        loop: EventLoopThread | None = None,
    ) -> None:
        self.endpoint = SshEndpoint.of(node)
        self.name = self.endpoint.name
        self._own_hub = hub is None
        self.hub = SshHub(settings) if hub is None else hub
        self.link = NodeLink(self.endpoint, self.hub)
        self.loop = shared_loop() if loop is None else loop

    def connect(self) -> None:
        """Connect now (otherwise the first command does); raises ``SshConnectError``."""
        self.loop.call(self.link.connection())

    @property
    def connected(self) -> bool:
        return self.link.connected()

    @property
    def closed(self) -> bool:
        return self.link.closed

    def reopen(self) -> SshTransport:
        """A new transport to the same node, sharing this one's loop and jump hosts."""
        fresh = SshTransport(self.endpoint, self.hub.settings, hub=self.hub, loop=self.loop)
        fresh._own_hub = self._own_hub
        return fresh

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run ``command`` with ``sh -c`` on the node; see the Transport protocol.

        On timeout, or on ``KeyboardInterrupt`` while waiting, the command's process
        group is killed on the node before ``TimeoutError`` / the interrupt propagates.
        """
        return self.loop.call(self.link.run(command, timeout))

    def put(self, source: Path, target: str) -> None:
        """Copy host file ``source`` to node path ``target`` over sftp (atomic, mode kept)."""
        self.loop.call(self.link.put(Path(source), target))

    def get(self, source: str, target: Path) -> None:
        """Copy node file ``source`` to host path ``target`` over sftp (mode kept)."""
        self.loop.call(self.link.get(source, Path(target)))

    def disconnect(self) -> None:
        """Drop the connection; the next call reconnects."""
        self.loop.call(self.link.disconnect())

    def close(self) -> None:
        """Close the connection for good (idempotent); later calls raise ``SshError``."""
        self.loop.call(self.link.close())
        if self._own_hub:
            self.loop.call(self.hub.close())

    def __enter__(self) -> SshTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SshTransport({self.name!r})"
