"""Plain values for OAR jobs: a reference (``SITE:ID``) and a snapshot of a job's state."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from nxc.g5k.errors import PlanError

RUNNING = "running"
PENDING = frozenset({"waiting", "hold", "tolaunch", "toackreservation", "launching", "resuming"})
ENDED = frozenset({"finishing", "terminated", "error", "toerror"})
_REF = re.compile(r"\A([a-z][a-z0-9-]*):(\d+)\Z")


@dataclass(frozen=True, order=True)
class JobRef:
    site: str
    uid: int

    def __str__(self) -> str:
        return f"{self.site}:{self.uid}"

    @classmethod
    def parse(cls, text: str) -> JobRef:
        match = _REF.match(text.strip())
        if match is None:
            raise PlanError(f"job {text!r}: expected SITE:ID (e.g. rennes:1234567)")
        return cls(match.group(1), int(match.group(2)))


@dataclass(frozen=True)
class JobState:
    """What nxc knows about a job at one moment; ``nodes`` only once it is running."""

    ref: JobRef
    state: str
    name: str | None
    user: str
    walltime: int  # seconds
    started_at: int  # 0 before the start
    scheduled_at: int | None
    nodes: tuple[str, ...]
    message: str = ""
    types: tuple[str, ...] = ()  # OAR job types ("deploy": root only after a deployment)

    @classmethod
    def from_api(cls, ref: JobRef, attrs: dict[str, Any]) -> JobState:
        state = str(attrs.get("state", "unknown"))
        # A waiting job may already list *predicted* nodes: trust them only once running.
        nodes = tuple(attrs.get("assigned_nodes") or ()) if state == RUNNING else ()
        scheduled = attrs.get("scheduled_at")
        return cls(
            ref=ref,
            state=state,
            name=attrs.get("name"),
            user=str(attrs.get("user", "")),
            walltime=int(attrs.get("walltime") or 0),
            started_at=int(attrs.get("started_at") or 0),
            scheduled_at=int(scheduled) if scheduled else None,
            nodes=nodes,
            message=str(attrs.get("message") or ""),
            types=tuple(str(t) for t in attrs.get("types") or ()),
        )

    def summary(self, now: float) -> str:
        """``rennes:1234 running, 1:52:10 left`` (or the scheduled start while waiting)."""
        left = self.remaining(now)
        if self.state == RUNNING and left is not None:
            hours, minutes, seconds = left // 3600, left % 3600 // 60, left % 60
            return f"{self.ref} {self.state}, {hours}:{minutes:02d}:{seconds:02d} left"
        if self.scheduled_at:
            start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.scheduled_at))
            return f"{self.ref} {self.state}, scheduled start {start}"
        return f"{self.ref} {self.state}"

    def remaining(self, now: float) -> int | None:
        """Seconds of walltime left (None before the start)."""
        if not self.started_at:
            return None
        return max(0, int(self.started_at + self.walltime - now))
