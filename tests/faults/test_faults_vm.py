"""Faults on real selftest VMs: kill, pause/resume, clock skew, disk full, a netem
partition, and a 4-event timeline run by `nxc driver --faults` and recorded in the
run record."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

import pytest

from nxc.driver.machine import Machine
from nxc.faults import FaultError, Injector
from nxc.log import Logger
from nxc.netem import Netem
from nxc.project import Project
from nxc.session import running
from tests.conftest import run_nxc
from tests.e2e.conftest import VmCluster

pytestmark = pytest.mark.vm

COUNTER = "n=0; while :; do n=$((n+1)); echo $n > /tmp/{name}.count; sleep 0.1; done"


@pytest.fixture
def faults(vms: VmCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Injector]:
    net = Netem(vms.deployment, vms.machines)
    record = tmp_path_factory.mktemp("faults") / "faults.jsonl"
    injector = Injector(
        vms.deployment,
        vms.machines,
        Logger(stream=io.StringIO()),
        netem=net,
        record=record,
        seed=11,
    )
    yield injector
    assert injector.close() == []
    net.reset()


def start_counter(machine: Machine, name: str) -> None:
    machine.succeed(f"echo '{COUNTER.format(name=name)}' > /tmp/{name}.sh")
    machine.execute(f"setsid sh /tmp/{name}.sh </dev/null >/dev/null 2>&1 &", timeout=30)
    machine.wait_until_succeeds(f"test $(cat /tmp/{name}.count) -ge 2", timeout=30)


def count(machine: Machine, name: str) -> int:
    return int(machine.succeed(f"cat /tmp/{name}.count"))


def test_kill_a_process(vms: VmCluster, faults: Injector) -> None:
    node1 = vms.machines["node1"]
    start_counter(node1, "victim")
    faults.kill("node1", pattern="/tmp/victim.sh", signal="TERM")
    node1.wait_until_fails("ps -o args | grep -v grep | grep -q /tmp/victim.sh", timeout=30)
    frozen = count(node1, "victim")
    time.sleep(0.5)
    assert count(node1, "victim") == frozen


def test_pause_then_resume(vms: VmCluster, faults: Injector) -> None:
    node1 = vms.machines["node1"]
    start_counter(node1, "worker")
    try:
        paused = faults.pause("node1", pattern="/tmp/worker.sh")
        frozen = count(node1, "worker")
        time.sleep(1.5)
        assert count(node1, "worker") == frozen, "the paused process made progress"
        paused.heal()
        node1.wait_until_succeeds(f"test $(cat /tmp/worker.count) -gt {frozen + 3}", timeout=30)
    finally:
        node1.execute("kill $(ps -o pid,args | awk '/[w]orker.sh/ {print $1}') 2>/dev/null")


def clock_gap(a: Machine, b: Machine) -> float:
    """a's clock minus b's, read back to back (each read costs a backdoor round trip)."""
    first = float(a.succeed("date +%s"))
    second = float(b.succeed("date +%s"))
    return first - second


def test_clock_skew_then_restored(vms: VmCluster, faults: Injector) -> None:
    node2, node3 = vms.machines["node2"], vms.machines["node3"]
    before = clock_gap(node2, node3)
    skew = faults.clock_skew("node2", offset=120)
    skewed = clock_gap(node2, node3)
    assert abs(skewed - before - 120) <= 2, (before, skewed)
    skew.heal()
    after = clock_gap(node2, node3)
    assert abs(after - before) <= 2, (before, after)


def test_disk_full_then_writable_after_undo(vms: VmCluster, faults: Injector) -> None:
    node1 = vms.machines["node1"]
    node1.succeed("mkdir -p /mnt/data && mount -t tmpfs -o size=4m tmpfs /mnt/data")
    try:
        node1.succeed("echo before > /mnt/data/before")
        full = faults.disk_full("node1", path="/mnt/data")
        node1.fail("echo more > /mnt/data/after")
        full.heal()
        node1.succeed("echo more > /mnt/data/after")
    finally:
        node1.execute("umount /mnt/data")
    # The initramfs root is memory: refused rather than filled.
    with pytest.raises(FaultError, match="would starve the node"):
        faults.disk_full("node1", path="/")
    free_kib = node1.succeed("stat -f -c '%a %S' / | awk '{ print int($1 * $2 / 1024) }'")
    assert int(free_kib) > 32768, "the root file system was filled"


def test_partition_fault_then_heal(vms: VmCluster, faults: Injector) -> None:
    cut = faults.partition(pattern="isolate")
    alone = cut.detail["isolated"]
    other = next(n for n in vms.machines if n != alone)
    address = vms.deployment.node(other).ipv4.split("/")[0]
    status, _ = vms.machines[alone].execute(f"ping -c 2 -W 1 {address}", timeout=30)
    assert status != 0, f"{alone} still reaches {other}"
    cut.heal()
    vms.machines[alone].wait_until_succeeds(f"ping -c 1 -W 1 {address}", timeout=30)


TIMELINE = """\
nxc_faults: 1
seed: 3
events:
  - {at: 0.5, fault: pause, nodes: [node1], pattern: /tmp/tl.sh, id: stop-worker}
  - {at: 1.0, fault: cpu, nodes: [node2], workers: 1, id: busy}
  - {at: 1.5, heal: stop-worker}
  - {at: 2.0, heal: busy}
"""


def test_a_timeline_fires_in_order_and_is_recorded(vms: VmCluster) -> None:
    node1 = vms.machines["node1"]
    start_counter(node1, "tl")
    timeline = vms.project_dir / "faults.yaml"
    timeline.write_text(TIMELINE)
    try:
        with vms.detached():
            result = run_nxc("driver", "--faults", str(timeline), cwd=vms.project_dir)
        assert result.returncode == 0, result.stderr
        run_dir = running(Project(vms.project_dir)).run.directory
        events = [json.loads(line) for line in (run_dir / "faults.jsonl").read_text().splitlines()]
        mine = [e for e in events if e["id"] in ("stop-worker", "busy")][-4:]
        assert [(e["event"], e["id"]) for e in mine] == [
            ("fault", "stop-worker"),
            ("fault", "busy"),
            ("heal", "stop-worker"),
            ("heal", "busy"),
        ]
        for event, at in zip(mine, (0.5, 1.0, 1.5, 2.0), strict=True):
            assert event["ok"], event
            assert at <= event["offset"] <= at + 0.5, event
            assert event["time"].endswith("+00:00")
        print("timeline offsets:", [e["offset"] for e in mine])
        # Healed: the worker runs again and no CPU burner is left on node2.
        frozen = count(node1, "tl")
        node1.wait_until_succeeds(f"test $(cat /tmp/tl.count) -gt {frozen + 2}", timeout=30)
        vms.machines["node2"].fail("test -s /run/nxc/faults/busy.pgids")
    finally:
        node1.execute("kill $(ps -o pid,args | awk '/[t]l.sh/ {print $1}') 2>/dev/null")
