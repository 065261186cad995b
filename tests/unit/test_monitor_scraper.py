"""The background scraper and the scenario API, against real local nodes.

Each node is a real shell on this host inside a private network namespace; metrics come
from the real nxc-metrics (or a real node_exporter in that namespace), travel through
``Machine.run`` and land in a real SQLite file.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxc.errors import NxcError, WaitTimeout
from nxc.monitor.api import Monitor
from nxc.monitor.hook import METRICS_FILE, MonitorOptions, active_session, monitoring
from nxc.monitor.parse import parse_metrics
from nxc.monitor.scraper import Scraper
from nxc.monitor.series import find_gaps
from nxc.monitor.store import MetricsStore
from tests.unit.monitor_nodes import (
    SAMPLER,
    LocalCluster,
    image_bin,
    local_cluster,
    wait_for,
)
from tests.unit.test_monitor_sampler import REQUIRED


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path) as made:
        yield made


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetricsStore]:
    opened = MetricsStore.create(tmp_path / "run" / METRICS_FILE)
    yield opened
    opened.close()


def messages(cluster: LocalCluster) -> str:
    return "\n".join(r.message for r in cluster.logger.records())


def test_every_node_is_scraped_and_stored(cluster: LocalCluster, tmp_path: Path) -> None:
    path = image_bin(tmp_path)
    node1 = cluster.add("node1", "server", 1, path)
    cluster.add("node2", "client", 1, path)
    run_dir = tmp_path / "run"
    with monitoring(
        run_dir, cluster.machines, MonitorOptions(interval=0.2), logger=cluster.logger
    ) as monitor:
        assert monitor.enabled and monitor.interval == 0.2
        monitor.sync()
        start = monitor.mark("phase 2")
        monitor.sync()
        monitor.sync()
        samples = monitor.query(node1, "node_cpu_seconds_total", since=start)
        assert samples and all(s.node == "node1" and s.t >= start.t for s in samples)
        idle = monitor.query("node1", "node_cpu_seconds_total", labels={"cpu": "0", "mode": "idle"})
        assert idle and all(s.labels == {"cpu": "0", "mode": "idle"} for s in idle)
        assert [s.t for s in idle] == sorted(s.t for s in idle)
        busy = monitor.cpu_percent("node2", since=start)
        assert busy and all(0 <= p.value <= 100 for p in busy)
        assert monitor.increase("node1", "node_context_switches_total", since=start) > 0
        assert "node_network_receive_bytes_total" in monitor.metrics("node2")
        with pytest.raises(NxcError, match="no node named 'node9'"):
            monitor.query("node9", "node_load1")
    # Closed cleanly: the session has an end, the file stays readable by plain sqlite3.
    reopened = MetricsStore.open(run_dir / METRICS_FILE)
    sessions = reopened.sessions()
    assert len(sessions) == 1 and sessions[0].stopped is not None and sessions[0].interval == 0.2
    assert active_session(reopened) is None
    assert {s.node: s.kind for s in reopened.sources()} == {"node1": "exec", "node2": "exec"}
    assert [m.label for m in reopened.marks()] == ["phase 2"]
    assert reopened.errors() == []
    for node in ("node1", "node2"):
        assert len(reopened.scrapes(node)) >= 3
    reopened.close()
    db = sqlite3.connect(run_dir / METRICS_FILE)
    (rows,) = db.execute("SELECT COUNT(*) FROM tidy WHERE node='node2'").fetchone()
    (stored,) = db.execute("SELECT SUM(samples) FROM scrapes WHERE node='node2'").fetchone()
    assert rows == stored > 100
    db.close()


def test_crashed_node_leaves_a_gap_and_resumes(
    cluster: LocalCluster, tmp_path: Path, store: MetricsStore
) -> None:
    path = image_bin(tmp_path)
    cluster.add("node1", "node", 1, path)
    node2 = cluster.add("node2", "node", 2, path)
    scraper = Scraper(cluster.machines, store, interval=0.2, logger=cluster.logger)
    monitor = Monitor(store, scraper, cluster.machines, cluster.logger)
    with scraper:
        monitor.sync()
        crashed_at = time.time()
        node2.crash()
        wait_for("errors about node2", lambda: len(store.errors("node2")) >= 3)
        # The scraper never boots a node the scenario stopped.
        assert not node2.is_up()
        assert {e.kind for e in store.errors("node2")} <= {"down", "unreachable"}
        with pytest.raises(WaitTimeout, match=r"node2 \((down|unreachable)"):
            monitor.sync(["node2"], timeout=0.6)
        monitor.sync(["node1"])  # the other node is unaffected
        node2.start()
        monitor.sync(["node2"])
    gaps = find_gaps(store.scrapes(), store.errors(), store.sessions())
    assert [g.node for g in gaps] == ["node2"]
    gap = gaps[0]
    # (a scrape already in flight when crash() is called may still succeed and be
    # stamped a moment after it)
    assert gap.last_ok is not None and gap.last_ok <= crashed_at + 0.5
    assert crashed_at <= gap.first_failure + 0.3
    assert gap.recovered is not None and gap.recovered > gap.first_failure
    assert gap.failures >= 3 and gap.kind in ("down", "unreachable")
    log = messages(cluster)
    assert "monitor: node2 stopped answering" in log
    assert "monitor: node2 answers again" in log


def test_slow_node_is_busy_not_a_gap(
    cluster: LocalCluster, tmp_path: Path, store: MetricsStore
) -> None:
    cluster.add("slow", "node", 1, image_bin(tmp_path, slow=0.7))
    with Scraper(cluster.machines, store, interval=0.1, logger=cluster.logger) as scraper:
        scraper.sync()
        scraper.sync()
    kinds = {e.kind for e in store.errors()}
    assert kinds == {"busy"}
    assert len(store.scrapes("slow")) >= 2
    assert find_gaps(store.scrapes(), store.errors(), store.sessions()) == []


def test_hung_sampler_times_out_and_is_a_gap(
    cluster: LocalCluster, tmp_path: Path, store: MetricsStore
) -> None:
    cluster.add("hung", "node", 1, image_bin(tmp_path, slow=30))
    with Scraper(cluster.machines, store, interval=0.2, timeout=1, logger=cluster.logger):
        wait_for("a timeout", lambda: any(e.kind == "timeout" for e in store.errors()))
    timeouts = [e for e in store.errors() if e.kind == "timeout"]
    assert "no answer within 1s" in timeouts[0].message
    gaps = find_gaps(store.scrapes(), store.errors(), store.sessions())
    assert gaps and gaps[0].node == "hung" and gaps[0].recovered is None


def test_sampler_is_installed_where_the_image_lacks_it(
    cluster: LocalCluster, tmp_path: Path, store: MetricsStore
) -> None:
    cluster.add("bare", "node", 1, image_bin(tmp_path, sampler=False))
    target = tmp_path / "node-run" / "nxc-metrics"
    with Scraper(
        cluster.machines, store, interval=0.2, logger=cluster.logger, install_path=str(target)
    ) as scraper:
        scraper.sync()
    assert target.read_text() == SAMPLER.read_text()
    (source,) = store.sources()
    assert source.kind == "exec" and str(target) in source.detail
    assert store.samples("node_load1", "bare")
    assert f"installed nxc-metrics at {target}" in messages(cluster)


def test_application_endpoint_is_scraped_the_same_way(
    cluster: LocalCluster, tmp_path: Path, store: MetricsStore
) -> None:
    if shutil.which("busybox") is None or not (shutil.which("curl") or shutil.which("wget")):
        pytest.fail("needs busybox (httpd) and curl or wget (scripts/setup)")
    path = image_bin(tmp_path)
    server = cluster.add("server1", "server", 1, path)
    cluster.add("client1", "client", 1, path)
    www = tmp_path / "www"
    www.mkdir()
    (www / "metrics").write_text(
        "# TYPE app_requests_total counter\n"
        'app_requests_total{code="200"} 41\n'
        'app_requests_total{code="500"} 1\n'
    )
    server.succeed(f"busybox httpd -p 127.0.0.1:8080 -h {www}")
    server.wait_for_open_port(8080, timeout=10)
    try:
        scraper = Scraper(cluster.machines, store, interval=0.2, logger=cluster.logger)
        monitor = Monitor(store, scraper, cluster.machines, cluster.logger)
        with pytest.raises(NxcError, match="no role or node named 'db'"):
            monitor.scrape("db", 8080)
        endpoint = monitor.scrape("server", 8080)
        missing = monitor.scrape("client1", 9999, "stats", name="nothing")
        assert endpoint.job == "app:8080/metrics" and endpoint.nodes == {"server1"}
        assert missing.path == "/stats"
        with scraper:
            monitor.sync()
            monitor.sync()
        requests = monitor.query("server1", "app_requests_total", job=endpoint.job)
        assert {s.labels["code"]: s.value for s in requests} == {"200": 41.0, "500": 1.0}
        assert monitor.increase("server1", "app_requests_total", job=endpoint.job) == 0
        # The node's own metrics are there as usual; the absent endpoint is an error of its own.
        assert monitor.query("client1", "node_load1")
        failed = store.errors("client1", "nothing")
        assert failed and failed[0].kind == "failed"
        assert store.errors("client1", "node") == []
    finally:
        server.execute("kill $(pidof busybox) 2>/dev/null || true")


def test_real_node_exporter_is_preferred_and_names_match(
    tmp_path: Path, store: MetricsStore
) -> None:
    exporter = shutil.which("prometheus-node-exporter")
    if exporter is None:
        pytest.fail("needs Debian's prometheus-node-exporter (scripts/setup installs it)")
    with local_cluster(tmp_path) as cluster:
        node = cluster.add("node1", "node", 1, image_bin(tmp_path))
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", cluster.ns, exporter, "--web.listen-address=127.0.0.1:9100"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            node.wait_for_open_port(9100, timeout=30)
            with Scraper(cluster.machines, store, interval=0.3, logger=cluster.logger) as scraper:
                scraper.sync()
            (source,) = store.sources()
            assert source.kind == "http" and "127.0.0.1:9100" in source.detail
            exported = {}
            for sample in store.samples("node_cpu_seconds_total", "node1"):
                exported[sample.metric] = set(sample.labels)
            assert exported == {"node_cpu_seconds_total": {"cpu", "mode"}}
            # Every name nxc-metrics promises is node_exporter's, with the same labels.
            ours = parse_metrics(node.succeed(f"/bin/sh {SAMPLER}"))
            theirs = parse_metrics(node.succeed("curl -fsS http://127.0.0.1:9100/metrics"))
            their_labels: dict[str, set[str]] = {}
            for sample in theirs:
                their_labels.setdefault(sample.metric, set()).update(sample.labels)
            for name in REQUIRED:
                assert name in their_labels, f"node_exporter has no {name}"
            for sample in ours:
                if sample.metric in their_labels and sample.metric in REQUIRED:
                    assert set(sample.labels) <= their_labels[sample.metric], sample.metric
        finally:
            daemon.terminate()
            daemon.wait(10)


def test_monitoring_off_still_records_marks(cluster: LocalCluster, tmp_path: Path) -> None:
    node = cluster.add("node1", "node", 1, image_bin(tmp_path))
    run_dir = tmp_path / "run"
    with monitoring(
        run_dir, [node], MonitorOptions(enabled=False), logger=cluster.logger
    ) as monitor:
        assert not monitor.enabled
        monitor.mark("start", node="node1")
        with pytest.raises(NxcError, match="monitor: off"):
            monitor.sync()
        time.sleep(0.3)
    with MetricsStore.open(run_dir / METRICS_FILE) as reopened:
        assert [(m.label, m.node) for m in reopened.marks()] == [("start", "node1")]
        assert reopened.scrapes() == [] and reopened.sessions() == []


def test_bad_interval_is_a_user_error() -> None:
    with pytest.raises(NxcError, match="must be positive"):
        MonitorOptions(interval=0)


def test_unreachable_running_node_is_left_alone_then_seen_down_at_once(
    cluster: LocalCluster, tmp_path: Path, store: MetricsStore
) -> None:
    # A running node whose channel fails (here: its shell cannot be started) is not
    # hammered: one attempt, then a pause; once it is down, that is recorded at once.
    broken = cluster.add("broken", "node", 1, image_bin(tmp_path))
    broken.control.shell = "/nonexistent/sh"  # type: ignore[attr-defined]
    with Scraper(cluster.machines, store, interval=0.1, logger=cluster.logger):
        wait_for("the first failure", lambda: len(store.errors("broken")) >= 1)
        time.sleep(1.0)  # ten ticks
        errors = store.errors("broken")
        assert [e.kind for e in errors] == ["unreachable"], errors
        assert "cannot run /nonexistent/sh" in errors[0].message
        broken.crash()
        wait_for("a 'down' record", lambda: any(e.kind == "down" for e in store.errors("broken")))
    assert "broken is running but unreachable; next try in 30s" in messages(cluster)
