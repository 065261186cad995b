"""Durations as scenarios give them: ``datetime.timedelta`` or a number of seconds.

The NixOS test driver takes a ``timedelta`` for every timeout and still accepts plain
numbers (seconds); nxc's driver accepts both everywhere, with no deprecation warning
(numbers are the common form in nxc scenarios).
"""

from __future__ import annotations

import datetime as dt

from nxc.errors import NxcError

__all__ = ["Duration", "DurationError", "optional_seconds", "seconds"]

Duration = dt.timedelta | int | float


class DurationError(NxcError, TypeError):
    """A timeout or pause that is neither a ``timedelta`` nor a number."""


def seconds(value: Duration, what: str = "duration") -> float:
    """``value`` in seconds (a ``timedelta`` or a number of seconds)."""
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DurationError(
            f"{what} must be a datetime.timedelta or a number of seconds, "
            f"not {type(value).__name__} ({value!r})"
        )
    return float(value)


def optional_seconds(value: Duration | None, what: str = "timeout") -> float | None:
    """Like :func:`seconds`, with ``None`` (no limit) kept."""
    return None if value is None else seconds(value, what)
