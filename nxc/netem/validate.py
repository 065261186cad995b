"""Measure the network the nodes really have, and compare it with the topology.

Three layers, the first two pure and unit-tested:

1. parsers for what the nodes print: iputils and busybox ``ping``, ``fping -C``,
   ``iperf3 -J``;
2. expectations and the comparison (:func:`expectations`, :func:`judge`), with the
   formulas below;
3. :func:`validate`, which runs the probes on the nodes in parallel, prints a table,
   writes a JSON report and raises :class:`NetworkMismatch` listing the failing pairs.

Formulas (one-way values of the topology; ``a→b`` and ``b→a`` are the two directions):

* RTT: expected = base + delay(a→b) + delay(b→a), where *base* is the median, over the
  unconstrained baseline pairs measured in the same run, of each pair's median RTT (0 when
  there are none). Tolerance = max(rtt_abs, rtt_rel x (delay(a→b) + delay(b→a)))
  + z x sqrt(jitter(a→b)² + jitter(b→a)²) / sqrt(replies). Compared with the *median* RTT
  of the replies when neither direction has jitter (netem then delays every packet by the
  same amount, and the median ignores the host's scheduling stalls, which on an emulated
  CPU hold a few consecutive replies back by up to hundreds of milliseconds), with their
  *mean* otherwise (netem's jitter tables have mean 0, not median 0: pareto's is skewed).
* loss: a probe comes back only if neither direction drops or corrupts it:
  expected = 1 - (1 - loss(a→b))(1 - corrupt(a→b))(1 - loss(b→a))(1 - corrupt(b→a));
  a partitioned direction counts as loss 1. Measured = 1 - distinct replies / probes
  asked, so probes that never came back (or were never sent because ping was cut short)
  are losses. Tolerance = max(loss_abs, z x sqrt(p(1 - p) / probes)); the number of probes
  is chosen so that z x sqrt(p(1 - p) / probes) ≤ loss_abs (between ``min_probes`` and
  ``max_probes``). A partitioned pair must lose every probe.
* rate (on request, where iperf3 is on both nodes): TCP goodput measured by the receiver,
  in each direction that has a rate (b→a with ``iperf3 -R``), must be within
  [rate x (1 - rate_low), rate x (1 + rate_high)]. Pairs with loss, corruption or a
  partition are not rate-checked (TCP cannot fill a lossy pipe).
"""

from __future__ import annotations

import json
import math
import re
import shlex
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nxc.contracts.deployment import Deployment
from nxc.errors import NxcError
from nxc.netem.model import PairShaping, Topology
from nxc.parallel import fan_out
from nxc.wait import Attempt, PollExpired, poll

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from nxc.netem.apply import MachineLike

MARK = "@@nxc"
Family = Literal["ipv4", "ipv6"]


class NetworkMismatch(NxcError):
    """The measured network is not what the topology asks for."""


# ------------------------------------------------------------------ parsers


@dataclass(frozen=True)
class ProbeResult:
    """Replies to ``requested`` probes: lost ones count, whatever the tool's summary says."""

    requested: int
    rtts_ms: tuple[float, ...]
    note: str = ""

    @property
    def received(self) -> int:
        return len(self.rtts_ms)

    @property
    def loss(self) -> float:
        if self.requested <= 0:
            return 1.0
        return max(0.0, 1.0 - self.received / self.requested)

    @property
    def mean_ms(self) -> float | None:
        return statistics.fmean(self.rtts_ms) if self.rtts_ms else None

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.rtts_ms) if self.rtts_ms else None


_PING_REPLY = re.compile(r"(?:icmp_seq|seq)=(\d+)\b.*?\btime[=<]\s*([0-9.]+)\s*ms")
_PING_ERROR = re.compile(
    r"^(?:ping|PING):?\s.*(?:unreachable|unknown|bad|invalid|not permitted)", re.IGNORECASE
)


def parse_ping(output: str, requested: int) -> ProbeResult:
    """iputils or busybox ping output → one RTT per distinct sequence number answered.

    Duplicates (``DUP!``) are ignored; replies past ``requested`` are ignored; every
    probe not answered is lost, including those ping never sent because it was stopped.
    """
    seen: dict[int, float] = {}
    note = ""
    for line in output.splitlines():
        if "DUP!" in line:
            continue
        match = _PING_REPLY.search(line)
        if match:
            seq = int(match.group(1))
            if seq not in seen:
                seen[seq] = float(match.group(2))
        elif _PING_ERROR.search(line.strip()) and not note:
            note = line.strip()
    rtts = tuple(seen[s] for s in sorted(seen))[: max(requested, 0)]
    return ProbeResult(requested, rtts, note)


def parse_fping(output: str, requested: int) -> dict[str, ProbeResult]:
    """``fping -C N -q`` output (``target : 0.05 - 0.04``) → per target; ``-`` is a loss."""
    results: dict[str, ProbeResult] = {}
    for line in output.splitlines():
        target, sep, values = line.partition(" : ")
        if not sep:
            continue
        rtts: list[float] = []
        for word in values.split()[:requested]:
            if word == "-":
                continue
            try:
                rtts.append(float(word))
            except ValueError:
                break
        results[target.strip()] = ProbeResult(requested, tuple(rtts))
    return results


def parse_iperf3(text: str) -> float:
    """Receiver-side goodput (bits/s) from ``iperf3 -c … -J``; NxcError if the test failed."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        raise NxcError(f"iperf3 did not print JSON: {text.strip()[:200]}") from None
    if not isinstance(document, dict):
        raise NxcError("iperf3 printed unexpected JSON")
    if document.get("error"):
        raise NxcError(f"iperf3: {document['error']}")
    try:
        return float(document["end"]["sum_received"]["bits_per_second"])
    except (KeyError, TypeError, ValueError):
        raise NxcError("iperf3 JSON has no end.sum_received.bits_per_second") from None


# ------------------------------------------------------------------ expectations


@dataclass(frozen=True)
class Tolerances:
    rtt_abs_ms: float = 5.0
    rtt_rel: float = 0.10
    loss_abs: float = 0.05
    z: float = 3.0
    rate_low: float = 0.20
    rate_high: float = 0.10
    min_probes: int = 20
    max_probes: int = 2000


@dataclass(frozen=True)
class Expectation:
    src: str
    dst: str
    kind: Literal["constrained", "baseline"]
    delay_ms: float  # delay(a→b) + delay(b→a)
    jitter_ms: float  # sqrt(jitter(a→b)² + jitter(b→a)²)
    loss: float  # fraction of probes expected lost, round trip
    rate_bps: int | None  # a→b rate to check, if any
    probes: int
    forward: str
    backward: str
    reverse_rate_bps: int | None = None  # b→a rate to check, if any

    @property
    def rtt_statistic(self) -> Literal["median", "mean"]:
        """What RTT is compared: the median without jitter, the mean with (module docs)."""
        return "mean" if self.jitter_ms > 0 else "median"

    @property
    def partitioned(self) -> bool:
        return self.loss >= 1.0


def probes_for(loss: float, tol: Tolerances) -> int:
    """Probes needed so that z x sqrt(p(1-p)/n) ≤ loss_abs, within [min, max]."""
    if loss <= 0 or loss >= 1:
        return tol.min_probes
    needed = math.ceil(tol.z**2 * loss * (1 - loss) / tol.loss_abs**2)
    return max(tol.min_probes, min(tol.max_probes, needed))


def _one_way_loss(shaping: PairShaping | None) -> float:
    if shaping is None:
        return 0.0
    if shaping.partitioned:
        return 1.0
    return 1 - (1 - shaping.loss / 100) * (1 - shaping.corrupt / 100)


def expectations(
    deployment: Deployment,
    pairs: Mapping[tuple[str, str], PairShaping],
    tol: Tolerances,
    baseline_pairs: int = 3,
    rate: bool = False,
) -> list[Expectation]:
    """One measurement per unordered constrained pair (from the node listed first in the
    deployment), plus up to ``baseline_pairs`` unconstrained pairs spread over the nodes."""
    names = [n.name for n in deployment.nodes]
    out: list[Expectation] = []
    unconstrained: list[tuple[str, str]] = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            fwd, back = pairs.get((a, b)), pairs.get((b, a))
            if fwd is None and back is None:
                unconstrained.append((a, b))
                continue
            delay = sum((s.delay if s and not s.partitioned else 0) for s in (fwd, back)) / 1000
            jitter = (
                math.sqrt(
                    sum((s.jitter if s and not s.partitioned else 0) ** 2 for s in (fwd, back))
                )
                / 1000
            )
            loss = 1 - (1 - _one_way_loss(fwd)) * (1 - _one_way_loss(back))
            rate_bps = reverse_rate_bps = None
            if rate and loss == 0:
                rate_bps = fwd.rate if fwd is not None else None
                reverse_rate_bps = back.rate if back is not None else None
            out.append(
                Expectation(
                    a,
                    b,
                    "constrained",
                    delay,
                    jitter,
                    loss,
                    rate_bps,
                    probes_for(loss, tol),
                    fwd.describe() if fwd else "unconstrained",
                    back.describe() if back else "unconstrained",
                    reverse_rate_bps,
                )
            )
    if unconstrained and baseline_pairs > 0:
        step = max(1, len(unconstrained) // baseline_pairs)
        for a, b in unconstrained[::step][:baseline_pairs]:
            out.append(
                Expectation(
                    a,
                    b,
                    "baseline",
                    0.0,
                    0.0,
                    0.0,
                    None,
                    tol.min_probes,
                    "unconstrained",
                    "unconstrained",
                )
            )
    return out


# ------------------------------------------------------------------ judging


@dataclass
class PairReport:
    src: str
    dst: str
    kind: str
    forward: str
    backward: str
    probes: int
    received: int
    expected_rtt_ms: float
    rtt_tolerance_ms: float
    rtt_mean_ms: float | None
    rtt_min_ms: float | None
    rtt_median_ms: float | None
    rtt_max_ms: float | None
    expected_loss: float
    loss_tolerance: float
    measured_loss: float
    expected_rate_bps: int | None = None
    measured_rate_bps: float | None = None
    expected_reverse_rate_bps: int | None = None  # dst → src
    measured_reverse_rate_bps: float | None = None
    rtt_statistic: str = "mean"  # what was compared with the expected RTT
    rtt_ms: float | None = None  # its value
    ok: bool = True
    problems: list[str] = field(default_factory=list)


def judge(
    expectation: Expectation,
    probe: ProbeResult,
    base_ms: float,
    tol: Tolerances,
    measured_rate: float | None = None,
    rate_note: str = "",
    measured_reverse_rate: float | None = None,
    reverse_rate_note: str = "",
) -> PairReport:
    """Compare one pair's measurements with what the topology asks (formulas above)."""
    e = expectation
    expected_rtt = base_ms + e.delay_ms
    rtts = sorted(probe.rtts_ms)
    measured_rtt = probe.mean_ms if e.rtt_statistic == "mean" else probe.median_ms
    rtt_tol = max(tol.rtt_abs_ms, tol.rtt_rel * e.delay_ms)
    if rtts:
        rtt_tol += tol.z * e.jitter_ms / math.sqrt(len(rtts))
    p = e.loss
    loss_tol = (
        0.0
        if p >= 1
        else max(tol.loss_abs, tol.z * math.sqrt(p * (1 - p) / max(1, probe.requested)))
    )
    report = PairReport(
        src=e.src,
        dst=e.dst,
        kind=e.kind,
        forward=e.forward,
        backward=e.backward,
        probes=probe.requested,
        received=probe.received,
        expected_rtt_ms=round(expected_rtt, 3),
        rtt_tolerance_ms=round(rtt_tol, 3),
        rtt_mean_ms=None if probe.mean_ms is None else round(probe.mean_ms, 3),
        rtt_min_ms=rtts[0] if rtts else None,
        rtt_median_ms=round(statistics.median(rtts), 3) if rtts else None,
        rtt_max_ms=rtts[-1] if rtts else None,
        expected_loss=round(p, 6),
        loss_tolerance=round(loss_tol, 6),
        measured_loss=round(probe.loss, 6),
        expected_rate_bps=e.rate_bps,
        measured_rate_bps=measured_rate,
        expected_reverse_rate_bps=e.reverse_rate_bps,
        measured_reverse_rate_bps=measured_reverse_rate,
        rtt_statistic=e.rtt_statistic,
        rtt_ms=None if measured_rtt is None else round(measured_rtt, 3),
    )
    problems = report.problems
    if p >= 1:
        if probe.received:
            problems.append(f"partitioned but {probe.received}/{probe.requested} probes came back")
    else:
        if abs(probe.loss - p) > loss_tol:
            problems.append(
                f"loss {probe.loss:.1%} (expected {p:.1%} ± {loss_tol:.1%} over "
                f"{probe.requested} probes)"
            )
        if measured_rtt is None:
            if not problems:
                problems.append("no reply at all")
        elif abs(measured_rtt - expected_rtt) > rtt_tol:
            problems.append(
                f"RTT {measured_rtt:.1f} ms (expected {expected_rtt:.1f} ± {rtt_tol:.1f} ms)"
            )
    if probe.note and probe.received < probe.requested and p < 1:
        problems.append(probe.note)
    for label, asked, got, note in (
        ("rate", e.rate_bps, measured_rate, rate_note),
        (f"rate {e.dst}->{e.src}", e.reverse_rate_bps, measured_reverse_rate, reverse_rate_note),
    ):
        if asked is None:
            continue
        if got is None:
            if note:
                problems.append(note)
            continue
        if not asked * (1 - tol.rate_low) <= got <= asked * (1 + tol.rate_high):
            problems.append(
                f"{label} {got / 1e6:.2f} Mbit/s (expected "
                f"{asked / 1e6:.2f} Mbit/s, -{tol.rate_low:.0%}/+{tol.rate_high:.0%})"
            )
    report.ok = not problems
    return report


def base_rtt(expectations_: Sequence[Expectation], probes: Sequence[ProbeResult]) -> float:
    """Median of the baseline pairs' median RTTs (0 if none answered).

    Medians, not means: the base is what the emulated path costs when nothing is in the
    way, and one scheduling stall of a VM during its few probes must not move the
    expectation of every other pair (with three nodes there is one baseline pair only).
    """
    medians = [
        p.median_ms
        for e, p in zip(expectations_, probes, strict=True)
        if e.kind == "baseline" and p.median_ms is not None
    ]
    return statistics.median(medians) if medians else 0.0


@dataclass
class ValidationReport:
    deployment: str
    family: str
    base_rtt_ms: float
    tolerances: Tolerances
    pairs: list[PairReport]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.pairs)

    @property
    def failures(self) -> list[PairReport]:
        return [p for p in self.pairs if not p.ok]

    def pair(self, a: str, b: str) -> PairReport:
        """The measurement between nodes ``a`` and ``b``, whichever of them pinged.

        Each unordered pair is measured once, from the node listed first in the
        deployment (roles come in manifest order, which Nix sorts by name): ask for the
        pair, not for a direction. KeyError if the pair was not measured.
        """
        for p in self.pairs:
            if {p.src, p.dst} == {a, b}:
                return p
        measured = ", ".join(f"{p.src}<->{p.dst}" for p in self.pairs) or "none"
        raise KeyError(f"no measurement between {a} and {b} (measured: {measured})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "nxc_netem_validation": 1,
            "deployment": self.deployment,
            "family": self.family,
            "ok": self.ok,
            "base_rtt_ms": round(self.base_rtt_ms, 3),
            "tolerances": asdict(self.tolerances),
            "pairs": [asdict(p) for p in self.pairs],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def summary(self) -> str:
        if self.ok:
            return f"network as expected: {len(self.pairs)} pairs within tolerance"
        bad = "; ".join(f"{p.src}<->{p.dst}: {', '.join(p.problems)}" for p in self.failures)
        count = f"{len(self.failures)}/{len(self.pairs)} pairs"
        return f"network not as the topology asks ({count}): {bad}"

    def table(self) -> Table:
        from rich.table import Table

        table = Table(title=f"netem validation ({self.family}, base RTT {self.base_rtt_ms:.2f} ms)")
        for column in ("pair", "asked", "RTT ms", "expected", "loss", "expected", "rate", "ok"):
            table.add_column(column)
        for p in self.pairs:
            asked = p.forward if p.forward == p.backward else f"→ {p.forward} / ← {p.backward}"
            rates = []
            for arrow, wanted, measured in (
                ("→ ", p.expected_rate_bps, p.measured_rate_bps),
                ("← ", p.expected_reverse_rate_bps, p.measured_reverse_rate_bps),
            ):
                if wanted is not None:
                    got = "-" if measured is None else f"{measured / 1e6:.1f}"
                    rates.append(f"{arrow}{got}/{wanted / 1e6:.1f} Mbit/s")
            rate = ", ".join(rates)
            table.add_row(
                f"{p.src} ↔ {p.dst}" + (" (baseline)" if p.kind == "baseline" else ""),
                asked,
                "-" if p.rtt_ms is None else f"{p.rtt_ms:.2f} ({p.rtt_statistic})",
                f"{p.expected_rtt_ms:.1f} ± {p.rtt_tolerance_ms:.1f}",
                f"{p.measured_loss:.1%} ({p.received}/{p.probes})",
                f"{p.expected_loss:.1%} ± {p.loss_tolerance:.1%}",
                rate,
                "[green]ok[/green]" if p.ok else "[red]" + "; ".join(p.problems) + "[/red]",
            )
        return table


# ------------------------------------------------------------------ running on nodes


def ping_command(
    targets: Sequence[tuple[str, int]], interval: float, wait_s: int, family: Family
) -> str:
    """Shell text pinging every (address, count) at once; output marked per target."""
    six = " -6" if family == "ipv6" else ""
    lines = ["d=$(mktemp -d /tmp/nxc-ping.XXXXXX) || exit 1"]
    for i, (address, count) in enumerate(targets):
        lines.append(
            f"ping{six} -n -c {count} -i {interval:g} -W {wait_s} {shlex.quote(address)} "
            f'> "$d/{i}" 2>&1 &'
        )
    lines.append("wait")
    for i in range(len(targets)):
        lines.append(f'echo "{MARK} probe {i}"; cat "$d/{i}"')
    lines.append('rm -rf "$d"')
    return "\n".join(lines)


def _split_probes(output: str) -> dict[int, str]:
    chunks: dict[int, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith(f"{MARK} probe "):
            current = chunks.setdefault(int(line.split()[2]), [])
            continue
        if current is not None:
            current.append(line)
    return {k: "\n".join(v) for k, v in chunks.items()}


def _address(deployment: Deployment, name: str, family: Family) -> str:
    node = deployment.node(name)
    return node.ipv6 if family == "ipv6" else node.ipv4


def listening_command(port: int) -> str:
    """Succeeds once something listens on TCP ``port`` (from /proc: no tool needed)."""
    return f"grep -q ':{port:04X} 0\\{{8,32\\}}:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null"


def wait_listening(machine: MachineLike, name: str, port: int, timeout: float = 30) -> None:
    def check(_remaining: float) -> Attempt[bool]:
        status, _ = machine.execute(listening_command(port), timeout=10)
        return Attempt.ok(True) if status == 0 else Attempt.not_yet(f"nothing listens on {port}")

    try:
        poll(f"iperf3 on {name} to listen on port {port}", check, timeout)
    except PollExpired as exc:
        raise NxcError(f"{name}: {exc}") from None


def _measure_rate(
    deployment: Deployment,
    machines: Mapping[str, MachineLike],
    e: Expectation,
    port: int,
    seconds: int,
    family: Family,
    reverse: bool = False,
) -> tuple[float | None, str]:
    """Goodput src→dst (dst→src with ``reverse``: ``iperf3 -R``, the server sends), as
    measured by the receiver; iperf3 runs as client on src, as a one-off server on dst."""
    client, server = machines[e.src], machines[e.dst]
    for name, machine in ((e.src, client), (e.dst, server)):
        status, _ = machine.execute("command -v iperf3 >/dev/null 2>&1", timeout=30)
        if status != 0:
            return None, f"rate not measured: no iperf3 on {name}"
    pidfile = f"/tmp/nxc-iperf3-{port}.pid"
    status, output = server.execute(f"iperf3 -s -1 -D -p {port} -I {pidfile} 2>&1", timeout=30)
    if status != 0:
        return None, f"rate not measured: iperf3 server on {e.dst}: {output.strip()[:120]}"
    try:
        address = _address(deployment, e.dst, family)
        flags = " -R" if reverse else ""
        # ``iperf3 -s -D`` returns before the daemon listens: wait until it does.
        wait_listening(server, e.dst, port)
        _, text = client.execute(
            f"iperf3 -c {shlex.quote(address)} -p {port} -t {seconds}{flags} -J 2>&1",
            timeout=seconds + 60,
        )
        return parse_iperf3(text), ""
    except NxcError as exc:
        return None, f"rate not measured: {exc}"
    finally:
        server.execute(
            f'if [ -f {pidfile} ]; then kill "$(cat {pidfile})" 2>/dev/null || true; fi; '
            f"rm -f {pidfile}",
            timeout=30,
        )


def validate(
    deployment: Deployment,
    machines: Mapping[str, MachineLike],
    topology: Topology,
    *,
    tolerances: Tolerances | None = None,
    family: Family = "ipv4",
    interval: float = 0.02,
    baseline_pairs: int = 3,
    rate: bool = False,
    rate_seconds: int = 5,
    report: Path | str | None = None,
    console: Console | None = None,
    check: bool = True,
    max_workers: int = 32,
) -> ValidationReport:
    """Measure every constrained pair (and a few baseline pairs), compare, report.

    Prints a table on ``console`` (rich; nothing if None), writes the JSON report to
    ``report`` if given, and raises NetworkMismatch when ``check`` and a pair is off.
    """
    tol = tolerances or Tolerances()
    pairs = topology.resolve(deployment)
    plan = expectations(deployment, pairs, tol, baseline_pairs, rate)
    by_source: dict[str, list[int]] = {}
    for i, e in enumerate(plan):
        by_source.setdefault(e.src, []).append(i)
    probes: list[ProbeResult | None] = [None] * len(plan)

    def run(source: str) -> None:
        indexes = by_source[source]
        targets = [(_address(deployment, plan[i].dst, family), plan[i].probes) for i in indexes]
        longest = max(plan[i].delay_ms + 4 * plan[i].jitter_ms for i in indexes)
        wait_s = max(2, math.ceil(3 * longest / 1000) + 1)
        duration = max(count for _, count in targets) * interval + wait_s
        status, output = machines[source].execute(
            ping_command(targets, interval, wait_s, family), timeout=int(duration * 2) + 60
        )
        chunks = _split_probes(output)
        for k, i in enumerate(indexes):
            text = chunks.get(k, "")
            result = parse_ping(text, plan[i].probes)
            if not text.strip():
                result = ProbeResult(plan[i].probes, (), f"no ping output (status {status})")
            elif "not found" in text and not result.rtts_ms:
                result = ProbeResult(plan[i].probes, (), f"{source}: ping not available")
            probes[i] = result

    if plan:
        for outcome in fan_out(run, list(by_source), workers=max_workers):
            if outcome.error is not None:
                raise outcome.error
    done = [
        p if p is not None else ProbeResult(e.probes, ()) for e, p in zip(plan, probes, strict=True)
    ]
    base = base_rtt(plan, done)
    reports: list[PairReport] = []
    port = 5301
    for e, probe in zip(plan, done, strict=True):
        measured: float | None = None
        measured_reverse: float | None = None
        note = reverse_note = ""
        if e.rate_bps is not None:
            measured, note = _measure_rate(deployment, machines, e, port, rate_seconds, family)
            port += 1
        if e.reverse_rate_bps is not None:
            measured_reverse, reverse_note = _measure_rate(
                deployment, machines, e, port, rate_seconds, family, reverse=True
            )
            port += 1
        reports.append(judge(e, probe, base, tol, measured, note, measured_reverse, reverse_note))
    result = ValidationReport(deployment.id, family, base, tol, reports)
    if console is not None:
        console.print(result.table())
        console.print(result.summary())
    if report is not None:
        path = Path(report)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(result.to_json())
    if check and not result.ok:
        raise NetworkMismatch(result.summary())
    return result
