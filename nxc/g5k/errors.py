"""Grid'5000 failures, each a one-line ``NxcError`` naming the site, job or file."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from nxc.errors import NxcError

if TYPE_CHECKING:
    from nxc.g5k.jobs import JobRef


class G5kError(NxcError):
    """Something about Grid'5000 went wrong."""


class CredentialsError(G5kError):
    """No usable API credentials (missing, unreadable, or refused with 401)."""


class PlanError(G5kError):
    """What to reserve is inconsistent (before anything is submitted)."""


class G5kApiError(G5kError):
    """The API answered with an error (or could not be reached)."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class DuplicateJobError(G5kError):
    """More than one waiting/running job has the name nxc would reuse."""


class JobFailed(G5kError):
    """A job ended (error/terminated) before it ran."""


class ReservationTimeout(G5kError):
    """Jobs were not running in time; ``jobs`` are still reserved (the caller may release)."""

    def __init__(self, message: str, jobs: Sequence[JobRef]) -> None:
        super().__init__(message)
        self.jobs = tuple(jobs)
