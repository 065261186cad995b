"""``nxc connect``: interactive shells on nodes (several nodes as tmux panes).

Over ssh where the deployment gives the node an ssh endpoint; otherwise through the
command the node's runtime supplies (``Runtime.shell_argv``: ``docker exec`` for
containers behind a private daemon).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Sequence

from nxc.errors import NxcError
from nxc.expand import host_name, role_aliases
from nxc.running import RunningDeployment
from nxc.tools import require_tool

__all__ = ["connect", "tmux_commands"]


def tmux_commands(tmux: str, session: str, commands: Sequence[str]) -> list[list[str]]:
    """The tmux calls that open one pane per command, tiled (pure)."""
    calls = [[tmux, "new-session", "-d", "-s", session, commands[0]]]
    for command in commands[1:]:
        calls.append([tmux, "split-window", "-t", session, command])
        calls.append([tmux, "select-layout", "-t", session, "tiled"])
    return calls


def resolve(current: RunningDeployment, name: str) -> str:
    """The node called ``name``, or reached by that role name (a role with one node:
    ``server`` → ``server1``; ``my_server`` and ``my-server`` alike)."""
    names = {n.name for n in current.deployment.nodes}
    if name in names:
        return name
    aliases = role_aliases((n.name, n.role) for n in current.deployment.nodes)
    return aliases.get(host_name(name), name)


def shell_argv(current: RunningDeployment, name: str) -> list[str]:
    """The command opening an interactive shell on node ``name`` (or role alias)."""
    name = resolve(current, name)
    try:
        node = current.deployment.node(name)
    except KeyError as exc:
        raise NxcError(str(exc.args[0])) from None
    if node.ssh_host is not None:
        require_tool("ssh")
        return current.ssh_argv(name)
    argv = current.runtime.shell_argv(current.project, current.deployment, name)
    if argv is None:
        raise NxcError(
            f"{name}: no ssh endpoint, and flavour {current.deployment.flavour} "
            "offers no other shell"
        )
    return argv


def connect(current: RunningDeployment, names: Sequence[str]) -> str | None:
    """Replace this process with a shell on one node, or open a tmux session with one
    pane per node (attached when on a terminal). Returns a message when it did not
    take over the terminal."""
    chosen = list(names) or [n.name for n in current.deployment.nodes]
    argvs = [shell_argv(current, name) for name in chosen]
    if len(chosen) == 1:
        os.execvp(argvs[0][0], argvs[0])
    tmux = require_tool("tmux")
    session = f"nxc-{current.deployment.id}"
    commands = [shlex.join(argv) for argv in argvs]
    for call in tmux_commands(tmux, session, commands):
        done = subprocess.run(call, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise NxcError(f"tmux: {done.stderr.strip() or 'failed'} ({shlex.join(call[:3])})")
    if sys.stdin.isatty() and "TMUX" not in os.environ:
        os.execvp(tmux, [tmux, "attach-session", "-t", session])
    return f"tmux session '{session}': {len(chosen)} panes (tmux attach -t {session})"
