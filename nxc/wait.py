"""The one polling helper: every wait in nxc goes through :func:`poll`.

A wait names what it waits for and keeps what the last attempt saw, so that a wait
that runs out of time says both (per node, where there are nodes). Nothing polls
forever: every wait has a deadline, and the pause between attempts grows from
``first`` to ``longest`` so that fast conditions are seen fast and slow ones cost
little.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from nxc.errors import WaitTimeout

T = TypeVar("T")

__all__ = ["Attempt", "PollExpired", "poll"]


@dataclass(frozen=True)
class Attempt(Generic[T]):
    """What one attempt found: ``done`` with a ``value``, or not yet and what it ``saw``."""

    done: bool
    value: T | None = None
    saw: str = ""

    @classmethod
    def ok(cls, value: T, saw: str = "") -> Attempt[T]:
        return cls(True, value, saw)

    @classmethod
    def not_yet(cls, saw: str) -> Attempt[T]:
        return cls(False, None, saw)


class PollExpired(WaitTimeout):
    """A wait ran out of time; ``what`` it waited for and ``last`` what it saw last."""

    def __init__(self, what: str, timeout: float, attempts: int, last: str) -> None:
        shown = last.strip() or "(nothing)"
        one_line = shown if "\n" not in shown else "\n" + shown
        super().__init__(
            f"timed out after {timeout:g}s waiting for {what} "
            f"({attempts} attempt{'s' if attempts != 1 else ''}); last seen: {one_line}"
        )
        self.what = what
        self.timeout = timeout
        self.attempts = attempts
        self.last = last


def poll(
    what: str,
    check: Callable[[float], Attempt[T]],
    timeout: float,
    *,
    first: float = 0.02,
    factor: float = 1.5,
    longest: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``check(remaining_seconds)`` until it returns a done :class:`Attempt`.

    At least one attempt is made, even with ``timeout <= 0``. Exceptions from
    ``check`` propagate (a check that knows the condition can never hold raises).
    On expiry raise :class:`PollExpired` naming ``what`` and the last thing seen.
    """
    deadline = clock() + timeout
    pause = first
    attempts = 0
    last = "(no attempt completed)"
    while True:
        attempts += 1
        result = check(max(deadline - clock(), 0.0))
        if result.done:
            return result.value  # type: ignore[return-value]
        last = result.saw
        now = clock()
        if now >= deadline:
            raise PollExpired(what, timeout, attempts, last)
        sleep(min(pause, deadline - now))
        pause = min(pause * factor, longest)
