"""A flavour shipped by another package plugs in through the entry point, unchanged CLI.

The ``procs`` flavour (tests/plugins/nxc_procs_flavour) is registered by its own
dist-info on PYTHONPATH, as a pip-installed plug-in would be.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nxc.ledger import process_start_time
from nxc.project import Project
from tests.conftest import REPO, run_nxc

PLUGINS = REPO / "tests" / "plugins"


@pytest.fixture
def procs_project(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "flake.nix").write_text("{ outputs = _: { }; }\n")
    manifest = {
        "nxc_manifest": 1,
        "composition": "plug",
        "flavour": "procs",
        "image_kind": "selftest",
        "roles": {"node": {"quantity": 2}},
        "test_script": 'node1.succeed("test $NXC_NODE = node1")\n',
    }
    (project / "manifest.json").write_text(json.dumps(manifest))
    test_dir = tmp_path / "procs"
    test_dir.mkdir()
    env = {
        "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]),
        "NXC_TEST_PROCS_DIR": str(test_dir),
    }
    return project, env, test_dir


def ledger_processes(project: Path) -> list[tuple[int, int | None]]:
    return [
        (int(r.ident), r.start_time)
        for r in Project(project).ledger.entries()
        if r.kind == "process"
    ]


def test_plugin_is_listed_in_start_help(procs_project: tuple[Path, dict[str, str], Path]) -> None:
    project, env, _ = procs_project
    result = run_nxc("start", "--help", cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    assert "Options of flavour procs (test flavour: one local process per node)" in result.stdout
    assert "--greeting" in result.stdout and "--launch-delay" in result.stdout
    assert "Options of flavour vm-ramdisk" in result.stdout
    # The VM's options are not the plug-in's.
    bad = run_nxc("start", "-m", "manifest.json", "--memory", "64", cwd=project, env=env)
    assert bad.returncode == 1
    assert "--memory is an option of flavour docker, vm-ramdisk, not of procs" in bad.stderr


def test_plugin_starts_drives_and_stops(procs_project: tuple[Path, dict[str, str], Path]) -> None:
    project, env, test_dir = procs_project
    started = run_nxc("start", "-m", "manifest.json", "--greeting", "hi", cwd=project, env=env)
    assert started.returncode == 0, started.stderr
    assert "2 nodes ready: node1 node2" in started.stdout
    processes = ledger_processes(project)
    # Two nodes and the deployment's sync service (started by nxc start, flavour-blind).
    described = [r.description for r in Project(project).ledger.entries() if r.kind == "process"]
    assert described.count("sync service (redis-server)") == 1, described
    assert len(processes) == 3 and all(process_start_time(p) == s for p, s in processes)

    status = run_nxc("status", cwd=project, env=env)
    assert status.returncode == 0, status.stderr
    assert "(procs)" in status.stdout and status.stdout.count("running") == 2

    driven = run_nxc("driver", "-t", cwd=project, env=env)
    assert driven.returncode == 0, driven.stdout + driven.stderr
    script = project / "block.py"
    script.write_text("node2.block()\n")
    blocked = run_nxc("driver", str(script), cwd=project, env=env)
    assert blocked.returncode == 1
    assert "node2: block() is not available on flavour procs" in blocked.stdout + blocked.stderr

    (test_dir / "fail-release").write_text("")
    first = run_nxc("stop", cwd=project, env=env)
    assert first.returncode == 1
    assert "could not release fragile" in first.stdout
    assert "nxc: error: 1 resource(s) could not be released" in first.stderr
    # Everything else went: processes, the token, the deployment's files.
    assert all(process_start_time(p) != s for p, s in processes)
    assert any(p.name.startswith("released-plug-") for p in test_dir.iterdir())
    (test_dir / "fail-release").unlink()
    second = run_nxc("stop", cwd=project, env=env)
    assert second.returncode == 0, second.stderr
    assert "released fragile" in second.stdout
    assert run_nxc("stop", cwd=project, env=env).stdout.strip() == "nothing to stop"
    assert not Project(project).current_dir.exists()


def test_sigkill_during_start_then_stop_releases_everything(
    procs_project: tuple[Path, dict[str, str], Path],
) -> None:
    project, env, test_dir = procs_project
    process = subprocess.Popen(
        [sys.executable, "-m", "nxc.cli", "start", "-m", "manifest.json", "--launch-delay", "30"],
        cwd=project,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ledger_processes(project):
        time.sleep(0.05)
    processes = ledger_processes(project)
    assert processes, "start never launched a node"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert all(process_start_time(p) == s for p, s in processes)  # the node outlived nxc
    stopped = run_nxc("stop", cwd=project, env=env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert all(process_start_time(p) != s for p, s in processes)
    released = {p.name for p in test_dir.iterdir()}
    assert any(n.endswith("-fragile") for n in released) and len(released) == 2
    assert not Project(project).current_dir.exists()
    runtime_dirs = list(Path("/tmp").glob("nxc-plug-*")) + list(
        Path(os.environ.get("XDG_RUNTIME_DIR", "/tmp")).glob("nxc-plug-*")
    )
    assert not [d for d in runtime_dirs if Project(project).owns(d)]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_during_start_clean_up(
    procs_project: tuple[Path, dict[str, str], Path], signum: int
) -> None:
    project, env, _ = procs_project
    process = subprocess.Popen(
        [sys.executable, "-m", "nxc.cli", "start", "-m", "manifest.json", "--launch-delay", "30"],
        cwd=project,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ledger_processes(project):
        time.sleep(0.05)
    processes = ledger_processes(project)
    assert processes
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    assert f"interrupted ({signal.Signals(signum).name}): everything started was stopped" in stderr
    assert all(process_start_time(p) != s for p, s in processes)
    assert not Project(project).ledger.exists()
    runs = list(Project(project).runs_dir.iterdir())
    assert len(runs) == 1
    record = json.loads((runs[0] / "run.json").read_text())
    assert record["status"] == "failed" and signal.Signals(signum).name in record["error"]
