"""Polling conditions (NixOS's ``polling_condition``) and the ``log`` a scenario sees.

A polling condition is a check that must keep holding while a block of the scenario
runs: ``with polling_condition(lambda: ...)`` registers it, and it is called before
every command the driver sends (at most once per interval); the first time it fails,
the command raises :class:`PollingConditionFailed`. ``cond.wait(timeout)`` waits
until it holds.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from nxc.driver.duration import Duration, seconds
from nxc.errors import MachineError, WaitTimeout
from nxc.log import Level, Logger, Span
from nxc.wait import Attempt, PollExpired, poll

__all__ = [
    "PollingCondition",
    "PollingConditionFailed",
    "RetryTime",
    "ScenarioLog",
    "retry",
]


class PollingConditionFailed(MachineError):
    """A registered polling condition did not hold."""


class RetryTime(dt.timedelta):
    """What ``retry`` passes its callback: the time left (a ``timedelta``) that is
    also NixOS's ``last_try`` flag: true only on the last attempt, made once the
    time is up (so ``if last_try:`` and ``remaining.total_seconds()`` both work)."""

    last_try: bool

    def __new__(cls, remaining: float, last_try: bool) -> RetryTime:
        value = super().__new__(cls, seconds=max(remaining, 0.0))
        value.last_try = last_try
        return value

    def __bool__(self) -> bool:
        return self.last_try


def _takes_argument(fn: Callable[..., Any]) -> bool:
    import inspect

    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return bool(positional)


def retry(
    fn: Callable[..., Any],
    timeout: Duration = 900,
    *,
    timeout_seconds: Duration | None = None,
    what: str | None = None,
) -> None:
    """Call ``fn`` until it returns something true, then one last time once the time is
    up; raise :class:`~nxc.errors.WaitTimeout` (``action timed out after …``) if that
    last call is false too. ``fn`` gets a :class:`RetryTime` if it takes an argument.
    ``timeout_seconds`` is NixOS's older name for ``timeout``."""
    limit = seconds(timeout if timeout_seconds is None else timeout_seconds, "timeout")
    with_arg = _takes_argument(fn)
    label = what or str(getattr(fn, "__name__", "condition"))
    started = time.monotonic()

    def call(remaining: float, last: bool) -> bool:
        return bool(fn(RetryTime(remaining, last)) if with_arg else fn())

    def attempt(remaining: float) -> Attempt[bool]:
        if call(remaining, False):
            return Attempt.ok(True)
        return Attempt.not_yet(f"{label} returned false")

    try:
        poll(label, attempt, limit, first=0.05, factor=2.0, longest=1.0)
        return
    except PollExpired:
        pass
    if not call(0.0, True):
        elapsed = time.monotonic() - started
        raise WaitTimeout(
            f"action timed out after {elapsed:.2f} seconds (timeout={limit:g}): {label} still false"
        )


class PollingCondition:
    """``condition`` (returning true or ``None`` when it holds) checked at most every
    ``interval``; ``description`` defaults to its docstring, then its name."""

    def __init__(
        self,
        condition: Callable[[], bool | None],
        logger: Logger,
        interval: float = 2.0,
        description: str | None = None,
    ) -> None:
        self.condition = condition
        self.logger = logger
        self.interval = interval
        if description is not None:
            self.description = str(description)
        else:
            doc = (getattr(condition, "__doc__", None) or "").strip()
            self.description = doc or getattr(condition, "__name__", "condition")
        self.last_called = -math.inf
        self._inside = threading.local()

    @property
    def entered(self) -> bool:
        return bool(getattr(self._inside, "depth", 0))

    def check(self, force: bool = False) -> bool:
        """Whether the condition holds (true without calling it while inside its own
        call, or when it was called less than ``interval`` ago, unless ``force``)."""
        if self.entered or (not force and time.monotonic() - self.last_called < self.interval):
            return True
        self._inside.depth = getattr(self._inside, "depth", 0) + 1
        try:
            with self.logger.nested(f"checking polling condition {self.description!r}"):
                try:
                    result = self.condition()
                except Exception as exc:
                    self.logger.info(f"the condition raised {type(exc).__name__}: {exc}")
                    result = False
                held = result is None or bool(result)
                self.logger.info(self.status(held))
                return held
        finally:
            self._inside.depth -= 1
            self.last_called = time.monotonic()

    def status(self, held: bool) -> str:
        return f"Polling condition {'succeeded' if held else 'failed'}: {self.description}"

    def maybe_raise(self) -> None:
        if not self.check():
            raise PollingConditionFailed(self.status(False))


class ScenarioLog:
    """The ``log`` a scenario sees: nxc's logger with NixOS's call forms too.

    ``log.log("msg")``, ``log.log("msg", {"key": "value"})``, ``log.nested("msg",
    {"key": "value"})``, ``log.info/warning/error("msg")``; nxc's own forms
    (``log.log("warning", "msg")``, ``log.nested("msg", key=value)``) keep working.
    """

    def __init__(self, logger: Logger) -> None:
        self._logger = logger

    def log(self, *args: Any, **attrs: Any) -> None:
        if len(args) == 2 and isinstance(args[1], str):
            level, message = args  # nxc: log(level, message)
        elif len(args) in (1, 2):
            level, message = Level.INFO, str(args[0])
            if len(args) == 2 and args[1]:
                attrs = {**dict(args[1]), **attrs}
        else:
            raise TypeError("log.log(message, attributes=None) takes one or two arguments")
        self._logger.log(level, message, **attrs)

    def nested(
        self, message: str, attributes: dict[str, Any] | None = None, **attrs: Any
    ) -> AbstractContextManager[Span]:
        return self._logger.nested(message, **{**(attributes or {}), **attrs})

    def _line(self, level: Level, args: tuple[Any, ...], attrs: dict[str, Any]) -> None:
        message = " ".join(str(a) for a in args if not isinstance(a, dict))
        for extra in (a for a in args if isinstance(a, dict)):
            attrs = {**extra, **attrs}
        self._logger.log(level, message, **attrs)

    def debug(self, *args: Any, **attrs: Any) -> None:
        self._line(Level.DEBUG, args, attrs)

    def info(self, *args: Any, **attrs: Any) -> None:
        self._line(Level.INFO, args, attrs)

    def warning(self, *args: Any, **attrs: Any) -> None:
        self._line(Level.WARNING, args, attrs)

    def error(self, *args: Any, **attrs: Any) -> None:
        self._line(Level.ERROR, args, attrs)

    @contextmanager
    def subtest(self, name: str, attributes: dict[str, Any] | None = None) -> Iterator[Span]:
        with self._logger.nested(f"subtest: {name}", **(attributes or {})) as span:
            yield span

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)
