"""Real `nix build` of compositions through lib.compose (builtins and host tools only)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nxc import nixbuild
from nxc.contracts import Manifest
from nxc.errors import BuildError
from nxc.paths import flake_url
from nxc.templates import PLACEHOLDER, template_dir
from tests.nix.nixutil import REPO, needs_nix

pytestmark = [pytest.mark.nix, needs_nix]

SELFTEST_BUILDER = REPO / "nix" / "selftest" / "default.nix"


def selftest_project(tmp_path: Path, builder: str | None = None) -> Path:
    """The selftest template, as `nxc init` writes it, optionally with another role builder."""
    project = tmp_path / "project"
    shutil.copytree(template_dir() / "selftest", project)
    flake = project / "flake.nix"
    text = flake.read_text().replace(PLACEHOLDER, flake_url())
    if builder is not None:
        shutil.copy(REPO / "tests" / "nix" / "fixtures" / builder, project / builder)
        text = text.replace(
            'imageKind = "selftest";',
            f'imageKind = "selftest"; selftestBuilder = import ./{builder};',
        )
    flake.write_text(text)
    return project


def test_selftest_template_through_compose_with_a_stub_builder(tmp_path: Path) -> None:
    """The shared path (compose -> manifest derivation -> nixbuild) with tiny fake roles."""
    project = selftest_project(tmp_path, builder="stub-selftest.nix")
    assert nixbuild.list_outputs(project) == [
        "selftest::docker",
        "selftest::g5k-image",
        "selftest::g5k-ramdisk",
        "selftest::vm-ramdisk",
    ]
    assert nixbuild.default_output(project, "vm-ramdisk") == "selftest::vm-ramdisk"
    seen: list[str] = []
    result = nixbuild.build(
        project, "selftest::vm-ramdisk", extra_args=["--offline"], progress=seen.append
    )
    assert result.out_link == project / "result-selftest-vm-ramdisk"
    assert result.out_link.resolve() == result.out_path
    assert "nxc" in result.inputs and result.inputs["nxc"]["locked"]["narHash"].startswith("sha256")
    manifest = Manifest.load(result.manifest)
    assert manifest.composition == "selftest" and manifest.flavour == "vm-ramdisk"
    assert manifest.image_kind == "selftest" and manifest.reproducible is False
    node = manifest.roles["node"]
    assert node.quantity == 3 and node.memory_mb == 256
    assert node.kernel_params == "rdinit=/init"
    assert node.kernel is not None and node.kernel.read_text() == "kernel\n"
    role_json = (node.kernel.parent / "role.json").read_text()
    assert '"startup"' in role_json and "busybox httpd -p 80" in role_json
    assert manifest.test_script is not None and "start_all()" in manifest.test_script
    assert manifest.parameters == {"nodes": 3, "memory_mb": 256}
    assert result.to_record()["manifest"] == str(result.manifest)


def test_selftest_docker_output_names_a_rootfs(tmp_path: Path) -> None:
    """For docker, the builder is asked for a container root file system (no kernel)."""
    project = selftest_project(tmp_path, builder="stub-selftest.nix")
    result = nixbuild.build(project, "selftest::docker", extra_args=["--offline"])
    manifest = Manifest.load(result.manifest)
    assert manifest.flavour == "docker"
    node = manifest.roles["node"]
    assert node.kernel is None and node.initrd is None
    assert node.container is not None
    assert {k: v for k, v in node.container.items() if k != "image"} == {
        "format": "rootfs",
        "init": "/init",
        "stop_signal": "SIGUSR2",
    }
    image = Path(node.container["image"])
    assert image.name == "rootfs.tar" and image.read_text() == "rootfs\n"


def test_parameters_override_without_editing_the_composition(tmp_path: Path) -> None:
    project = selftest_project(tmp_path, builder="stub-selftest.nix")
    result = nixbuild.build(
        project,
        "selftest::g5k-ramdisk",
        extra_args=["--offline"],
        parameters={"nodes": 5, "memory_mb": 384},
    )
    manifest = Manifest.load(result.manifest)
    assert manifest.flavour == "g5k-ramdisk"
    assert manifest.roles["node"].quantity == 5 and manifest.roles["node"].memory_mb == 384
    assert manifest.parameters == {"nodes": 5, "memory_mb": 384}


@pytest.mark.skipif(
    not SELFTEST_BUILDER.is_file(),
    reason="nix/selftest/default.nix (the host-package role builder) is not in this checkout yet",
)
@pytest.mark.skipif(not list(Path("/boot").glob("vmlinuz-*")), reason="no host kernel in /boot")
def test_real_selftest_build(tmp_path: Path) -> None:
    project = selftest_project(tmp_path)
    result = nixbuild.build(project, "selftest::vm-ramdisk", extra_args=["--offline"])
    manifest = Manifest.load(result.manifest)
    manifest.require_boot_artifacts()
    assert manifest.image_kind == "selftest"
    assert manifest.roles["node"].kernel_params


NIXOS_TEMPLATES = ["basic", "webserver", "iperf-netem", "ring"]


def nixos_project(tmp_path: Path, name: str) -> Path:
    project = tmp_path / name
    shutil.copytree(template_dir() / name, project)
    flake = project / "flake.nix"
    flake.write_text(flake.read_text().replace(PLACEHOLDER, flake_url()))
    return project


@pytest.mark.parametrize("name", NIXOS_TEMPLATES)
def test_nixos_templates_list_every_flavour_without_nixpkgs(tmp_path: Path, name: str) -> None:
    """Listing outputs never forces nixpkgs (here a stub flake stands in for it)."""
    stub = tmp_path / "no-nixpkgs"
    stub.mkdir()
    (stub / "flake.nix").write_text("{ outputs = { self }: { }; }\n")
    project = nixos_project(tmp_path, name)
    override = ["--offline", "--override-input", "nixpkgs", f"path:{stub}"]
    assert nixbuild.list_outputs(project, extra_args=override) == [
        f"{name}::{flavour}" for flavour in ["docker", "g5k-image", "g5k-ramdisk", "vm-ramdisk"]
    ]


def test_nixos_template_offline_says_how_to_override_nixpkgs(tmp_path: Path) -> None:
    project = nixos_project(tmp_path, "webserver")
    with pytest.raises(BuildError) as caught:
        nixbuild.build(project, "webserver::vm-ramdisk", extra_args=["--offline"])
    message = str(caught.value)
    assert "input 'nixpkgs' (github:NixOS/nixpkgs/nixos-24.11) cannot be fetched" in message
    assert "--override-input nixpkgs path:/abs/dir" in message
