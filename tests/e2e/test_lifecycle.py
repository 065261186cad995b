"""Lifecycle guarantees: stop is complete and idempotent, failures and Ctrl-C clean up."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nxc.project import Project
from tests.conftest import run_nxc
from tests.e2e.conftest import ledger_pids, leftovers, runtime_dir

pytestmark = pytest.mark.vm


def test_stop_leaves_nothing_and_is_idempotent(built_selftest: Path) -> None:
    result = run_nxc("start", "-r", "node=2", cwd=built_selftest)
    assert result.returncode == 0, result.stderr
    pids = ledger_pids(built_selftest)
    assert len(pids) == 4  # vde_switch, the sync service, 2 QEMU
    run_dir = runtime_dir(built_selftest)
    assert run_dir.exists()
    first = run_nxc("stop", cwd=built_selftest)
    assert first.returncode == 0, first.stderr
    assert "stopped qemu for node1" in first.stdout
    assert "stopped sync service (redis-server)" in first.stdout
    assert leftovers(built_selftest, pids, run_dir) == []
    second = run_nxc("stop", cwd=built_selftest)
    assert second.returncode == 0
    assert second.stdout.strip() == "nothing to stop"


def test_late_nodes_are_named_and_cleaned_up(built_selftest: Path) -> None:
    result = run_nxc("start", "-r", "node=2", "--timeout", "1", cwd=built_selftest)
    assert result.returncode != 0
    assert "nodes not ready: node1, node2" in result.stderr
    assert "--- console of node1 ---" in result.stderr
    assert "Traceback" not in result.stderr
    project = Project(built_selftest)
    assert not project.deployment_file.exists()
    assert not project.ledger.path.exists()


def test_ctrl_c_during_start_cleans_up(built_selftest: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "nxc.cli", "start", "-r", "node=2"],
        cwd=built_selftest,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ledger = Project(built_selftest).ledger.path
    deadline = time.monotonic() + 60
    # Interrupt once both VMs are launched (they are in the ledger, after the switch
    # and the sync service) but not yet ready.
    while time.monotonic() < deadline and ledger_count(ledger) < 4:
        time.sleep(0.05)
    pids = ledger_pids(built_selftest)
    assert len(pids) >= 4, "start never launched the VMs"
    run_dirs = [
        Path(r.ident) for r in Project(built_selftest).ledger.entries()
        if r.description == "runtime directory"
    ]  # fmt: skip
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert leftovers(built_selftest, pids, run_dirs[0]) == []


def ledger_count(path: Path) -> int:
    try:
        return sum('"process"' in line for line in path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_too_little_memory_for_the_image_is_one_line(built_selftest: Path) -> None:
    """Memory sized from the built image (issue 12, item 5): below it, one line naming the
    role and the size needed, before any VM runs out of memory while unpacking."""
    result = run_nxc("start", "-r", "node=1", "--memory", "node=30", cwd=built_selftest)
    assert result.returncode == 1
    assert "role node: 30 MiB (the VM's memory) is too little to boot its image" in (result.stderr)
    assert "give --memory node=" in result.stderr and "Traceback" not in result.stderr
    project = Project(built_selftest)
    assert not project.deployment_file.exists()
    assert not project.ledger.path.exists()
