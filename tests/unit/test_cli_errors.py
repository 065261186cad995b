"""Bad input gets one line naming the problem, a non-zero exit and no traceback."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from nxc.project import Project
from tests.conftest import run_nxc, sample_manifest


def assert_one_line_error(result, pattern: str) -> None:  # type: ignore[no-untyped-def]
    import re

    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("nxc: error: ")]
    assert len(errors) == 1, result.stderr
    assert re.search(pattern, errors[0]), errors[0]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "flake.nix").write_text("{ outputs = _: {}; }\n")
    return tmp_path


def test_missing_manifest(project: Path) -> None:
    result = run_nxc("start", "-m", "nope.json", cwd=project)
    assert_one_line_error(result, r"nope\.json: manifest file not found")


def test_malformed_manifest(project: Path) -> None:
    (project / "m.json").write_text("{ not json")
    result = run_nxc("start", "-m", "m.json", cwd=project)
    assert_one_line_error(result, r"m\.json: malformed JSON at line 1")


def test_invalid_manifest_names_field(project: Path) -> None:
    document = sample_manifest(project)
    document["roles"]["client"]["quantity"] = "many"
    (project / "m.json").write_text(json.dumps(document))
    result = run_nxc("start", "-m", "m.json", cwd=project)
    assert_one_line_error(result, r"m\.json: roles\.client\.quantity: 'many' is not of type")


def test_unknown_role(project: Path) -> None:
    (project / "m.json").write_text(json.dumps(sample_manifest(project)))
    result = run_nxc("start", "-m", "m.json", "-r", "db=2", cwd=project)
    assert_one_line_error(result, r"-r db: unknown role \(the composition has: client, server\)")
    assert not Project(project).deployment_file.exists()


def test_bad_count(project: Path) -> None:
    (project / "m.json").write_text(json.dumps(sample_manifest(project)))
    result = run_nxc("start", "-m", "m.json", "-r", "client=two", cwd=project)
    assert_one_line_error(result, r"-r 'client=two': expected ROLE=N")


def test_unknown_flavour(project: Path) -> None:
    result = run_nxc("build", "-f", "lxc", cwd=project)
    assert_one_line_error(result, r"unknown flavour 'lxc' \(known: vm-ramdisk \(alias vm\), docker")


def test_start_without_build(project: Path) -> None:
    result = run_nxc("start", cwd=project)
    assert_one_line_error(result, r"no build of flavour 'vm-ramdisk'.*nxc build -f vm-ramdisk")


def test_no_flake_here(tmp_path: Path) -> None:
    result = run_nxc("status", cwd=tmp_path)
    assert_one_line_error(result, r"no flake\.nix in .* or any parent")


def test_driver_without_deployment(project: Path) -> None:
    result = run_nxc("driver", "-t", cwd=project)
    assert_one_line_error(result, r"no running deployment in .*nxc start")


def test_stop_without_deployment_is_a_no_op(project: Path) -> None:
    result = run_nxc("stop", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "nothing to stop" in result.stdout


def _path_without(tool: str, tmp_path: Path) -> str:
    """A PATH holding every tool of the current PATH except ``tool``."""
    shadow = tmp_path / "bin"
    shadow.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.listdir(directory):
            target = shadow / entry
            if entry != tool and not target.exists():
                target.symlink_to(os.path.join(directory, entry))
    return str(shadow)


def test_qemu_missing(project: Path, tmp_path: Path) -> None:
    (project / "m.json").write_text(json.dumps(sample_manifest(project)))
    path = _path_without("qemu-system-x86_64", tmp_path)
    result = run_nxc("start", "-m", "m.json", cwd=project, env={"PATH": path})
    assert_one_line_error(
        result, r"'qemu-system-x86_64' not found.*apt-get install qemu-system-x86"
    )
    assert not Project(project).deployment_file.exists()


def test_nix_missing(project: Path, tmp_path: Path) -> None:
    path = _path_without("nix", tmp_path)
    result = run_nxc("build", cwd=project, env={"PATH": path})
    assert_one_line_error(result, r"nix")
    assert "not found" in result.stderr or "install" in result.stderr


def test_help_has_examples() -> None:
    for command in ("init", "build", "start", "driver", "connect", "status", "stop", "clean"):
        result = run_nxc(command, "--help")
        assert result.returncode == 0, result.stderr
        assert "Example" in result.stdout, command


def test_python_is_the_one_running_tests() -> None:
    # The CLI subprocesses must use this interpreter (with nxc installed).
    assert shutil.which(sys.executable)


def test_monitor_interval_must_be_positive(project: Path) -> None:
    result = run_nxc("driver", "-t", "--monitor-interval", "0", cwd=project)
    assert_one_line_error(result, r"--monitor-interval must be positive, got 0")
    result = run_nxc("start", "--monitor-interval", "-1", cwd=project)
    assert_one_line_error(result, r"--monitor-interval must be positive, got -1")


def test_monitor_needs_a_running_deployment(project: Path) -> None:
    result = run_nxc("monitor", "--once", cwd=project)
    assert_one_line_error(result, r"no running deployment in .* \(run 'nxc start' first\)")


def test_report_without_runs(project: Path) -> None:
    result = run_nxc("report", cwd=project)
    assert_one_line_error(result, r"no run in .*runs \(start one with 'nxc start'\)")
