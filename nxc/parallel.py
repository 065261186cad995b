"""The one fan-out helper: run a function over many items at once, keep every outcome.

Threads (not processes): the work is waiting on nodes, sockets and subprocesses.
Each task runs in a copy of the caller's context, so the logger's nesting (a
context variable) and anything else kept in context variables follows the work
into the worker threads. No outcome is hidden: :func:`fan_out` returns one
:class:`Outcome` per item, in the items' order, and :func:`each` raises one error
naming every item that failed.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from nxc.errors import NxcError

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["FanOutError", "Outcome", "each", "fan_out"]

# Enough to keep hundreds of nodes busy without a thread per node.
DEFAULT_WORKERS = 32


@dataclass(frozen=True)
class Outcome(Generic[T, R]):
    item: T
    value: R | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class FanOutError(NxcError):
    """Some items failed; ``failures`` maps each failed item's label to its error."""

    def __init__(self, what: str, failures: dict[str, Exception], total: int) -> None:
        lines = [f"{label}: {error}" for label, error in failures.items()]
        first = lines[0].splitlines()[0] if lines else ""
        head = f"{what} failed on {len(failures)} of {total}: " + (
            first if len(lines) == 1 else ", ".join(failures)
        )
        detail = "\n".join(lines) if len(lines) > 1 or "\n" in lines[0] else ""
        super().__init__(head + ("\n" + detail if detail else ""))
        self.failures = failures


def fan_out(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int = DEFAULT_WORKERS,
    prefix: str = "nxc",
) -> list[Outcome[T, R]]:
    """Run ``fn(item)`` for every item in parallel; one outcome per item, in order.

    ``KeyboardInterrupt`` and other ``BaseException``s that are not ``Exception``s
    in a worker are re-raised in the caller once every task has finished.
    """
    todo: Sequence[T] = list(items)
    if not todo:
        return []

    def run(item: T) -> Outcome[T, R]:
        try:
            return Outcome(item, fn(item))
        except Exception as err:
            return Outcome(item, error=err)

    if len(todo) == 1:
        outcomes = [run(todo[0])]
    else:
        with ThreadPoolExecutor(min(workers, len(todo)), thread_name_prefix=prefix) as pool:
            futures = [pool.submit(contextvars.copy_context().run, run, item) for item in todo]
            outcomes = [future.result() for future in futures]
    return outcomes


def each(
    fn: Callable[[T], R],
    items: Iterable[T],
    what: str,
    label: Callable[[T], str] = str,
    *,
    workers: int = DEFAULT_WORKERS,
) -> list[R]:
    """Like :func:`fan_out`, but raise :class:`FanOutError` naming every failed item."""
    outcomes = fan_out(fn, items, workers=workers)
    failures = {label(o.item): o.error for o in outcomes if o.error is not None}
    if failures:
        if len(failures) == 1 and len(outcomes) == 1:
            raise next(iter(failures.values()))
        raise FanOutError(what, failures, len(outcomes))
    return [o.value for o in outcomes]  # type: ignore[misc]
