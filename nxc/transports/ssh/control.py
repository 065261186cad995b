"""``SshNodeControl``: the driver's NodeControl for a node reached over ssh.

With it, :class:`~nxc.driver.machine.Machine` works unchanged on any ssh node::

    control = SshNodeControl(fleet["node-1.example"])
    node1 = Machine("node1", "server", 1, control)
    node1.succeed("uname -a")

Powering a remote node on or off is the platform's business (Grid'5000's kapower,
a VM's monitor), so ``shutdown``/``crash`` use the ``power`` hooks when given and
otherwise raise :class:`SshNodeUnsupported`; ``start`` waits until the node answers
ssh (after a reboot or kexec, say). ``block``/``unblock`` need the platform too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nxc.errors import NxcError, StartError
from nxc.runtime.transport import TransportError
from nxc.transports.ssh.errors import HostKeyRejected
from nxc.transports.ssh.transport import SshTransport

if TYPE_CHECKING:
    from nxc.runtime.transport import NodeControl, Transport


class SshNodeUnsupported(NxcError):
    """The operation needs a platform hook that this ssh node was not given."""


@dataclass(frozen=True)
class PowerHooks:
    """What the platform offers to power a node: each hook takes a timeout in seconds."""

    start: Callable[[float], None] | None = None
    shutdown: Callable[[float], None] | None = None
    crash: Callable[[], None] | None = None


class SshNodeControl:
    """A :class:`~nxc.runtime.transport.NodeControl` over an :class:`SshTransport`."""

    def __init__(self, transport: SshTransport, *, power: PowerHooks | None = None) -> None:
        self.name = transport.name
        self._transport = transport
        self._power = power or PowerHooks()
        self._running = True
        self._last_error = ""

    def transport(self) -> SshTransport:
        """The transport, connected (raises ``SshConnectError`` naming the node if not)."""
        try:
            self._transport.connect()
        except TransportError as err:
            self._last_error = str(err)
            raise
        return self._transport

    def is_running(self) -> bool:
        return self._running

    def start(self, timeout: float = 120.0) -> None:
        """Power the node on (if a hook is given), then wait until it answers ssh."""
        if self._power.start is not None:
            self._power.start(timeout)
        deadline = time.monotonic() + timeout
        delay = 0.2
        while True:
            try:
                self._transport.disconnect()
                self._transport.run("true", timeout=max(1.0, deadline - time.monotonic()))
                break
            except HostKeyRejected:
                raise
            except (TransportError, TimeoutError) as err:
                self._last_error = str(err)
                if time.monotonic() + delay > deadline:
                    raise StartError(
                        f"{self.name}: not answering ssh after {timeout:g}s "
                        f"(last error: {self._last_error})"
                    ) from None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        self._running = True

    def shutdown(self, timeout: float = 60.0) -> None:
        if self._power.shutdown is None:
            raise SshNodeUnsupported(
                f"{self.name}: shutdown() needs the platform's power control "
                "(none was given for this ssh node)"
            )
        self._transport.disconnect()
        self._power.shutdown(timeout)
        self._running = False

    def crash(self) -> None:
        if self._power.crash is None:
            raise SshNodeUnsupported(
                f"{self.name}: crash() needs the platform's power control "
                "(none was given for this ssh node)"
            )
        self._transport.disconnect()
        self._power.crash()
        self._running = False

    def block(self) -> None:
        raise SshNodeUnsupported(
            f"{self.name}: block() needs the platform's network control (not available over "
            "plain ssh; use netem partitions)"
        )

    def unblock(self) -> None:
        raise SshNodeUnsupported(
            f"{self.name}: unblock() needs the platform's network control (not available "
            "over plain ssh)"
        )

    def console_tail(self, lines: int = 20) -> str:
        """Empty: ssh gives no console (the transport's errors already say what failed)."""
        return ""


if TYPE_CHECKING:  # the driver's protocols, checked by mypy: drift breaks the build

    def _is_node_control(control: SshNodeControl) -> NodeControl:
        return control

    def _is_transport(transport: SshTransport) -> Transport:
        return transport
