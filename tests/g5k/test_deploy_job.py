"""g5k-ramdisk in a ``deploy`` job (no ``sudo-g5k``): the decision (from the jobs' own
types), the option choosing the standard environment, its deployment through the
double's deployments endpoint with the client key (KO retried, then reported naming
the node), and how nxc then reaches the nodes (root with the deployment's key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nxc.contracts import Deployment
from nxc.errors import NxcError, StartError
from nxc.flavours.g5k_common.options import DEFAULT_STDENV
from nxc.flavours.g5k_common.reservation import reservation_spec, reserve_nodes
from nxc.flavours.g5k_common.runtime import _failure_text, deploy_job
from nxc.flavours.g5k_common.settings import G5kSettings
from nxc.flavours.g5k_image.kadeploy import DEPLOYMENT_KIND, Kadeploy
from nxc.flavours.g5k_image.runtime import G5kImageRuntime
from nxc.flavours.g5k_ramdisk.runtime import G5kRamdiskRuntime, stdenv_batches, stdenv_outcome
from nxc.g5k import JobRef, JobState
from nxc.g5k.config import G5kConfig
from nxc.ledger import Ledger
from nxc.project import Project
from nxc.runtime.options import FlavourOptions
from nxc.testbeds.g5k_double import Clock, G5kDouble, Timings
from nxc.testbeds.g5k_double.deployments import DeployRequest
from tests.conftest import run_nxc

from .conftest import USERS, client_for, reserver_for
from .test_g5k_pieces import deployment

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDeployJobKeyForTheTest nxc@test"


def job(ref: str, types: tuple[str, ...]) -> JobState:
    return JobState(JobRef.parse(ref), "running", "nxc-x", "alice", 3600, 1, None, (), "", types)


def test_deploy_job_is_decided_by_the_jobs_types() -> None:
    assert deploy_job([job("rennes:1", ("deploy",)), job("nancy:2", ("deploy", "exotic"))])
    assert not deploy_job([job("rennes:1", ()), job("nancy:2", ("exotic",))])
    with pytest.raises(StartError, match=r"rennes:1 are deploy jobs and nancy:2 are not"):
        deploy_job([job("rennes:1", ("deploy",)), job("nancy:2", ())])
    # what the API says about a job (a job reused by name or attached with --job)
    attrs = {"state": "running", "types": ["deploy"], "assigned_nodes": ["a.rennes"]}
    assert JobState.from_api(JobRef.parse("rennes:3"), attrs).types == ("deploy",)
    assert JobState.from_api(JobRef.parse("rennes:3"), {"state": "running"}).types == ()


def test_the_standard_environment_option() -> None:
    options = {o.name: o for o in G5kRamdiskRuntime.options}
    assert options["deploy-env"].default == DEFAULT_STDENV == "debian12-min"
    # KO nodes are retried up to the same bound as g5k-image's
    image = {o.name: o for o in G5kImageRuntime.options}
    assert options["deploy-retries"] is image["deploy-retries"]
    assert options["deploy-timeout"] is image["deploy-timeout"]
    shown = run_nxc("start", "--help")
    assert shown.returncode == 0 and "--deploy-env NAME" in shown.stdout
    chosen = FlavourOptions("g5k-ramdisk", {"deploy-env": {"": "debian11-nfs"}})
    assert chosen.get("deploy-env") == "debian11-nfs"
    batches = stdenv_batches(
        {"a": "paravance-1.rennes.grid5000.fr", "b": "grisou-2.nancy.grid5000.fr",
         "c": "paravance-2.rennes.grid5000.fr"},
        "debian11-nfs",
    )  # fmt: skip
    assert [(b.site, b.environment, b.pending) for b in batches] == [
        ("rennes", "debian11-nfs",
         ["paravance-1.rennes.grid5000.fr", "paravance-2.rennes.grid5000.fr"]),
        ("nancy", "debian11-nfs", ["grisou-2.nancy.grid5000.fr"]),
    ]  # fmt: skip
    assert batches[0].what == "debian11-nfs on rennes"


def _reserve(g5k: G5kDouble, plan_: Deployment, ledger: Ledger) -> dict[str, str]:
    spec = reservation_spec(
        plan_, FlavourOptions("g5k-ramdisk", {"job-type": {"": ["deploy"]}}), "nxc-dj", "rennes"
    )
    reserved = reserve_nodes(
        reserver_for(g5k), spec, plan_, ledger=ledger, owner="g5k-ramdisk", keep=False,
        attach=[], timeout=600, say=lambda _line: None, ledger_extra={},
    )  # fmt: skip
    assert deploy_job(reserved.jobs)
    return reserved.fqdn


def test_stdenv_deployed_with_the_key_ko_retried_then_named(tmp_path: Path) -> None:
    requests: list[DeployRequest] = []

    def deployer(request: DeployRequest) -> dict[str, bool]:
        requests.append(request)
        return dict.fromkeys(request.nodes, True)

    plan_, _ = deployment(tmp_path)
    ledger = Ledger(tmp_path / "ledger.jsonl")
    timings = Timings(schedule_s=0, launch_s=0, finish_s=0, deploy_s=0)
    with G5kDouble(USERS, clock=Clock(frozen=True), timings=timings, deployer=deployer) as g5k:
        fqdns = _reserve(g5k, plan_, ledger)
        ko = fqdns["client1"]
        g5k.mark_ko(ko)
        said: list[str] = []
        batches = stdenv_batches(fqdns, "debian12-min")
        kadeploy = Kadeploy(client_for(g5k), ledger, "g5k-ramdisk", {}, said.append)
        kadeploy.deploy(batches, KEY, retries=1, timeout=120)
        ok, failed = stdenv_outcome(batches, fqdns, "debian12-min")
        tried = [d for d in g5k.backend.deployments.items.values() if ko in d.nodes]
    assert sorted(ok) == sorted(f for n, f in fqdns.items() if n != "client1")
    assert list(failed) == ["client1"]
    assert failed["client1"].startswith(f"{ko}: deploying debian12-min (deploy job) failed: ")
    assert "Kadeploy reported KO" in failed["client1"]
    text = _failure_text("1 of 3 nodes failed", fqdns, failed)
    assert f"client1 ({ko}): deploying debian12-min (deploy job) failed" in text
    assert len(tried) == 2, "the KO node was not deployed again"
    assert any(f"1 node(s) of debian12-min on rennes KO ({ko}): deploying again" in s for s in said)
    # the site's registered environment, with the client's public key
    assert {r.registered for r in requests} == {"debian12-min"}
    assert {r.key for r in requests} == {KEY}
    recorded = [r for r in ledger.entries() if r.kind == DEPLOYMENT_KIND]
    assert len(recorded) == 2 and "debian12-min on rennes" in recorded[0].description


def test_an_unknown_environment_is_a_one_line_error(tmp_path: Path) -> None:
    plan_, _ = deployment(tmp_path)
    ledger = Ledger(tmp_path / "ledger.jsonl")
    timings = Timings(schedule_s=0, launch_s=0, finish_s=0, deploy_s=0)
    with G5kDouble(USERS, clock=Clock(frozen=True), timings=timings) as g5k:
        fqdns = _reserve(g5k, plan_, ledger)
        kadeploy = Kadeploy(client_for(g5k), ledger, "g5k-ramdisk", {}, lambda _s: None)
        with pytest.raises(NxcError, match="environment 'debian99-min' not found"):
            kadeploy.deploy(stdenv_batches(fqdns, "debian99-min"), KEY, retries=0, timeout=30)


def test_deploy_job_nodes_are_reached_as_root_with_the_deployment_key(tmp_path: Path) -> None:
    project = Project(tmp_path / "project")
    project.root.mkdir()
    (tmp_path / "known_hosts").write_text("")
    settings = G5kSettings(
        G5kConfig("http://127.0.0.1:1/stable", "alice", "pw"),
        (), (tmp_path / "known_hosts",), "rennes", None, None, None,
    )  # fmt: skip
    runtime = G5kRamdiskRuntime()
    state = runtime.state(project)
    project.current_dir.mkdir(parents=True, exist_ok=True)
    state.save({"deploy_job": True})
    deployed = runtime.source_settings(project, settings)
    assert deployed.user == "root" and list(deployed.identity) == [project.keys_dir / "id_ed25519"]
    state.save({"deploy_job": False})
    given = runtime.source_settings(project, settings)
    assert given.user == "alice" and not given.identity
