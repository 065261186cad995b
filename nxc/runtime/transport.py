"""How the driver reaches a node: one interface, several transports.

A transport runs a shell command on a node and returns its exit status and output.
The backdoor (virtio-serial shell of a VM) is the first; ssh and ``docker exec``
implement the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CommandResult:
    status: int
    stdout: bytes
    stderr: bytes

    @property
    def output(self) -> str:
        return self.stdout.decode(errors="replace")


class TransportError(Exception):
    """The channel to the node broke (not a failed command); the message says how."""


class Transport(Protocol):
    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run ``command`` with ``sh -c`` on the node, stdin from /dev/null.

        ``timeout`` (seconds) bounds the command; on expiry raise ``TimeoutError``
        and make sure the command is killed on the node.
        """
        ...

    def close(self) -> None: ...


class NodeControl(Protocol):
    """What a flavour's runtime offers the driver for one node."""

    name: str

    def transport(self) -> Transport:
        """A connected transport to the running node (raises if it is not up)."""
        ...

    def is_running(self) -> bool: ...

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
        """Cut the node's experiment NIC (link down as seen by the guest)."""
        ...

    def unblock(self) -> None: ...

    def console_tail(self, lines: int = 20) -> str:
        """The last lines the node printed on its console (for error messages)."""
        ...
