"""Errors of the ssh transport: each one line naming the node (and path, for copies).

They are :class:`~nxc.runtime.transport.TransportError` (the driver's ``Machine`` turns
them into ``ConnectionLost``) and :class:`~nxc.errors.NxcError` (the CLI prints them as
``nxc: error: …`` without a traceback).
"""

from __future__ import annotations

from nxc.errors import NxcError
from nxc.runtime.transport import TransportError


class SshError(TransportError, NxcError):
    """The ssh channel to a node failed (not a command that failed)."""


class SshConfigError(SshError):
    """The ssh settings are unusable (missing known_hosts, unreadable config…)."""


class SshConnectError(SshError):
    """A node could not be connected to (refused, unreachable, timed out, auth refused)."""


class HostKeyRejected(SshConnectError):
    """The node's host key is not the one known_hosts lists for it: never accepted."""


class SshFileError(SshError):
    """A put/get failed; the message names the node and the path."""
