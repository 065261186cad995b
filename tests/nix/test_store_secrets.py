"""No secret and no nxc state reaches the world-readable Nix store through a build.

The regression test of issue 7 (item 1) builds a project made by `nxc init` (not a git
work tree, so nix copies the whole directory) while it holds what a running deployment
holds: the deployment's private key, ledger and deployment document. It then scans
every store path the build created for their contents. The other tests check each
way a project or user file reaches the store: the flake's directory (git or not),
`--override-input` paths, local inputs declared in flake.nix, and parameter values.
"""

from __future__ import annotations

import base64
import grp
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxc import nixbuild
from nxc.errors import BuildError
from nxc.project import Project
from tests.conftest import run_nxc
from tests.nix.nixutil import needs_nix
from tests.unit.test_nixbuild import stub_flake

pytestmark = [pytest.mark.nix, needs_nix]

STORE = Path("/nix/store")


def store_entries() -> set[str]:
    return set(os.listdir(STORE))


def files_under(path: Path) -> Iterator[Path]:
    if path.is_symlink() or path.is_file():
        yield path
        return
    for directory, _, files in os.walk(path):
        for name in files:
            yield Path(directory, name)


def store_paths_holding(new: set[str], needles: dict[str, bytes]) -> list[str]:
    """``what in store-path/file`` for every new store path file holding a needle."""
    found = []
    for entry in sorted(new):
        for file in files_under(STORE / entry):
            if file.is_symlink():
                continue
            try:
                data = file.read_bytes()
            except OSError:
                continue
            found += [f"{what} in {file}" for what, needle in needles.items() if needle in data]
    return found


def fake_private_key() -> str:
    body = base64.b64encode(secrets.token_bytes(300)).decode()
    lines = [body[i : i + 70] for i in range(0, len(body), 70)]
    return "\n".join(
        ["-----BEGIN OPENSSH PRIVATE KEY-----", *lines, "-----END OPENSSH PRIVATE KEY-----", ""]
    )


@pytest.fixture
def init_project(tmp_path: Path) -> Iterator[Path]:
    """A selftest project as `nxc init` makes it: not a git work tree."""
    directory = tmp_path / "project"
    result = run_nxc("init", "-t", "selftest", str(directory))
    assert result.returncode == 0, result.stderr
    assert not any((p / ".git").exists() for p in (directory, *directory.parents))
    yield directory
    shutil.rmtree(Project(directory).state_dir, ignore_errors=True)  # what the test planted


def plant_running_deployment(project: Project) -> dict[str, bytes]:
    """What a running deployment keeps in nxc's state directory, with unique contents."""
    keys = project.keys_dir
    keys.mkdir(parents=True, mode=0o700)
    key = fake_private_key()
    (keys / "id_ed25519").write_text(key)
    os.chmod(keys / "id_ed25519", 0o600)
    ledger_token = f"ledger-{secrets.token_hex(16)}"
    project.ledger.path.write_text(
        f'{{"kind": "path", "ident": "/tmp/{ledger_token}", "description": "x"}}\n'
    )
    deployment_token = f"deployment-{secrets.token_hex(16)}"
    project.deployment_file.write_text(f'{{"id": "{deployment_token}"}}\n')
    return {
        "the deployment's private key": key.splitlines()[1].encode(),
        "the ledger": ledger_token.encode(),
        "deployment.json": deployment_token.encode(),
    }


def test_build_while_a_deployment_runs_puts_no_state_in_the_store(init_project: Path) -> None:
    project = Project(init_project)
    needles = plant_running_deployment(project)
    # nxc keeps its state outside the project: nothing of it can be part of the flake.
    assert not project.state_dir.is_relative_to(project.root)
    # A file of the user's own, so that the project's copy is a new store path the
    # scan must see (and does: checked below).
    marker = f"marker-{secrets.token_hex(16)}"
    (init_project / "NOTES.md").write_text(f"{marker}\n")
    before = store_entries()
    result = run_nxc("build", "--offline", cwd=init_project)
    new = store_entries() - before
    # The scan first: it is the point of this test.
    assert store_paths_holding(new, needles) == []
    assert result.returncode == 0, result.stderr
    seen = store_paths_holding(new, {"the project's own file": marker.encode()})
    assert seen, "the project's copy in the store was not among the scanned paths"


def test_nxc_state_without_secrets_stays_out_of_the_store(init_project: Path) -> None:
    """Records of past builds and runs are nxc's, not the flake's."""
    project = Project(init_project)
    project.ensure_state_dir()
    token = f"run-{secrets.token_hex(16)}"
    run_dir = project.runs_dir / "earlier-run"
    run_dir.mkdir(parents=True)
    (run_dir / "report.json").write_text(f'{{"run": "{token}"}}\n')
    before = store_entries()
    result = run_nxc("build", "--offline", cwd=init_project)
    assert result.returncode == 0, result.stderr
    assert store_paths_holding(store_entries() - before, {"nxc's records": token.encode()}) == []


def test_untracked_key_in_a_git_flake_is_not_copied(tmp_path: Path) -> None:
    project = stub_flake(tmp_path)
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    subprocess.run(["git", "-C", str(project), "add", "."], check=True)
    key = fake_private_key()
    (project / "id_rsa").write_text(key)
    before = store_entries()
    nixbuild.build(project, "demo::vm-ramdisk", extra_args=["--offline"])
    needle = {"untracked key": key.splitlines()[1].encode()}
    assert store_paths_holding(store_entries() - before, needle) == []


def one_line(caught: pytest.ExceptionInfo[BuildError]) -> str:
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_private_key_in_a_path_flake_is_refused(tmp_path: Path) -> None:
    project = stub_flake(tmp_path)
    (project / "deploy.pem").write_text(fake_private_key())  # world-readable, still a key
    before = store_entries()
    with pytest.raises(BuildError) as caught:
        nixbuild.build(project, "demo::vm-ramdisk", extra_args=["--offline"])
    message = one_line(caught)
    assert f"{project}/deploy.pem holds a private key" in message
    assert "world-readable Nix store" in message and "git repository" in message
    assert store_entries() - before == set()


def test_owner_only_file_in_a_path_flake_is_refused(tmp_path: Path) -> None:
    project = stub_flake(tmp_path)
    (project / "credentials.yaml").write_text("password: hunter2\n")
    os.chmod(project / "credentials.yaml", 0o600)
    with pytest.raises(BuildError) as caught:
        nixbuild.list_outputs(project)
    message = one_line(caught)
    assert "credentials.yaml is not readable by other users" in message
    assert f"chmod o+r {project}/credentials.yaml" in message


def test_file_in_a_private_directory_is_refused(tmp_path: Path) -> None:
    project = stub_flake(tmp_path)
    private = project / "secrets"
    private.mkdir(mode=0o700)
    (private / "token").write_text("t0k3n\n")
    os.chmod(private, 0o700)
    with pytest.raises(BuildError, match=r"secrets/token is not readable by other users"):
        nixbuild.build(project, "demo::vm-ramdisk", extra_args=["--offline"])


def test_tracked_private_key_in_a_git_flake_is_refused(tmp_path: Path) -> None:
    project = stub_flake(tmp_path)
    (project / "id_ed25519").write_text(fake_private_key())
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    subprocess.run(["git", "-C", str(project), "add", "."], check=True)
    with pytest.raises(BuildError) as caught:
        nixbuild.build(project, "demo::vm-ramdisk", extra_args=["--offline"])
    assert "git rm --cached id_ed25519" in one_line(caught)


def test_override_input_directory_is_checked(tmp_path: Path) -> None:
    project = stub_flake(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "flake.nix").write_text("{ outputs = _: { }; }\n")
    (data / "key").write_text(fake_private_key())
    args = ["--offline", "--override-input", "data", f"path:{data}"]
    with pytest.raises(BuildError) as caught:
        nixbuild.list_outputs(project, extra_args=args)
    assert f"input 'data' ({data})" in one_line(caught)


def test_declared_local_input_is_checked(tmp_path: Path) -> None:
    project = stub_flake(tmp_path)
    (project / "data").mkdir()
    (project / "data" / "flake.nix").write_text("{ outputs = _: { }; }\n")
    flake = project / "flake.nix"
    text = flake.read_text().replace("{ self, nxc }", "{ self, nxc, ... }")
    flake.write_text(text.replace("{\n", '{\n  inputs.data.url = "path:./data";\n', 1))
    (project / "data" / "notes").write_text("private\n")
    os.chmod(project / "data" / "notes", 0o600)
    with pytest.raises(BuildError, match=r"data/notes is not readable by other users"):
        nixbuild.list_outputs(project, extra_args=["--offline"])


def test_parameter_holding_a_private_key_is_refused(tmp_path: Path) -> None:
    project = stub_flake(tmp_path, '{ parameters.key = ""; roles.node = { }; }')
    with pytest.raises(BuildError) as caught:
        nixbuild.build(
            project,
            "demo::vm-ramdisk",
            extra_args=["--offline"],
            parameters={"key": fake_private_key()},
        )
    assert "parameters key holds a private key" in one_line(caught)


def test_mentioning_a_key_header_is_not_a_key(tmp_path: Path) -> None:
    """nxc's own agent tests for the header in shell text: that is not a secret."""
    project = stub_flake(tmp_path)
    header = "-----BEGIN OPENSSH PRIVATE KEY-----"
    (project / "check.sh").write_text(f'case $x in *"{header}"*) ;; esac\n')
    assert nixbuild.list_outputs(project, extra_args=["--offline"]) == [
        "demo::docker",
        "demo::g5k-image",
        "demo::g5k-ramdisk",
        "demo::vm-ramdisk",
    ]


@pytest.mark.skipif(not list(Path("/boot").glob("vmlinuz-*")), reason="no host kernel in /boot")
def test_selftest_image_refuses_a_private_host_file(tmp_path: Path) -> None:
    """A selftest role's `packages` are host files copied into its initrd, in the store.

    The file is readable by the Nix build users' group but not by others: the build
    could copy it, and must refuse to.
    """
    try:
        group = grp.getgrnam("nixbld").gr_gid
    except KeyError:
        pytest.skip("no nixbld group: builds do not run as build users here")
    shared = Path(tempfile.mkdtemp(prefix="nxc-nixside-test-"))
    try:
        os.chmod(shared, 0o755)
        private = shared / "private-tool"
        private.write_text(f"#!/bin/sh\necho {secrets.token_hex(8)}\n")
        os.chown(private, -1, group)
        os.chmod(private, 0o750)
        composition = f'{{ roles.node = {{ packages = [ "{private}" ]; }}; }}'
        project = stub_flake(tmp_path, composition)
        flake = project / "flake.nix"
        text = flake.read_text().replace("selftestBuilder = import ./stub-selftest.nix;", "")
        flake.write_text(text)
        with pytest.raises(BuildError) as caught:
            nixbuild.build(project, "demo::vm-ramdisk", extra_args=["--offline"])
        drv = re.search(r"nix log (\S+\.drv)", one_line(caught))
        assert drv is not None, caught.value
        log = subprocess.run(
            ["nix", "--extra-experimental-features", "nix-command", "--offline", "log", drv[1]],
            capture_output=True,
            text=True,
            check=False,
        )
        assert f"package {private} is not readable by other users" in log.stdout
    finally:
        shutil.rmtree(shared)
