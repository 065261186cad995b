"""The Grid'5000 double in process (frozen clock: tests move time, never sleep) and the
real python-grid5000 client, built with explicit arguments."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from grid5000 import Grid5000

from nxc.g5k.reserve import Reserver
from nxc.ledger import Ledger, process_start_time
from nxc.testbeds.g5k_double import Clock, G5kDouble, Timings
from tests.conftest import run_nxc

USERS = {"alice": "secret", "bob": "hunter2"}
TIMINGS = Timings(schedule_s=5, launch_s=5, finish_s=2, deploy_s=30)


@pytest.fixture
def double() -> Iterator[G5kDouble]:
    with G5kDouble(USERS, clock=Clock(frozen=True), timings=TIMINGS) as g5k:
        yield g5k


def client_for(g5k: G5kDouble, user: str | None = "alice", password: str | None = None) -> Grid5000:
    if user is None:
        return Grid5000(uri=g5k.url, timeout=10)
    return Grid5000(uri=g5k.url, username=user, password=password or USERS[user], timeout=10)


@pytest.fixture
def alice(double: G5kDouble) -> Grid5000:
    return client_for(double, "alice")


@pytest.fixture
def bob(double: G5kDouble) -> Grid5000:
    return client_for(double, "bob")


def reserver_for(g5k: G5kDouble, user: str = "alice") -> Reserver:
    """A Reserver whose sleeps move the double's clock (a wait costs no real time)."""
    return Reserver(
        client_for(g5k, user),
        user,
        sleep=lambda seconds: g5k.advance(seconds),
        monotonic=g5k.clock.now,
        now=g5k.clock.now,
    )


@pytest.fixture
def reserver(double: G5kDouble) -> Reserver:
    return reserver_for(double)


# -- the rehearsal testbed (real VMs), shared by the end-to-end tests -------------------


@dataclass
class Rehearsal:
    """A running rehearsal testbed (``nxc g5k rehearsal up``) and how to use it."""

    directory: Path
    env: dict[str, str]
    shared: Path  # mounted by every node at the same path (the NFS home)

    def control(
        self, path: str, payload: dict[str, Any] | None = None, method: str | None = None
    ) -> Any:
        """The double's control path (``GET``, or ``POST`` with ``payload``)."""
        ready = json.loads((self.directory / "ready.json").read_text())
        origin = ready["api"].removesuffix("/stable")
        token = (self.directory / "keys" / "control-token").read_text().strip()
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{origin}/_control/{path}",
            data=data,
            headers={"X-G5k-Double-Token": token, "Content-Type": "application/json"},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read() or b"null")

    def jobs(self) -> list[dict[str, Any]]:
        return list(self.control("state")["jobs"])

    def processes(self) -> list[tuple[int, int | None]]:
        """Live processes of the testbed's ledger (daemon, switch, VMs): pid, start."""
        return [
            (int(r.ident), r.start_time)
            for r in Ledger(self.directory / "ledger.jsonl").entries()
            if r.kind == "process" and process_start_time(int(r.ident)) == r.start_time
        ]


def _exports(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    return env


# (package scope: the testbed's idle VMs cost CPU: they go when tests/g5k is done, not
# at the end of the whole session)
@pytest.fixture(scope="package")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rehearsal]:
    """3 rehearsal nodes for the whole session, brought up and down by the real CLI."""
    directory = tmp_path_factory.mktemp("rehearsal") / "testbed"
    # the nodes mount this at the same path (the NFS home): nxc start --push shared
    shared = tmp_path_factory.mktemp("rehearsal-home")
    shared.chmod(0o755)  # the nodes' user reads it (files here are root's; on Grid'5000, hers)
    result = run_nxc(
        "g5k", "rehearsal", "up", "--nodes", "3", "--config-dir", str(directory),
        "--shared-dir", str(shared), timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    testbed = Rehearsal(directory, _exports((directory / "env").read_text()), shared)
    assert len(testbed.processes()) == 5  # daemon, switch, 3 VMs
    try:
        yield testbed
    finally:
        pids = testbed.processes()
        down = run_nxc("g5k", "rehearsal", "down", "--config-dir", str(directory))
        assert down.returncode == 0, down.stderr
        assert not directory.exists(), "down left the config directory"
        left = [pid for pid, start in pids if process_start_time(pid) == start]
        assert left == [], "down left processes"


@pytest.fixture(scope="session")
def built_g5k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`nxc init -t selftest` + `nxc build -f g5k-ramdisk` and `-f g5k-image` (real nix)."""
    directory = tmp_path_factory.mktemp("g5k-selftest")
    assert run_nxc("init", "-t", "selftest", str(directory)).returncode == 0
    for flavour in ("g5k-ramdisk", "g5k-image"):
        result = run_nxc("build", "-f", flavour, "--offline", cwd=directory)
        assert result.returncode == 0, result.stderr
    return directory


@pytest.fixture(autouse=True)
def _stop_what_a_failed_test_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """A rehearsal test that fails between its start and its stop leaves a deployment
    (the sync service, a publishing HTTP server, a job): stop it so that later tests and
    the session start clean. (A passing test has stopped it already: nothing to do.)"""
    yield
    from nxc.project import Project

    projects = [n for n in ("built_g5k", "built_ramdisk") if n in request.fixturenames]
    testbeds = [n for n in ("rehearsal", "one_node") if n in request.fixturenames]
    if not projects or not testbeds:
        return
    project: Path = request.getfixturevalue(projects[0])
    testbed: Rehearsal = request.getfixturevalue(testbeds[0])
    if Project(project).current_dir.exists():
        run_nxc("stop", cwd=project, env=testbed.env, timeout=300)
