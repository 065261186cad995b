"""nxc's reservation library against the double, through the real python-grid5000."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import urllib3.util.retry

from nxc.g5k.errors import (
    CredentialsError,
    DuplicateJobError,
    G5kApiError,
    G5kError,
    JobFailed,
    PlanError,
    ReservationTimeout,
)
from nxc.g5k.jobs import JobRef, JobState
from nxc.g5k.plan import ReservationSpec, RoleRequest, plan
from nxc.g5k.reserve import Reserver, reserve
from nxc.testbeds.g5k_double import G5kDouble

from .conftest import TIMINGS, client_for, reserver_for

SPEC = ReservationSpec(
    name="nxc-demo",
    roles=(
        RoleRequest("server", 1, "rennes", cluster="paravance"),
        RoleRequest("client", 2, "rennes", cluster="paravance"),
    ),
    walltime="2:00",
    types=("deploy",),
)
MULTI = ReservationSpec(
    name="nxc-multi",
    roles=(
        RoleRequest("server", 1, "rennes", cluster="parasilo"),
        RoleRequest("client", 2, "rennes", cluster="paravance"),
        RoleRequest("client", 3, "nancy", cluster="grisou"),
    ),
    walltime=3600,
)


def alive_jobs(double: G5kDouble) -> list[tuple[str, int, str]]:
    with double.backend.lock:
        double.backend.tick()
        return sorted(
            (j.site, j.uid, j.state)
            for j in double.backend.jobs.jobs.values()
            if j.state not in ("error", "terminated")
        )


def test_reserve_submits_waits_and_maps_roles(double: G5kDouble, reserver: Reserver) -> None:
    seen: list[list[str]] = []
    recorded: list[JobRef] = []

    def progress(states: Sequence[JobState]) -> None:
        seen.append([st.state for st in states])

    result = reserve(reserver, SPEC, timeout=60, poll=2, progress=progress,
                     on_submitted=recorded.extend)  # fmt: skip
    (job,) = result.jobs
    assert recorded == [job.ref] and job.state == "running"
    assert result.roles == {
        "server": ("paravance-1.rennes.grid5000.fr",),
        "client": ("paravance-2.rennes.grid5000.fr", "paravance-3.rennes.grid5000.fr"),
    }
    assert seen[0] == ["waiting"] and seen[-1] == ["running"]
    server_job = double.job("rennes", job.ref.uid)
    assert server_job.name == "nxc-demo" and server_job.types == ("deploy",)
    assert server_job.walltime == 7200


def test_second_start_reuses_the_job_by_name(double: G5kDouble, reserver: Reserver) -> None:
    first = reserve(reserver, SPEC, timeout=60, poll=2)
    second = reserve(reserver_for(double), SPEC, timeout=60, poll=2)
    assert second.jobs[0].ref == first.jobs[0].ref
    assert second.roles == first.roles
    assert len(alive_jobs(double)) == 1
    posts = [s for s in double.served if s.method == "POST"]
    assert len(posts) == 1


def test_reuse_ignores_other_users_and_dead_jobs(double: G5kDouble, reserver: Reserver) -> None:
    (bob_job,) = reserver_for(double, "bob").submit(plan(SPEC))
    (mine,) = reserver.submit(plan(SPEC))
    assert not mine.reused and mine.ref != bob_job.ref
    reserver.release([mine.ref])
    (again,) = reserver.submit(plan(SPEC))
    assert not again.reused and again.ref != mine.ref


def test_two_alive_jobs_with_the_name_is_an_error(double: G5kDouble, reserver: Reserver) -> None:
    payload = dict(plan(SPEC)[0].payload)
    client = client_for(double)
    client.sites["rennes"].jobs.create(payload)
    client.sites["rennes"].jobs.create(payload)
    with pytest.raises(DuplicateJobError, match=r"site rennes: several jobs named nxc-demo"):
        reserver.submit(plan(SPEC))


def test_attach_to_a_job_reserved_by_hand(double: G5kDouble, reserver: Reserver) -> None:
    by_hand = (
        client_for(double)
        .sites["rennes"]
        .jobs.create(
            {"command": "sleep 1d", "resources": "{cluster='paravance'}/nodes=3", "name": "manual"}
        )
    )
    result = reserve(reserver, SPEC, timeout=60, poll=2, attach=[f"rennes:{by_hand.uid}"])
    assert result.jobs[0].ref == JobRef("rennes", by_hand.uid)
    assert sorted(n for nodes in result.roles.values() for n in nodes) == [
        f"paravance-{i}.rennes.grid5000.fr" for i in (1, 2, 3)
    ]
    assert len(alive_jobs(double)) == 1  # nothing new submitted


def test_attach_refuses_others_jobs_dead_jobs_and_bad_refs(
    double: G5kDouble, reserver: Reserver
) -> None:
    (bobs,) = reserver_for(double, "bob").submit(plan(SPEC))
    with pytest.raises(PlanError, match=f"job {bobs.ref} belongs to bob"):
        reserver.attach([str(bobs.ref)])
    (mine,) = reserver.submit(plan(SPEC))
    reserver.release([mine.ref])
    with pytest.raises(JobFailed, match=f"job {mine.ref} is (finishing|error)"):
        reserver.attach([mine.ref])
    with pytest.raises(PlanError, match="expected SITE:ID"):
        reserver.attach(["rennes-1234"])
    with pytest.raises(G5kApiError, match="job rennes:77: 404"):
        reserver.attach(["rennes:77"])


def test_multi_site_one_job_per_site(double: G5kDouble, reserver: Reserver) -> None:
    result = reserve(reserver, MULTI, timeout=60, poll=2)
    assert sorted(st.ref.site for st in result.jobs) == ["nancy", "rennes"]
    posts = sorted(s.path for s in double.served if s.method == "POST")
    assert posts == ["/sites/nancy/jobs", "/sites/rennes/jobs"]
    assert result.roles["server"] == ("parasilo-1.rennes.grid5000.fr",)
    assert result.roles["client"] == (
        "paravance-1.rennes.grid5000.fr",
        "paravance-2.rennes.grid5000.fr",
        "grisou-1.nancy.grid5000.fr",
        "grisou-2.nancy.grid5000.fr",
        "grisou-3.nancy.grid5000.fr",
    )
    rennes = next(st for st in result.jobs if st.ref.site == "rennes")
    assert double.job("rennes", rennes.ref.uid).resources == (
        "{cluster='parasilo'}/nodes=1+{cluster='paravance'}/nodes=2,walltime=1:00:00"
    )


def test_failed_site_releases_what_was_created(double: G5kDouble, reserver: Reserver) -> None:
    bad = ReservationSpec(
        name="nxc-bad",
        roles=(
            RoleRequest("a", 1, "rennes", cluster="paravance"),
            RoleRequest("b", 9, "nancy", cluster="grisou"),  # grisou has 8 nodes
        ),
    )
    with pytest.raises(G5kApiError, match=r"site nancy: submitting job nxc-bad: 400: .*not enough"):
        reserver.submit(plan(bad))
    assert alive_jobs(double) == []  # the rennes job was released


def test_timeout_while_waiting_then_release(double: G5kDouble, reserver: Reserver) -> None:
    hog = (
        client_for(double, "bob")
        .sites["rennes"]
        .jobs.create(
            {"command": "sleep 1d", "resources": "{cluster='paravance'}/nodes=8,walltime=10"}
        )
    )
    double.advance(TIMINGS.schedule_s)
    with pytest.raises(ReservationTimeout) as caught:
        reserve(reserver, SPEC, timeout=120, poll=10)
    (ref,) = caught.value.jobs
    message = str(caught.value)
    assert message.startswith("jobs not running after 120 s: ")
    assert f"{ref} waiting, scheduled start " in message and "\n" not in message
    assert double.job("rennes", ref.uid).state == "waiting"
    assert reserver.release(caught.value.jobs) == {ref: "deleted"}
    assert double.job("rennes", ref.uid).state == "error"
    assert double.job("rennes", hog.uid).state == "running"


def test_job_in_error_while_waiting_is_reported(double: G5kDouble, reserver: Reserver) -> None:
    (sub,) = reserver.submit(plan(SPEC))
    double.force_job("rennes", sub.ref.uid, "error")
    with pytest.raises(JobFailed, match=f"job {sub.ref} is error before running"):
        reserver.wait([sub.ref], timeout=60)


def test_release_then_state_error_and_release_again(double: G5kDouble, reserver: Reserver) -> None:
    result = reserve(reserver, SPEC, timeout=60, poll=2)
    ref = result.jobs[0].ref
    assert reserver.release([ref]) == {ref: "deleted"}
    assert reserver.status([ref])[0].state == "finishing"
    assert reserver.release([ref]) == {ref: "already killed"}
    double.advance(TIMINGS.finish_s)
    assert reserver.status([ref])[0].state == "error"
    assert reserver.release([ref, JobRef("rennes", 99)]) == {
        ref: "already killed",
        JobRef("rennes", 99): "not found",
    }


def test_release_of_another_users_job_fails_clearly(double: G5kDouble, reserver: Reserver) -> None:
    (bobs,) = reserver_for(double, "bob").submit(plan(SPEC))
    with pytest.raises(G5kError, match=f"job {bobs.ref}: release: 403"):
        reserver.release([bobs.ref])


def test_nodes_only_once_running(double: G5kDouble, reserver: Reserver) -> None:
    (sub,) = reserver.submit(plan(SPEC))
    # The double, like OAR, already shows predicted nodes for a schedulable waiting job.
    assert double.job("rennes", sub.ref.uid).state == "waiting"
    raw = client_for(double).sites["rennes"].jobs[sub.ref.uid]
    assert raw.assigned_nodes  # predicted
    assert reserver.status([sub.ref])[0].nodes == ()
    with pytest.raises(
        G5kError, match=f"job {sub.ref} is waiting: its nodes are known once it runs"
    ):
        reserver.nodes(sub.ref)
    double.advance(TIMINGS.schedule_s + TIMINGS.launch_s)
    assert len(reserver.nodes(sub.ref)) == 3


def test_extend_and_status(double: G5kDouble, reserver: Reserver) -> None:
    result = reserve(reserver, SPEC, timeout=60, poll=2)
    ref = result.jobs[0].ref
    double.advance(600)
    (st,) = reserver.status([ref])
    now = double.clock.now()
    elapsed = now - st.started_at  # started when it began launching
    # + the last poll's pause (at most 2 s) + 1 s: the API's times are whole seconds,
    # the double's clock is not
    assert 600 <= elapsed <= 600 + TIMINGS.launch_s + 2 + 1
    assert abs(st.remaining(now) - (7200 - elapsed)) <= 1
    after = reserver.extend(ref, "+1:00")
    assert after.walltime == 3 * 3600
    assert abs(after.remaining(now) - (3 * 3600 - elapsed)) <= 1
    with pytest.raises(PlanError, match="walltime change '1h'"):
        reserver.extend(ref, "1h")
    reserver.release([ref])
    with pytest.raises(G5kApiError, match="not running"):
        reserver.extend(ref, "+1:00")


def test_wrong_password_is_a_credentials_error(double: G5kDouble) -> None:
    wrong = Reserver(client_for(double, "alice", "nope"), "alice")
    with pytest.raises(CredentialsError, match="refused the credentials \\(401\\)"):
        wrong.submit(plan(SPEC))


def test_api_failures_are_one_line_errors(
    double: G5kDouble, reserver: Reserver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(urllib3.util.retry.time, "sleep", lambda _s: None)
    double.inject_fault(500, count=6)
    with pytest.raises(G5kApiError, match="site rennes: the API kept failing after retries"):
        reserver.submit(plan(SPEC))
    double.inject_fault(503, count=1, retry_after=0)  # retried by the client
    (sub,) = reserver_for(double).submit(plan(SPEC))
    assert not sub.reused
    double.stop()
    with pytest.raises(G5kApiError, match="cannot reach the Grid'5000 API") as caught:
        reserver.status([sub.ref])
    assert "\n" not in str(caught.value) and "127.0.0.1" in str(caught.value)
