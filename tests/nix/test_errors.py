"""Nix evaluation errors keep nix's file:line:col, pointing at the user's own file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nxc import nixbuild
from nxc.errors import BuildError
from tests.conftest import run_nxc
from tests.nix.nixutil import needs_nix
from tests.unit.test_nixbuild import stub_flake

pytestmark = [pytest.mark.nix, needs_nix]

SYNTAX_ERROR = """\
{ ... }:
{
  roles.node = { quantity = 1 +; };
}
"""

UNDEFINED = """\
{ ... }:
{
  roles.node = {
    quantity = clients;
  };
}
"""


def test_syntax_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    project = stub_flake(tmp_path, SYNTAX_ERROR)
    with pytest.raises(BuildError) as caught:
        nixbuild.build(project, "demo::vm-ramdisk", extra_args=["--offline"])
    message = str(caught.value)
    assert f"{project}/composition.nix:3:32: syntax error, unexpected ';'" in message, message
    assert "\n" not in message


def test_undefined_variable_names_the_file_line_and_column(tmp_path: Path) -> None:
    project = stub_flake(tmp_path, UNDEFINED)
    with pytest.raises(BuildError) as caught:
        nixbuild.build(project, "demo::vm-ramdisk", extra_args=["--offline"])
    assert f"{project}/composition.nix:4:16: undefined variable 'clients'" in str(caught.value)


def test_flake_in_a_git_subdirectory_maps_back_to_the_work_tree(tmp_path: Path) -> None:
    """nix copies the whole repository: the path under the repository is found."""
    repo = tmp_path / "repo"
    repo.mkdir()
    project = stub_flake(repo, UNDEFINED)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    with pytest.raises(BuildError) as caught:
        nixbuild.build(project, "demo::vm-ramdisk", extra_args=["--offline"])
    assert f"{project}/composition.nix:4:16: undefined variable" in str(caught.value)


def test_cli_shows_the_location_in_its_one_line(tmp_path: Path) -> None:
    project = stub_flake(tmp_path, SYNTAX_ERROR)
    result = run_nxc("build", "--offline", cwd=project)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("nxc: error: "), result.stderr
    assert "composition.nix:3:32: syntax error" in lines[-1]
    assert "Traceback" not in result.stderr


def test_error_in_flake_nix_names_it(tmp_path: Path) -> None:
    project = stub_flake(tmp_path)
    flake = project / "flake.nix"
    flake.write_text(flake.read_text().replace('imageKind = "selftest";', "imageKind = 1 +;"))
    with pytest.raises(BuildError) as caught:
        nixbuild.list_outputs(project)
    assert f"{flake}:" in str(caught.value) and "syntax error" in str(caught.value)
