"""Reserving nodes through the API: submit (or reuse, or attach), wait, map, release.

``Reserver`` talks to one python-grid5000 client on behalf of one user. Time is
injectable (``sleep``, ``monotonic``, ``now``) so tests drive a double's clock
instead of sleeping. Nothing here records the jobs anywhere: the caller (the g5k
flavours) puts them in its ledger as soon as ``submit`` returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from grid5000 import Grid5000

from nxc.g5k.client import ALREADY_KILLED, call
from nxc.g5k.errors import (
    DuplicateJobError,
    G5kApiError,
    G5kError,
    JobFailed,
    PlanError,
    ReservationTimeout,
)
from nxc.g5k.jobs import ENDED, RUNNING, JobRef, JobState
from nxc.g5k.plan import ReservationSpec, SiteJob, assign_nodes, plan

REUSABLE_STATES = "waiting,launching,running"
Progress = Callable[[Sequence[JobState]], None]


@dataclass(frozen=True)
class Submitted:
    ref: JobRef
    reused: bool


@dataclass(frozen=True)
class Reservation:
    jobs: tuple[JobState, ...]
    roles: dict[str, tuple[str, ...]]  # role -> node FQDNs


def _attrs(obj: Any) -> dict[str, Any]:
    """The JSON attributes of a python-grid5000 object."""
    return dict(obj.attributes)


class Reserver:
    def __init__(
        self,
        client: Grid5000,
        user: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.user = user
        self.sleep = sleep
        self.monotonic = monotonic
        self.now = now
        self._sites: dict[str, Any] = {}

    def _site(self, site: str) -> Any:
        if site not in self._sites:
            self._sites[site] = call(f"site {site}", lambda: self.client.sites[site])
        return self._sites[site]

    # -- looking jobs up -----------------------------------------------------------

    def find_all(self, site: str, name: str) -> list[JobRef]:
        """This user's waiting/launching/running jobs called ``name`` on ``site``."""
        jobs = call(
            f"site {site}: listing jobs named {name}",
            lambda: self._site(site).jobs.list(name=name, state=REUSABLE_STATES, user=self.user),
        )
        return [JobRef(site, int(job.uid)) for job in jobs]

    def find(self, site: str, name: str) -> JobRef | None:
        """This user's waiting/launching/running job called ``name`` on ``site``."""
        refs = self.find_all(site, name)
        if len(refs) > 1:
            ids = ", ".join(str(ref) for ref in refs)
            raise DuplicateJobError(
                f"site {site}: several jobs named {name} are alive ({ids}); release all but one"
            )
        return refs[0] if refs else None

    def state(self, ref: JobRef) -> JobState:
        job = call(f"job {ref}", lambda: self._site(ref.site).jobs[ref.uid])
        return JobState.from_api(ref, _attrs(job))

    # -- getting jobs --------------------------------------------------------------

    def _submit_one(self, job: SiteJob) -> Submitted:
        found = self.find(job.site, str(job.payload["name"]))
        if found is not None:
            return Submitted(found, reused=True)
        created = call(
            f"site {job.site}: submitting job {job.payload['name']}",
            lambda: self._site(job.site).jobs.create(dict(job.payload)),
        )
        return Submitted(JobRef(job.site, int(created.uid)), reused=False)

    def submit(self, jobs: Sequence[SiteJob]) -> list[Submitted]:
        """Submit (or reuse by name) one job per site, in parallel.

        If a site fails, the jobs this call created are released before raising.
        """
        if not jobs:
            return []
        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="nxc-g5k") as pool:
            futures = [pool.submit(self._submit_one, job) for job in jobs]
        done: list[Submitted] = []
        failure: G5kError | None = None
        for future in futures:
            try:
                done.append(future.result())
            except G5kError as exc:
                failure = failure or exc
        if failure is not None:
            created = [s.ref for s in done if not s.reused]
            if created:
                self.release(created)
            raise failure
        return done

    def attach(self, refs: Sequence[str | JobRef]) -> list[JobState]:
        """Adopt jobs reserved by hand (``SITE:ID``): they must be this user's and alive."""
        states = []
        parsed = [r if isinstance(r, JobRef) else JobRef.parse(r) for r in refs]
        if len({r.site for r in parsed}) != len(parsed):
            raise PlanError("attach at most one job per site")
        for ref in parsed:
            state = self.state(ref)
            if state.user != self.user:
                raise PlanError(f"job {ref} belongs to {state.user}, not to {self.user}")
            if state.state in ENDED:
                raise JobFailed(f"job {ref} is {state.state}: it cannot be used any more")
            states.append(state)
        return states

    # -- waiting -------------------------------------------------------------------

    def wait(
        self,
        refs: Sequence[JobRef],
        timeout: float,
        *,
        poll: float = 5.0,
        progress: Progress | None = None,
    ) -> list[JobState]:
        """Wait until every job runs; on timeout the jobs stay reserved (see the error).

        The API is asked again after half a second, then less and less often, up to
        every ``poll`` seconds: a job that starts at once is seen at once, a long wait
        costs few requests.
        """
        deadline = self.monotonic() + timeout
        pause = min(0.5, poll)
        while True:
            states = [self.state(ref) for ref in refs]
            if progress is not None:
                progress(states)
            for st in states:
                if st.state in ENDED:
                    why = f": {st.message}" if st.message else ""
                    raise JobFailed(f"job {st.ref} is {st.state} before running{why}")
            if all(st.state == RUNNING for st in states):
                return states
            left = deadline - self.monotonic()
            if left <= 0:
                raise ReservationTimeout(
                    f"jobs not running after {timeout:g} s: "
                    + ", ".join(st.summary(self.now()) for st in states if st.state != RUNNING),
                    refs,
                )
            self.sleep(min(pause, left))
            pause = min(pause * 2, poll)

    def nodes(self, ref: JobRef) -> tuple[str, ...]:
        st = self.state(ref)
        if st.state != RUNNING:
            raise G5kError(f"job {ref} is {st.state}: its nodes are known once it runs")
        return st.nodes

    # -- after ---------------------------------------------------------------------

    def release(self, refs: Sequence[JobRef]) -> dict[JobRef, str]:
        """Delete jobs; a job already killed or gone counts as released.

        Returns per job ``deleted``, ``already killed`` or ``not found``; tries every
        job before raising for those that could not be deleted.
        """
        outcome: dict[JobRef, str] = {}
        failures = []
        for ref in refs:
            try:
                self._delete(ref)
                outcome[ref] = "deleted"
            except G5kApiError as exc:
                if exc.status == 400 and ALREADY_KILLED in exc.body:
                    outcome[ref] = "already killed"
                elif exc.status == 404:
                    outcome[ref] = "not found"
                else:
                    failures.append(str(exc))
        if failures:
            raise G5kError("; ".join(failures))
        return outcome

    def _delete(self, ref: JobRef) -> None:
        call(f"job {ref}: release", lambda: self._site(ref.site).jobs.delete(ref.uid))

    def extend(self, ref: JobRef, walltime: str) -> JobState:
        """Ask for a walltime change (``+1:00`` adds an hour); returns the job after it."""
        if not walltime or not _is_walltime_change(walltime):
            raise PlanError(
                f"walltime change {walltime!r}: expected [+|-]hours[:minutes[:seconds]]"
            )
        path = f"/sites/{ref.site}/jobs/{ref.uid}/walltime"
        # The API answers OAR's text as a JSON string, which python-grid5000's
        # walltime_change.create cannot turn into an object: post it directly.
        call(
            f"job {ref}: walltime change {walltime}",
            lambda: self.client.http_post(path, post_data={"walltime": walltime}),
        )
        return self.state(ref)

    def status(self, refs: Sequence[JobRef]) -> list[JobState]:
        return [self.state(ref) for ref in refs]


def _is_walltime_change(text: str) -> bool:
    body = text[1:] if text[0] in "+-" else text
    parts = body.split(":")
    return 1 <= len(parts) <= 3 and all(p.isdigit() for p in parts)


def map_roles(jobs: Sequence[SiteJob], states: Sequence[JobState]) -> dict[str, tuple[str, ...]]:
    """Role -> nodes over all sites (a role on several sites: nodes in site order)."""
    by_site = {st.ref.site: st for st in states}
    roles: dict[str, tuple[str, ...]] = {}
    for job in jobs:
        st = by_site.get(job.site)
        if st is None or st.state != RUNNING:
            raise G5kError(f"site {job.site}: no running job to take nodes from")
        for role, nodes in assign_nodes(job, st.nodes, str(st.ref)).items():
            roles[role] = roles.get(role, ()) + nodes
    return roles


def reserve(
    reserver: Reserver,
    spec: ReservationSpec,
    timeout: float,
    *,
    attach: Sequence[str] = (),
    poll: float = 5.0,
    progress: Progress | None = None,
    on_submitted: Callable[[Sequence[JobRef]], None] | None = None,
) -> Reservation:
    """Plan, submit (reusing or attaching), wait, and map nodes to roles.

    ``on_submitted`` sees the jobs as soon as they exist (to record them before the
    wait); on a timeout the jobs stay reserved and the error lists them.
    """
    jobs = plan(spec)
    if attach:
        attached = reserver.attach(attach)
        sites = {st.ref.site for st in attached}
        missing = [j.site for j in jobs if j.site not in sites]
        if missing:
            raise PlanError(f"no attached job for site(s) {', '.join(missing)}")
        refs = [st.ref for st in attached if st.ref.site in {j.site for j in jobs}]
    else:
        refs = [s.ref for s in reserver.submit(jobs)]
    if on_submitted is not None:
        on_submitted(refs)
    states = reserver.wait(refs, timeout, poll=poll, progress=progress)
    return Reservation(tuple(states), map_roles(jobs, states))
