"""NixOS Compose projects through nxc.lib.compose, evaluated by the real nix, offline.

The compositions and setup.toml under fixtures/nixos-compose/ are written in NixOS
Compose's format (`nodes`; `roles` + `rolesDistribution`; `extraVolumes`/`dockerPorts`;
a setup.toml with two variants). NixOS roles are evaluated against a stand-in for
nixpkgs (fixtures/stub-nixpkgs.nix) that records what lib.compose handed it; selftest
roles use the stub role builder. Each test reads the manifest an output would write.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from nxc.contracts import Manifest
from nxc.paths import flake_url
from nxc.templates import PLACEHOLDER
from tests.conftest import run_nxc
from tests.nix.nixutil import REPO, eval_error, eval_json, needs_nix

pytestmark = [pytest.mark.nix, needs_nix]

FIXTURES = REPO / "tests" / "nix" / "fixtures"
NIXOS = FIXTURES / "nixos-compose" / "nixos"
SELFTEST = FIXTURES / "nixos-compose" / "selftest"
NODES = NIXOS / "nodes.nix"
STUB_NIXPKGS = FIXTURES / "stub-nixpkgs" / "outputs.nix"
STUB_BUILDER = FIXTURES / "stub-selftest.nix"


def compose(args: str) -> str:
    return f"(lib.compose {{ nixpkgs = import {STUB_NIXPKGS}; {args} }})"


NODES_ARG = f"composition = {NODES}; "
# The manifest text refers to the artifacts' store paths (its string context).
FROM_JSON = "builtins.fromJSON (builtins.unsafeDiscardStringContext"


def output_names(args: str) -> Any:
    return eval_json(f"builtins.attrNames {compose(args)}")


def manifest_of(args: str, output: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    document = eval_json(f'{FROM_JSON} {compose(args)}."{output}".manifest)', env)
    assert isinstance(document, dict)
    Manifest.from_dict(document)  # what the runtime reads must validate
    return document


def quantities(document: dict[str, Any]) -> dict[str, int]:
    return {name: role["quantity"] for name, role in document["roles"].items()}


def test_nodes_composition() -> None:
    document = manifest_of(f"composition = {NODES};", "composition::vm-ramdisk")
    assert document["composition"] == "composition" and document["flavour"] == "vm-ramdisk"
    assert quantities(document) == {"client": 1, "server": 1}
    assert document["parameters"] == {} and "setup" not in document
    # The composition's `nodes` argument holds every role's configuration.
    assert 'client.succeed("curl -s http://server/")' in document["test_script"]
    assert "server.wait_for_unit" in document["test_script"]
    # Every role gets `nodes` as a module argument too.
    assert "nodes-arg=1" in document["roles"]["server"]["kernel_params"]


ROLES = f"composition = {NIXOS / 'composition.nix'}; setup = {NIXOS / 'setup.toml'};"


def test_roles_distribution_and_setup_defaults() -> None:
    document = manifest_of(ROLES, "composition::vm-ramdisk")
    assert quantities(document) == {"frontend": 1, "probe1": 1, "probe2": 1, "worker": 2}
    assert document["parameters"] == {"workers": 2, "rate": 10, "message": "hello world"}
    assert document["setup"] == {"variant": None}
    script = document["test_script"]
    assert "# built for vm-ramdisk" in script
    assert 'worker1.succeed("test \\"$RATE\\" = 10")' in script
    assert 'print("hello world")' in script
    assert "volumes" not in json.dumps(document["roles"])  # docker only


def test_docker_volumes_and_ports() -> None:
    document = manifest_of(ROLES, "composition::docker")
    roles = document["roles"]
    assert roles["frontend"]["container"] == {
        "image": "/nix/store/stub-image-frontend",
        "volumes": ["/srv/data:/data:ro"],
        "ports": ["8080:80", "8443"],
    }
    assert roles["worker"]["container"] == {
        "image": "/nix/store/stub-image-worker",
        "volumes": ["/srv/data:/data:ro"],
    }
    assert "# built for docker" in document["test_script"]


def test_variant_selected_by_nxc_build() -> None:
    document = manifest_of(ROLES, "composition::docker", {"NXC_SETUP_VARIANT": "large"})
    assert quantities(document)["worker"] == 5
    assert document["parameters"] == {"workers": 5, "rate": 100, "message": "hello world"}
    assert document["setup"] == {"variant": "large"}
    assert 'test \\"$RATE\\" = 100' in document["test_script"]


def test_other_variant_with_a_param_override() -> None:
    env = {"NXC_SETUP_VARIANT": "small", "NXC_SETUP_PARAMS": '{"workers": 3}'}
    document = manifest_of(ROLES, "composition::vm-ramdisk", env)
    assert quantities(document)["worker"] == 3
    assert document["parameters"] == {"workers": 3, "rate": 10, "message": "small"}
    assert document["setup"] == {"variant": "small"}


def test_variant_selected_in_the_file(tmp_path: Path) -> None:
    setup = tmp_path / "setup.toml"
    text = (NIXOS / "setup.toml").read_text()
    setup.write_text(text.replace("[project]\n", '[project]\nselected = "small"\n'))
    document = manifest_of(
        f"composition = {NIXOS / 'composition.nix'}; setup = {setup};", "composition::docker"
    )
    assert quantities(document)["worker"] == 1
    assert document["setup"] == {"variant": "small"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NXC_SETUP_VARIANT": "huge"}, "no variant 'huge' (variants: large, small)"),
        ({"NXC_SETUP_PARAMS": '{"wokers": 1}'}, "parameter 'wokers' is not in [params]"),
    ],
)
def test_setup_errors(env: dict[str, str], message: str) -> None:
    from tests.nix.nixutil import nix_eval

    done = nix_eval(f'{compose(ROLES)}."composition::docker".drvPath', env)
    assert done.returncode != 0
    assert message in done.stderr


def test_package_overrides_are_refused(tmp_path: Path) -> None:
    setup = tmp_path / "setup.toml"
    setup.write_text(
        (NIXOS / "setup.toml").read_text() + '\n[small.build.hello]\nsrc = "/tmp/hello"\n'
    )
    args = f"composition = {NIXOS / 'composition.nix'}; setup = {setup};"
    from tests.nix.nixutil import nix_eval

    done = nix_eval(
        f'{compose(args)}."composition::docker".drvPath', {"NXC_SETUP_VARIANT": "small"}
    )
    assert "[small.build] (package overrides through overlays) is not supported" in done.stderr


def test_predecessor_arguments() -> None:
    names = output_names(f'composition = {NODES}; flavour = "vm";')
    assert names == ["composition::vm", "composition::vm-ramdisk"]
    names = eval_json(
        "builtins.attrNames "
        + compose(
            f'single_composition_name = "web"; composition = {NODES}; '
            "flavours = { vm = { }; docker = { }; };"
        )
    )
    assert names == ["web::docker", "web::vm", "web::vm-ramdisk"]
    # `vm` is the same build as vm-ramdisk.
    same = eval_json(
        f"let o = {compose(NODES_ARG)}; in "
        'o."composition::vm".drvPath == o."composition::vm-ramdisk".drvPath'
    )
    assert same is True


def test_compositions_file(tmp_path: Path) -> None:
    (tmp_path / "compositions.nix").write_text(f"{{ alpha = import {NODES}; beta = {NODES}; }}\n")
    names = eval_json(
        "builtins.attrNames "
        + compose(f'compositions = {tmp_path / "compositions.nix"}; flavours = [ "docker" ];')
    )
    assert names == ["alpha::docker", "beta::docker"]


def test_extra_configurations_and_overlays_reach_every_role() -> None:
    args = (
        f"composition = {NODES}; "
        'extraConfigurations = [ { stubMarker = "extra"; } ]; '
        "overlays = [ (self: super: { }) ];"
    )
    document = manifest_of(args, "composition::vm-ramdisk")
    for role in document["roles"].values():
        assert "overlays=1 markers=extra" in role["kernel_params"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            'flavour = "nspawn";',
            "flavour 'nspawn' (from NixOS Compose) is not supported by nxc "
            "(supported: vm-ramdisk (alias vm), g5k-ramdisk, g5k-image, docker)",
        ),
        ('flavours = [ "vm" "g5k-nfs-store" ];', "flavour 'g5k-nfs-store' (from NixOS Compose)"),
        ('flavour = { name = "custom"; };', "`flavour` must be a flavour name"),
    ],
)
def test_unsupported_flavours(args: str, message: str) -> None:
    err = eval_error(f"builtins.attrNames {compose(NODES_ARG + args)}")
    assert message in err


@pytest.mark.parametrize(
    ("composition", "message"),
    [
        ("{ nodes.a = { }; roles.b = { }; }", "has both `roles` and `nodes`"),
        (
            "{ roles.a = { }; rolesDistribution.b = 2; }",
            "rolesDistribution: 'b' is not a role (roles: a)",
        ),
        (
            '{ roles.a = { }; rolesDistribution.a = [ "x" "y" ]; }',
            "give a number of nodes, not a list of names",
        ),
        (
            "{ roles.a = { quantity = 2; }; rolesDistribution.a = 3; }",
            "quantity in both the role and `rolesDistribution`",
        ),
        ('{ roles.a = { }; dockerPorts.b = [ "1:1" ]; }', "dockerPorts: 'b' is not a role"),
        ('{ roles.a = { }; extraVolumes = "/x:/x"; }', "extraVolumes must be a list"),
    ],
)
def test_composition_format_errors(composition: str, message: str) -> None:
    err = eval_error(
        f'(lib.normaliseComposition {{ name = "c"; composition = {composition}; }}).quantities'
    )
    assert message in err


# --- selftest images (no nixpkgs) ------------------------------------------------


SELFTEST_ARGS = (
    f'imageKind = "selftest"; selftestBuilder = import {STUB_BUILDER}; '
    f"composition = {SELFTEST / 'composition.nix'}; setup = {SELFTEST / 'setup.toml'};"
)


def selftest_manifest(env: dict[str, str] | None = None) -> dict[str, Any]:
    expr = f'{FROM_JSON} (lib.compose {{ {SELFTEST_ARGS} }})."composition::vm-ramdisk".manifest)'
    document = eval_json(expr, env)
    Manifest.from_dict(document)
    return document


def test_selftest_roles_in_nixos_compose_format() -> None:
    document = selftest_manifest()
    assert quantities(document) == {"node": 1}
    assert document["parameters"] == {"nodes": 1, "greeting": "hello"}
    ci = selftest_manifest({"NXC_SETUP_VARIANT": "ci"})
    assert quantities(ci) == {"node": 2}
    assert "bonjour from node1" in ci["test_script"]
    assert ci["setup"] == {"variant": "ci"}


@pytest.mark.parametrize(
    ("composition", "message"),
    [
        ("{ pkgs, ... }: { roles.a = { p = pkgs.hello; }; }", "`pkgs` is not available"),
        ("{ roles.a = { pkgs, ... }: { }; }", "not NixOS modules: give a role spec"),
    ],
)
def test_selftest_errors(composition: str, message: str) -> None:
    err = eval_error(
        f'(lib.compose {{ imageKind = "selftest"; selftestBuilder = import {STUB_BUILDER}; '
        f'composition = {composition}; }})."composition::vm-ramdisk".manifest'
    )
    assert message in err


# --- the nxc build command on such a project -------------------------------------


def selftest_project(tmp_path: Path, setup_in_flake: bool = True) -> Path:
    project = tmp_path / "legacy"
    shutil.copytree(SELFTEST, project)
    shutil.copy(STUB_BUILDER, project)
    flake = project / "flake.nix"
    text = flake.read_text().replace(PLACEHOLDER, flake_url())
    text = text.replace(
        'imageKind = "selftest";',
        'imageKind = "selftest"; selftestBuilder = import ./stub-selftest.nix;',
    )
    if not setup_in_flake:
        text = text.replace("setup = ./setup.toml;", "")
    flake.write_text(text)
    return project


def built_manifest(project: Path, flavour: str = "vm-ramdisk") -> Manifest:
    from nxc.project import Project

    builds = Project(project).builds()
    return Manifest.load(Path(builds[flavour]["manifest"]))


def test_cli_builds_a_variant_with_a_param(tmp_path: Path) -> None:
    project = selftest_project(tmp_path)
    result = run_nxc("build", "--offline", "-s", "ci", "--setup-param", "greeting=hi", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "setup.toml: using variant 'ci'" in result.stderr
    # setup.toml's [options] flavour = "vm" means vm-ramdisk.
    assert "built composition::vm-ramdisk" in result.stdout
    manifest = built_manifest(project)
    assert manifest.roles["node"].quantity == 2
    assert manifest.parameters == {"nodes": 2, "greeting": "hi"}
    assert manifest.raw["setup"] == {"variant": "ci"}


def test_cli_lists_outputs_without_aliases(tmp_path: Path) -> None:
    result = run_nxc("build", "--offline", "-L", cwd=selftest_project(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "composition::docker",
        "composition::g5k-image",
        "composition::g5k-ramdisk",
        "composition::vm-ramdisk",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--setup", "prod"], r"setup\.toml: no variant 'prod' \(variants: ci\)"),
        (
            ["--setup-param", "nodez=3"],
            r"--setup-param nodez: not a param of \[params\] .*\(declared: greeting, nodes\)",
        ),
        (["--setup-param", "oops"], r"--setup-param 'oops': expected NAME=VALUE"),
        (["-f", "nspawn"], r"flavour 'nspawn' \(from NixOS Compose\) is not supported by nxc"),
        (["-C", "composition::nixos-test"], r"flavour 'nixos-test' \(from NixOS Compose\)"),
    ],
)
def test_cli_setup_errors(tmp_path: Path, args: list[str], message: str) -> None:
    import re

    result = run_nxc("build", "--offline", *args, cwd=selftest_project(tmp_path))
    assert result.returncode == 1
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("nxc: error: ")]
    assert len(errors) == 1 and re.search(message, errors[0]), result.stderr
    assert "Traceback" not in result.stderr


def test_cli_says_when_the_flake_ignores_setup(tmp_path: Path) -> None:
    project = selftest_project(tmp_path, setup_in_flake=False)
    (project / "composition.nix").write_text("{ setup, ... }: { roles.node = { }; }\n")
    result = run_nxc("build", "--offline", "--setup", "ci", cwd=project)
    assert result.returncode == 1
    assert "does not hand setup.toml to nxc.lib.compose" in result.stderr
    assert "setup = ./setup.toml;" in result.stderr


def test_cli_vm_alias_builds_vm_ramdisk(tmp_path: Path) -> None:
    project = selftest_project(tmp_path)
    result = run_nxc("build", "--offline", "-f", "vm", cwd=project)
    assert result.returncode == 0, result.stderr
    assert built_manifest(project).flavour == "vm-ramdisk"
