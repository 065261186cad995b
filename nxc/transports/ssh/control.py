"""``SshNodeControl``: the driver's NodeControl for a node reached over ssh.

With it, :class:`~nxc.driver.machine.Machine` works unchanged on any ssh node::

    control = SshNodeControl(SshTransport("node-1.example", settings))
    node1 = Machine("node1", "server", 1, control)
    node1.succeed("uname -a")

Powering a remote node on or off is the platform's business (Grid'5000's kapower, a
VM's monitor): the control has the ``power`` / ``crash`` capabilities only when the
matching :class:`PowerHooks` are given, and ``start`` then waits until the node answers
ssh again. Cutting a NIC or pausing a node needs the platform too: an ssh node has
neither capability, so the driver refuses those calls with one line.

``boot_id()`` reads ``/proc/sys/kernel/random/boot_id`` over ssh: it changes at every
boot and kexec, which is how a runtime tells a rebooted node from one that did not go
down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nxc.errors import NxcError, StartError
from nxc.runtime.node import Capability
from nxc.runtime.transport import TransportError
from nxc.transports.ssh.errors import HostKeyRejected
from nxc.transports.ssh.transport import SshTransport

if TYPE_CHECKING:
    from nxc.runtime.node import NodeControl
    from nxc.runtime.transport import Transport

BOOT_ID = "/proc/sys/kernel/random/boot_id"


class SshNodeUnsupported(NxcError):
    """The operation needs a platform hook that this ssh node was not given."""


@dataclass(frozen=True)
class PowerHooks:
    """What the platform offers to power a node: each hook takes a timeout in seconds.

    ``start`` and ``shutdown`` together give the ``power`` capability, ``crash`` the
    ``crash`` capability.
    """

    start: Callable[[float], None] | None = None
    shutdown: Callable[[float], None] | None = None
    crash: Callable[[], None] | None = None


class SshNodeControl:
    """A :class:`~nxc.runtime.node.NodeControl` over an :class:`SshTransport`.

    The driver closes the transport it was handed when it lets go of a node (crash,
    shutdown, release); the next :meth:`transport` then opens a fresh one to the same
    endpoint, sharing the event loop and jump hosts.
    """

    def __init__(
        self, transport: SshTransport, *, power: PowerHooks | None = None, flavour: str = "ssh"
    ) -> None:
        self.name = transport.name
        self.flavour = flavour
        self._transport = transport
        self._power = power or PowerHooks()
        caps = set()
        if self._power.start is not None and self._power.shutdown is not None:
            caps.add(Capability.POWER)
        if self._power.crash is not None:
            caps.add(Capability.CRASH)
        self.capabilities = frozenset(caps)
        self._running = True

    def _current(self) -> SshTransport:
        if self._transport.closed:
            self._transport = self._transport.reopen()
        return self._transport

    def transport(self) -> SshTransport:
        """The transport, connected (raises ``SshConnectError`` naming the node if not)."""
        transport = self._current()
        transport.connect()
        return transport

    def is_running(self) -> bool:
        return self._running

    def boot_id(self) -> str | None:
        """The node's current boot id, or ``None`` when it does not answer."""
        try:
            result = self._current().run(f"cat {BOOT_ID}", timeout=30)
        except (TransportError, TimeoutError):
            return None
        if result.status != 0:
            return None
        return result.output.strip() or None

    def start(self, timeout: float = 120.0) -> None:
        """Power the node on (if a hook is given), then wait until it answers ssh."""
        if self._power.start is not None:
            self._power.start(timeout)
        deadline = time.monotonic() + timeout
        delay = 0.2
        last = "no attempt"
        while True:
            transport = self._current()
            try:
                transport.disconnect()
                transport.run("true", timeout=max(1.0, deadline - time.monotonic()))
                break
            except HostKeyRejected:
                raise
            except (TransportError, TimeoutError) as err:
                last = str(err)
                if time.monotonic() + delay > deadline:
                    raise StartError(
                        f"{self.name}: not answering ssh after {timeout:g}s (last error: {last})"
                    ) from None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        self._running = True

    def shutdown(self, timeout: float = 60.0) -> None:
        if self._power.shutdown is None:
            raise self._unsupported("shutdown", "power control")
        self._current().disconnect()
        self._power.shutdown(timeout)
        self._running = False

    def crash(self) -> None:
        if self._power.crash is None:
            raise self._unsupported("crash", "power control")
        self._current().disconnect()
        self._power.crash()
        self._running = False

    def block(self) -> None:
        raise self._unsupported("block", "network control")

    def unblock(self) -> None:
        raise self._unsupported("unblock", "network control")

    def pause(self) -> None:
        raise self._unsupported("pause", "hypervisor")

    def resume(self) -> None:
        raise self._unsupported("resume", "hypervisor")

    def console_tail(self, lines: int = 20) -> str:
        """Empty: ssh gives no console (the transport's errors already say what failed)."""
        return ""

    def _unsupported(self, method: str, what: str) -> SshNodeUnsupported:
        return SshNodeUnsupported(
            f"{self.name}: {method}() needs the platform's {what}, which this ssh node "
            "was not given"
        )


if TYPE_CHECKING:  # the driver's protocols, checked by mypy: drift breaks the build

    def _is_node_control(control: SshNodeControl) -> NodeControl:
        return control

    def _is_transport(transport: SshTransport) -> Transport:
        return transport
