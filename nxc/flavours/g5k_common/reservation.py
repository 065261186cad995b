"""The OAR side of a Grid'5000 run: from the deployment's roles to running jobs whose
nodes are given to the deployment's nodes; the jobs as ledger resources.

Two resource kinds:

* ``g5k-job`` (``SITE:ID``): a job nxc submitted, reused or attached; releasing it
  DELETEs it (already killed or gone counts as released) unless it is kept
  (``--keep-job``, or a job attached with ``--job``, which the user reserved);
* ``g5k-job-name`` (``SITE/NAME``): recorded *before* a job is submitted, so that a
  job whose id nxc never learned (nxc killed during the POST) is still found, by name,
  and released.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nxc.contracts import Deployment
from nxc.g5k import JobRef, JobState, ReservationSpec, Reserver, RoleRequest, load_config
from nxc.g5k.errors import G5kError, PlanError
from nxc.g5k.plan import plan
from nxc.g5k.reserve import map_roles
from nxc.ledger import Ledger, ReleaseContext, ReleaseError, Resource
from nxc.runtime.options import FlavourOptions

JOB_KIND = "g5k-job"
JOB_NAME_KIND = "g5k-job-name"
Say = Callable[[str], None]


def default_job_name(composition: str, project_root: Path) -> str:
    digest = hashlib.sha256(str(project_root).encode()).hexdigest()[:6]
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in composition)[:40]
    return f"nxc-{stem}-{digest}"


def reservation_spec(
    deployment: Deployment,
    options: FlavourOptions,
    name: str,
    default_site: str | None,
    types: Sequence[str] = (),
) -> ReservationSpec:
    """What to reserve: per role its node count, site, cluster, properties."""
    roles = []
    for role, count in deployment.roles.items():
        if count <= 0:
            continue
        site = options.get("site", role) or default_site
        if not site:
            raise PlanError(
                f"role {role}: no Grid'5000 site given (--site rennes, --site {role}=rennes, "
                "flavours.<flavour>.site in the composition, or NXC_G5K_SITE)"
            )
        roles.append(
            RoleRequest(
                role,
                count,
                str(site),
                cluster=options.get("cluster", role),
                properties=options.get("properties", role),
            )
        )
    extra_types = [t for t in options.get("job-type", default=[]) or [] if t not in types]
    return ReservationSpec(
        name=name,
        roles=tuple(roles),
        walltime=str(options.get("walltime", default="1:00:00")),
        queue=str(options.get("queue", default="default")),
        project=options.get("g5k-project"),
        types=tuple([*types, *extra_types]),
        reservation=options.get("reservation"),
    )


def record_name_intent(ledger: Ledger, owner: str, site: str, name: str, **extra: Any) -> None:
    ledger.record(JOB_NAME_KIND, f"{site}/{name}", f"OAR job {name} on {site}", owner, **extra)


def record_job(
    ledger: Ledger, owner: str, ref: JobRef, *, keep: bool, attached: bool, **extra: Any
) -> None:
    why = "attached" if attached else "reserved"
    ledger.record(
        JOB_KIND,
        str(ref),
        f"OAR job {ref} ({why})",
        owner,
        site=ref.site,
        uid=ref.uid,
        keep=keep,
        attached=attached,
        **extra,
    )


@dataclass(frozen=True)
class Reserved:
    deployment: Deployment
    jobs: tuple[JobState, ...]
    fqdn: dict[str, str]  # node name -> FQDN


def progress_line(states: Sequence[JobState], now: float, waited: float) -> str:
    parts = []
    for st in states:
        if st.state == "running":
            parts.append(f"{st.ref} running")
        elif st.scheduled_at:
            shape = "%H:%M:%S" if abs(st.scheduled_at - now) < 43200 else "%Y-%m-%d %H:%M:%S"
            start = time.strftime(shape, time.localtime(st.scheduled_at))
            parts.append(f"{st.ref} {st.state} (scheduled start {start})")
        else:
            parts.append(f"{st.ref} {st.state}")
    return f"OAR: {', '.join(parts)}; waited {waited:.0f}s"


def reserve_nodes(
    reserver: Reserver,
    spec: ReservationSpec,
    deployment: Deployment,
    *,
    ledger: Ledger,
    owner: str,
    keep: bool,
    attach: Sequence[str],
    timeout: float,
    say: Say,
    ledger_extra: Mapping[str, Any],
) -> Reserved:
    """Submit (or reuse, or attach) one job per site, wait until all run, map nodes.

    Every job is in the ledger before the wait (a name intent even before the POST).
    """
    jobs = plan(spec)
    if attach:
        say(f"attaching job(s) {', '.join(attach)}")
        attached = reserver.attach(attach)
        sites = {st.ref.site for st in attached}
        missing = [j.site for j in jobs if j.site not in sites]
        if missing:
            raise PlanError(f"no job attached for site(s) {', '.join(missing)} (--job SITE:ID)")
        refs = [st.ref for st in attached if st.ref.site in {j.site for j in jobs}]
        for ref in refs:
            record_job(ledger, owner, ref, keep=True, attached=True, **ledger_extra)
    else:
        for job in jobs:
            record_name_intent(ledger, owner, job.site, spec.name, keep=keep, **ledger_extra)
        say(f"submitting OAR job {spec.name} on {', '.join(j.site for j in jobs)}")
        submitted = reserver.submit(jobs)
        for item in submitted:
            record_job(ledger, owner, item.ref, keep=keep, attached=False, **ledger_extra)
            if item.reused:
                say(f"reusing job {item.ref} (named {spec.name})")
        refs = [s.ref for s in submitted]
    began = time.monotonic()
    states = reserver.wait(
        refs,
        timeout,
        poll=5.0,
        progress=lambda sts: say(progress_line(sts, time.time(), time.monotonic() - began)),
    )
    roles = map_roles(jobs, states)
    fqdn: dict[str, str] = {}
    for role, nodes in roles.items():
        members = deployment.nodes_of(role)
        if len(members) != len(nodes):
            raise PlanError(f"role {role}: {len(nodes)} node(s) reserved, {len(members)} wanted")
        for node, name in zip(members, nodes, strict=True):
            fqdn[node.name] = name
    placed = [replace(n, ssh_host=fqdn[n.name], ssh_port=None) for n in deployment.nodes]
    return Reserved(replace(deployment, nodes=placed), tuple(states), fqdn)


# -- release -------------------------------------------------------------------------


def reserver_from(extra: Mapping[str, Any]) -> Reserver:
    """A reserver with the credentials a ledger entry or the runtime state names."""
    path = extra.get("config_file")
    config = load_config(Path(path) if path else None)
    return Reserver(config.client(), config.username)


class JobKind:
    """Release a ``g5k-job``: DELETE it unless kept."""

    name = JOB_KIND

    def release(self, resource: Resource, ctx: ReleaseContext) -> str | None:
        ref = JobRef.parse(resource.ident)
        if resource.extra.get("keep"):
            why = "attached with --job" if resource.extra.get("attached") else "--keep-job"
            return f"kept OAR job {ref} ({why}; nxc start reuses it by name)"
        try:
            outcome = reserver_from(resource.extra).release([ref])[ref]
        except G5kError as exc:
            raise ReleaseError(str(exc)) from None
        if outcome == "deleted":
            return f"released OAR job {ref}"
        return None  # already killed or gone


class JobNameKind:
    """Release the job nxc may have submitted under a name before it learned its id."""

    name = JOB_NAME_KIND

    def release(self, resource: Resource, ctx: ReleaseContext) -> str | None:
        site, _, name = resource.ident.partition("/")
        if resource.extra.get("keep"):
            return None
        try:
            reserver = reserver_from(resource.extra)
            refs = reserver.find_all(site, name)
            outcome = reserver.release(refs) if refs else {}
        except G5kError as exc:
            raise ReleaseError(str(exc)) from None
        deleted = [str(r) for r, what in outcome.items() if what == "deleted"]
        return f"released OAR job(s) {', '.join(deleted)} named {name}" if deleted else None


def job_refs(ledger_entries: Sequence[Resource]) -> list[JobRef]:
    return [JobRef.parse(r.ident) for r in ledger_entries if r.kind == JOB_KIND]
