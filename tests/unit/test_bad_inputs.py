"""The adversarial table: every bad input gets one line naming the problem and exit 1.

Each case runs the real CLI on a project, with or without a running deployment of
the ``procs`` plug-in flavour (real local processes, no VMs), and checks: exit status
1, exactly one ``nxc: error:`` line matching the expected words, no traceback, and
nothing left running or half-written (no deployment state, no live process, no
ledger) when the case started nothing. Cases that need VMs are in
tests/e2e/test_hardening.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from nxc.ledger import process_start_time
from nxc.project import Project
from tests.conftest import REPO, run_nxc, sample_manifest

PLUGINS = REPO / "tests" / "plugins"
NOT_UTF8 = b"\xff\xfe\xfa not utf-8 \xc3\x28\n"


@dataclass
class Env:
    project: Path
    env: dict[str, str]

    def nxc(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return run_nxc(*args, cwd=self.project, env=self.env, timeout=120)

    @property
    def state(self) -> Project:
        return Project(self.project)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "flake.nix").write_text("{ outputs = _: { }; }\n")
    vm = sample_manifest(project)
    (project / "vm.json").write_text(json.dumps(vm))
    procs = {
        "nxc_manifest": 1,
        "composition": "plug",
        "flavour": "procs",
        "roles": {"node": {"quantity": 2}},
        "test_script": "node1.succeed('true')\n",
    }
    (project / "procs.json").write_text(json.dumps(procs))
    test_dir = tmp_path / "procs"
    test_dir.mkdir()
    variables = {
        "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]),
        "NXC_TEST_PROCS_DIR": str(test_dir),
    }
    return Env(project, variables)


def start_procs(e: Env) -> None:
    result = e.nxc("start", "-m", "procs.json")
    assert result.returncode == 0, result.stderr


def write(path: Path, data: bytes | str) -> None:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


Setup = Callable[[Env], list[str]]


@dataclass(frozen=True)
class Case:
    name: str
    setup: Setup  # prepares the project, returns the nxc arguments
    expect: str  # regular expression the error line must match
    running: bool = False  # a procs deployment runs during the case


def _args(*args: str) -> Setup:
    return lambda _e: list(args)


def _file(name: str, data: bytes | str, *args: str) -> Setup:
    def setup(e: Env) -> list[str]:
        write(e.project / name, data)
        return list(args)

    return setup


def _corrupt_state(attribute: str, data: bytes | str, *args: str) -> Setup:
    def setup(e: Env) -> list[str]:
        write(getattr(e.state, attribute), data)
        return list(args)

    return setup


# fmt: off
CASES = [
    # manifests
    Case(
        "manifest missing",
        _args("start", "-m", "nope.json"),
        r"nope\.json: manifest file not found",
    ),
    Case(
        "manifest not UTF-8",
        _file("m.json", NOT_UTF8, "start", "-m", "m.json"),
        r"m\.json: .*(UTF-8|malformed)",
    ),
    Case(
        "manifest not JSON",
        _file("m.json", "{", "start", "-m", "m.json"),
        r"malformed JSON at line 1",
    ),
    Case(
        "manifest a list", _file("m.json", "[]", "start", "-m", "m.json"), r"must be a JSON object"
    ),
    Case(
        "manifest without version",
        _file("m.json", "{}", "start", "-m", "m.json"),
        r"nxc_manifest' is missing",
    ),
    Case(
        "manifest version 9",
        _file("m.json", '{"nxc_manifest": 9}', "start", "-m", "m.json"),
        r"nxc_manifest 9 is not supported",
    ),
    Case(
        "manifest bad role name",
        _file(
            "m.json",
            json.dumps(
                {
                    "nxc_manifest": 1,
                    "composition": "c",
                    "flavour": "procs",
                    "roles": {"Bad Role": {"quantity": 1}},
                }
            ),
            "start",
            "-m",
            "m.json",
        ),
        r"roles",
    ),
    Case(
        "manifest flavour not installed",
        _file(
            "m.json",
            json.dumps(
                {
                    "nxc_manifest": 1,
                    "composition": "c",
                    "flavour": "lxc",
                    "roles": {"a": {"quantity": 1}},
                }
            ),
            "start",
            "-m",
            "m.json",
        ),
        r"no runtime for flavour 'lxc' is installed \(installed: .*procs",
    ),
    Case(
        "manifest kernel missing",
        lambda e: (
            write(
                e.project / "k.json",
                json.dumps(
                    {
                        **json.loads((e.project / "vm.json").read_text()),
                        "roles": {"a": {"quantity": 1, "kernel": "nokernel", "initrd": "noinitrd"}},
                    }
                ),
            ),
            ["start", "-m", "k.json"],
        )[1],
        r"roles\.a\.kernel: .*nokernel does not exist",
    ),
    # roles and counts
    Case(
        "unknown role",
        _args("start", "-m", "procs.json", "-r", "db=2"),
        r"-r db: unknown role \(the composition has: node\)",
    ),
    Case(
        "count not a number",
        _args("start", "-m", "procs.json", "-r", "node=two"),
        r"expected ROLE=N",
    ),
    Case("zero nodes", _args("start", "-m", "procs.json", "-r", "node=0"), r"no nodes"),
    # flavour options
    Case(
        "memory for an unknown role",
        _args("start", "-m", "vm.json", "--memory", "db=512"),
        r"--memory 'db=512': no role named 'db'",
    ),
    Case(
        "cpus for an unknown role",
        _args("start", "-m", "vm.json", "--cpus", "db=2"),
        r"--cpus 'db=2': no role named 'db'",
    ),
    Case(
        "memory not a number",
        _args("start", "-m", "vm.json", "--memory", "lots"),
        r"'lots' is not a whole number",
    ),
    Case("memory zero", _args("start", "-m", "vm.json", "--memory", "0"), r"below the minimum 1"),
    Case(
        "accel unknown",
        _args("start", "-m", "vm.json", "--accel", "xen"),
        r"'xen' is not one of auto, kvm, tcg",
    ),
    Case(
        "option of another flavour",
        _args("start", "-m", "procs.json", "--memory", "64"),
        r"--memory is an option of flavour docker, vm-ramdisk, not of procs",
    ),
    Case(
        "negative timeout",
        _args("start", "-m", "procs.json", "--timeout", "-5"),
        r"--timeout -5: must be a positive",
    ),
    Case(
        "zero timeout",
        _args("start", "-m", "procs.json", "--timeout", "0"),
        r"--timeout 0: must be a positive",
    ),
    # topologies given at start
    Case("topology missing", _args("start", "-m", "procs.json", "--netem", "no.yaml"), r"no\.yaml"),
    Case(
        "topology not UTF-8",
        _file("t.yaml", NOT_UTF8, "start", "-m", "procs.json", "--netem", "t.yaml"),
        r"t\.yaml: .*(UTF-8|cannot read|malformed)",
    ),
    Case(
        "topology malformed YAML",
        _file("t.yaml", "a: [", "start", "-m", "procs.json", "--netem", "t.yaml"),
        r"t\.yaml",
    ),
    Case(
        "topology bad delay",
        _file(
            "t.yaml",
            "nxc_topology: 1\nconstraints:\n  - {from: node, to: node, delay: fast}\n",
            "start",
            "-m",
            "procs.json",
            "--netem",
            "t.yaml",
        ),
        r"delay",
    ),
    # no deployment
    Case("driver without deployment", _args("driver", "-t"), r"no running deployment"),
    Case("status without deployment", _args("status"), r"no running deployment"),
    Case("connect without deployment", _args("connect", "node1"), r"no running deployment"),
    Case("netem without deployment", _args("netem", "show"), r"no running deployment"),
    Case("start without build", _args("start"), r"no build of flavour 'vm-ramdisk'"),
    Case("build unknown flavour", _args("build", "-f", "lxc"), r"unknown flavour 'lxc'"),
    Case(
        "build NixOS Compose flavour nspawn",
        _args("build", "-f", "nspawn"),
        r"'nspawn' .* not supported",
    ),
    # with a running deployment
    Case("second start", _args("start", "-m", "procs.json"), r"already running", running=True),
    Case(
        "scenario not UTF-8",
        _file("s.py", NOT_UTF8, "driver", "s.py"),
        r"s\.py: .*UTF-8",
        running=True,
    ),
    Case(
        "scenario missing",
        _args("driver", "nope.py"),
        r"nope\.py: script not found",
        running=True,
    ),
    Case(
        "driver -t and a script",
        _file("s.py", "pass\n", "driver", "-t", "s.py"),
        r"either -t or a SCRIPT",
        running=True,
    ),
    Case("connect unknown node", _args("connect", "node9"), r"no node named 'node9'", running=True),
    Case(
        "deployment.json not UTF-8",
        _corrupt_state("deployment_file", NOT_UTF8, "status"),
        r"deployment\.json: .*(UTF-8|malformed)",
        running=True,
    ),
    Case(
        "deployment.json truncated",
        _corrupt_state("deployment_file", '{"nxc_deployment": 1, ', "status"),
        r"deployment\.json: malformed JSON",
        running=True,
    ),
    Case(
        "runtime.json of the wrong shape",
        _corrupt_state(
            "runtime_file", '{"nxc_runtime": 1, "flavour": "procs", "state": []}', "status"
        ),
        r"runtime\.json: corrupt state file",
        running=True,
    ),
    Case(
        "runtime.json a list",
        _corrupt_state("runtime_file", "[]", "status"),
        r"runtime\.json: corrupt state file",
        running=True,
    ),
    Case(
        "runtime.json not UTF-8",
        _corrupt_state("runtime_file", NOT_UTF8, "status"),
        r"runtime\.json: corrupt state file \(not UTF-8",
        running=True,
    ),
    Case(
        "run pointer missing",
        lambda e: (e.state.run_file.unlink(), ["status"])[1],
        r"run\.json: not found",
        running=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_one_line(env: Env, case: Case) -> None:
    if case.running:
        start_procs(env)
    ledger_before = env.state.ledger.entries() if case.running else []
    args = case.setup(env)
    result = env.nxc(*args)
    try:
        assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("nxc: error: ")]
        assert len(errors) == 1, result.stderr
        assert re.search(case.expect, errors[0]), errors[0]
        if not case.running:
            # Nothing started, nothing left: no deployment, no ledger, no live process.
            assert not env.state.current_dir.exists()
            assert not env.state.ledger.exists()
        else:
            # The running deployment is untouched by a bad command.
            assert env.state.ledger.entries() == ledger_before
    finally:
        if case.running:
            stopped = env.nxc("stop")
            processes = [r for r in ledger_before if r.kind == "process"]
            assert all(process_start_time(int(r.ident)) != r.start_time for r in processes)
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
@pytest.mark.parametrize("where", ["state", "runtime"])
def test_disk_full_is_one_line_and_leaves_nothing(env: Env, tmp_path: Path, where: str) -> None:
    """A full file system under nxc's state or runtime directory (a 1 MiB tmpfs, filled,
    mounted in a private mount namespace that only the nxc process sees)."""
    # A short path: nxc only uses a runtime dir whose socket paths fit in 108 bytes.
    full = Path(tempfile.mkdtemp(prefix="nxcfull", dir="/tmp"))
    state = tmp_path / "state"
    variables = {
        **os.environ,
        **env.env,
        "NXC_STATE_HOME": str(full if where == "state" else state),
    }
    if where == "runtime":
        variables["XDG_RUNTIME_DIR"] = str(full)
    script = (
        f"mount -t tmpfs -o size=1m,mode=0700 nxc-full {full} && "
        f"(dd if=/dev/zero of={full}/filler bs=4k 2>/dev/null || :) && "
        f"exec {sys.executable} -m nxc.cli start -m procs.json"
    )
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        cwd=env.project,
        env=variables,
        capture_output=True,
        text=True,
        timeout=120,
    )
    full.rmdir()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("nxc: error: ")]
    assert len(errors) == 1 and "no space left on the device" in errors[0], result.stderr
    # No process of this test's deployment is left (they inherit NXC_TEST_PROCS_DIR).
    assert processes_with(f"NXC_TEST_PROCS_DIR={env.env['NXC_TEST_PROCS_DIR']}") == []


def processes_with(variable: str) -> list[int]:
    """Pids of live processes whose environment holds ``variable`` (NAME=VALUE)."""
    found = []
    needle = variable.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in environ and process_start_time(int(entry.name)) is not None:
            found.append(int(entry.name))
    return found
