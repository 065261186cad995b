"""What to reserve, as pure data: roles -> one OAR job request per site, and back.

Per role: a site, a cluster and/or OAR properties, a node count. Roles of a site
with the same selector share one resource group (``{cluster='paravance'}/nodes=3``);
once the job runs, nodes are given back to roles deterministically (natural order of
node names, roles in the order given). OAR does not say which group a node came
from, so different selectors on one site must be told apart by their cluster:
each such group needs its own cluster, or the roles must share one selector.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nxc.g5k.errors import PlanError

DEFAULT_COMMAND = "sleep 31536000"  # the job lives until its walltime or its release
RESERVATION_FORMAT = "%Y-%m-%d %H:%M:%S"
_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")
_WORD = re.compile(r"\A[a-z][a-z0-9_-]*\Z")
_WALLTIME = re.compile(r"\A(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?\Z")
_NODE = re.compile(r"\A([a-z][a-z0-9]*(?:-[a-z][a-z0-9]*)*)-(\d+)\.")

try:
    SITE_TZ: dt.tzinfo = ZoneInfo("Europe/Paris")  # what OAR reads reservation dates in
except ZoneInfoNotFoundError:
    SITE_TZ = dt.UTC


@dataclass(frozen=True)
class RoleRequest:
    role: str
    count: int
    site: str
    cluster: str | None = None
    properties: str | None = None  # OAR SQL, e.g. "gpu_count > 0"


@dataclass(frozen=True)
class ReservationSpec:
    name: str
    roles: tuple[RoleRequest, ...]
    walltime: str | int = "1:00:00"
    queue: str = "default"
    project: str | None = None
    types: tuple[str, ...] = ()
    reservation: dt.datetime | str | None = None
    command: str = DEFAULT_COMMAND


@dataclass(frozen=True)
class NodeGroup:
    """One ``{selector}/nodes=N`` group and the roles it feeds, in order."""

    cluster: str | None
    properties: str | None
    roles: tuple[tuple[str, int], ...]

    @property
    def count(self) -> int:
        return sum(n for _, n in self.roles)

    def resource(self) -> str:
        clauses = []
        if self.cluster:
            clauses.append(f"cluster='{self.cluster}'")
        if self.properties:
            clauses.append(f"({self.properties})" if self.cluster else self.properties)
        selector = "{" + " AND ".join(clauses) + "}/" if clauses else ""
        return f"{selector}nodes={self.count}"


@dataclass(frozen=True)
class SiteJob:
    """The OAR job nxc submits on one site."""

    site: str
    groups: tuple[NodeGroup, ...]
    payload: Mapping[str, Any] = field(compare=False)

    @property
    def resources(self) -> str:
        return str(self.payload["resources"])


def walltime_seconds(value: str | int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        match = _WALLTIME.match(str(value).strip())
        if match is None:
            raise PlanError(f"walltime {value!r}: expected hours[:minutes[:seconds]]")
        hours, minutes, secs = (int(g) if g else 0 for g in match.groups())
        if minutes > 59 or secs > 59:
            raise PlanError(f"walltime {value!r}: minutes and seconds go up to 59")
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        raise PlanError(f"walltime {value!r}: must be positive")
    return seconds


def format_walltime(seconds: int) -> str:
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def reservation_text(value: dt.datetime | str) -> str:
    """A reservation date as OAR wants it: ``YYYY-MM-DD hh:mm:ss``, site local time."""
    if isinstance(value, dt.datetime):
        when = value.replace(tzinfo=SITE_TZ) if value.tzinfo is None else value
        return when.astimezone(SITE_TZ).strftime(RESERVATION_FORMAT)
    try:
        dt.datetime.strptime(value.strip(), RESERVATION_FORMAT)
    except ValueError:
        raise PlanError(f"reservation {value!r}: expected 'YYYY-MM-DD hh:mm:ss'") from None
    return value.strip()


def _check_role(role: RoleRequest) -> None:
    where = f"role {role.role!r}"
    if not _NAME.match(role.role):
        raise PlanError(f"{where}: a role name is letters, digits, '_', '.', '-'")
    if isinstance(role.count, bool) or not isinstance(role.count, int) or role.count < 1:
        raise PlanError(f"{where}: node count must be >= 1, got {role.count!r}")
    if not _WORD.match(role.site or ""):
        raise PlanError(f"{where}: site {role.site!r} is not a site name (e.g. rennes)")
    if role.cluster is not None and not _WORD.match(role.cluster):
        raise PlanError(f"{where}: cluster {role.cluster!r} is not a cluster name")
    if role.properties is not None and (
        not role.properties.strip() or any(ch in role.properties for ch in "{}")
    ):
        raise PlanError(f"{where}: properties must be a non-empty OAR expression without braces")


def _site_groups(site: str, roles: Sequence[RoleRequest]) -> tuple[NodeGroup, ...]:
    by_selector: dict[tuple[str | None, str | None], list[tuple[str, int]]] = {}
    for role in roles:
        key = (role.cluster, role.properties.strip() if role.properties else None)
        by_selector.setdefault(key, []).append((role.role, role.count))
    groups = tuple(NodeGroup(c, p, tuple(r)) for (c, p), r in by_selector.items())
    if len(groups) > 1:
        clusters = [g.cluster for g in groups]
        for group in groups:
            if group.cluster is None or clusters.count(group.cluster) > 1:
                names = ", ".join(r for g in groups for r, _ in g.roles)
                raise PlanError(
                    f"site {site}: roles {names} ask for nodes that cannot be told apart once"
                    f" assigned; give each selector its own cluster, or one selector to all"
                )
    return groups


def plan(spec: ReservationSpec) -> tuple[SiteJob, ...]:
    """Validate ``spec`` and build one OAR job request per site (sites in role order)."""
    if not _NAME.match(spec.name):
        raise PlanError(f"job name {spec.name!r}: letters, digits, '_', '.', '-' (up to 100)")
    if not spec.roles:
        raise PlanError("nothing to reserve: no role asks for nodes")
    seen: set[tuple[str, str]] = set()
    for role in spec.roles:
        _check_role(role)
        if (role.role, role.site) in seen:
            raise PlanError(f"role {role.role!r} is given twice for site {role.site}")
        seen.add((role.role, role.site))
    if not _WORD.match(spec.queue):
        raise PlanError(f"queue {spec.queue!r} is not a queue name")
    for kind in spec.types:
        if not kind or any(ch.isspace() for ch in kind):
            raise PlanError(f"job type {kind!r} is not valid")
    walltime = format_walltime(walltime_seconds(spec.walltime))
    sites = list(dict.fromkeys(role.site for role in spec.roles))
    jobs = []
    for site in sites:
        groups = _site_groups(site, [r for r in spec.roles if r.site == site])
        payload: dict[str, Any] = {
            "name": spec.name,
            "resources": "+".join(g.resource() for g in groups) + f",walltime={walltime}",
            "command": spec.command,
            "queue": spec.queue,
        }
        if spec.types:
            payload["types"] = list(spec.types)
        if spec.project:
            payload["project"] = spec.project
        if spec.reservation is not None:
            payload["reservation"] = reservation_text(spec.reservation)
        jobs.append(SiteJob(site, groups, payload))
    return tuple(jobs)


def _node_key(fqdn: str) -> tuple[str, int, str]:
    match = _NODE.match(fqdn)
    return (match.group(1), int(match.group(2)), fqdn) if match else (fqdn, 0, fqdn)


def node_cluster(fqdn: str) -> str:
    """``paravance-3.rennes.grid5000.fr`` -> ``paravance``."""
    return _node_key(fqdn)[0]


def assign_nodes(job: SiteJob, nodes: Sequence[str], ref: str) -> dict[str, tuple[str, ...]]:
    """Give the nodes of a running job to its roles; ``ref`` names the job in errors."""
    ordered = sorted(set(nodes), key=_node_key)
    per_group: list[list[str]] = [[] for _ in job.groups]
    if len(job.groups) == 1:
        per_group[0] = ordered
    else:
        index = {g.cluster: i for i, g in enumerate(job.groups)}
        for fqdn in ordered:
            slot = index.get(node_cluster(fqdn))
            if slot is None:
                raise PlanError(f"job {ref}: node {fqdn} belongs to no role's cluster")
            per_group[slot].append(fqdn)
    roles: dict[str, tuple[str, ...]] = {}
    for group, members in zip(job.groups, per_group, strict=True):
        if len(members) != group.count:
            where = f"cluster {group.cluster}" if group.cluster else "the job"
            raise PlanError(
                f"job {ref}: {where} has {len(members)} node(s), the roles need {group.count};"
                f" release the job or use another job name"
            )
        start = 0
        for role, count in group.roles:
            roles[role] = tuple(members[start : start + count])
            start += count
    return roles
