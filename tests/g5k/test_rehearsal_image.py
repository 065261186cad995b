"""g5k-image end to end on the rehearsal testbed: a ``deploy`` job, the role image and
its environment description published over HTTP (nxc's own server, in the ledger),
deployed through the API's deployments endpoint — the double's deployer really boots
the image on the VMs by kexec — then the per-node handoff, the testScript, and stop.
Then a node the double reports KO: deployed again, reported, and redeployed by
``--retry-failed`` once the fault is gone.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from nxc.ledger import process_start_time
from nxc.project import Project
from tests.conftest import run_nxc

from .conftest import Rehearsal
from .test_rehearsal_ramdisk import (
    TIMEOUT,
    alive_jobs,
    assert_nothing_left,
    on_node,
    runtime_state,
)

pytestmark = pytest.mark.skipif(
    not shutil.which("qemu-system-x86_64") or not shutil.which("nix"),
    reason="needs QEMU and nix (scripts/setup)",
)


def deployments(testbed: Rehearsal) -> list[dict[str, Any]]:
    return list(testbed.control("state")["deployments"])


def test_image_end_to_end(rehearsal: Rehearsal, built_g5k: Path, tmp_path: Path) -> None:
    env = rehearsal.env
    before = {d["uid"] for d in deployments(rehearsal)}
    # start -t: the testScript right after the deployment, in the same command
    result = run_nxc(
        "start", "-f", "g5k-image", "-t", "--timeout", TIMEOUT, cwd=built_g5k, env=env,
        timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deploying 3 nodes with Kadeploy (1 deployment(s))" in result.stderr
    assert "testScript: PASSED" in result.stdout + result.stderr
    [job] = alive_jobs(rehearsal)
    assert job["types"] == ["deploy"]
    [deployment] = [d for d in deployments(rehearsal) if d["uid"] not in before]
    assert deployment["status"] == "terminated" and sorted(deployment["nodes"]) == sorted(
        job["nodes"]
    )
    assert deployment["environment"].startswith("http://127.0.0.1:")
    state = runtime_state(built_g5k)
    ledger = Project(built_g5k).ledger.entries()
    [server] = [r for r in ledger if r.description == "HTTP server publishing the images"]
    assert process_start_time(int(server.ident)) == server.start_time
    for name, entry in state["nodes"].items():
        assert entry["state"] == "ready"
        # bootstrapped by Kadeploy (root already), then kexec'ed into its inputs
        assert entry["facts"]["uid"] == 0
        assert entry["boot_id"] != entry["facts"]["boot_id"]
        assert on_node(built_g5k, name, "cat /etc/nxc/node").strip() == name
    # netem in the deployed nodes too, on their site NIC (the deployment's interface)
    topology = tmp_path / "topology.yaml"
    topology.write_text(
        "nxc_topology: 1\nconstraints:\n  - {from: node1, to: node3, delay: 40ms}\n"
    )
    applied = run_nxc("netem", "apply", str(topology), cwd=built_g5k, env=env, timeout=300)
    assert applied.returncode == 0, applied.stderr
    tc = on_node(built_g5k, "node1", "/usr/sbin/tc qdisc show dev nxc0")
    assert "netem" in tc and "delay 40ms" in tc
    runtime_dir = Path(state["runtime_dir"])
    stopped = run_nxc("stop", cwd=built_g5k, env=env, timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    assert f"released OAR job rennes:{job['uid']}" in stopped.stdout
    assert process_start_time(int(server.ident)) != server.start_time, "the HTTP server is left"
    assert alive_jobs(rehearsal) == []
    assert_nothing_left(built_g5k, runtime_dir)


def test_ko_is_retried_then_reported_then_retry_failed(
    rehearsal: Rehearsal, built_g5k: Path
) -> None:
    env = rehearsal.env
    ko = "paravance-3.rennes.grid5000.fr"
    rehearsal.control("ko", {"nodes": [ko]})
    before = {d["uid"] for d in deployments(rehearsal)}
    try:
        result = run_nxc(
            "start", "-f", "g5k-image", "--deploy-retries", "1", "--timeout", TIMEOUT,
            cwd=built_g5k, env=env, timeout=1800,
        )  # fmt: skip
    finally:
        rehearsal.control("ko", method="DELETE")
    assert result.returncode == 1
    assert f"1 node(s) of role node KO ({ko}): deploying again (1/1 retries)" in result.stderr
    assert "1 of 3 nodes failed" in result.stderr
    assert f"({ko}): Kadeploy reported KO" in result.stderr
    tried = [d for d in deployments(rehearsal) if d["uid"] not in before]
    assert [ko in d["nodes"] for d in tried] == [True, True], "KO node not deployed twice"
    state = runtime_state(built_g5k)
    [failed] = [n for n, e in state["nodes"].items() if e["state"] == "failed"]
    assert state["nodes"][failed]["fqdn"] == ko
    retried = run_nxc(
        "start", "--retry-failed", "--timeout", TIMEOUT, cwd=built_g5k, env=env, timeout=1800
    )
    assert retried.returncode == 0, retried.stderr
    assert f"redeploying 1 failed node(s): {failed}" in retried.stderr
    assert all(e["state"] == "ready" for e in runtime_state(built_g5k)["nodes"].values())
    stopped = run_nxc("stop", cwd=built_g5k, env=env, timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    assert alive_jobs(rehearsal) == []
