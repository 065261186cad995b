"""An OAR job as the double keeps it, how a submission becomes one, and its JSON.

The JSON follows what the API renders for ``GET /sites/{site}/jobs/{id}``: integer
times, ``started_at`` 0 before the start, ``scheduled_at`` and ``stopped_at``
omitted while unknown, lowercase states, events, ``resources_by_type`` and
``assigned_nodes``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nxc.testbeds.g5k_double.errors import ApiError, bad_request
from nxc.testbeds.g5k_double.resources import (
    Allocation,
    Request,
    ResourceError,
    format_duration,
    parse_request,
    parse_walltime,
)

STATES = (
    "waiting", "hold", "tolaunch", "toerror", "toackreservation", "launching",
    "running", "suspended", "resuming", "finishing", "terminated", "error",
)  # fmt: skip
HOLDING = frozenset({"launching", "running", "suspended", "resuming", "finishing"})
FINAL = frozenset({"terminated", "error"})
KILLED = FINAL | {"finishing"}
DEFAULT_WALLTIME = 3600
RESERVATION_FORMAT = "%Y-%m-%d %H:%M:%S"

try:
    SITE_TZ: dt.tzinfo = ZoneInfo("Europe/Paris")
except ZoneInfoNotFoundError:  # no tzdata on this host: reservations read as UTC
    SITE_TZ = dt.UTC


@dataclass
class Event:
    uid: int
    created_at: int
    type: str
    description: str

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "created_at": self.created_at,
            "type": self.type,
            "description": self.description,
        }


@dataclass
class Job:
    uid: int
    site: str
    user: str
    command: str
    resources: str
    request: Request
    walltime: int
    queue: str
    project: str | None
    name: str | None
    types: tuple[str, ...]
    properties: str
    reservation: float | None
    submitted_at: float
    state: str = "waiting"
    not_before: float = 0.0  # earliest time the scheduler looks at it again
    blocked: bool = False  # waiting for resources to be freed
    started_at: float = 0.0
    stopped_at: float = 0.0
    finishing_until: float = 0.0
    final_state: str = "terminated"
    allocation: Allocation = field(default_factory=Allocation)
    events: list[Event] = field(default_factory=list)
    granted: int = 0  # walltime granted by walltime changes (seconds)

    def holds_resources(self) -> bool:
        return self.state in HOLDING

    def end_time(self) -> float:
        return self.started_at + self.walltime

    def to_json(
        self, scheduled_at: float | None, shown: Allocation, with_resources: bool = True
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "uid": self.uid,
            "user_uid": self.user,
            "user": self.user,
            "walltime": self.walltime,
            "queue": self.queue,
            "state": self.state,
            "project": self.project,
            "name": self.name,
            "types": list(self.types),
            "mode": "PASSIVE",
            "command": self.command,
            "submitted_at": int(self.submitted_at),
            "scheduled_at": int(scheduled_at) if scheduled_at else None,
            "started_at": int(self.started_at),
            "stopped_at": int(self.stopped_at) or None,
            "message": self._message(),
            "properties": self.properties or None,
            "directory": f"/home/{self.user}",
            "events": [event.to_json() for event in self.events],
        }
        data = {key: value for key, value in data.items() if value is not None}
        if with_resources:
            data["resources_by_type"] = resources_by_type(shown)
            data["assigned_nodes"] = [node.fqdn for node in shown.nodes]
        return data

    def _message(self) -> str:
        cores = sum(node.cores for node in self.allocation.nodes) or len(self.request.groups)
        parts = [f"R={cores}", f"W={format_duration(self.walltime)}", "J=B"]
        if self.name:
            parts.append(f"N={self.name}")
        if self.types:
            parts.append(f"T={'|'.join(self.types)}")
        return ",".join(parts) + " (Karma=0.000,quota_ok)"


def resources_by_type(allocation: Allocation) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    if allocation.nodes:
        # One entry per core, as OAR lists core resources by their network address.
        result["cores"] = [node.fqdn for node in allocation.nodes for _ in range(node.cores)]
    if allocation.vlans:
        result["vlans"] = list(allocation.vlans)
    if allocation.subnets:
        result["subnets"] = list(allocation.subnets)
    return result


def parse_reservation(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request("`reservation` should be a String.")
    try:
        when = dt.datetime.strptime(value.strip(), RESERVATION_FORMAT)
    except ValueError:
        raise bad_request(
            f"The job you are trying to submit is not valid: reservation {value!r} is not a"
            f" date (expected YYYY-MM-DD hh:mm:ss)"
        ) from None
    return when.replace(tzinfo=SITE_TZ).timestamp()


def _string_list(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise bad_request(f"The job you are trying to submit is not valid: {what} must be a list")


def _optional_str(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise bad_request(f"The job you are trying to submit is not valid: {key} must be a String")
    return str(value)


@dataclass(frozen=True)
class Submission:
    """A validated ``POST /sites/{site}/jobs`` payload."""

    command: str
    resources: str
    request: Request
    walltime: int
    queue: str
    project: str | None
    name: str | None
    types: tuple[str, ...]
    properties: str
    reservation: float | None


def parse_submission(payload: Mapping[str, Any], oar_path: str) -> Submission:
    """Validate a submission as the API then OAR do; raise ApiError with their texts."""
    reservation = parse_reservation(payload.get("reservation"))
    command = payload.get("command")
    if reservation is None and (not isinstance(command, str) or not command.strip()):
        raise bad_request(
            "The job you are trying to submit is not valid: you must give a :command to"
            " execute on launch"
        )
    resources = payload.get("resources", "nodes=1")
    if isinstance(resources, list):  # several -l options: the double takes the first
        resources = resources[0] if resources else "nodes=1"
    if not isinstance(resources, str):
        raise bad_request(
            "The job you are trying to submit is not valid: resources must be a String"
        )
    try:
        request = parse_request(resources)
        walltime = request.walltime
        if walltime is None and payload.get("walltime") is not None:
            walltime = parse_walltime(payload["walltime"])
    except ResourceError as exc:
        raise ApiError(400, f"Request to {oar_path} failed with status 400: {exc}") from None
    return Submission(
        command=command if isinstance(command, str) else "",
        resources=resources,
        request=request,
        walltime=walltime or DEFAULT_WALLTIME,
        queue=_optional_str(payload, "queue") or "default",
        project=_optional_str(payload, "project"),
        name=_optional_str(payload, "name"),
        types=_string_list(payload.get("types"), "types"),
        properties=_optional_str(payload, "properties") or "",
        reservation=reservation,
    )
