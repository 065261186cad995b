"""Fixtures for the run-record tests: one finished 3-node selftest run (shared by
every test of a module), and its published archives."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nxc.project import Project
from tests.conftest import run_nxc
from tests.e2e.conftest import built_selftest  # noqa: F401  (a session fixture)

# node1 -> node2 gets 50 ms: a topology given with --netem, then validated by a scenario
# (with room for TCG's timing noise on a shared machine: what matters here is that the
# record holds the validation, and that 100 ms is told from the 2 ms baseline).
TOPOLOGY = """\
nxc_topology: 1
description: records test
groups:
  a: {nodes: [node1]}
  b: {nodes: [node2]}
constraints:
  - from: a
    to: b
    delay: 50ms
"""

VALIDATE_SCENARIO = """\
from nxc.netem.validate import Tolerances

start_all()
with subtest("the network is what was asked"):
    report = netem.validate(tolerances=Tolerances(rtt_abs_ms=30.0))
    assert report.ok, report.summary()
"""


@dataclass(frozen=True)
class FinishedRun:
    project_dir: Path
    run_dir: Path
    run_id: str
    # The base64 body lines of the private keys the deployment used (read while it
    # ran; nxc stop deletes them): no archive may contain any of them.
    key_lines: tuple[bytes, ...]


def _key_lines(project: Project) -> tuple[bytes, ...]:
    lines: list[bytes] = []
    for path in sorted(project.keys_dir.rglob("*")):
        if path.is_file() and b"PRIVATE KEY" in path.read_bytes()[:64]:
            body = path.read_bytes().splitlines()[1:-1]
            lines += [line for line in body if len(line) >= 40]
    return tuple(lines)


@pytest.fixture(scope="package")
def finished_run(
    built_selftest: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FinishedRun]:
    """`nxc start -r node=3 --netem topo.yaml -t`, `nxc driver validate.py`, `nxc stop`."""
    files = tmp_path_factory.mktemp("records-inputs")
    (files / "topo.yaml").write_text(TOPOLOGY)
    (files / "validate.py").write_text(VALIDATE_SCENARIO)
    project = Project(built_selftest)
    try:
        result = run_nxc(
            "start", "-r", "node=3", "--netem", str(files / "topo.yaml"), "-t", cwd=built_selftest
        )
        assert result.returncode == 0, result.stderr
        match = re.search(r"runs/([a-z0-9-]+)/driver/", result.stderr)
        assert match, result.stderr
        run_id = match.group(1)
        keys = _key_lines(project)
        assert len(keys) >= 4  # the client key and three host keys
        result = run_nxc("driver", str(files / "validate.py"), cwd=built_selftest)
        assert result.returncode == 0, result.stderr
    finally:
        stopped = run_nxc("stop", cwd=built_selftest)
    assert stopped.returncode == 0, stopped.stderr
    yield FinishedRun(built_selftest, project.runs_dir / run_id, run_id, keys)


@dataclass(frozen=True)
class Archives:
    plain: Path
    closure: Path
    digest_plain: str
    digest_closure: str


def _digest(stdout: str) -> str:
    match = re.search(r"archive digest \(SHA-256 of SHA256SUMS\): ([0-9a-f]{64})", stdout)
    assert match, stdout
    return match.group(1)


@pytest.fixture(scope="package")
def archives(finished_run: FinishedRun, tmp_path_factory: pytest.TempPathFactory) -> Archives:
    out = tmp_path_factory.mktemp("archives")
    plain, closure = out / "plain.zip", out / "closure.zip"
    result = run_nxc(
        "publish", finished_run.run_id, "-o", str(plain),
        "--author", "Lovelace, Ada", "--license", "CC-BY-4.0",
        cwd=finished_run.project_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    digest_plain = _digest(result.stdout)
    result = run_nxc(
        "publish", finished_run.run_id[:12], "-o", str(closure), "--with-closure",
        cwd=finished_run.project_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return Archives(plain, closure, digest_plain, _digest(result.stdout))


def read_json(path: Path) -> object:
    return json.loads(path.read_text())


def copy_run(finished: FinishedRun, target: Path) -> Path:
    """A copy of the finished run's record directory (to tamper with)."""
    copy = target / finished.run_id
    shutil.copytree(finished.run_dir, copy)
    return copy
