"""The real, unmodified python-grid5000 client against the double."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import requests
import urllib3.util.retry
from grid5000 import Grid5000
from grid5000.exceptions import (
    Grid5000AuthenticationError,
    Grid5000CreateError,
    Grid5000DeleteError,
    Grid5000GetError,
    Grid5000ListError,
)

from nxc.testbeds.g5k_double import Clock, DeployRequest, G5kDouble

from .conftest import TIMINGS, USERS, client_for

PARAVANCE_2 = "{cluster='paravance'}/nodes=2,walltime=1:00"


def submit(client: Grid5000, site: str = "rennes", **extra: object) -> object:
    spec = {"command": "sleep 3600", "resources": PARAVANCE_2, "name": "exp", **extra}
    return client.sites[site].jobs.create(spec)


# -- reference tree ---------------------------------------------------------------


def test_reference_tree(alice: Grid5000) -> None:
    assert alice.root.get().uid == "grid5000"
    assert [s.uid for s in alice.sites.list()] == ["rennes", "nancy"]
    rennes = alice.sites["rennes"]
    clusters = {c.uid: c for c in rennes.clusters.list()}
    assert set(clusters) == {"paravance", "parasilo"}
    assert clusters["paravance"].type == "cluster" and "default" in clusters["paravance"].queues
    nodes = clusters["paravance"].nodes.list()
    assert [n.uid for n in nodes] == [f"paravance-{i}" for i in range(1, 9)]
    node = rennes.clusters["parasilo"].nodes["parasilo-4"]
    assert node.network_adapters[0]["network_address"] == "parasilo-4.rennes.grid5000.fr"
    assert node.architecture["nb_cores"] == 16 and node.main_memory["ram_size"] > 0
    assert node.supported_job_types["deploy"] is True
    assert len(alice.sites["nancy"].clusters["grisou"].nodes.list()) == 8
    envs = {e.name for e in rennes.environments.list()}
    assert {"debian12-min", "debian12-nfs"} <= envs
    assert {v.type for v in rennes.vlans.list()} == {"kavlan-local", "kavlan", "kavlan-global"}
    status = rennes.status.list()
    assert status.nodes["paravance-1.rennes.grid5000.fr"]["soft"] == "free"


def test_uri_with_trailing_slash_and_3_0_prefix(double: G5kDouble) -> None:
    # python-grid5000 builds uri + "/sites": a trailing slash gives "//sites".
    slash = Grid5000(uri=double.url + "/", username="alice", password="secret", timeout=10)
    assert [s.uid for s in slash.sites.list()] == ["rennes", "nancy"]
    v3 = Grid5000(uri=double.origin + "/3.0", username="alice", password="secret", timeout=10)
    assert v3.sites["nancy"].clusters["grisou"].uid == "grisou"


def test_unknown_site_is_404(alice: Grid5000) -> None:
    with pytest.raises(Grid5000GetError) as caught:
        alice.sites["paris"]
    assert caught.value.response_code == 404
    assert "Cannot find resource /sites/paris" in caught.value.error_message


# -- jobs ---------------------------------------------------------------------------


def test_job_waiting_then_running_with_assigned_nodes(double: G5kDouble, alice: Grid5000) -> None:
    job = submit(alice, types=["deploy"])
    assert job.site == "rennes"  # a parent attribute: the JSON has no site field
    assert job.state == "waiting" and job.user == "alice" and job.types == ["deploy"]
    assert job.walltime == 3600 and job.started_at == 0 and job.scheduled_at > 0
    assert not hasattr(job, "stopped_at")
    double.advance(TIMINGS.schedule_s)
    job.refresh()
    assert job.state == "launching"
    double.advance(TIMINGS.launch_s)
    job.refresh()
    assert job.state == "running"
    assert job.assigned_nodes == [
        "paravance-1.rennes.grid5000.fr",
        "paravance-2.rennes.grid5000.fr",
    ]
    assert len(job.resources_by_type["cores"]) == 32  # one entry per core
    assert job.started_at > 0 and job.events[0]["type"] == "SUBMISSION"


def test_job_waits_for_free_nodes_then_runs(double: G5kDouble, alice: Grid5000) -> None:
    first = submit(alice, resources="{cluster='parasilo'}/nodes=4,walltime=0:10")
    double.advance(10)
    second = submit(alice, resources="{cluster='parasilo'}/nodes=1,walltime=0:10")
    double.advance(60)
    second.refresh()
    assert second.state == "waiting"  # every parasilo node is taken
    assert second.assigned_nodes == []
    # scheduled start: when the first job's walltime is over and it has finished
    first.refresh()
    assert second.scheduled_at == first.started_at + 600 + TIMINGS.finish_s
    double.advance(600)
    second.refresh()
    first.refresh()
    assert first.state == "terminated" and "stopped_at" in first.attributes
    assert second.state in ("launching", "running")
    assert second.assigned_nodes == ["parasilo-1.rennes.grid5000.fr"]


def test_reservation_date_is_honoured(double: G5kDouble, alice: Grid5000) -> None:
    import datetime as dt
    from zoneinfo import ZoneInfo

    start = dt.datetime.fromtimestamp(double.clock.now() + 3600, ZoneInfo("Europe/Paris"))
    text = start.strftime("%Y-%m-%d %H:%M:%S")
    job = alice.sites["rennes"].jobs.create(
        {"resources": "nodes=1,walltime=1", "reservation": text, "name": "later"}
    )
    assert job.scheduled_at == int(start.timestamp())
    double.advance(3000)
    job.refresh()
    assert job.state == "waiting"
    double.advance(600 + TIMINGS.launch_s)
    job.refresh()
    assert job.state == "running"


def test_list_filtered_by_name_state_user(
    double: G5kDouble, alice: Grid5000, bob: Grid5000
) -> None:
    a1 = submit(alice, name="one")
    a2 = submit(alice, name="two", resources="nodes=1")
    b1 = submit(bob, name="one", resources="nodes=1")
    jobs = alice.sites["rennes"].jobs
    assert [j.uid for j in jobs.list(name="one")] == [b1.uid, a1.uid]  # newest first
    assert [j.uid for j in jobs.list(name="one", user="alice")] == [a1.uid]
    a2.delete()
    assert [j.uid for j in jobs.list(user="alice", state="waiting,running")] == [a1.uid]
    assert [j.uid for j in jobs.list(state="error")] == [a2.uid]
    assert [j.uid for j in jobs.list(user="bob", limit=1)] == [b1.uid]
    assert "assigned_nodes" not in jobs.list(name="two")[0].attributes
    assert "assigned_nodes" in jobs.list(name="two", resources="yes")[0].attributes


def test_delete_then_error_then_already_killed(double: G5kDouble, alice: Grid5000) -> None:
    job = submit(alice)
    double.advance(TIMINGS.schedule_s + TIMINGS.launch_s)
    job.refresh()
    assert job.state == "running"
    job.delete()
    job.refresh()
    assert job.state == "finishing"
    with pytest.raises(Grid5000DeleteError) as caught:
        job.delete()
    assert caught.value.response_code == 400
    assert f"Cannot frag {job.uid} ; This job was already killed." in caught.value.error_message
    double.advance(TIMINGS.finish_s)
    job.refresh()
    assert job.state == "error"
    assert "FRAG_JOB_REQUEST" in [e["type"] for e in job.events]
    status = alice.sites["rennes"].status.list()
    assert status.nodes[job.assigned_nodes[0]]["soft"] == "free"


def test_job_404(alice: Grid5000) -> None:
    with pytest.raises(Grid5000GetError) as caught:
        alice.sites["rennes"].jobs[4242]
    assert caught.value.response_code == 404
    assert caught.value.error_message.strip() == "Couldn't find OAR::Job with 'job_id'=4242"


def test_create_without_command_is_400(alice: Grid5000) -> None:
    with pytest.raises(Grid5000CreateError) as caught:
        alice.sites["rennes"].jobs.create({"resources": "nodes=1"})
    assert caught.value.response_code == 400
    assert caught.value.error_message.strip() == (
        "The job you are trying to submit is not valid: you must give a :command to execute"
        " on launch"
    )


def test_create_more_nodes_than_exist_is_400(alice: Grid5000) -> None:
    with pytest.raises(Grid5000CreateError) as caught:
        submit(alice, resources="{cluster='parasilo'}/nodes=5")
    assert "There are not enough resources for your request" in caught.value.error_message


def test_wrong_password_is_401(double: G5kDouble) -> None:
    client = client_for(double, "alice", password="wrong")
    with pytest.raises(Grid5000AuthenticationError) as caught:
        client.sites.list()
    assert caught.value.response_code == 401


def test_anonymous_reads_but_cannot_write(double: G5kDouble) -> None:
    anonymous = client_for(double, None)
    assert len(anonymous.sites.list()) == 2
    with pytest.raises(Grid5000CreateError) as caught:
        submit(anonymous)
    assert caught.value.response_code == 403
    assert "You are not authorized to access this resource" in caught.value.error_message


def test_deleting_another_users_job_is_403(alice: Grid5000, bob: Grid5000) -> None:
    job = submit(alice)
    with pytest.raises(Grid5000DeleteError) as caught:
        bob.sites["rennes"].jobs.delete(job.uid)
    assert caught.value.response_code == 403


def test_walltime_change(double: G5kDouble, alice: Grid5000) -> None:
    job = submit(alice)
    path = f"/sites/rennes/jobs/{job.uid}/walltime"
    with pytest.raises(Exception, match="not running"):
        alice.http_post(path, post_data={"walltime": "+1:00"})
    double.advance(TIMINGS.schedule_s + TIMINGS.launch_s)
    answer = alice.http_post(path, post_data={"walltime": "+1:00"})
    assert isinstance(answer, str) and "Accepted" in answer  # OAR's text, as a JSON string
    job.refresh()
    assert job.walltime == 7200
    assert job.walltime_change.get().granted == "+1:00:00"


# -- faults -------------------------------------------------------------------------


def test_injected_503_is_retried_then_succeeds(double: G5kDouble, alice: Grid5000) -> None:
    double.inject_fault(503, count=1, retry_after=0)
    assert alice.sites["nancy"].uid == "nancy"
    served = [(s.path, s.status) for s in double.served if s.path == "/sites/nancy"]
    assert served == [("/sites/nancy", 503), ("/sites/nancy", 200)]


def test_injected_502_is_retried_on_get(double: G5kDouble, alice: Grid5000) -> None:
    double.inject_fault(502, count=1)
    assert len(alice.sites.list()) == 2
    assert [s.status for s in double.served] == [502, 200]


def test_503_without_retry_after_and_post_are_not_retried(
    double: G5kDouble, alice: Grid5000
) -> None:
    double.inject_fault(503, count=1)
    with pytest.raises(Grid5000ListError) as caught:
        alice.sites.list()
    assert caught.value.response_code == 503
    site = alice.sites["rennes"]
    double.inject_fault(502, count=1)
    with pytest.raises(Grid5000CreateError):  # POST is not idempotent: no retry
        site.jobs.create({"command": "true", "resources": "nodes=1"})
    assert [s.status for s in double.served if s.method == "POST"] == [502]
    assert site.jobs.list() == []


def test_retries_exhausted_raise_retry_error(
    double: G5kDouble, alice: Grid5000, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(urllib3.util.retry.time, "sleep", lambda _s: None)  # no backoff
    double.inject_fault(500, count=10)
    with pytest.raises(requests.exceptions.RetryError):
        alice.sites.list()
    assert len(double.served) == 6  # the first try and 5 retries


# -- deployments --------------------------------------------------------------------


class RecordingDeployer:
    """A deployer of the test's own: records what it was asked, fails chosen nodes."""

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.requests: list[DeployRequest] = []

    def __call__(self, request: DeployRequest) -> Mapping[str, bool]:
        self.requests.append(request)
        return {node: node not in self.failing for node in request.nodes}


@pytest.fixture
def env_server(tmp_path: Path) -> Iterator[str]:
    """An http server for a kaenv description, as the user's public/ directory would be."""
    (tmp_path / "env.yaml").write_text(
        "name: nxc-role\nversion: 1\nos: linux\narch: x86_64\n"
        "image: {file: 'http://example.invalid/img.tar.xz', kind: tar, compression: xz}\n"
        "boot: {kernel: /boot/vmlinuz, initrd: /boot/initrd,"
        " kernel_params: 'console=ttyS0 nxc.node=x'}\n"
    )

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/env.yaml"
    server.shutdown()
    server.server_close()


def running_deploy_job(g5k: G5kDouble, client: Grid5000, count: int = 3) -> object:
    job = client.sites["rennes"].jobs.create(
        {
            "command": "sleep 1d",
            "resources": f"{{cluster='paravance'}}/nodes={count}",
            "types": ["deploy"],
            "name": "d",
        }
    )
    g5k.advance(TIMINGS.schedule_s + TIMINGS.launch_s)
    job.refresh()
    assert job.state == "running"
    return job


def test_deployment_submit_poll_result_with_ko(env_server: str) -> None:
    deployer = RecordingDeployer(failing={"paravance-3.rennes.grid5000.fr"})
    with G5kDouble(USERS, clock=Clock(frozen=True), timings=TIMINGS, deployer=deployer) as g5k:
        alice = client_for(g5k)
        job = running_deploy_job(g5k, alice)
        g5k.mark_ko("paravance-2.rennes.grid5000.fr")
        nodes = job.assigned_nodes
        dep = alice.sites["rennes"].deployments.create(
            {"nodes": nodes, "environment": env_server, "key": "ssh-ed25519 AAAAtest nxc"}
        )
        assert dep.status == "processing" and dep.uid.startswith("D-")
        with pytest.raises(AttributeError):
            dep.result  # noqa: B018 (absent until Kadeploy reports)
        g5k.join_deployers()
        g5k.advance(TIMINGS.deploy_s - 1)
        dep.refresh()
        assert dep.status == "processing"
        g5k.advance(1)
        dep.refresh()
        assert dep.status == "terminated"
        states = {node: r["state"] for node, r in dep.result.items()}
        assert states == {
            "paravance-1.rennes.grid5000.fr": "OK",
            "paravance-2.rennes.grid5000.fr": "KO",  # injected KO
            "paravance-3.rennes.grid5000.fr": "KO",  # the deployer's verdict
        }
        (request,) = deployer.requests
        assert request.nodes == (nodes[0], nodes[2])  # the KO-injected node is not deployed
        assert request.environment["name"] == "nxc-role"
        assert request.kernel_params == "console=ttyS0 nxc.node=x"
        assert request.key == "ssh-ed25519 AAAAtest nxc"
        assert "/files/alice-key-" in dep.key  # the API swaps key text for a file URL


def test_deployment_validation_and_rights(
    double: G5kDouble, alice: Grid5000, bob: Grid5000
) -> None:
    deployments = alice.sites["rennes"].deployments
    with pytest.raises(Grid5000CreateError) as caught:
        deployments.create({"environment": "debian12-min", "nodes": []})
    assert "Nodes must be a non-empty list of node FQDN" in caught.value.error_message
    with pytest.raises(Grid5000CreateError) as caught:
        deployments.create({"nodes": ["paravance-1.rennes.grid5000.fr"]})
    assert "Environment can't be blank" in caught.value.error_message
    with pytest.raises(Grid5000CreateError) as caught:  # no deploy job of alice's
        deployments.create(
            {"nodes": ["paravance-1.rennes.grid5000.fr"], "environment": "debian12-min"}
        )
    assert "not allowed to deploy" in caught.value.error_message
    job = running_deploy_job(double, alice, 1)
    with pytest.raises(Grid5000CreateError):  # bob cannot deploy on alice's node
        bob.sites["rennes"].deployments.create(
            {"nodes": job.assigned_nodes, "environment": "debian12-min"}
        )
    with pytest.raises(Grid5000CreateError) as caught:
        deployments.create({"nodes": job.assigned_nodes, "environment": "debian13-big"})
    assert "environment 'debian13-big' not found" in caught.value.error_message


def test_deployment_cancel_and_error(double: G5kDouble, alice: Grid5000, bob: Grid5000) -> None:
    job = running_deploy_job(double, alice, 2)
    deployments = alice.sites["rennes"].deployments
    spec = {"nodes": job.assigned_nodes, "environment": "debian12-nfs", "bogus": 1}
    first = deployments.create(spec)
    assert "bogus" not in first.attributes  # unknown keys are dropped
    with pytest.raises(Grid5000DeleteError):
        bob.sites["rennes"].deployments.delete(first.uid)
    deployments.delete(first.uid)
    first.refresh()
    assert first.status == "canceled"
    second = deployments.create(spec)
    double.force_deployment("rennes", second.uid, "error")
    second.refresh()
    assert second.status == "error" and second.output
    assert [d.uid for d in deployments.list()] == [second.uid, first.uid]
