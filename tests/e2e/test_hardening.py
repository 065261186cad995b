"""Faults injected into real VM deployments: nothing may be left that nxc cannot stop.

Each test interrupts or damages a real `nxc start` / deployment (signals at several
moments, SIGKILL then `nxc stop`, a corrupt ledger, a foreign path, a dead switch, a
VM that panics, paths QEMU's option syntax trips on, a stop under a running wait)
and checks what is left: processes (by pid and start time), runtime directories,
deployment state.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nxc.ledger import process_start_time
from nxc.project import Project
from tests.conftest import run_nxc
from tests.e2e.conftest import ledger_pids, leftovers

pytestmark = pytest.mark.vm


def start_in_background(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nxc.cli", "start", *args],
        cwd=project,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.02)


def recorded(project: Path, description: str) -> bool:
    return any(r.description == description for r in Project(project).ledger.entries())


def runtime_dirs(project: Path) -> list[Path]:
    return [
        Path(r.ident)
        for r in Project(project).ledger.entries()
        if r.description == "runtime directory"
    ]


def assert_nothing_left(
    project: Path, pids: list[tuple[int, int | None]], dirs: list[Path]
) -> None:
    for directory in dirs:
        assert leftovers(project, pids, directory) == []
    assert leftovers(project, pids, Path("/nonexistent")) == []


def test_sigkill_during_the_kvm_probe_then_stop(built_selftest: Path, tmp_path: Path) -> None:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("no /dev/kvm: nxc does not probe KVM here")
    # No cached probe result: this start must probe.
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    process = start_in_background(built_selftest, "-r", "node=1", env=env)
    try:
        wait_for("the KVM probe in the ledger", lambda: recorded(built_selftest, "KVM probe VM"))
        pids = ledger_pids(built_selftest)
        dirs = runtime_dirs(built_selftest)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    probe = [(p, s) for p, s in pids if process_start_time(p) == s]
    stopped = run_nxc("stop", cwd=built_selftest)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert any("KVM probe VM" in line for line in stopped.stdout.splitlines()) or not probe
    assert_nothing_left(built_selftest, pids, dirs)
    assert not list(Path("/tmp").glob("nxc-kvm-probe-*"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_during_boot_cleans_up(built_selftest: Path, signum: int) -> None:
    process = start_in_background(built_selftest, "-r", "node=2", "--accel", "tcg")
    wait_for("two VMs launched", lambda: len(ledger_pids(built_selftest)) >= 4)
    pids = ledger_pids(built_selftest)
    dirs = runtime_dirs(built_selftest)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=90)
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    assert f"interrupted ({signal.Signals(signum).name})" in stderr
    assert_nothing_left(built_selftest, pids, dirs)
    runs = sorted(Project(built_selftest).runs_dir.iterdir(), key=lambda p: p.stat().st_mtime)
    record = json.loads((runs[-1] / "run.json").read_text())
    assert record["status"] == "failed", record


@pytest.mark.parametrize("moment", ["switch", "launched", "ready"])
def test_sigkill_then_stop_leaves_nothing(built_selftest: Path, moment: str) -> None:
    process = start_in_background(built_selftest, "-r", "node=2", "--accel", "tcg")
    try:
        if moment == "switch":
            wait_for("the switch", lambda: recorded(built_selftest, "vde_switch"))
        elif moment == "launched":
            wait_for("two VMs launched", lambda: len(ledger_pids(built_selftest)) >= 4)
        else:
            process.wait(timeout=180)
            assert process.returncode == 0, process.stderr.read() if process.stderr else ""
        pids = ledger_pids(built_selftest)
        dirs = runtime_dirs(built_selftest)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    stopped = run_nxc("stop", cwd=built_selftest)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert_nothing_left(built_selftest, pids, dirs)
    assert run_nxc("stop", cwd=built_selftest).stdout.strip() == "nothing to stop"


def test_a_corrupt_ledger_does_not_stop_nxc_stop(built_selftest: Path) -> None:
    started = run_nxc("start", "-r", "node=1", "--accel", "tcg", cwd=built_selftest)
    assert started.returncode == 0, started.stderr
    project = Project(built_selftest)
    pids = ledger_pids(built_selftest)
    dirs = runtime_dirs(built_selftest)
    assert len(pids) == 3  # switch, sync service, QEMU
    project.ledger.path.write_text("garbage\n")
    stopped = run_nxc("stop", cwd=built_selftest)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "ignored unreadable ledger line: line 1: 'garbage'" in stopped.stdout
    assert_nothing_left(built_selftest, pids, dirs)


def test_a_foreign_path_in_the_ledger_is_refused(built_selftest: Path, tmp_path: Path) -> None:
    started = run_nxc("start", "-r", "node=1", "--accel", "tcg", cwd=built_selftest)
    assert started.returncode == 0, started.stderr
    project = Project(built_selftest)
    pids = ledger_pids(built_selftest)
    dirs = runtime_dirs(built_selftest)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data").write_text("keep me\n")
    with project.ledger.path.open("a") as ledger:
        ledger.write(json.dumps({"kind": "path", "ident": str(precious), "description": "x"}))
        ledger.write("\n")
    assert project.ledger.path.stat().st_mode & 0o077 == 0  # nobody else can append
    assert project.state_dir.stat().st_mode & 0o077 == 0
    stopped = run_nxc("stop", cwd=built_selftest)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"refusing to remove {precious}: not under a directory nxc owns" in stopped.stdout
    assert (precious / "data").read_text() == "keep me\n"
    assert_nothing_left(built_selftest, pids, dirs)


def test_a_dead_switch_is_reported(built_selftest: Path) -> None:
    started = run_nxc("start", "-r", "node=2", "--accel", "tcg", cwd=built_selftest)
    assert started.returncode == 0, started.stderr
    try:
        project = Project(built_selftest)
        state = json.loads(project.runtime_file.read_text())["state"]
        switch = state["switch"]["pid"]
        assert process_start_time(switch) == state["switch"]["start_time"]
        os.kill(switch, signal.SIGKILL)
        wait_for("the switch to die", lambda: process_start_time(switch) is None, 10)
        status = run_nxc("status", cwd=built_selftest)
        assert status.returncode == 1
        assert "problem: the experiment network switch (vde_switch" in status.stderr
        assert "nodes cannot reach each other" in status.stderr
        script = built_selftest / "ping.py"
        script.write_text('node1.succeed("true")\n')
        driven = run_nxc("driver", str(script), cwd=built_selftest)
        assert "the experiment network switch" in driven.stdout + driven.stderr
    finally:
        run_nxc("stop", cwd=built_selftest)


def test_memory_below_what_the_image_surely_needs_is_refused(built_selftest: Path) -> None:
    """24 MiB cannot even hold the initrd: one line before any VM runs (what QEMU does
    then — exiting before the kernel prints anything — is reported from its console:
    tests/unit/test_boot_failure.py)."""
    result = run_nxc(
        "start", "-r", "node=1", "--accel", "tcg", "--memory", "24", cwd=built_selftest
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("nxc: error: ")]
    assert errors == [
        next(ln for ln in result.stderr.splitlines() if "is too little to boot its image" in ln)
    ], result.stderr
    project = Project(built_selftest)
    assert not project.current_dir.exists() and not project.ledger.path.exists()


def test_commas_in_state_and_runtime_paths(built_selftest: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="nxc,c", dir="/tmp"))
    env = {"NXC_STATE_HOME": str(base / "state,home"), "XDG_RUNTIME_DIR": str(base)}
    os.chmod(base, 0o700)
    try:
        # The build record lives in the state dir: record the existing build there.
        state = Project(built_selftest)
        manifest = state.builds()["vm-ramdisk"]["manifest"]
        started = run_nxc(
            "start", "-m", manifest, "-r", "node=1", "--accel", "tcg", cwd=built_selftest, env=env
        )
        assert started.returncode == 0, started.stderr
        script = built_selftest / "true.py"
        script.write_text('node1.succeed("true")\n')
        driven = run_nxc("driver", str(script), cwd=built_selftest, env=env)
        assert driven.returncode == 0, driven.stdout + driven.stderr
    finally:
        stopped = run_nxc("stop", cwd=built_selftest, env=env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not [p for p in base.iterdir() if p.name.startswith("nxc-")]


def test_stop_under_a_running_wait_is_one_line(built_selftest: Path) -> None:
    started = run_nxc("start", "-r", "node=1", "--accel", "tcg", cwd=built_selftest)
    assert started.returncode == 0, started.stderr
    pids = ledger_pids(built_selftest)
    dirs = runtime_dirs(built_selftest)
    script = built_selftest / "wait.py"
    marker = built_selftest / "waiting"
    marker.unlink(missing_ok=True)
    script.write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        'node1.wait_until_succeeds("test -e /nonexistent", timeout=300)\n'
    )
    driver = subprocess.Popen(
        [sys.executable, "-m", "nxc.cli", "driver", str(script)],
        cwd=built_selftest,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for("the scenario to start waiting", marker.exists)
        stopped = run_nxc("stop", cwd=built_selftest)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode != 0
    # The scenario's failure names the cause; only the scenario's own frames are shown
    # (no raw Python traceback from nxc's internals).
    assert "the deployment was stopped" in out + err, out + err
    assert "Traceback (most recent call last):" not in out + err, err
    assert "FileNotFoundError" not in out + err
    # The driver did not bring the node back behind nxc stop's back.
    assert_nothing_left(built_selftest, pids, dirs)
    assert not Project(built_selftest).ledger.exists()


def test_a_vm_out_of_memory_shows_the_kernels_cause(built_selftest: Path) -> None:
    """Enough memory to boot, not to run: the kernel's cause sits far above the stack
    trace the console ends with, and the error quotes it."""
    result = run_nxc(
        "start", "-r", "node=1", "--accel", "tcg", "--memory", "80", cwd=built_selftest
    )
    assert result.returncode == 1
    first = result.stderr.split("--- console of node1 ---")[0]
    assert "node1: the VM stopped during boot: the kernel said: Out of memory" in first, first
    runs = sorted(Project(built_selftest).runs_dir.iterdir(), key=lambda p: p.stat().st_mtime)
    console = (runs[-1] / "nodes" / "node1.console.log").read_text(errors="replace")
    assert "Out of memory" in console  # the whole console is kept in the run record
