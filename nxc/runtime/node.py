"""What a flavour's runtime offers the driver for one node: ``NodeControl``.

Nodes differ by flavour: a VM can be power-cycled and its link cut, a container
can be killed and disconnected, a Grid'5000 node can be neither. Each control says
what it can do (:class:`Capability`); the driver checks before calling, so a
scenario asking for what the node cannot do fails at once with one line naming the
node, the method and the flavour — never a traceback or a hang.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from nxc.errors import MachineError
from nxc.runtime.transport import Transport

__all__ = ["Capability", "CapabilityMissing", "NodeControl", "require"]


class Capability(StrEnum):
    POWER = "power"  # start() a stopped node, shutdown() a running one
    CRASH = "crash"  # crash(): stop at once, as a power cut would
    BLOCK = "block"  # block()/unblock(): cut the experiment NIC
    CONSOLE = "console"  # console_tail(): what the node printed on its console
    PAUSE = "pause"  # pause()/resume(): freeze the whole node


class CapabilityMissing(MachineError):
    """The node's flavour cannot do what the scenario asked."""


class NodeControl(Protocol):
    """The runtime's handle on one node."""

    name: str
    flavour: str
    capabilities: frozenset[Capability]

    def transport(self) -> Transport:
        """A connected transport to the running node (raises if it is not up)."""
        ...

    def is_running(self) -> bool: ...

    def boot_id(self) -> str | None:
        """The boot id of the node's last ready line (changes at every boot)."""
        ...

    def start(self, timeout: float = 120.0) -> None:
        """Boot the node if it is not running and wait until its agent reports ready."""
        ...

    def shutdown(self, timeout: float = 60.0) -> None:
        """Power the node off cleanly and wait until it has stopped."""
        ...

    def crash(self) -> None:
        """Stop the node at once, as a power cut would."""
        ...

    def block(self) -> None:
        """Cut the node's experiment NIC (link down as seen by the node)."""
        ...

    def unblock(self) -> None: ...

    def pause(self) -> None:
        """Freeze the whole node (its clock keeps running outside)."""
        ...

    def resume(self) -> None: ...

    def console_tail(self, lines: int = 20) -> str:
        """The last lines the node printed on its console (for error messages)."""
        ...


def require(control: NodeControl, capability: Capability, method: str) -> None:
    """Raise :class:`CapabilityMissing` unless ``control`` has ``capability``."""
    if capability not in control.capabilities:
        have = ", ".join(sorted(c.value for c in control.capabilities)) or "none"
        raise CapabilityMissing(
            f"{control.name}: {method}() is not available on flavour {control.flavour} "
            f"(it lacks the '{capability.value}' capability; it has: {have})"
        )
