"""g5k-ramdisk in a ``deploy`` job, end to end on a 1-node rehearsal testbed: no
``sudo-g5k`` there, so nxc first deploys the standard environment (``debian12-min``,
a registered environment of the double: the rehearsal's deployer reboots the VM into
its standard environment with the deployment's key for root) through the API's
deployments endpoint, connects as root, kexecs the node into its role, runs a command
through the driver, and ``stop`` releases the job.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_nxc

from .conftest import Rehearsal, _exports
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


@pytest.fixture(scope="module")
def one_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rehearsal]:
    """A rehearsal testbed of 1 node, brought up and down by the real CLI."""
    directory = tmp_path_factory.mktemp("rehearsal-deployjob") / "testbed"
    result = run_nxc(
        "g5k", "rehearsal", "up", "--nodes", "1", "--config-dir", str(directory), timeout=900
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    testbed = Rehearsal(directory, _exports((directory / "env").read_text()), directory)
    try:
        yield testbed
    finally:
        down = run_nxc("g5k", "rehearsal", "down", "--config-dir", str(directory))
        assert down.returncode == 0, down.stderr


@pytest.fixture(scope="module")
def built_ramdisk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("g5k-deployjob")
    assert run_nxc("init", "-t", "selftest", str(directory)).returncode == 0
    result = run_nxc("build", "-f", "g5k-ramdisk", "--offline", cwd=directory)
    assert result.returncode == 0, result.stderr
    return directory


def deployments(testbed: Rehearsal) -> list[dict[str, Any]]:
    return list(testbed.control("state")["deployments"])


def test_ramdisk_in_a_deploy_job(one_node: Rehearsal, built_ramdisk: Path, tmp_path: Path) -> None:
    env = one_node.env
    # boot ids of the standard environment as the testbed booted it
    booted = json.loads((one_node.directory / "ready.json").read_text())["nodes"]
    result = run_nxc(
        "start", "-f", "g5k-ramdisk", "-r", "node=1", "--job-type", "deploy",
        "--timeout", TIMEOUT, cwd=built_ramdisk, env=env, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deploy job: deploying debian12-min on 1 nodes with Kadeploy" in result.stderr
    assert "1 nodes ready: node1" in result.stdout
    [job] = alive_jobs(one_node)
    assert job["types"] == ["deploy"]
    [deployment] = deployments(one_node)
    assert deployment["environment"] == "debian12-min"
    assert deployment["status"] == "terminated" and deployment["nodes"] == job["nodes"]
    assert deployment["result"][job["nodes"][0]]["state"] == "OK"

    state = runtime_state(built_ramdisk)
    assert state["deploy_job"] is True
    entry = state["nodes"]["node1"]
    assert entry["state"] == "ready"
    # root directly (no sudo-g5k) in the deployed environment, then a kexec: new boot id
    assert entry["facts"]["uid"] == 0
    assert entry["boot_id"] != entry["facts"]["boot_id"]
    assert entry["facts"]["boot_id"] not in booted.values(), "the node was not redeployed"
    assert on_node(built_ramdisk, "node1", "cat /etc/nxc/role").strip() == "node"

    script = tmp_path / "probe.py"
    script.write_text(
        'seen = node1.succeed("cat /etc/nxc/node").strip()\n'
        'assert seen == "node1", seen\n'
        'print(f"driver saw {seen}")\n'
    )
    driven = run_nxc("driver", str(script), cwd=built_ramdisk, env=env, timeout=300)
    assert driven.returncode == 0, driven.stdout + driven.stderr
    assert "driver saw node1" in driven.stdout + driven.stderr

    runtime_dir = Path(state["runtime_dir"])
    stopped = run_nxc("stop", cwd=built_ramdisk, env=env, timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    assert f"released OAR job rennes:{job['uid']}" in stopped.stdout
    assert alive_jobs(one_node) == []
    assert_nothing_left(built_ramdisk, runtime_dir)
