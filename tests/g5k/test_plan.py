"""The pure planner: roles -> one OAR job request per site, and nodes -> roles."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from nxc.g5k.errors import PlanError
from nxc.g5k.jobs import JobRef, JobState
from nxc.g5k.plan import ReservationSpec, RoleRequest, assign_nodes, plan, reservation_text

R = RoleRequest


def spec(*roles: RoleRequest, **options: object) -> ReservationSpec:
    return ReservationSpec("exp", roles, **options)  # type: ignore[arg-type]


def test_one_job_per_site_with_resources_string() -> None:
    jobs = plan(
        spec(
            R("server", 1, "rennes", cluster="paravance"),
            R("db", 2, "nancy", properties="memnode > 100000"),
            R("client", 3, "rennes", cluster="parasilo"),
            R("extra", 2, "rennes", cluster="paravance"),
            walltime="1:30",
            queue="production",
            project="lab",
            types=("deploy", "destructive"),
        )
    )
    assert [j.site for j in jobs] == ["rennes", "nancy"]
    rennes, nancy = jobs
    assert rennes.payload == {
        "name": "exp",
        "resources": "{cluster='paravance'}/nodes=3+{cluster='parasilo'}/nodes=3,walltime=1:30:00",
        "command": "sleep 31536000",
        "queue": "production",
        "types": ["deploy", "destructive"],
        "project": "lab",
    }
    assert nancy.resources == "{memnode > 100000}/nodes=2,walltime=1:30:00"
    assert rennes.groups[0].roles == (("server", 1), ("extra", 2))


def test_selectors() -> None:
    (job,) = plan(spec(R("a", 2, "lyon"), walltime=90))
    assert job.resources == "nodes=2,walltime=0:01:30"
    (job,) = plan(spec(R("a", 1, "lyon", cluster="nova", properties="gpu_count > 0 OR x='y'")))
    assert job.resources == "{cluster='nova' AND (gpu_count > 0 OR x='y')}/nodes=1,walltime=1:00:00"


def test_roles_that_cannot_be_told_apart_are_refused() -> None:
    with pytest.raises(
        PlanError, match="site rennes: roles a, b ask for nodes that cannot be told apart"
    ):
        plan(spec(R("a", 1, "rennes", cluster="paravance"), R("b", 1, "rennes")))
    with pytest.raises(PlanError, match="cannot be told apart"):
        plan(
            spec(
                R("a", 1, "rennes", cluster="paravance"),
                R("b", 1, "rennes", cluster="paravance", properties="disk='ssd'"),
            )
        )
    # the same selector is fine: nodes are split in role order
    (job,) = plan(spec(R("a", 1, "rennes"), R("b", 1, "rennes")))
    assert job.resources.startswith("nodes=2,")


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (spec(), "nothing to reserve"),
        (ReservationSpec("has space", (R("a", 1, "rennes"),)), "job name 'has space'"),
        (spec(R("a", 0, "rennes")), "node count must be >= 1"),
        (spec(R("a", 1, "Rennes!")), "site 'Rennes!' is not a site name"),
        (spec(R("a", 1, "rennes", cluster="a b")), "cluster 'a b'"),
        (spec(R("a", 1, "rennes", properties="{x}")), "without braces"),
        (spec(R("a", 1, "rennes"), R("a", 1, "rennes")), "role 'a' is given twice"),
        (spec(R("a", 1, "rennes"), walltime="2h"), "walltime '2h'"),
        (spec(R("a", 1, "rennes"), walltime="1:75"), "go up to 59"),
        (spec(R("a", 1, "rennes"), walltime=0), "must be positive"),
        (spec(R("a", 1, "rennes"), queue="Big Queue"), "queue 'Big Queue'"),
        (spec(R("a", 1, "rennes"), types=("a b",)), "job type 'a b'"),
        (spec(R("a", 1, "rennes"), reservation="tomorrow"), "reservation 'tomorrow'"),
    ],
)
def test_invalid_specs(bad: ReservationSpec, problem: str) -> None:
    with pytest.raises(PlanError, match=problem):
        plan(bad)


def test_reservation_dates_in_site_time() -> None:
    utc = dt.datetime(2026, 1, 15, 8, 0, tzinfo=dt.UTC)
    assert reservation_text(utc) == "2026-01-15 09:00:00"  # Paris in winter
    assert reservation_text(dt.datetime(2026, 7, 1, 12, 0)) == "2026-07-01 12:00:00"
    (job,) = plan(spec(R("a", 1, "rennes"), reservation=utc))
    assert job.payload["reservation"] == "2026-01-15 09:00:00"


def test_assign_nodes_deterministically() -> None:
    (job,) = plan(spec(R("server", 1, "rennes"), R("client", 2, "rennes")))
    nodes = [f"paravance-{i}.rennes.grid5000.fr" for i in (10, 2, 9)]
    roles = assign_nodes(job, nodes, "rennes:1")
    assert roles == {
        "server": ("paravance-2.rennes.grid5000.fr",),
        "client": ("paravance-9.rennes.grid5000.fr", "paravance-10.rennes.grid5000.fr"),
    }
    assert assign_nodes(job, list(reversed(nodes)), "rennes:1") == roles
    with pytest.raises(
        PlanError, match="job rennes:1: the job has 2 node\\(s\\), the roles need 3"
    ):
        assign_nodes(job, nodes[:2], "rennes:1")


def test_assign_nodes_by_cluster() -> None:
    (job,) = plan(
        spec(R("a", 1, "rennes", cluster="paravance"), R("b", 2, "rennes", cluster="parasilo"))
    )
    nodes = ["parasilo-4.rennes.grid5000.fr", "paravance-7.rennes.grid5000.fr",
             "parasilo-1.rennes.grid5000.fr"]  # fmt: skip
    assert assign_nodes(job, nodes, "rennes:5") == {
        "a": ("paravance-7.rennes.grid5000.fr",),
        "b": ("parasilo-1.rennes.grid5000.fr", "parasilo-4.rennes.grid5000.fr"),
    }
    with pytest.raises(
        PlanError, match=re.escape("node grisou-1.nancy.grid5000.fr belongs to no role")
    ):
        assign_nodes(job, [*nodes, "grisou-1.nancy.grid5000.fr"], "rennes:5")
    with pytest.raises(PlanError, match="cluster parasilo has 1 node"):
        assign_nodes(job, nodes[:2], "rennes:5")


def test_job_refs_and_states() -> None:
    assert JobRef.parse("rennes:1234") == JobRef("rennes", 1234)
    assert str(JobRef("nancy", 7)) == "nancy:7"
    waiting = JobState.from_api(
        JobRef("rennes", 1),
        {"state": "waiting", "assigned_nodes": ["predicted-1.rennes.grid5000.fr"], "user": "a",
         "walltime": 3600, "started_at": 0},
    )  # fmt: skip
    assert waiting.nodes == () and waiting.remaining(10**9) is None
    running = JobState.from_api(
        JobRef("rennes", 1),
        {"state": "running", "assigned_nodes": ["n-1.rennes.grid5000.fr"], "user": "a",
         "walltime": 3600, "started_at": 1000, "scheduled_at": 1000},
    )  # fmt: skip
    assert running.nodes == ("n-1.rennes.grid5000.fr",)
    assert running.remaining(1600) == 3000 and running.remaining(99999) == 0
    assert running.summary(1600) == "rennes:1 running, 0:50:00 left"
    assert waiting.summary(0) == "rennes:1 waiting"
