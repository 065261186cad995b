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
