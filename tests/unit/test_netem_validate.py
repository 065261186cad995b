"""Comparison logic and parsers; the outputs under data/netem were captured on a Debian 12
host (iputils ping 20221126, busybox 1.35 ping, fping 5.1, iperf3 3.12) between two network
namespaces, with probes lost by removing the peer's address for a second."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from nxc.errors import NxcError
from nxc.netem import validate as v
from nxc.netem.model import PairShaping, Topology
from nxc.netem.netns import make_deployment

DATA = Path(__file__).parent / "data" / "netem"
TOL = v.Tolerances()


def read(name: str) -> str:
    return (DATA / name).read_text()


# ------------------------------------------------------------------ parsers


def test_iputils_ping() -> None:
    ok = v.parse_ping(read("iputils_ok.txt"), 5)
    assert ok.received == 5 and ok.loss == 0
    assert ok.rtts_ms == (0.067, 0.048, 0.051, 0.043, 0.042)
    lossy = v.parse_ping(read("iputils_loss.txt"), 10)
    assert lossy.received == 6 and lossy.loss == pytest.approx(0.4)
    v6 = v.parse_ping(read("iputils_v6_ok.txt"), 3)
    assert v6.received == 3


def test_busybox_ping() -> None:
    ok = v.parse_ping(read("busybox_ok.txt"), 5)
    assert ok.received == 5 and ok.mean_ms == pytest.approx(0.0594)
    lossy = v.parse_ping(read("busybox_loss.txt"), 10)
    assert lossy.received == 5 and lossy.loss == pytest.approx(0.5)
    assert v.parse_ping(read("busybox_v6_ok.txt"), 3).received == 3


def test_all_lost_and_errors_count_as_loss() -> None:
    for name in ("iputils_all_lost.txt", "busybox_all_lost.txt"):
        result = v.parse_ping(read(name), 3)
        assert result.received == 0 and result.loss == 1.0 and result.mean_ms is None
    unreachable = v.parse_ping("ping: connect: Network is unreachable\n", 20)
    assert unreachable.loss == 1.0 and "unreachable" in unreachable.note


def test_probes_missing_from_a_cut_short_run_are_lost() -> None:
    # ping killed after 3 replies: no summary line; the 7 unsent probes are still losses
    head = "\n".join(read("iputils_ok.txt").splitlines()[:4])
    result = v.parse_ping(head, 10)
    assert result.received == 3 and result.loss == pytest.approx(0.7)


def test_duplicates_do_not_count_twice() -> None:
    text = (
        "64 bytes from 198.18.0.2: icmp_seq=1 ttl=64 time=10.1 ms\n"
        "64 bytes from 198.18.0.2: icmp_seq=1 ttl=64 time=10.3 ms (DUP!)\n"
        "64 bytes from 198.18.0.2: icmp_seq=2 ttl=64 time=10.2 ms\n"
    )
    result = v.parse_ping(text, 4)
    assert result.received == 2 and result.loss == 0.5


def test_fping() -> None:
    ok = v.parse_fping(read("fping_ok.txt"), 5)
    assert ok["198.18.0.2"].received == 5
    assert ok["fd00:6e78:63::2"].loss == 0
    lossy = v.parse_fping(read("fping_loss.txt"), 10)
    assert lossy["198.18.0.2"].received == 5
    assert lossy["fd00:6e78:63::2"].loss == pytest.approx(0.4)
    assert lossy["198.18.0.9"].loss == 1.0
    assert lossy["198.18.0.9"].requested == 10


def test_iperf3() -> None:
    assert v.parse_iperf3(read("iperf3.json")) == pytest.approx(70705920554.2106)
    with pytest.raises(NxcError, match="iperf3: unable to connect"):
        v.parse_iperf3('{"start": {}, "error": "unable to connect to server"}')
    with pytest.raises(NxcError, match="did not print JSON"):
        v.parse_iperf3("iperf3: error - unable to connect")


# ------------------------------------------------------------------ expectations

DEPLOYMENT = make_deployment({"server": 1, "client": 3})


def test_expected_rtt_and_loss_formulas() -> None:
    t = (
        Topology()
        .constrain("server", "client1", delay="50ms", loss="20%")
        .constrain("client2", "server", delay="30ms", symmetric=False)
        .constrain("server", "client2", delay="10ms", corrupt="10%", symmetric=False)
    )
    plan = v.expectations(DEPLOYMENT, t.resolve(DEPLOYMENT), TOL, baseline_pairs=1)
    by_pair = {(e.src, e.dst): e for e in plan}
    sym = by_pair[("server1", "client1")]
    assert sym.delay_ms == 100.0  # 50 ms each way
    assert sym.loss == pytest.approx(1 - 0.8 * 0.8)  # 36 %: both directions drop
    assert sym.probes == math.ceil(9 * 0.36 * 0.64 / 0.05**2)  # 830
    asym = by_pair[("server1", "client2")]
    assert asym.delay_ms == 40.0
    assert asym.loss == pytest.approx(0.1)
    baseline = [e for e in plan if e.kind == "baseline"]
    assert len(baseline) == 1
    assert (baseline[0].src, baseline[0].dst) not in t.resolve(DEPLOYMENT)


def test_probe_count_bounds() -> None:
    assert v.probes_for(0.0, TOL) == TOL.min_probes
    assert v.probes_for(1.0, TOL) == TOL.min_probes
    assert v.probes_for(0.01, TOL) == 36  # 9 * .0099 / .0025 = 35.6
    assert v.probes_for(0.5, v.Tolerances(loss_abs=0.001)) == TOL.max_probes


def exp(
    delay: float = 0, jitter: float = 0, loss: float = 0, rate: int | None = None, probes: int = 20
) -> v.Expectation:
    return v.Expectation("a", "b", "constrained", delay, jitter, loss, rate, probes, "x", "x")


def test_judge_rtt() -> None:
    probe = v.ProbeResult(20, tuple([101.0] * 20))
    assert v.judge(exp(delay=100), probe, 0.5, TOL).ok
    far = v.judge(exp(delay=100), v.ProbeResult(20, tuple([125.0] * 20)), 0.5, TOL)
    assert not far.ok and far.problems == ["RTT 125.0 ms (expected 100.5 ± 10.0 ms)"]
    # small delays get the absolute tolerance
    assert v.judge(exp(delay=2), v.ProbeResult(20, tuple([6.0] * 20)), 0.0, TOL).ok
    # jitter widens the tolerance by z*sigma/sqrt(n)
    jittery = v.judge(exp(delay=100, jitter=20), v.ProbeResult(20, tuple([112.0] * 20)), 0, TOL)
    assert jittery.rtt_tolerance_ms == pytest.approx(10 + 3 * 20 / math.sqrt(20), abs=1e-3)
    assert jittery.ok


def test_judge_loss_counts_lost_probes() -> None:
    e = exp(delay=0, loss=0.36, probes=830)
    good = v.ProbeResult(830, tuple([1.0] * 540))  # 34.9 % lost
    assert v.judge(e, good, 0, TOL).ok
    bad = v.ProbeResult(830, tuple([1.0] * 700))  # 15.7 % lost
    report = v.judge(e, bad, 0, TOL)
    assert not report.ok and report.problems[0].startswith("loss 15.7% (expected 36.0% ± 5.0%")
    # no loss expected but half the probes vanished
    assert not v.judge(exp(), v.ProbeResult(20, tuple([1.0] * 10)), 0, TOL).ok


def test_judge_partition() -> None:
    e = exp(loss=1.0)
    assert v.judge(e, v.ProbeResult(20, ()), 0, TOL).ok
    leak = v.judge(e, v.ProbeResult(20, (1.0,)), 0, TOL)
    assert leak.problems == ["partitioned but 1/20 probes came back"]


def test_judge_rate() -> None:
    e = exp(rate=10_000_000)
    probe = v.ProbeResult(20, tuple([1.0] * 20))
    assert v.judge(e, probe, 0, TOL, measured_rate=9.4e6).ok
    slow = v.judge(e, probe, 0, TOL, measured_rate=5e6)
    assert slow.problems == ["rate 5.00 Mbit/s (expected 10.00 Mbit/s, -20%/+10%)"]
    assert not v.judge(e, probe, 0, TOL, measured_rate=12e6).ok
    missing = v.judge(e, probe, 0, TOL, rate_note="rate not measured: no iperf3 on b")
    assert missing.problems == ["rate not measured: no iperf3 on b"]


def test_base_rtt_is_median_of_baselines() -> None:
    plan = [
        exp(delay=100),
        *(v.Expectation("a", "b", "baseline", 0, 0, 0, None, 20, "", "") for _ in range(3)),
    ]
    probes = [
        v.ProbeResult(20, (100.0,)),
        v.ProbeResult(20, (1.0,)),
        v.ProbeResult(20, (3.0,)),
        v.ProbeResult(20, (2.0,)),
    ]
    assert v.base_rtt(plan, probes) == 2.0
    assert v.base_rtt([exp()], [v.ProbeResult(20, (5.0,))]) == 0.0


def test_report_json_and_summary() -> None:
    good = v.judge(exp(delay=10), v.ProbeResult(20, tuple([10.0] * 20)), 0, TOL)
    bad = v.judge(exp(delay=10), v.ProbeResult(20, ()), 0, TOL)
    report = v.ValidationReport("dep", "ipv4", 0.0, TOL, [good, bad])
    assert not report.ok
    data = report.to_dict()
    assert data["ok"] is False and data["pairs"][1]["measured_loss"] == 1.0
    assert "a<->b: loss 100.0%" in report.summary()
    assert report.table().row_count == 2


def test_unconstrained_pair_shaping_helpers() -> None:
    assert v._one_way_loss(None) == 0.0
    assert v._one_way_loss(PairShaping(partitioned=True)) == 1.0
    assert v._one_way_loss(PairShaping(loss=10, corrupt=10)) == pytest.approx(0.19)
