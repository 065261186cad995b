"""Fixtures of the sync tests: a real sync service (redis-server started by nxc's own
code) on this host, and local nodes whose programs reach it with the real nxc-sync."""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nxc.driver.driver import Driver
from nxc.driver.local import LocalNodeControl
from nxc.driver.machine import Machine
from nxc.driver.sync import Sync
from nxc.ledger import Ledger
from nxc.log import Logger
from nxc.sync.service import SyncService, start_service, stop_service
from tests.conftest import run_nxc

# The e2e fixtures (a selftest composition built once per session) serve here too.
from tests.e2e.conftest import VmCluster, built_selftest  # noqa: F401

AGENT_DIR = Path(__file__).resolve().parents[2] / "nxc" / "agent"
NXC_SYNC = AGENT_DIR / "nxc-sync"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[SyncService]:
    if shutil.which("redis-server") is None:
        pytest.fail("the sync tests need redis-server (scripts/setup installs it)")
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
    started = start_service(runtime, tmp_path / "sync.log", Ledger(tmp_path / "ledger"),
                            "test-scope", "127.0.0.1")  # fmt: skip
    yield started
    stop_service(started)


def busybox_bin(directory: Path) -> Path:
    """A PATH directory holding only busybox's applets (what a selftest image has)."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail("the sync tests need busybox (scripts/setup installs busybox-static)")
    directory.mkdir(exist_ok=True)
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        if not (directory / applet).exists():
            (directory / applet).symlink_to(busybox)
    (directory / "nxc-sync").symlink_to(NXC_SYNC)
    return directory


NodeEnv = Callable[..., dict[str, str]]


@pytest.fixture
def node_env(service: SyncService, tmp_path: Path) -> NodeEnv:
    """``node_env(name, start_after="", token=None)``: the environment of a local node
    whose /etc/nxc/sync is a private file in the test's directory."""
    bin_dir = busybox_bin(tmp_path / "bin")

    def make(name: str, start_after: str = "", token: str | None = None) -> dict[str, str]:
        assert service.tcp is not None
        config = service.node_config(name, *service.tcp, start_after=start_after)
        text = config.render()
        if token is not None:
            text = text.replace(service.token, token)
        path = tmp_path / f"sync-{name}"
        path.write_text(text)
        path.chmod(0o600)
        return {
            "PATH": str(bin_dir),
            "NXC_SYNC_CONFIG": str(path),
            "NXC_NODE": name,
            "TMPDIR": str(tmp_path),
        }

    return make


@pytest.fixture
def driver(service: SyncService, node_env: NodeEnv, tmp_path: Path) -> Iterator[Driver]:
    """Three local nodes (busybox sh) and the driver, all on the same service."""
    logger = Logger(stream=io.StringIO())
    machines = []
    for index in (1, 2, 3):
        name = f"node{index}"
        control = LocalNodeControl(
            name, tmp_path / "nodes" / name, node_env(name), shell=str(tmp_path / "bin" / "sh")
        )
        machines.append(Machine(name, "node", index, control, logger))
    sync = Sync(service.client("driver"), logger, 3, {"node": 3})
    with Driver(machines, logger, tmp_path / "out", sync=sync) as made:
        yield made


# -- VMs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vms(built_selftest: Path) -> Iterator[VmCluster]:  # noqa: F811
    """node1..node3 running (started by the real CLI), with driver machines."""
    from nxc.project import Project
    from nxc.session import running

    result = run_nxc("start", "-r", "node=3", cwd=built_selftest)
    cluster: VmCluster | None = None
    try:
        assert result.returncode == 0, result.stderr
        current = running(Project(built_selftest))
        cluster = VmCluster(built_selftest, current.deployment, {})
        cluster.attach()
        yield cluster
    finally:
        if cluster is not None:
            cluster.release()
        run_nxc("stop", cwd=built_selftest)
