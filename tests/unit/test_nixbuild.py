"""nxc.nixbuild turns nix failures into one-line errors (real nix on broken flakes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from nxc import nixbuild
from nxc.errors import BuildError, ToolMissing
from nxc.paths import flake_url

needs_nix = pytest.mark.skipif(shutil.which("nix") is None, reason="nix is not installed")
REPO = Path(__file__).resolve().parents[2]


def write_flake(directory: Path, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "flake.nix").write_text(textwrap.dedent(body))
    return directory


def stub_flake(
    tmp_path: Path, composition: str = "{ roles.node = { }; }", flavours: str | None = None
) -> Path:
    """A selftest flake with a stub builder; ``flavours``: a Nix list (default: all)."""
    project = tmp_path / "stub"
    project.mkdir()
    shutil.copy(REPO / "tests" / "nix" / "fixtures" / "stub-selftest.nix", project)
    (project / "composition.nix").write_text(composition)
    only = f" flavours = {flavours};" if flavours else ""
    return write_flake(
        project,
        f"""
        {{
          inputs.nxc.url = "{flake_url()}";
          inputs.nxc.inputs.nixpkgs.follows = "";
          outputs = {{ self, nxc }}: nxc.lib.compose {{
            name = "demo";
            composition = ./composition.nix;
            imageKind = "selftest";{only}
            selftestBuilder = import ./stub-selftest.nix;
          }};
        }}
        """,
    )


# Not every flavour: the two tests below ask for one the flake lacks.
LACKING_G5K_IMAGE = '[ "docker" "g5k-ramdisk" "vm-ramdisk" ]'


@needs_nix
def test_missing_attribute_lists_the_outputs(tmp_path: Path) -> None:
    project = stub_flake(tmp_path, flavours=LACKING_G5K_IMAGE)
    with pytest.raises(BuildError) as caught:
        nixbuild.build(project, "demo::g5k-image", extra_args=["--offline"])
    message = str(caught.value)
    assert "no output 'demo::g5k-image'" in message
    assert "available: demo::docker, demo::g5k-ramdisk, demo::vm-ramdisk" in message
    assert "\n" not in message


@needs_nix
def test_default_output_for_a_flavour_the_flake_lacks(tmp_path: Path) -> None:
    project = stub_flake(tmp_path, flavours=LACKING_G5K_IMAGE)
    with pytest.raises(BuildError, match="no output for flavour 'g5k-image'"):
        nixbuild.default_output(project, "g5k-image")


@needs_nix
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("github:NixOS/nixpkgs/nixos-24.11", "github:NixOS/nixpkgs/nixos-24.11"),
        ("git+https://example.invalid/data.git", "git+https://example.invalid/data.git"),
    ],
)
def test_unfetchable_input_names_it_and_says_how_to_override(
    tmp_path: Path, url: str, shown: str
) -> None:
    project = write_flake(
        tmp_path / "offline",
        f"""
        {{
          inputs.things = {{ url = "{url}"; flake = false; }};
          outputs = {{ self, things }}: {{ }};
        }}
        """,
    )
    with pytest.raises(BuildError) as caught:
        nixbuild.build(project, "x::vm-ramdisk", extra_args=["--offline"])
    message = str(caught.value)
    assert f"input 'things' ({shown}) cannot be fetched" in message
    assert "--override-input things path:/abs/dir" in message
    assert "\n" not in message


@needs_nix
def test_evaluation_error_gives_its_first_line(tmp_path: Path) -> None:
    project = stub_flake(tmp_path, "{ roles.node = { quantity = -1; }; }")
    with pytest.raises(BuildError) as caught:
        nixbuild.build(project, "demo::vm-ramdisk", extra_args=["--offline"])
    message = str(caught.value)
    assert message.startswith("building demo::vm-ramdisk failed: nxc: composition 'demo'")
    assert "quantity -1 is out of range" in message
    assert "\n" not in message


@needs_nix
def test_untracked_file_in_a_git_work_tree_says_git_add(tmp_path: Path) -> None:
    project = stub_flake(tmp_path)
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    subprocess.run(["git", "-C", str(project), "add", "flake.nix", "stub-selftest.nix"], check=True)
    with pytest.raises(BuildError, match=r"composition\.nix exists but nix cannot see it.*git"):
        nixbuild.build(project, "demo::vm-ramdisk", extra_args=["--offline"])


def test_no_flake_here(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"no flake\.nix here"):
        nixbuild.build(tmp_path, "a::vm-ramdisk")


def test_missing_nix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        ToolMissing, match=r"'nix' not found on PATH \(install it: apt-get install nix-bin\)"
    ):
        nixbuild.list_outputs(tmp_path)


def test_flakes_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A nix without flakes (a fake binary printing what nix prints)."""
    fake = tmp_path / "bin" / "nix"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'case "$*" in *--version*) echo "nix (Nix) 2.3.16"; exit 0;; esac\n'
        "echo \"error: experimental Nix feature 'flakes' is disabled; use "
        "'--extra-experimental-features flakes' to override\" >&2\n"
        "exit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    write_flake(tmp_path / "f", "{ outputs = { self }: { }; }")
    with pytest.raises(BuildError, match=r"this nix \(2\.3\.16\) cannot use flakes"):
        nixbuild.build(tmp_path / "f", "a::vm-ramdisk")


def test_metadata_args_keep_only_what_flake_metadata_understands() -> None:
    args = [
        "--show-trace",
        "-L",
        "--override-input",
        "nixpkgs",
        "path:/x",
        "--offline",
        "--keep-going",
    ]
    assert nixbuild._metadata_args(args) == [
        "--show-trace",
        "--override-input",
        "nixpkgs",
        "path:/x",
        "--offline",
    ]


def test_current_system() -> None:
    assert nixbuild.current_system().endswith("-linux")
