"""End-to-end fixtures: a real selftest composition, built by real nix, booted as VMs."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nxc.contracts.deployment import Deployment
from nxc.driver.machine import Machine
from nxc.ledger import process_start_time
from nxc.project import Project
from tests.conftest import run_nxc


def require_host_tools() -> None:
    missing = [t for t in ("nix", "qemu-system-x86_64", "vde_switch") if not shutil.which(t)]
    if missing:
        pytest.fail(f"end-to-end tests need {', '.join(missing)} (run scripts/setup)")


@pytest.fixture(scope="session")
def built_selftest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`nxc init -t selftest` + `nxc build`, once per test session."""
    require_host_tools()
    directory = tmp_path_factory.mktemp("selftest")
    result = run_nxc("init", "-t", "selftest", str(directory))
    assert result.returncode == 0, result.stderr
    result = run_nxc("build", "--offline", cwd=directory)
    assert result.returncode == 0, result.stderr
    builds = Project(directory).builds()
    assert Path(builds["vm-ramdisk"]["manifest"]).is_file()
    return directory


def leftovers(project_dir: Path, pids: list[tuple[int, int | None]], run_dir: Path) -> list[str]:
    """Everything a stopped run must not have left behind."""
    found = [f"process {pid}" for pid, start in pids if process_start_time(pid) == start]
    if run_dir.exists():
        found.append(f"runtime dir {run_dir}")
    project = Project(project_dir)
    for path in (project.current_dir, project.ledger.path):
        if path.exists():
            found.append(f"state {path.name}")
    return found


def ledger_pids(project_dir: Path) -> list[tuple[int, int | None]]:
    ledger = Project(project_dir).ledger
    return [(int(r.ident), r.start_time) for r in ledger.entries() if r.kind == "process"]


def runtime_dir(project_dir: Path) -> Path:
    state = json.loads(Project(project_dir).runtime_file.read_text())["state"]
    return Path(state["runtime_dir"])


@pytest.fixture(scope="module")
def cluster3(built_selftest: Path) -> Iterator[Path]:
    """A running 3-node selftest deployment (started with the real CLI)."""
    result = run_nxc("start", "-r", "node=3", cwd=built_selftest)
    try:
        assert result.returncode == 0, result.stderr
        yield built_selftest
    finally:
        run_nxc("stop", cwd=built_selftest)


SERVER_CLIENT_COMPOSITION = """\
# Two roles for the network-emulation tests: one server, two clients.
{ ... }:
{
  roles.server = { quantity = 1; resources.memory_mb = 256; };
  roles.client = { quantity = 2; resources.memory_mb = 256; };
}
"""


@pytest.fixture(scope="session")
def built_server_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_host_tools()
    directory = tmp_path_factory.mktemp("server-client")
    result = run_nxc("init", "-t", "selftest", str(directory))
    assert result.returncode == 0, result.stderr
    (directory / "composition.nix").write_text(SERVER_CLIENT_COMPOSITION)
    result = run_nxc("build", "--offline", cwd=directory)
    assert result.returncode == 0, result.stderr
    return directory


@dataclass
class VmCluster:
    """A running deployment and one driver Machine per node (the ``cluster`` fixture).

    QEMU serves one backdoor client per VM at a time: while these machines are
    connected, another process (the ``nxc`` CLI) cannot reach the nodes. Run such a
    process inside :meth:`detached`.
    """

    project_dir: Path
    deployment: Deployment
    machines: dict[str, Machine]

    def attach(self) -> None:
        """Fresh machines for every node, in place (holders of ``machines`` see them)."""
        from nxc.driver.session import machines_of
        from nxc.session import running

        current = running(Project(self.project_dir))
        self.machines.update({m.name: m for m in machines_of(current)})

    def release(self) -> None:
        for machine in self.machines.values():
            machine.release()

    @contextlib.contextmanager
    def detached(self) -> Iterator[None]:
        """Close this process's backdoor connections for the block, then reattach.

        Reattaching makes new machines: a released Machine cannot reconnect, since its
        runtime NodeControl keeps handing out the transport that release() closed.
        """
        self.release()
        try:
            yield
        finally:
            self.attach()


@pytest.fixture(scope="module")
def cluster(built_server_client: Path) -> Iterator[VmCluster]:
    """server1, client1, client2 running (started by the real CLI), with driver machines."""
    from nxc.session import running

    result = run_nxc("start", cwd=built_server_client)
    vms: VmCluster | None = None
    try:
        assert result.returncode == 0, result.stderr
        current = running(Project(built_server_client))
        vms = VmCluster(built_server_client, current.deployment, {})
        vms.attach()
        yield vms
    finally:
        if vms is not None:
            vms.release()
        run_nxc("stop", cwd=built_server_client)
