"""A NixOS Compose project, unchanged but for nxc's flake input, builds, boots and passes.

The project (tests/nix/fixtures/nixos-compose/selftest) is written in NixOS Compose's
format: `nxc.lib.compose { setup = ./setup.toml; composition = …; }` as the flake's
packages, `roles` + `rolesDistribution`, a setup.toml with a variant, a testScript, and
a `defaultPackage` naming "composition::vm". Its roles are selftest specs (these
machines have no nixpkgs). The variant `ci` asks for 2 nodes.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxc.paths import flake_url
from nxc.templates import PLACEHOLDER
from tests.conftest import REPO, run_nxc
from tests.e2e.conftest import require_host_tools

pytestmark = pytest.mark.vm

PROJECT = REPO / "tests" / "nix" / "fixtures" / "nixos-compose" / "selftest"


@pytest.fixture(scope="module")
def legacy_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    require_host_tools()
    directory = tmp_path_factory.mktemp("nixos-compose") / "project"
    shutil.copytree(PROJECT, directory)
    flake = directory / "flake.nix"
    flake.write_text(flake.read_text().replace(PLACEHOLDER, flake_url()))
    yield directory
    run_nxc("stop", cwd=directory)


def test_nixos_compose_project_boots_and_passes_its_test_script(legacy_project: Path) -> None:
    # NixOS Compose's spellings: -f vm, --setup VARIANT, --setup-param.
    built = run_nxc(
        "build", "--offline", "-f", "vm", "--setup", "ci", "--setup-param", "greeting=salut",
        cwd=legacy_project,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert "built composition::vm-ramdisk" in built.stdout
    assert "role node: 2 node(s) by default" in built.stdout
    started = run_nxc("start", cwd=legacy_project)
    assert started.returncode == 0, started.stderr
    assert "2 nodes ready: node1 node2" in started.stdout
    tested = run_nxc("driver", "-t", cwd=legacy_project)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    stopped = run_nxc("stop", cwd=legacy_project)
    assert stopped.returncode == 0, stopped.stderr
