"""The metrics store (real SQLite) and the computations on its samples."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from nxc.monitor.parse import ParsedSample, parse_metrics
from nxc.monitor.series import (
    counter_increase,
    counter_rate,
    cpu_busy_percent,
    find_gaps,
    memory_used,
)
from nxc.monitor.store import MetricsStore, Sample, ScrapeError, ScrapeRecord, Session, StoreError

CPU = """\
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{{cpu="0",mode="user"}} {user0}
node_cpu_seconds_total{{cpu="0",mode="idle"}} {idle0}
node_cpu_seconds_total{{cpu="0",mode="iowait"}} 1
node_cpu_seconds_total{{cpu="1",mode="user"}} {user1}
node_cpu_seconds_total{{cpu="1",mode="idle"}} {idle1}
node_cpu_seconds_total{{cpu="1",mode="iowait"}} 1
# TYPE node_network_transmit_bytes_total counter
node_network_transmit_bytes_total{{device="eth0"}} {tx}
node_network_transmit_bytes_total{{device="lo"}} 5
"""


def cpu_text(user0: float, idle0: float, user1: float, idle1: float, tx: float) -> str:
    return CPU.format(user0=user0, idle0=idle0, user1=user1, idle1=idle1, tx=tx)


def test_store_round_trip_and_tidy_view(tmp_path: Path) -> None:
    path = tmp_path / "metrics.sqlite"
    with MetricsStore.create(path) as store:
        store.set_nodes([("n1", "server", 1), ("n2", "client", 1)])
        session = store.begin_session(0.5, started=99.0)
        store.add_scrape("n1", "node", 100.0, 0.02, parse_metrics(cpu_text(10, 100, 20, 100, 0)))
        store.add_scrape(
            "n1", "node", 101.0, 0.03, parse_metrics(cpu_text(10.5, 100.5, 21, 100, 1000))
        )
        store.add_error("n2", "node", 100.5, "down", "n2 is not running")
        store.add_mark("phase 2", t=100.2, node="n1")
        store.end_session(session, stopped=102.0)
    with MetricsStore.open(path) as store:
        assert store.nodes() == [("n1", "server", 1), ("n2", "client", 1)]
        cpu = store.samples("node_cpu_seconds_total", "n1", labels={"mode": "user"})
        assert [(s.labels["cpu"], s.t, s.value) for s in cpu] == [
            ("0", 100.0, 10.0), ("1", 100.0, 20.0), ("0", 101.0, 10.5), ("1", 101.0, 21.0),
        ]  # fmt: skip
        assert store.samples(
            "node_cpu_seconds_total", "n1", since=100.5, labels={"cpu": "1", "mode": "idle"}
        ) == [Sample("n1", "node_cpu_seconds_total", {"cpu": "1", "mode": "idle"}, 101.0, 100.0)]
        assert store.samples("node_cpu_seconds_total", "n2") == []
        # A window between two scrapes: the sample before it is the counter's base.
        eth0 = {"device": "eth0"}
        metric = "node_network_transmit_bytes_total"
        inside = store.samples(metric, "n1", since=100.5, labels=eth0)
        based = store.samples(metric, "n1", since=100.5, labels=eth0, previous=True)
        assert [(x.t, x.value) for x in inside] == [(101.0, 1000.0)]
        assert [(x.t, x.value) for x in based] == [(100.0, 0.0), (101.0, 1000.0)]
        assert store.errors(since=100.6) == [] and store.errors("n2")[0].kind == "down"
        assert [(m.label, m.node, m.t) for m in store.marks()] == [("phase 2", "n1", 100.2)]
        assert store.sessions()[0].stopped == 102.0
        assert store.last_scrape_times() == {"n1": 101.0}
        assert store.metrics("n1") == [
            "node_cpu_seconds_total",
            "node_network_transmit_bytes_total",
        ]
    db = sqlite3.connect(path)
    rows = db.execute(
        "SELECT node, metric, labels, t, value FROM tidy WHERE labels LIKE '%eth0%' ORDER BY t"
    ).fetchall()
    assert rows == [
        ("n1", "node_network_transmit_bytes_total", '{"device":"eth0"}', 100.0, 0.0),
        ("n1", "node_network_transmit_bytes_total", '{"device":"eth0"}', 101.0, 1000.0),
    ]
    # One series row per node/metric/labels, whatever the number of scrapes.
    assert db.execute("SELECT COUNT(*) FROM series").fetchone() == (8,)
    db.close()


def test_store_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no metrics at .*missing\.sqlite"):
        MetricsStore.open(tmp_path / "missing.sqlite")
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
    db.execute("INSERT INTO meta VALUES('nxc_metrics', '99')")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="metrics schema 99, this nxc reads 1"):
        MetricsStore.open(other)
    with pytest.raises(StoreError, match="metrics schema 99"):
        MetricsStore.create(other)


def test_store_can_be_read_while_another_thread_writes(tmp_path: Path) -> None:
    store = MetricsStore.create(tmp_path / "m.sqlite")
    reader = MetricsStore.open(tmp_path / "m.sqlite")
    sample = [ParsedSample("x", {}, 1.0, "gauge")]
    done = threading.Event()

    def write() -> None:
        for i in range(200):
            store.add_scrape("n", "node", float(i), 0.0, sample)
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    seen = 0
    while not done.is_set():
        seen = max(seen, len(reader.samples("x", "n")))
    thread.join()
    assert len(reader.samples("x", "n")) == 200 >= seen
    store.close()
    reader.close()


def s(t: float, value: float, **labels: str) -> Sample:
    return Sample("n1", "m", labels, t, value)


def test_cpu_percent_is_busy_share_of_accounted_time() -> None:
    samples = [
        *[Sample("n1", "c", {"cpu": c, "mode": m}, 10.0, v) for c, m, v in (
            ("0", "user", 10), ("0", "idle", 100), ("0", "iowait", 1),
            ("1", "user", 20), ("1", "idle", 100), ("1", "iowait", 1),
        )],
        # over 1 s: cpu0 0.5 s user + 0.5 s idle, cpu1 1 s user → 1.5 of 2 s busy
        *[Sample("n1", "c", {"cpu": c, "mode": m}, 11.0, v) for c, m, v in (
            ("0", "user", 10.5), ("0", "idle", 100.5), ("0", "iowait", 1),
            ("1", "user", 21), ("1", "idle", 100), ("1", "iowait", 1),
        )],
        # reboot: counters start again; no value for that interval
        *[Sample("n1", "c", {"cpu": c, "mode": m}, 12.0, 0.1)
          for c in "01" for m in ("user", "idle")],
    ]  # fmt: skip
    assert cpu_busy_percent(samples) == [(11.0, 75.0)]


def test_counter_rate_and_increase_handle_resets_and_several_series() -> None:
    samples = [
        s(0, 100, device="eth0"), s(1, 300, device="eth0"), s(2, 50, device="eth0"),
        s(4, 250, device="eth0"),
        s(0, 0, device="eth1"), s(1, 10, device="eth1"), s(2, 20, device="eth1"),
    ]  # fmt: skip
    assert counter_rate(samples) == [(1, 210.0), (2, 10.0), (4, 100.0)]
    # eth0: +200, reset (counts 50), +200; eth1: +20
    assert counter_increase(samples) == 470.0
    assert counter_rate([]) == [] and counter_increase([s(0, 5)]) == 0


def test_memory_used_pairs_samples_by_time() -> None:
    total = [Sample("n", "t", {}, 1.0, 1000.0), Sample("n", "t", {}, 2.0, 1000.0)]
    available = [Sample("n", "a", {}, 2.0, 250.0)]
    assert memory_used(total, available) == [(2.0, 750.0)]


def ok(t: float, node: str = "n1") -> ScrapeRecord:
    return ScrapeRecord(node, "node", t, 0.01, 10)


def err(t: float, kind: str = "unreachable", node: str = "n1") -> ScrapeError:
    return ScrapeError(node, "node", t, kind, f"{node} {kind}")


def test_gaps_open_at_the_first_failure_and_close_at_the_next_answer() -> None:
    scrapes = [ok(1), ok(2), ok(6), ok(7), ok(1, "n2"), ok(2, "n2")]
    errors = [
        err(3), err(4, "down"), err(5, "down"),
        err(6.5, "busy"),  # a busy tick is no gap
        err(3, "busy", "n2"), err(4, "timeout", "n2"),
    ]  # fmt: skip
    sessions = [Session(1, 0.0, 10.0, 1.0, 1)]
    gaps = find_gaps(scrapes, errors, sessions)
    assert [
        (g.node, g.last_ok, g.first_failure, g.recovered, g.failures, g.kind) for g in gaps
    ] == [
        ("n1", 2, 3, 6, 3, "unreachable"),
        ("n2", 2, 4, None, 1, "timeout"),
    ]
    # n2 never answered again: its gap lasts until its session ended
    assert gaps[1].recording_ended == 10.0 and gaps[1].duration(end=99.0) == 6.0


def test_a_gap_ends_with_its_session() -> None:
    # The driver stopped at 5 and a new one started at 100: the node answered again then,
    # but nobody asked in between, so the gap is "until the end of that recording".
    scrapes = [ok(1), ok(101)]
    errors = [err(3)]
    sessions = [Session(1, 0.0, 5.0, 1.0, 1), Session(2, 100.0, None, 1.0, 2)]
    (gap,) = find_gaps(scrapes, errors, sessions)
    assert (gap.first_failure, gap.recovered, gap.recording_ended) == (3, None, 5.0)
    assert gap.duration(end=200.0) == 2.0
