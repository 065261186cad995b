"""Waiting for every node of a launch to print its agent's ready line (Contract 3).

Each runtime knows how to read one node's ready line (a console file, a container's
log, ssh); this module holds what is common: poll them all at once, report progress,
and on failure name every late or failed node with the tail of its console.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Protocol

from nxc.errors import StartError
from nxc.runtime.contract import Progress
from nxc.wait import Attempt, PollExpired, poll

__all__ = ["Booting", "wait_all_ready"]


class Booting(Protocol):
    """A node being launched, as ``wait_all_ready`` sees it."""

    @property
    def name(self) -> str: ...

    def poll_ready(self) -> Attempt[str]:
        """Done once the agent announced readiness; raise StartError if the boot failed."""
        ...

    def console_tail(self, lines: int) -> str: ...


def wait_all_ready(
    nodes: Sequence[Booting],
    timeout: float,
    progress: Progress | None = None,
    *,
    logs: str = "",
    first: float = 0.02,
    longest: float = 0.5,
) -> None:
    """Wait until every node's agent reports ready, or raise one StartError naming each
    failed or late node with its console tail (``logs``: where the full logs are)."""
    pending = {n.name: n for n in nodes}
    failed: dict[str, str] = {}
    total = len(nodes)

    def check(_remaining: float) -> Attempt[bool]:
        for name, node in list(pending.items()):
            try:
                state = node.poll_ready()
            except StartError as exc:
                failed[name] = str(exc).removeprefix(f"{name}: ")
                del pending[name]
                continue
            if state.done:
                del pending[name]
                if progress:
                    progress(f"{total - len(pending) - len(failed)}/{total} nodes ready")
        # One failed node fails the launch: no need to wait for the others.
        if failed or not pending:
            return Attempt.ok(True)
        return Attempt.not_yet(", ".join(pending))

    with contextlib.suppress(PollExpired):
        poll("every node's ready line", check, timeout, first=first, longest=longest)
    if not pending and not failed:
        return
    by_name = {n.name: n for n in nodes}
    parts = [
        f"{name}: {reason}\n--- console of {name} ---\n{by_name[name].console_tail(15)}"
        for name, reason in failed.items()
    ]
    for name, node in pending.items():
        why = (
            f"not ready when {next(iter(failed))} failed"
            if failed
            else (f"not ready after {timeout:.0f}s")
        )
        parts.append(f"{name}: {why}\n--- console of {name} ---\n{node.console_tail(15)}")
    late = ", ".join([*failed, *pending])
    where = f" ({logs})" if logs else ""
    raise StartError(f"nodes not ready: {late}{where}\n" + "\n".join(parts))
