"""Bad input for the docker flavour: one line naming the problem, exit 1, no traceback,
and nothing left behind."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nxc.project import Project
from tests.conftest import run_nxc


def assert_one_line_error(result: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("nxc: error: ")]
    assert len(errors) == 1, result.stderr
    assert re.search(pattern, errors[0]), errors[0]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "flake.nix").write_text("{ outputs = _: {}; }\n")
    image = tmp_path / "rootfs.tar"
    image.write_bytes(b"")
    manifest = {
        "nxc_manifest": 1,
        "composition": "demo",
        "flavour": "docker",
        "image_kind": "selftest",
        "roles": {
            "server": {
                "quantity": 1,
                "container": {"image": str(image), "format": "rootfs", "init": "/init"},
            }
        },
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def _nothing_left(project: Path) -> None:
    state = Project(project)
    assert not state.ledger.path.exists()
    assert not state.current_dir.exists()


def test_no_daemon_at_docker_host(project: Path) -> None:
    missing = project / "nowhere.sock"
    result = run_nxc(
        "start", "-m", "manifest.json", cwd=project, env={"DOCKER_HOST": f"unix://{missing}"}
    )
    assert_one_line_error(
        result, rf"no Docker daemon: DOCKER_HOST names {missing}, which does not exist"
    )
    _nothing_left(project)


def test_a_socket_nobody_answers(project: Path) -> None:
    path = project / "dead.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))  # bound, never listening: connections are refused
    result = run_nxc(
        "start", "-m", "manifest.json", cwd=project, env={"DOCKER_HOST": f"unix://{path}"}
    )
    assert_one_line_error(result, rf"no Docker daemon answers at unix://{path}: connection refused")
    _nothing_left(project)


def test_a_remote_daemon_is_refused(project: Path) -> None:
    result = run_nxc(
        "start", "-m", "manifest.json", cwd=project, env={"DOCKER_HOST": "tcp://192.0.2.9:2375"}
    )
    assert_one_line_error(result, r"DOCKER_HOST=tcp://192\.0\.2\.9:2375: .*must run here")


def test_manifest_without_container_images(project: Path) -> None:
    manifest = json.loads((project / "manifest.json").read_text())
    del manifest["roles"]["server"]["container"]
    manifest["roles"]["server"]["kernel"] = "k"
    (project / "manifest.json").write_text(json.dumps(manifest))
    result = run_nxc("start", "-m", "manifest.json", cwd=project)
    assert_one_line_error(
        result, r"role server: the manifest has no container image \(build the docker flavour"
    )
    _nothing_left(project)


def test_manifest_naming_a_missing_image(project: Path) -> None:
    (project / "rootfs.tar").unlink()
    result = run_nxc("start", "-m", "manifest.json", cwd=project)
    assert_one_line_error(result, r"role server: container image .*rootfs\.tar does not exist")


def test_private_dockerd_without_dockerd_installed(project: Path, tmp_path: Path) -> None:
    # A PATH holding the tools nxc needs besides dockerd (the interpreter runs by path).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ip", "nsenter"):
        found = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True)
        os.symlink(found.stdout.strip(), bin_dir / tool)
    result = subprocess.run(
        [sys.executable, "-m", "nxc.cli", "start", "-m", "manifest.json", "--dockerd", "private"],
        cwd=project,
        env={**os.environ, "PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert_one_line_error(
        result,
        r"required tool 'dockerd' not found on PATH \(install it: apt-get install docker\.io\)",
    )
    _nothing_left(project)


def test_a_bad_dockerd_choice(project: Path) -> None:
    result = run_nxc("start", "-m", "manifest.json", "--dockerd", "sometimes", cwd=project)
    assert_one_line_error(result, r"--dockerd: 'sometimes' is not one of user, private")
