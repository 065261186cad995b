"""`pip install` of nxc's wheel (not an editable install) gives a working nxc.

From a clean clone of the repository: build the wheel, install it in a fresh virtual
environment, then run the selftest as a user would, from a directory outside the
checkout: init, build --offline, start with one node, driver -t, stop. This catches a
wheel that lacks nxc's flake (new compositions would get a dead flake reference).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e.conftest import require_host_tools

pytestmark = pytest.mark.vm


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh venv with nxc installed from a wheel built from a clean clone."""
    require_host_tools()
    if not (REPO / ".git").exists():
        pytest.fail(f"{REPO} is not a git checkout: cannot make a clean clone")
    base = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    clone = base / "clone"
    run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], base, env)
    dist = base / "dist"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(clone)],
        base, env)  # fmt: skip
    wheels = list(dist.glob("nxc-*.whl"))
    assert len(wheels) == 1, wheels
    names = zipfile.ZipFile(wheels[0]).namelist()
    for needed in (
        "nxc/_flake/flake.nix",
        "nxc/_flake/nix/lib/compose.nix",
        "nxc/_flake/nxc/agent/nxc-agent",
        "nxc/_flake/compositions/selftest/flake.nix",
        "nxc/_flake/flavours/vm-ramdisk/module.nix",
    ):
        assert needed in names, f"the wheel lacks {needed}"
    venv = base / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    run([base_python, "-m", "venv", str(venv)], base, env)
    run([str(venv / "bin" / "pip"), "install", "-q", str(wheels[0])], base, env)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    yield venv, env
    shutil.rmtree(clone, ignore_errors=True)


def test_installed_wheel_runs_the_selftest(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    venv, env = installed
    nxc = str(venv / "bin" / "nxc")
    where = run([str(venv / "bin" / "python"), "-c", "import nxc; print(nxc.__file__)"],
                tmp_path, env)  # fmt: skip
    assert where.startswith(str(venv)), f"nxc was imported from {where}, not the wheel"
    project = tmp_path / "demo"
    run([nxc, "init", "-t", "selftest", str(project)], tmp_path, env)
    flake = (project / "flake.nix").read_text()
    assert f"path:{venv}" in flake and "/nxc/_flake" in flake, flake
    run([nxc, "build", "--offline"], project, env)
    try:
        started = run([nxc, "start", "-r", "node=1"], project, env)
        assert "1 nodes ready: node1" in started
        run([nxc, "driver", "-t"], project, env)
    finally:
        stopped = subprocess.run(
            [nxc, "stop"], cwd=project, env=env, capture_output=True, text=True, timeout=120
        )
    assert stopped.returncode == 0, stopped.stderr
