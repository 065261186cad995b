"""Network emulation with real netem, in QEMU guests (the host kernel has none).

Uses the ``cluster`` fixture (tests/e2e/conftest.py): a 3-node selftest deployment with
roles ``client`` (client1, client2) and ``server`` (server1), started by the real CLI, and
one driver Machine per node.

Validation measures each unordered pair once, from the node listed first in the
deployment (here client1, client2, server1: Nix sorts the roles), so pairs are looked up
with ``report.pair(a, b)``, never by direction. Every validation prints its table (shown
by pytest when a test fails).

What the figures look like on a 2-core host running three TCG guests: the unshaped path
costs about 1 ms (median RTT 0.5 to 2 ms); single replies are late by 2 to 30 ms now and
then, and a guest descheduled by the host holds a few consecutive replies back by up to
~150 ms. Without jitter the validation compares the median RTT, which those stalls do
not move; the default tolerance (max(5 ms, 10 % of the added delay)) covers the rest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from nxc.errors import ContractError
from nxc.netem import Netem, NetemMissing, Topology
from nxc.netem.validate import NetworkMismatch, ValidationReport
from nxc.project import Project
from tests.conftest import run_nxc
from tests.e2e.conftest import VmCluster

pytestmark = pytest.mark.vm

NODES = ("client1", "client2", "server1")


@pytest.fixture
def netem(cluster: VmCluster) -> Iterator[Netem]:
    assert {n.name for n in cluster.deployment.nodes} >= set(NODES)
    net = Netem(cluster.deployment, cluster.machines)
    net.reset()
    yield net
    net.reset()


def _validate(net: Netem, **kwargs: Any) -> ValidationReport:
    """Validate, printing the table (captured: pytest shows it if the test fails)."""
    return net.validate(console=Console(width=160), **kwargs)


def _ping(net: Netem, src: str, dst: str, count: int = 5) -> tuple[int, str]:
    address = net.deployment.node(dst).ipv4
    status, output = net.machines[src].execute(
        f"ping -c {count} -i 0.2 -W 1 {address} 2>&1", timeout=60
    )
    return status, output


def _qdiscs(net: Netem, name: str) -> str:
    tools = net._tools_for(name, probe=False)
    _, output = net.machines[name].execute(f"{tools.tc} qdisc show 2>&1", timeout=30)
    return output


def test_delay_50ms_is_validated_and_clients_stay_unconstrained(netem: Netem) -> None:
    netem.apply(Topology().constrain("server", "client", delay="50ms"))
    report = _validate(netem)
    assert report.ok
    server_client = report.pair("server1", "client1")
    # no jitter: the median RTT is what was compared (a stalled guest does not move it)
    assert server_client.rtt_statistic == "median"
    assert server_client.rtt_ms is not None and 95 <= server_client.rtt_ms <= 115
    clients = report.pair("client1", "client2")
    assert clients.kind == "baseline"
    assert clients.rtt_ms is not None and clients.rtt_ms < 20


def test_loss_20_percent_over_enough_probes(netem: Netem) -> None:
    netem.apply(Topology().constrain("server", "client1", loss="20%", symmetric=False))
    report = _validate(netem)
    pair = report.pair("server1", "client1")
    assert pair.expected_loss == pytest.approx(0.2)
    assert pair.probes >= 500  # 9 * 0.2 * 0.8 / 0.05^2 = 576
    assert abs(pair.measured_loss - 0.2) <= pair.loss_tolerance


def test_rate_limit_in_each_direction_where_iperf3_is_installed(netem: Netem) -> None:
    for machine in netem.machines.values():
        if machine.execute("command -v iperf3 >/dev/null", timeout=30)[0] != 0:
            pytest.skip("iperf3 is not in the test image")
    # a different rate each way: a check of the wrong direction cannot pass
    netem.apply(
        Topology()
        .constrain("server", "client1", rate="10mbit", symmetric=False)
        .constrain("client1", "server", rate="5mbit", symmetric=False)
    )
    report = _validate(netem, rate=True, rate_seconds=5)
    pair = report.pair("server1", "client1")
    by_direction = {
        (pair.src, pair.dst): (pair.expected_rate_bps, pair.measured_rate_bps),
        (pair.dst, pair.src): (pair.expected_reverse_rate_bps, pair.measured_reverse_rate_bps),
    }
    assert by_direction[("server1", "client1")][0] == 10_000_000
    assert by_direction[("client1", "server1")][0] == 5_000_000
    for (src, dst), (asked, measured) in by_direction.items():
        assert asked is not None and measured is not None, (src, dst)
        assert 0.8 * asked <= measured <= 1.1 * asked, (src, dst, measured)


def test_partition_then_heal_at_run_time(netem: Netem) -> None:
    netem.apply(Topology().constrain("server", "client", delay="10ms"))
    assert _ping(netem, "client1", "server1")[0] == 0
    netem.partition(["server"], ["client1"])
    status, output = _ping(netem, "client1", "server1")
    assert status != 0 and (" 0 received" in output or " 0 packets received" in output)
    assert _ping(netem, "client2", "server1")[0] == 0  # only client1 is cut off
    assert _validate(netem).ok  # the partition is what was asked: every probe lost
    # whichever node pinged, the summary names the pair and the lost probes
    with pytest.raises(NetworkMismatch, match=r"(server1<->client1|client1<->server1): loss 100"):
        _validate(Netem(netem.deployment, netem.machines, netem.topology.healed()))
    netem.heal()
    assert _ping(netem, "client1", "server1")[0] == 0
    assert _validate(netem).ok


def test_reset_returns_to_baseline_and_removes_every_nxc_qdisc(netem: Netem) -> None:
    netem.apply(
        Topology()
        .constrain("server", "client", delay="30ms", rate="50mbit")
        .constrain("client1", "client2", delay="5ms", side="destination")
    )
    assert "6e78:" in _qdiscs(netem, "server1")
    netem.reset()
    for name in netem.machines:
        output = _qdiscs(netem, name)
        assert "6e78:" not in output and "nxi-" not in output, (name, output)
    report = _validate(Netem(netem.deployment, netem.machines), baseline_pairs=3)
    assert report.ok and len(report.pairs) == 3
    assert all(p.rtt_ms is not None and p.rtt_ms < 20 for p in report.pairs)


def test_schema_errors_are_one_line(netem: Netem) -> None:
    with pytest.raises(ContractError) as info:
        netem.apply(
            {
                "nxc_topology": 1,
                "constraints": [{"from": "server", "to": "client", "delay": "50 ms"}],
            }
        )
    assert str(info.value) == (
        "topology: constraints[0].delay: '50 ms' is not a duration (e.g. 50ms)"
    )


def test_missing_netem_module_is_named(cluster: VmCluster, netem: Netem) -> None:
    machine = cluster.machines["client2"]
    machine.execute("rmmod sch_netem 2>&1", timeout=30)
    loaded = machine.execute("[ -d /sys/module/sch_netem ]", timeout=30)[0] == 0
    if loaded:
        pytest.skip("sch_netem is built in (or in use) in this guest kernel")
    # Take the module file away (the root file system is the guest's own ramdisk): busybox
    # modprobe ignores modprobe.d "install"/"blacklist" lines, so they cannot hide it.
    files = machine.succeed(
        'find "/lib/modules/$(uname -r)" -name "sch_netem.ko*" 2>/dev/null', timeout=30
    ).split()
    assert files, "sch_netem is neither loaded nor installed: the probe said it was there"
    machine.succeed(*(f"mv {f} {f}.nxc-hidden" for f in files), timeout=30)
    try:
        fresh = Netem(
            netem.deployment, netem.machines, Topology().constrain("server", "client", delay="5ms")
        )
        with pytest.raises(NetemMissing, match=r"client2: the kernel has no 'netem' qdisc"):
            fresh.apply()
    finally:
        for f in files:
            machine.execute(f"mv {f}.nxc-hidden {f}", timeout=30)
        machine.execute("modprobe sch_netem", timeout=30)
    assert machine.execute("[ -d /sys/module/sch_netem ]", timeout=30)[0] == 0


TOPOLOGY_FILE = """\
nxc_topology: 1
description: servers 20 ms away from clients
constraints:
  - {from: server, to: client, delay: 20ms}
"""


def test_cli_apply_show_validate_reset(cluster: VmCluster, netem: Netem, tmp_path: Path) -> None:
    """``nxc netem …`` as a user runs it, against the running deployment."""
    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY_FILE)
    project = cluster.project_dir
    recorded = Project(project).current_dir / "netem-topology.json"

    def nxc(*args: str, ok: bool = True) -> tuple[str, str]:
        result = run_nxc("netem", *args, cwd=project, timeout=300)
        assert (result.returncode == 0) == ok, (args, result.returncode, result.stderr[-3000:])
        return result.stdout, result.stderr

    # QEMU serves one backdoor client per VM: let the CLI processes have the nodes
    with cluster.detached():
        out, _ = nxc("apply", str(topology))
        assert "netem: applied on 3 nodes (4 shaped pairs)" in out
        assert recorded.is_file()

        out, _ = nxc("show")
        assert f"topology ({recorded}):" in out
        for client in ("client1", "client2"):
            assert f"{client} -> server1: delay 20ms" in out
            assert f"server1 -> {client}: delay 20ms" in out
        assert "client1 -> client2" not in out
        for name in NODES:
            assert f"--- {name} (nxc0)" in out
        assert out.count("qdisc htb 6e78: root") == 3 and "delay 20ms" in out

        out, _ = nxc("validate", "--json")
        document = json.loads(out)
        assert document["ok"] is True and len(document["pairs"]) == 3
        for pair in document["pairs"]:
            shaped = "server1" in (pair["src"], pair["dst"])
            assert pair["kind"] == ("constrained" if shaped else "baseline")
            assert pair["expected_rtt_ms"] == pytest.approx(
                document["base_rtt_ms"] + (40 if shaped else 0), abs=0.01
            )
            assert pair["received"] == pair["probes"] == 20

        # A network that is not what the topology asks: the same tree with leaves that do
        # not delay (the hidden --leaf option, for tests). validate must fail, and say why.
        out, _ = nxc("apply", str(topology), "--leaf", "pfifo")
        out, err = nxc("validate", "--report", str(tmp_path / "report.json"), ok=False)
        assert "network not as the topology asks (2/3 pairs)" in err
        assert "client1<->server1: RTT" in err and "client2<->server1: RTT" in err
        assert "netem validation" in out  # the table
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["ok"] is False

        out, _ = nxc("reset")
        assert "netem: reset on 3 nodes" in out
        assert not recorded.exists()
        out, _ = nxc("show")
        assert "(no constraint: every pair unshaped)" in out and "6e78:" not in out

    # this process has the nodes again
    for name in NODES:
        assert "6e78:" not in _qdiscs(netem, name)
