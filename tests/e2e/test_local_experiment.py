"""The issue's end-to-end path: init → build → start 3 VMs → drive → stop, all real."""

from __future__ import annotations

import json
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxc.driver.session import open_driver
from nxc.keys import generate_key
from nxc.project import Project
from nxc.session import running
from tests.conftest import run_nxc

pytestmark = pytest.mark.vm


@pytest.fixture
def driver(cluster3: Path) -> Iterator[object]:
    # Function scope: QEMU serves one backdoor client at a time, and the CLI tests
    # below attach their own driver process.
    with open_driver(running(Project(cluster3))) as opened:
        yield opened


def test_status_lists_three_running_nodes(cluster3: Path) -> None:
    result = run_nxc("status", cwd=cluster3)
    assert result.returncode == 0, result.stderr
    for name in ("node1", "node2", "node3"):
        assert name in result.stdout
    assert result.stdout.count("running") == 3


def test_nodes_know_each_other_and_exchange_data(driver) -> None:  # type: ignore[no-untyped-def]
    machines = driver.machines
    assert [m.name for m in machines] == ["node1", "node2", "node3"]
    node1, node2, node3 = machines
    assert node2.succeed("cat /etc/nxc/role /etc/nxc/index").split() == ["node", "2"]
    assert node3.succeed(". /etc/nxc/env; echo $NXC_ROLE $NXC_INDEX $NXC_REPLICAS").split() == [
        "node", "3", "3",
    ]  # fmt: skip
    assert "198.18.0.2" in node1.succeed("getent hosts node2 || grep -w node2 /etc/hosts")
    token = node2.succeed("head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'").strip()
    node2.succeed(f"mkdir -p /srv/www && echo {token} > /srv/www/token")
    node2.succeed("busybox httpd -p 8080 -h /srv/www")
    node2.wait_for_open_port(8080)
    fetched = node1.succeed("wget -q -O - http://node2:8080/token")
    assert fetched.strip() == token


def test_failing_command_raises_with_node_and_output(driver) -> None:  # type: ignore[no-untyped-def]
    from nxc.errors import MachineError

    with pytest.raises(MachineError, match="node1") as info:
        driver.machines[0].succeed("echo visible-output; exit 3")
    assert "visible-output" in str(info.value)
    status, _ = driver.machines[0].execute("exit 5")
    assert status == 5


def test_block_and_unblock(driver) -> None:  # type: ignore[no-untyped-def]
    node1, node2, _ = driver.machines
    node1.succeed("ping -c 1 -W 2 node2")
    node2.block()
    try:
        node1.fail("ping -c 2 -W 1 node2")
    finally:
        node2.unblock()
    node1.wait_until_succeeds("ping -c 1 -W 1 node2", timeout=30)


def test_crash_and_restart(driver) -> None:  # type: ignore[no-untyped-def]
    node3 = driver.machines[2]
    before = node3.succeed("cat /proc/sys/kernel/random/boot_id").strip()
    node3.crash()
    assert not node3.is_up()
    node3.start()
    after = node3.succeed("cat /proc/sys/kernel/random/boot_id").strip()
    assert after != before
    driver.machines[0].wait_until_succeeds("ping -c 1 -W 1 node3", timeout=30)


def test_ssh_with_the_deployment_key(cluster3: Path, tmp_path: Path) -> None:
    current = running(Project(cluster3))
    argv = current.ssh_argv("node2")
    result = subprocess.run(
        [*argv, "cat /etc/nxc/node"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "node2"
    # Another key (not the deployment's) is refused.
    stranger = generate_key(tmp_path / "stranger", "stranger")
    key_index = argv.index("-i") + 1
    argv[key_index] = str(stranger.private)
    refused = subprocess.run(
        [*argv, "-o", "BatchMode=yes", "true"], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0


def test_second_driver_gets_a_clear_error(driver, cluster3: Path) -> None:  # type: ignore[no-untyped-def]
    driver.machines[0].succeed("true")  # this process holds node1's backdoor
    script = cluster3 / "probe.py"
    script.write_text('node1.succeed("true")\n')
    result = run_nxc("driver", str(script), cwd=cluster3, timeout=120)
    assert result.returncode != 0
    assert "another nxc driver or shell may be attached" in result.stdout + result.stderr


def test_testscript_passes_with_reports(cluster3: Path) -> None:
    result = run_nxc("driver", "-t", cwd=cluster3)
    assert result.returncode == 0, result.stdout + result.stderr
    report_dir = reported_dir(result.stderr, cluster3)
    report = json.loads((report_dir / "report.json").read_text())
    assert report["success"] is True
    junit = ET.parse(report_dir / "report.xml").getroot()
    assert junit.find(".//failure") is None


def test_false_assertion_fails_with_clear_report(cluster3: Path) -> None:
    script = cluster3 / "false.py"
    script.write_text(
        'with subtest("hostname is wrong on purpose"):\n'
        '    assert node1.succeed("hostname").strip() == "not-node1", "hostname mismatch"\n'
    )
    result = run_nxc("driver", str(script), cwd=cluster3)
    assert result.returncode != 0
    assert "hostname mismatch" in result.stdout + result.stderr
    report_dir = reported_dir(result.stderr, cluster3)
    report = json.loads((report_dir / "report.json").read_text())
    assert report["success"] is False
    failures = ET.parse(report_dir / "report.xml").getroot().findall(".//failure")
    assert failures and any("hostname mismatch" in (f.get("message") or "") for f in failures)


def test_connect_opens_one_tmux_pane_per_node(cluster3: Path) -> None:
    current = running(Project(cluster3))
    session = f"nxc-{current.deployment.id}"
    result = run_nxc("connect", "node1", "node2", cwd=cluster3)
    try:
        assert result.returncode == 0, result.stderr
        assert f"tmux session '{session}': 2 panes" in result.stdout
        panes = subprocess.run(
            ["tmux", "list-panes", "-t", session, "-F", "#{pane_current_command}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert panes == ["ssh", "ssh"]
        # Each pane is a live ssh session on its node: ask node2's pane who it is.
        subprocess.run(["tmux", "send-keys", "-t", f"{session}.1", "cat /etc/nxc/node", "Enter"])
        deadline = time.monotonic() + 30
        screen = ""
        while time.monotonic() < deadline and "node2" not in screen.split("cat /etc/nxc/node")[-1]:
            time.sleep(0.2)
            screen = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", f"{session}.1"], capture_output=True, text=True
            ).stdout
        assert "node2" in screen.split("cat /etc/nxc/node")[-1], screen
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_connect_rejects_unknown_node(cluster3: Path) -> None:
    result = run_nxc("connect", "node9", cwd=cluster3)
    assert result.returncode != 0
    assert "no node named 'node9'" in result.stderr


def reported_dir(stderr: str, project: Path) -> Path:
    """The report directory the CLI named; it must be a new one inside the run record."""
    found = re.findall(r"^report: (\S+)/report\.json and report\.xml$", stderr, re.M)
    assert found, stderr
    directory = Path(found[-1])
    assert directory.parent.parent == running(Project(project)).run_dir
    return directory
