"""g5k-ramdisk end to end on the rehearsal testbed: 3 QEMU VMs running a Grid'5000-like
standard environment stand in for reserved nodes, behind the API double, reached
through the OpenSSH config the testbed writes. Everything goes through the real CLI:
reserve, push, kexec in parallel, new boot ids, the testScript, netem in the kexec'ed
nodes, status/extend/connect, a refused crash, stop (job released, nothing left);
then the faults: a node whose role never comes back, and Ctrl-C during deployment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from grid5000 import Grid5000

from nxc.project import Project
from nxc.running import running
from tests.conftest import run_nxc

from .conftest import Rehearsal

pytestmark = pytest.mark.skipif(
    not shutil.which("qemu-system-x86_64") or not shutil.which("nix"),
    reason="needs QEMU and nix (scripts/setup)",
)
TIMEOUT = "300"  # seconds for the nodes to come back after the kexec (TCG, shared CPU)


def runtime_state(project_dir: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(Project(project_dir).runtime_file.read_text())["state"]
    return state


def on_node(project_dir: Path, name: str, command: str) -> str:
    argv = running(Project(project_dir)).ssh_argv(name)
    done = subprocess.run([*argv, command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_nothing_left(project_dir: Path, runtime_dir: Path) -> None:
    project = Project(project_dir)
    assert not project.current_dir.exists(), "current/ is left"
    assert not project.ledger.exists(), "the ledger is left"
    assert not runtime_dir.exists(), f"{runtime_dir} is left"


def alive_jobs(testbed: Rehearsal) -> list[dict[str, Any]]:
    """Jobs not ended or ending (a deleted job is finishing for a second, then error)."""
    return [j for j in testbed.jobs() if j["state"] not in ("finishing", "error", "terminated")]


def api(testbed: Rehearsal) -> Grid5000:
    config = yaml.safe_load((testbed.directory / "python-grid5000.yaml").read_text())
    return Grid5000(**config)


def test_ramdisk_end_to_end(rehearsal: Rehearsal, built_g5k: Path, tmp_path: Path) -> None:
    env = rehearsal.env
    result = run_nxc(
        "start", "-f", "g5k-ramdisk", "--timeout", TIMEOUT, "--walltime", "1:00",
        cwd=built_g5k, env=env, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "3 nodes ready: node1 node2 node3" in result.stdout
    [job] = alive_jobs(rehearsal)
    assert job["state"] == "running" and job["name"].startswith("nxc-selftest-")
    state = runtime_state(built_g5k)
    assert state["jobs"] == [f"rennes:{job['uid']}"]
    assert sorted(e["fqdn"] for e in state["nodes"].values()) == sorted(job["nodes"])

    # Each node kexec'ed: its boot id is new, the ready line's, and the node's own now;
    # the inputs came in the initrd, never on the kernel command line.
    for name, entry in state["nodes"].items():
        assert entry["state"] == "ready"
        assert entry["boot_id"] != entry["facts"]["boot_id"], f"{name}: same boot id"
        cmdline, boot_id, role = on_node(
            built_g5k, name,
            "cat /proc/cmdline; cat /proc/sys/kernel/random/boot_id; cat /etc/nxc/role",
        ).splitlines()  # fmt: skip
        assert boot_id == entry["boot_id"] and role == "node"
        assert f"nxc.node={name}" in cmdline and "nxc.inputs=dir:/nxc-input" in cmdline
        assert "PRIVATE" not in cmdline and "hostkey" not in cmdline

    status = run_nxc("status", cwd=built_g5k, env=env)
    assert status.returncode == 0, status.stderr
    assert f"rennes:{job['uid']} running" in status.stdout and "left" in status.stdout
    extend = run_nxc("extend", "+0:30", cwd=built_g5k, env=env)
    assert extend.returncode == 0, extend.stderr
    assert api(rehearsal).sites["rennes"].jobs[job["uid"]].walltime == 5400

    # The sync service: the nodes reach this machine's redis over their route to it
    # (here QEMU's user network: the address the VMs see the host at), with the input
    # the handoff put in their initrd (0600, never on the command line).
    sync_file = on_node(built_g5k, "node1", "stat -c %a /etc/nxc/sync; cat /etc/nxc/sync")
    mode, *assignments = sync_file.splitlines()
    assert mode == "600" and any(a.startswith("NXC_SYNC_") for a in assignments)
    assert "NXC_SYNC" not in on_node(built_g5k, "node1", "cat /proc/cmdline")
    for name in ("node1", "node2"):
        on_node(
            built_g5k, name,
            "sh -c 'nxc-sync signal-and-wait g5k-meet 2 > /tmp/meet.seq && "
            "nxc-sync signal g5k-released' </dev/null >/dev/null 2>&1 &",
        )  # fmt: skip
    with running(Project(built_g5k)).sync().client("test") as client:
        client.barrier("g5k-released", 2, timeout=120)
        arrived = client.arrivals("g5k-meet")
        released = client.arrivals("g5k-released")
    assert sorted(who for who, _ in arrived) == ["node1", "node2"]
    assert all(t >= max(t for _, t in arrived) for _, t in released)
    seqs = sorted(int(on_node(built_g5k, n, "cat /tmp/meet.seq")) for n in ("node1", "node2"))
    assert seqs == [1, 2]

    test = run_nxc("driver", "-t", cwd=built_g5k, env=env, timeout=600)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "testScript: PASSED" in test.stdout + test.stderr

    # netem in the kexec'ed nodes, on their site NIC (the deployment's interface)
    topology = tmp_path / "topology.yaml"
    topology.write_text(
        "nxc_topology: 1\nconstraints:\n  - {from: node1, to: node2, delay: 60ms}\n"
    )
    applied = run_nxc("netem", "apply", str(topology), cwd=built_g5k, env=env, timeout=300)
    assert applied.returncode == 0, applied.stderr
    tc = on_node(built_g5k, "node1", "/usr/sbin/tc qdisc show dev nxc0")
    assert "netem" in tc and "delay 60ms" in tc
    report = tmp_path / "netem.json"
    # TCG guests on a loaded 2-core machine fire netem's timers late (tens of ms):
    # a wide tolerance, and the delay itself checked against the unshaped pairs.
    validated = run_nxc(
        "netem", "validate", "--rtt-tolerance-ms", "80", "--report", str(report),
        cwd=built_g5k, env=env, timeout=300,
    )  # fmt: skip
    assert validated.returncode == 0, validated.stdout + validated.stderr
    pairs = json.loads(report.read_text())["pairs"]
    [shaped] = [p for p in pairs if {p["src"], p["dst"]} == {"node1", "node2"}]
    others = [p["rtt_ms"] for p in pairs if p is not shaped]
    assert shaped["expected_rtt_ms"] > 120 and shaped["rtt_ms"] >= 120  # really applied
    assert others and max(others) < 60  # and only between node1 and node2

    # several nodes: one tmux pane each (not attached: no terminal here)
    if shutil.which("tmux"):
        connected = run_nxc("connect", "node1", "node2", cwd=built_g5k, env=env)
        assert connected.returncode == 0, connected.stderr
        session = connected.stdout.split("'")[1]
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)

    crash = tmp_path / "crash.py"
    crash.write_text("node1.crash()\n")
    refused = run_nxc("driver", str(crash), cwd=built_g5k, env=env, timeout=300)
    assert refused.returncode != 0
    assert "node1" in refused.stdout + refused.stderr and "crash" in refused.stdout + refused.stderr

    runtime_dir = Path(state["runtime_dir"])
    stopped = run_nxc("stop", cwd=built_g5k, env=env, timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    assert f"released OAR job rennes:{job['uid']}" in stopped.stdout
    assert alive_jobs(rehearsal) == []
    assert_nothing_left(built_g5k, runtime_dir)


def _manifest_with_bad_role(built: Path, target: Path, bad: bool) -> None:
    """Two good nodes and one node `odd1` whose role cannot boot (no such init)."""
    source = Path(Project(built).builds()["g5k-ramdisk"]["manifest"])
    document = json.loads(source.read_text())
    good = document["roles"]["node"]
    odd = dict(good, quantity=1)
    if bad:
        odd["kernel_params"] = good["kernel_params"].replace("rdinit=/init", "rdinit=/nonexistent")
    document["roles"] = {"node": dict(good, quantity=2), "odd": odd}
    document["test_script"] = None
    target.write_text(json.dumps(document))


def test_a_node_that_never_comes_back_then_retry_failed(
    rehearsal: Rehearsal, built_g5k: Path, tmp_path: Path
) -> None:
    env = rehearsal.env
    manifest = tmp_path / "manifest.json"
    _manifest_with_bad_role(built_g5k, manifest, bad=True)
    began = time.monotonic()
    # kernels and initrds through the shared home this time (copied once, not pushed)
    failed = run_nxc(
        "start", "-m", str(manifest), "--timeout", TIMEOUT,
        "--push", "shared", "--shared-dir", str(rehearsal.shared / "nxc"),
        cwd=built_g5k, env=env, timeout=1200,
    )  # fmt: skip
    took = time.monotonic() - began
    assert "(shared with the nodes)" in failed.stderr
    # both roles boot the same selftest kernel + initrd: one copy for the three nodes
    assert len(list((rehearsal.shared / "nxc").glob("*-initrd"))) == 1
    assert failed.returncode == 1
    assert "1 of 3 nodes failed: odd1" in failed.stderr
    assert "odd1 (paravance-" in failed.stderr
    assert "nxc start --retry-failed" in failed.stderr
    assert took < 1200
    # the two good nodes stay up, and say so
    state = runtime_state(built_g5k)
    assert {n: e["state"] for n, e in state["nodes"].items()} == {
        "node1": "ready", "node2": "ready", "odd1": "failed",
    }  # fmt: skip
    kept = {n: state["nodes"][n]["boot_id"] for n in ("node1", "node2")}
    for name, boot_id in kept.items():
        assert on_node(built_g5k, name, "cat /proc/sys/kernel/random/boot_id").strip() == boot_id
    record = running(Project(built_g5k)).run.load()
    assert record["status"] == "partial" and list(record["failed"]) == ["odd1"]
    assert len(alive_jobs(rehearsal)) == 1, "the job went with the partial failure"

    # fix the image, redeploy only the failed node
    _manifest_with_bad_role(built_g5k, manifest, bad=False)
    retried = run_nxc(
        "start", "--retry-failed", "--timeout", TIMEOUT, cwd=built_g5k, env=env, timeout=1200
    )
    assert retried.returncode == 0, retried.stderr
    assert "redeploying 1 failed node(s): odd1" in retried.stderr
    state = runtime_state(built_g5k)
    assert all(e["state"] == "ready" for e in state["nodes"].values())
    for name, boot_id in kept.items():
        assert state["nodes"][name]["boot_id"] == boot_id, f"{name} was redeployed too"
    assert on_node(built_g5k, "odd1", "cat /etc/nxc/role").strip() == "odd"
    stopped = run_nxc("stop", cwd=built_g5k, env=env, timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    assert alive_jobs(rehearsal) == []


def test_ctrl_c_during_deployment_releases_everything(
    rehearsal: Rehearsal, built_g5k: Path
) -> None:
    env = {**os.environ, **rehearsal.env}
    process = subprocess.Popen(
        [sys.executable, "-m", "nxc.cli", "start", "-f", "g5k-ramdisk", "--timeout", TIMEOUT],
        cwd=built_g5k, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if "pushing kernel + initrd" in line:
            break
    else:
        pytest.fail("the start never reached the push:\n" + "".join(seen))
    project = Project(built_g5k)
    runtime_dir = Path(runtime_state(built_g5k)["runtime_dir"])
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=600)
    assert process.returncode == 130, "".join(seen) + rest
    assert "interrupted" in rest
    assert alive_jobs(rehearsal) == [], "the job survived Ctrl-C"
    assert_nothing_left(built_g5k, runtime_dir)
    assert project.state_dir.exists()  # the run record stays
