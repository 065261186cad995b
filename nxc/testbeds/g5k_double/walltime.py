"""Walltime changes (``POST /sites/{site}/jobs/{id}/walltime``), granted at once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nxc.testbeds.g5k_double.errors import bad_request, forbidden
from nxc.testbeds.g5k_double.jobs import Job
from nxc.testbeds.g5k_double.resources import ResourceError, format_duration, parse_walltime

INVALID = "The job walltime change you are trying to submit is not valid: "


def requested_walltime(job: Job, payload: Mapping[str, Any], now: float) -> int:
    """The job's new walltime in seconds, or the API's error for the request."""
    value = payload.get("walltime")
    if value in (None, ""):
        raise bad_request(INVALID + "you must give a new walltime")
    if not isinstance(value, str):
        raise bad_request(INVALID + "new walltime must be a String")
    if job.state != "running":
        raise forbidden(f"Walltime change for job {job.uid} is not possible: job is not running")
    sign = value[0] if value[0] in "+-" else ""
    try:
        amount = parse_walltime(value[1:] if sign else value)
    except ResourceError as exc:
        raise bad_request(INVALID + str(exc)) from None
    new = {"+": job.walltime + amount, "-": job.walltime - amount, "": amount}[sign]
    if new <= now - job.started_at:
        raise bad_request(INVALID + "the new walltime would already be over")
    return new


def _signed(seconds: int) -> str:
    return ("+" if seconds >= 0 else "-") + format_duration(abs(seconds))


def walltime_document(job: Job) -> dict[str, Any]:
    zero = _signed(0)
    return {
        "uid": job.uid,
        "walltime": format_duration(job.walltime),
        "possible": "UNLIMITED",
        "timeout": format_duration(0),
        "force": "NO",
        "delay_next_jobs": "NO",
        "whole": "NO",
        "granted": _signed(job.granted),
        "pending": zero,
        "granted_with_force": zero,
        "granted_with_whole": zero,
        "granted_with_delay_next_jobs": zero,
    }
