"""The OAR side of the double: job table, scheduler and job state machine.

States advance lazily: every API call first runs ``tick(now)``, which replays the
transitions due since the last call in time order (resources freed at *t* are
available to a job that becomes schedulable at *t*), so moving the clock forward
by hours gives the same result as living through them:

    waiting --(schedule_s, reservation date, free resources)--> launching
    launching --(launch_s)--> running --(walltime)--> finishing --(finish_s)--> terminated
    DELETE: waiting -> error; launching/running -> finishing -> error
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nxc.testbeds.g5k_double.clock import Timings
from nxc.testbeds.g5k_double.errors import ApiError, bad_request, forbidden, not_found, oar_refused
from nxc.testbeds.g5k_double.inventory import Inventory, Node, Site
from nxc.testbeds.g5k_double.jobs import (
    FINAL,
    KILLED,
    STATES,
    Event,
    Job,
    parse_submission,
)
from nxc.testbeds.g5k_double.resources import (
    Allocation,
    Pool,
    ResourceError,
    allocate,
    format_duration,
)
from nxc.testbeds.g5k_double.status import status_document
from nxc.testbeds.g5k_double.walltime import requested_walltime, walltime_document

FIRST_JOB_ID = 1900001
ACTIVE_LIST_STATES = ("waiting", "launching", "running")


def oar_path(site: str, uid: int | None = None) -> str:
    suffix = f"/{uid}.json" if uid is not None else ".json"
    return f"https://api-out.{site}.grid5000.fr/oarapi/jobs{suffix}"


class JobTable:
    """OAR's jobs. ``alive(node)``: the node exists for OAR (a submission may count on
    it); ``available(node)``: it can be given to a job now (not rebooting after the
    previous job, like OAR's Absent nodes). ``on_freed(job)`` runs when a job's
    nodes are freed (the rehearsal testbed reboots them into their standard
    environment, as Grid'5000 does)."""

    def __init__(
        self,
        inventory: Inventory,
        timings: Timings,
        alive: Callable[[Node], bool],
        available: Callable[[Node], bool] | None = None,
        on_freed: Callable[[Job], None] | None = None,
    ):
        self.inventory = inventory
        self.timings = timings
        self.alive = alive
        self.available = available or (lambda _node: True)
        self.on_freed = on_freed
        self.jobs: dict[tuple[str, int], Job] = {}
        self._next_uid = FIRST_JOB_ID
        self._next_event = 1

    # -- lookups -----------------------------------------------------------------

    def get(self, site: str, uid: str | int) -> Job:
        try:
            key = (site, int(uid))
        except ValueError:
            key = (site, -1)
        job = self.jobs.get(key)
        if job is None:
            raise not_found(f"Couldn't find OAR::Job with 'job_id'={uid}")
        return job

    def select(self, site: str, query: Mapping[str, str]) -> list[Job]:
        """Jobs of ``site`` matching the list filters, newest first."""
        states = {s.strip().lower() for s in query.get("state", "").split(",") if s.strip()}
        found = []
        for job in sorted(self.jobs.values(), key=lambda j: -j.uid):
            if job.site != site:
                continue
            if query.get("user") and job.user != query["user"]:
                continue
            if query.get("name") and job.name != query["name"]:
                continue
            if query.get("project") and job.project != query["project"]:
                continue
            if query.get("queue") and job.queue != query["queue"]:
                continue
            if states and job.state not in states:
                continue
            found.append(job)
        return found

    # -- what a job may use ------------------------------------------------------

    def eligible_nodes(self, site: Site, job_queue: str, types: Iterable[str]) -> list[Node]:
        types = set(types)
        nodes: list[Node] = []
        for cluster in site.clusters:
            queue_ok = job_queue in cluster.queues or (
                job_queue == "besteffort" and "default" in cluster.queues
            )
            if not queue_ok or (cluster.exotic and "exotic" not in types):
                continue
            nodes.extend(
                n for n in cluster.nodes if self.alive(n) and (n.deploy or "deploy" not in types)
            )
        return nodes

    def _held(self, site: str, exclude: Job | None = None) -> Allocation:
        nodes: list[Node] = []
        vlans: list[str] = []
        subnets: list[str] = []
        for job in self.jobs.values():
            if job.site == site and job.holds_resources() and job is not exclude:
                nodes.extend(job.allocation.nodes)
                vlans.extend(job.allocation.vlans)
                subnets.extend(job.allocation.subnets)
        return Allocation(tuple(nodes), tuple(vlans), tuple(subnets))

    def _pool(self, site: Site, job: Job, held: Allocation, include_absent: bool = False) -> Pool:
        busy = set(held.nodes)
        return Pool(
            nodes=[
                n
                for n in self.eligible_nodes(site, job.queue, job.types)
                if n not in busy and (include_absent or self.available(n))
            ],
            vlans=[v for v in site.vlans if v.uid not in held.vlans],
            subnets=[s for s in site.subnets if s not in held.subnets],
        )

    def _try_allocate(
        self, job: Job, held: Allocation | None = None, include_absent: bool = False
    ) -> Allocation | None:
        site = self._site(job.site)
        held = self._held(job.site, exclude=job) if held is None else held
        pool = self._pool(site, job, held, include_absent)
        return allocate(job.request, pool, site, job.properties)

    def _site(self, uid: str) -> Site:
        site = self.inventory.site(uid)
        assert site is not None, uid
        return site

    # -- API operations ----------------------------------------------------------

    def submit(self, site: Site, user: str, payload: Mapping[str, Any], now: float) -> Job:
        sub = parse_submission(payload, oar_path(site.uid))
        queues = {q for c in site.clusters for q in c.queues} | {"besteffort"}
        if sub.queue not in queues:
            raise oar_refused(400, oar_path(site.uid), f"queue '{sub.queue}' does not exist")
        job = Job(
            uid=self._next_uid,
            site=site.uid,
            user=user,
            command=sub.command,
            resources=sub.resources,
            request=sub.request,
            walltime=sub.walltime,
            queue=sub.queue,
            project=sub.project,
            name=sub.name,
            types=sub.types,
            properties=sub.properties,
            reservation=sub.reservation,
            submitted_at=now,
            not_before=now + self.timings.schedule_s,
        )
        try:
            feasible = self._try_allocate(job, held=Allocation(), include_absent=True)
        except ResourceError as exc:
            raise oar_refused(400, oar_path(site.uid), str(exc)) from None
        if feasible is None:
            raise oar_refused(
                400, oar_path(site.uid), "There are not enough resources for your request"
            )
        self._next_uid += 1
        self.jobs[(site.uid, job.uid)] = job
        self._event(job, now, "SUBMISSION", f"[oarsub] job {job.uid} submitted by {user}")
        return job

    def delete(self, site: str, uid: str, user: str | None, now: float) -> None:
        if user is None:
            raise forbidden()
        job = self.get(site, uid)
        if job.user != user:
            raise forbidden()
        if job.state in KILLED:
            raise oar_refused(
                400,
                oar_path(site, job.uid),
                f"Cannot frag {job.uid} ; This job was already killed.",
            )
        self._event(job, now, "FRAG_JOB_REQUEST", f"User {user} requested to frag the job")
        if job.holds_resources():
            self._finish(job, now, "error")
        else:
            self._set_final(job, now, "error")

    def change_walltime(
        self, site: str, uid: str, user: str | None, payload: Mapping[str, Any], now: float
    ) -> str:
        if user is None:
            raise forbidden()
        job = self.get(site, uid)
        if job.user != user:
            raise forbidden()
        new = requested_walltime(job, payload, now)
        job.granted += new - job.walltime
        job.walltime = new
        self._event(job, now, "WALLTIME_CHANGE", f"walltime changed to {format_duration(new)}")
        return (
            f"Accepted: walltime change request accepted for job {job.uid}, "
            f"it will be handled shortly."
        )

    def walltime_status(self, site: str, uid: str) -> dict[str, Any]:
        return walltime_document(self.get(site, uid))

    def force(self, site: str, uid: str, state: str, now: float) -> Job:
        """Put a job in ``state`` now (control path), allocating or freeing resources."""
        if state not in STATES:
            raise bad_request(f"unknown job state {state!r} (known: {', '.join(STATES)})")
        job = self.get(site, uid)
        if state in ("launching", "running", "suspended", "resuming", "finishing"):
            if not job.holds_resources():
                allocation = self._try_allocate(job)
                if allocation is None:
                    raise ApiError(409, f"job {job.uid}: not enough free resources to {state}")
                job.allocation = allocation
                job.started_at = now
            job.state = state
            if state == "finishing":
                job.finishing_until = now + self.timings.finish_s
        elif state in FINAL:
            self._set_final(job, now, state)
        else:
            job.state, job.blocked, job.not_before = state, False, now
        self._event(job, now, "FORCED_STATE", f"state forced to {state} by the test double")
        return job

    # -- the state machine -------------------------------------------------------

    def _next_transition(self, job: Job) -> tuple[float, int] | None:
        if job.state == "waiting" and not job.blocked:
            return max(job.not_before, job.reservation or 0.0), 3
        if job.state == "launching":
            return job.started_at + self.timings.launch_s, 2
        if job.state == "running":
            return job.end_time(), 1
        if job.state == "finishing":
            return job.finishing_until, 0
        return None

    def tick(self, now: float) -> None:
        while True:
            due: tuple[float, int, int, Job] | None = None
            for job in self.jobs.values():
                nxt = self._next_transition(job)
                if nxt is not None and nxt[0] <= now:
                    key = (nxt[0], nxt[1], job.uid, job)
                    if due is None or key[:3] < due[:3]:
                        due = key
            if due is None:
                return
            self._advance(due[3], due[0])

    def _advance(self, job: Job, at: float) -> None:
        if job.state == "waiting":
            allocation = self._try_allocate(job)
            if allocation is None:
                job.blocked = True
                return
            job.allocation, job.started_at, job.state = allocation, at, "launching"
            self._event(job, at, "LAUNCHING", "job launched on its resources")
        elif job.state == "launching":
            job.state = "running"
        elif job.state == "running":
            self._event(job, at, "WALLTIME", f"[bipbip {job.uid}] walltime reached")
            self._finish(job, at, "terminated")
        elif job.state == "finishing":
            self._set_final(job, at, job.final_state)

    def _finish(self, job: Job, at: float, final_state: str) -> None:
        job.state, job.final_state = "finishing", final_state
        job.finishing_until = at + self.timings.finish_s

    def _set_final(self, job: Job, at: float, state: str) -> None:
        freed = job.holds_resources()
        job.state, job.stopped_at = state, at
        kind = "SWITCH_INTO_ERROR_STATE" if state == "error" else "SWITCH_INTO_TERMINATE_STATE"
        self._event(job, at, kind, f"job {job.uid} is now {state}")
        if freed:
            self.unblock(job.site, at)
            if self.on_freed is not None:
                self.on_freed(job)

    def unblock(self, site: str, at: float) -> None:
        """Resources of ``site`` may have become free: blocked jobs try again."""
        for other in self.jobs.values():
            if other.site == site and other.state == "waiting" and other.blocked:
                other.blocked, other.not_before = False, max(other.not_before, at)

    def _event(self, job: Job, at: float, kind: str, description: str) -> None:
        job.events.append(Event(self._next_event, int(at), kind, description))
        self._next_event += 1

    # -- what a client sees ------------------------------------------------------

    def shown_allocation(self, job: Job) -> Allocation:
        """Assigned resources; for a schedulable waiting job, OAR's *prediction*."""
        if job.state == "waiting" and not job.blocked:
            return self._try_allocate(job) or Allocation()
        return job.allocation

    def scheduled_at(self, job: Job, now: float) -> float | None:
        if job.state != "waiting":
            return job.started_at or None
        start = max(job.not_before, job.reservation or 0.0, now)
        if not job.blocked:
            return start
        # When would enough resources be free?  Replay the releases of running jobs.
        site = self._site(job.site)
        holders = sorted(
            (j for j in self.jobs.values() if j.site == job.site and j.holds_resources()),
            key=self._free_time,
        )
        for index, holder in enumerate(holders):
            still = holders[index + 1 :]
            held = Allocation(
                tuple(n for j in still for n in j.allocation.nodes),
                tuple(v for j in still for v in j.allocation.vlans),
                tuple(s for j in still for s in j.allocation.subnets),
            )
            if allocate(job.request, self._pool(site, job, held), site, job.properties):
                return max(start, self._free_time(holder))
        return None

    def _free_time(self, job: Job) -> float:
        if job.state == "finishing":
            return job.finishing_until
        return job.end_time() + self.timings.finish_s

    def site_status(self, site: Site, now: float) -> dict[str, Any]:
        holders = {
            node.fqdn: job
            for job in self.jobs.values()
            if job.site == site.uid and job.holds_resources()
            for node in job.allocation.nodes
        }
        return status_document(site, holders, set(self._held(site.uid).vlans), self.alive, now)

    def deployable_nodes(self, site: str, user: str) -> set[str]:
        """Nodes of ``user``'s running jobs of type ``deploy`` on ``site``."""
        return {
            node.fqdn
            for job in self.jobs.values()
            if job.site == site and job.user == user and job.state == "running"
            and "deploy" in job.types
            for node in job.allocation.nodes
        }  # fmt: skip
