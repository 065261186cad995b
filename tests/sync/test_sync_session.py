"""The sync service in `nxc start`/`status`/`stop`, flavour-blind: with the `procs`
plug-in flavour (local processes as nodes), no VM needed."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from nxc.ledger import process_start_time
from nxc.project import Project
from nxc.session import running
from tests.conftest import run_nxc
from tests.unit.test_flavour_plugin import procs_project  # noqa: F401


def test_start_status_stop_with_the_sync_service(
    procs_project: tuple[Path, dict[str, str], Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project, env, _ = procs_project
    monkeypatch.chdir(project)  # the manifest was given as a relative path
    started = run_nxc("start", "-m", "manifest.json", cwd=project, env=env)
    assert started.returncode == 0, started.stderr
    assert "starting the sync service" in started.stderr
    current = running(Project(project))
    service = current.sync()
    assert service.is_running() and service.tcp is not None
    # The default seam: a TCP listener on loopback, given to each node as its input.
    assert service.tcp[0] == "127.0.0.1"
    with service.client("test") as client:
        assert client.signal("up") == 1
    # The run record has the service, never its token.
    record = json.loads((current.run_dir / "run.json").read_text())
    assert record["facts"]["sync"] == {
        "server": "redis",
        "scope": current.deployment.id,
        "tcp": f"127.0.0.1:{service.tcp[1]}",
    }
    for path in current.run_dir.rglob("*"):
        if path.is_file():
            assert service.token not in path.read_text(errors="replace"), path
    scenario = project / "meet.py"
    scenario.write_text('sync.signal("up")\nbarrier("up", 2, timeout=10)\n')
    driven = run_nxc("driver", str(scenario), cwd=project, env=env)
    assert driven.returncode == 0, driven.stdout + driven.stderr

    healthy = run_nxc("status", cwd=project, env=env)
    assert healthy.returncode == 0, healthy.stderr
    os.kill(service.pid, signal.SIGKILL)
    sick = run_nxc("status", cwd=project, env=env)
    assert sick.returncode == 1
    assert "the sync service (redis-server, pid" in sick.stderr

    stopped = run_nxc("stop", cwd=project, env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert process_start_time(service.pid) != service.start_time
    assert not Project(project).current_dir.exists()
