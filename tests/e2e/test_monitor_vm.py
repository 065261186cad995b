"""Monitoring on real selftest VMs: load, traffic and a crash, seen in the stored numbers.

Three VMs (server1, client1, client2). A scenario runs through the real Driver while the
real scraper reads each guest's nxc-metrics through its backdoor every second: it loads
client1's CPU, sends 20 MiB from client2 to server1, then crashes client1 and boots it
again. The test then reads the run's metrics.sqlite and the report.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nxc.driver.driver import Driver
from nxc.log import log
from nxc.monitor.api import Monitor
from nxc.monitor.hook import METRICS_FILE, MonitorOptions, monitoring
from nxc.monitor.report import write_report
from nxc.monitor.store import MetricsStore
from nxc.project import Project
from nxc.running import running
from tests.conftest import run_nxc
from tests.e2e.conftest import VmCluster

pytestmark = pytest.mark.vm

TRAFFIC = 20 * 1024 * 1024

SCENARIO = f"""\
with subtest("idle baseline"):
    monitor.sync()
    monitor.mark("idle")
    for _ in range(4):
        monitor.sync()
with subtest("cpu load on client1"):
    monitor.mark("load")
    client1.execute("timeout 8 sh -c 'while :; do :; done'", check_output=False)
    for _ in range(5):
        monitor.sync()
    monitor.mark("load done")
with subtest("traffic client2 to server1"):
    server1.succeed("iperf3 -s -D >/dev/null")
    server1.wait_for_open_port(5201, timeout=30)
    monitor.mark("traffic")
    client2.succeed("iperf3 -c server1 -n {TRAFFIC} >/dev/null", timeout=300)
    monitor.sync()
    monitor.sync()
    monitor.mark("traffic done")
with subtest("crash client1"):
    client1.crash()
    retry(lambda last: any(g.node == "client1" for g in monitor.gaps()), 60)
    monitor.sync(["server1", "client2"])
    monitor.mark("client1 restarts")
    client1.start()
    monitor.sync(["client1"], timeout=180)
"""


def window(monitor: Monitor, first: str, last: str) -> tuple[float, float]:
    marks = {m.label: m.t for m in monitor.marks()}
    return marks[first], marks[last]


def mean_cpu(monitor: Monitor, node: str, since: float, until: float) -> float:
    points = monitor.cpu_percent(node, since=since, until=until)
    assert len(points) >= 3, f"{node}: only {len(points)} CPU points in the window"
    return statistics.mean(p.value for p in points)


def test_load_traffic_and_crash_are_in_the_stored_samples(cluster: VmCluster) -> None:
    current = running(Project(cluster.project_dir))
    run_dir = current.run_dir
    machines = list(cluster.machines.values())
    driver = Driver(machines, log, current.run.new_driver_dir())
    with monitoring(run_dir, machines, MonitorOptions(interval=1.0), logger=log) as monitor:
        driver.extra_globals["monitor"] = monitor
        passed = driver.run_script(SCENARIO, "monitor-scenario.py")
    report = json.loads((driver.out_dir / "report.json").read_text())
    assert passed, report["error"]

    store = MetricsStore.open(run_dir / METRICS_FILE)
    stored = Monitor(store, None, machines)
    try:
        # Where the numbers came from: the image's own sampler, through the backdoor.
        assert {s.node: s.kind for s in store.sources()} == dict.fromkeys(
            ("server1", "client1", "client2"), "exec"
        )
        # CPU: client1 busy during the load, well above its idle baseline and the others.
        idle = window(stored, "idle", "load")
        load = window(stored, "load", "load done")
        loaded = mean_cpu(stored, "client1", *load)
        baseline = mean_cpu(stored, "client1", *idle)
        others = max(mean_cpu(stored, n, *load) for n in ("server1", "client2"))
        assert loaded > 80, f"client1 {loaded:.0f}% busy under load"
        assert loaded > baseline + 40 and loaded > others + 40, (loaded, baseline, others)

        # Network: the bytes left client2's experiment NIC and arrived on server1's.
        nic = {"device": current.deployment.interface}
        since, until = window(stored, "traffic", "traffic done")
        sent = stored.increase(
            "client2", "node_network_transmit_bytes_total", since, nic, until=until
        )
        got = stored.increase(
            "server1", "node_network_receive_bytes_total", since, nic, until=until
        )
        bystander = stored.increase(
            "client1", "node_network_receive_bytes_total", since, nic, until=until
        )
        # (iperf3 -n stops once the client has written that much into its socket: a few
        # hundred kB may still sit in its buffers when the test ends and the connection is
        # torn down, so both NICs may count a little less than the payload.)
        assert sent >= 0.95 * TRAFFIC and got >= 0.95 * TRAFFIC, (sent, got)
        assert sent < 2 * TRAFFIC and got < 2 * TRAFFIC, (sent, got)
        assert bystander < TRAFFIC / 20, bystander

        # The crash: a recorded gap for client1 only, closed when it answered again.
        gaps = stored.gaps()
        assert [g.node for g in gaps] == ["client1"], gaps
        gap = gaps[0]
        crashed = window(stored, "traffic done", "client1 restarts")
        assert crashed[0] <= gap.first_failure <= crashed[1]
        assert gap.kind in ("down", "unreachable") and gap.recovered is not None
        samples_after = stored.query("client1", "node_load1", since=gap.recovered)
        assert samples_after, "no sample of client1 after it came back"
    finally:
        store.close()

    files = write_report(run_dir)
    html = files.html.read_text()
    assert [p.name for p in files.images] == ["cpu.png", "memory.png", "network.png"]
    gaps_section = html[html.index('id="gaps"') : html.index('id="marks"')]
    assert "client1" in gaps_section and "server1" not in gaps_section
    assert "stopped answering" in gaps_section and "after" in gaps_section
    for name in (
        "idle baseline",
        "cpu load on client1",
        "traffic client2 to server1",
        "crash client1",
    ):
        assert name in html
    for node in ("server1", "client1", "client2"):
        assert f"console of {node}" in html


BUSY_SCENARIO = """\
client2.execute("timeout 20 sh -c 'while :; do :; done'", check_output=False)
monitor.sync()
monitor.sync()
monitor.mark("client2 busy")
monitor.sync()
import time
time.sleep(8)
"""


def cpu_cell(table: str, node: str) -> float:
    """The CPU % the live table shows for ``node``."""
    match = re.search(rf"{node}\s*│[^│]*│[^│]*?(\d+\.\d)%", table)
    assert match, f"no CPU figure for {node} in:\n{table}"
    return float(match.group(1))


def test_nxc_monitor_scrapes_alone_then_follows_a_running_driver(
    cluster: VmCluster, tmp_path: Path
) -> None:
    scenario = tmp_path / "busy.py"
    scenario.write_text(BUSY_SCENARIO)
    wide = {"COLUMNS": "160"}
    with cluster.detached():
        # Nobody scrapes: nxc monitor opens the nodes itself.
        alone = run_nxc("monitor", "--once", cwd=cluster.project_dir, env=wide)
        assert alone.returncode == 0, alone.stderr
        assert "by this process" in alone.stdout
        for node in ("server1", "client1", "client2"):
            assert re.search(rf"{node}\s*│.*│\s*ok\s*│", alone.stdout), alone.stdout

        # A driver scrapes: nxc monitor only reads what it stores.
        driver = subprocess.Popen(
            [sys.executable, "-m", "nxc.cli", "driver", str(scenario)],
            cwd=cluster.project_dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            store_path = running(Project(cluster.project_dir)).run_dir / METRICS_FILE
            deadline = time.monotonic() + 120
            while True:
                if store_path.exists():
                    with MetricsStore.open(store_path) as store:
                        if any(m.label == "client2 busy" for m in store.marks()):
                            break
                assert driver.poll() is None, driver.communicate()[0]
                assert time.monotonic() < deadline, "the driver never marked 'client2 busy'"
                time.sleep(0.5)
            following = run_nxc("monitor", "--once", cwd=cluster.project_dir, env=wide)
            assert following.returncode == 0, following.stderr
            assert f"by process {driver.pid}" in following.stdout
            assert cpu_cell(following.stdout, "client2") > 60, following.stdout
        finally:
            output, _ = driver.communicate(timeout=180)
        assert driver.returncode == 0, output
