"""Signals: SIGTERM and SIGHUP interrupt nxc the way Ctrl-C does, so cleanup runs.

Python turns SIGINT into ``KeyboardInterrupt``; :func:`install` makes SIGTERM and
SIGHUP raise :class:`Terminated` (a ``KeyboardInterrupt``) in the main thread too,
so every ``except BaseException: undo()`` path runs for all three. While nxc is
cleaning up (:func:`shielded`), these signals are held back and delivered after,
so a second Ctrl-C cannot cut a cleanup in half.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["Terminated", "exit_code", "install", "shielded"]

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """nxc was asked to stop by a signal (``signum``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_pending: list[int] = []
_depth = 0


def _handler(signum: int, _frame: FrameType | None) -> None:
    if _depth > 0:
        _pending.append(signum)
        return
    raise Terminated(signum)


def install() -> None:
    """Route SIGINT, SIGTERM and SIGHUP to :class:`Terminated` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in HANDLED:
        signal.signal(signum, _handler)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Hold signals back during the block; raise the first one held once it ends."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending:
            signum = _pending[0]
            _pending.clear()
            raise Terminated(signum)


def exit_code(exc: BaseException) -> int:
    """The conventional exit status for an interruption (128 + signal number)."""
    if isinstance(exc, Terminated):
        return 128 + exc.signum
    return 130
