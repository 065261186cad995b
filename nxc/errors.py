"""Errors that reach the user as one line and a non-zero exit (no traceback).

Anything raised as an ``NxcError`` is the user's input or environment being wrong
(bad file, missing tool, unreachable node); anything else is a bug in nxc and keeps
its traceback.
"""

from __future__ import annotations


class NxcError(Exception):
    """A user-facing failure: the message names the problem in one line."""

    exit_code = 1


class ContractError(NxcError):
    """A manifest, deployment or topology document is malformed."""


class ToolMissing(NxcError):
    """A host tool nxc needs (qemu, nix, vde_switch…) is not installed."""


class BuildError(NxcError):
    """``nix build`` (or evaluation) failed."""


class StartError(NxcError):
    """Nodes could not be started or did not become ready in time."""


class StateError(NxcError):
    """The project state directory is missing what a command needs."""


class MachineError(NxcError):
    """A command on a node failed where the scenario required success."""


class WaitTimeout(MachineError):
    """A wait on a node ran out of time; the message says what was last seen."""
