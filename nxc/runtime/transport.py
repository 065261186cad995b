"""How the driver reaches a node: one interface, several transports.

A transport runs shell commands on a node (several at once, from several threads) and
returns their exit status and output, and copies single files to and from the node.
The backdoor (virtio-serial shell of a VM), the local transport and ssh
(:mod:`nxc.transports.ssh`) implement it; ``docker exec`` will too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
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


class NodeUnreachable(TransportError):
    """The transport could not connect (or reconnect) to the node: nothing was sent."""


class FileTransferError(TransportError):
    """The node refused a file copy (no such file or directory, permission, not a
    regular file…) while the channel itself is fine; the message names node and path.

    A transport that cannot tell the two apart raises plain :class:`TransportError`.
    """


class OutputTruncated(TransportError):
    """The command ran, but the node could not keep all of its output (the place it
    buffers output was full): the message says where, and how to get large output."""


class Transport(Protocol):
    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run ``command`` with ``sh -c`` on the node, stdin from /dev/null.

        Safe to call from several threads at once: commands run concurrently.
        ``timeout`` (seconds) bounds the command; on expiry raise ``TimeoutError``
        and make sure the command is killed on the node. On ``KeyboardInterrupt``
        (Ctrl-C while waiting) kill the command on the node, then re-raise it with a
        message saying whether the kill was confirmed.
        """
        ...

    def put(self, source: Path, target: str) -> None:
        """Copy the regular host file ``source`` to the node path ``target``.

        The file appears at ``target`` atomically (written aside, then renamed over
        it) with ``source``'s mode bits; the target's directory must exist. A broken
        channel, a missing source or an unwritable target raises
        :class:`TransportError` naming the node and the path (the node refusing may
        be told apart as :class:`FileTransferError`).
        """
        ...

    def get(self, source: str, target: Path) -> None:
        """Copy the node's regular file ``source`` to the host path ``target``.

        Written aside and renamed over ``target``, with the node file's mode bits.
        Failures raise :class:`TransportError` naming the node and the path.
        """
        ...

    def close(self) -> None:
        """Close the channel at once, never waiting for commands in flight: those fail
        with ``TransportError``, and so does every later call."""
        ...
