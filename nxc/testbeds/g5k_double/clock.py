"""The double's notion of time: real time plus an offset, optionally frozen.

Every state machine of the double reads the time here and nowhere else, so a test
can freeze the clock and move it forward (``advance``) instead of sleeping, and a
rehearsal can fast-forward a long walltime.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


class Clock:
    """Seconds since the epoch, as the double sees them."""

    def __init__(
        self,
        start: float | None = None,
        *,
        frozen: bool = False,
        source: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self._lock = threading.Lock()
        self._frozen_at: float | None = None
        self._offset = 0.0 if start is None else start - source()
        if frozen:
            self._frozen_at = self.now()

    def now(self) -> float:
        with self._lock:
            if self._frozen_at is not None:
                return self._frozen_at
            return self._source() + self._offset

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (never backwards); return the new time."""
        if seconds < 0:
            raise ValueError(f"cannot move the clock backwards ({seconds} s)")
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += seconds
                return self._frozen_at
            self._offset += seconds
            return self._source() + self._offset

    def freeze(self) -> None:
        now = self.now()
        with self._lock:
            self._frozen_at = now

    def unfreeze(self) -> None:
        with self._lock:
            if self._frozen_at is not None:
                self._offset = self._frozen_at - self._source()
                self._frozen_at = None


@dataclass
class Timings:
    """How long the double's state machines take (seconds of the double's clock)."""

    schedule_s: float = 5.0  # a schedulable job waits this long before launching
    launch_s: float = 5.0  # launching -> running
    finish_s: float = 2.0  # finishing -> terminated/error
    deploy_s: float = 60.0  # deployment processing -> done (at the earliest)

    def update(self, values: Mapping[str, object]) -> None:
        for key, value in values.items():
            if key not in self.__dataclass_fields__:
                raise ValueError(f"unknown timing {key!r} (known: {', '.join(self.as_dict())})")
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"timing {key!r} must be a number >= 0, got {value!r}")
            setattr(self, key, float(value))

    def as_dict(self) -> dict[str, float]:
        return {key: getattr(self, key) for key in self.__dataclass_fields__}
