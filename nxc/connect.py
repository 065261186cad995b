"""``nxc connect``: interactive shells on nodes (ssh; several nodes as tmux panes)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Sequence

from nxc.errors import NxcError
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


def connect(current: RunningDeployment, names: Sequence[str]) -> str | None:
    """Replace this process with an ssh session on one node, or open a tmux session
    with one pane per node (attached when on a terminal). Returns a message when it
    did not take over the terminal."""
    chosen = list(names) or [n.name for n in current.deployment.nodes]
    for name in chosen:
        try:
            current.deployment.node(name)
        except KeyError as exc:
            raise NxcError(str(exc.args[0])) from None
    require_tool("ssh")
    if len(chosen) == 1:
        argv = current.ssh_argv(chosen[0])
        os.execvp(argv[0], argv)
    tmux = require_tool("tmux")
    session = f"nxc-{current.deployment.id}"
    commands = [shlex.join(current.ssh_argv(n)) for n in chosen]
    for call in tmux_commands(tmux, session, commands):
        done = subprocess.run(call, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise NxcError(f"tmux: {done.stderr.strip() or 'failed'} ({shlex.join(call[:3])})")
    if sys.stdin.isatty() and "TMUX" not in os.environ:
        os.execvp(tmux, [tmux, "attach-session", "-t", session])
    return f"tmux session '{session}': {len(chosen)} panes (tmux attach -t {session})"
