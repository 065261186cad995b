"""Network emulation with real netem, in QEMU guests (the host kernel has none).

Expects a ``cluster`` fixture (wired by the VM runtime) for a 3-node deployment with roles
``server`` (server1) and ``client`` (client1, client2), giving the deployment and the
driver machines: either an object with ``.deployment`` and ``.machines`` (name ->
Machine), or a ``(deployment, machines)`` tuple.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from nxc.contracts.deployment import Deployment
from nxc.errors import ContractError
from nxc.netem import Netem, NetemMissing, Topology
from nxc.netem.validate import NetworkMismatch

pytestmark = pytest.mark.vm


def _unpack(cluster: Any) -> tuple[Deployment, Mapping[str, Any]]:
    if isinstance(cluster, tuple):
        return cluster[0], cluster[1]
    return cluster.deployment, cluster.machines


@pytest.fixture
def netem(cluster: Any) -> Iterator[Netem]:
    deployment, machines = _unpack(cluster)
    assert {n.name for n in deployment.nodes} >= {"server1", "client1", "client2"}
    net = Netem(deployment, machines)
    net.reset()
    yield net
    net.reset()


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
    report = netem.validate()
    assert report.ok
    server_client = report.pair("server1", "client1")
    assert server_client.rtt_mean_ms is not None and 95 <= server_client.rtt_mean_ms <= 115
    clients = report.pair("client1", "client2")
    assert clients.kind == "baseline"
    assert clients.rtt_mean_ms is not None and clients.rtt_mean_ms < 20


def test_loss_20_percent_over_enough_probes(netem: Netem) -> None:
    netem.apply(Topology().constrain("server", "client1", loss="20%", symmetric=False))
    report = netem.validate()
    pair = report.pair("server1", "client1")
    assert pair.expected_loss == pytest.approx(0.2)
    assert pair.probes >= 500  # 9 * 0.2 * 0.8 / 0.05^2 = 576
    assert abs(pair.measured_loss - 0.2) <= pair.loss_tolerance


def test_rate_limit_where_iperf3_is_installed(netem: Netem) -> None:
    for machine in netem.machines.values():
        if machine.execute("command -v iperf3 >/dev/null", timeout=30)[0] != 0:
            pytest.skip("iperf3 is not in the test image")
    netem.apply(Topology().constrain("server", "client1", rate="10mbit"))
    report = netem.validate(rate=True, rate_seconds=5)
    pair = next(p for p in report.pairs if p.expected_rate_bps)
    assert pair.measured_rate_bps is not None
    assert 8e6 <= pair.measured_rate_bps <= 11e6


def test_partition_then_heal_at_run_time(netem: Netem) -> None:
    netem.apply(Topology().constrain("server", "client", delay="10ms"))
    assert _ping(netem, "client1", "server1")[0] == 0
    netem.partition(["server"], ["client1"])
    status, output = _ping(netem, "client1", "server1")
    assert status != 0 and (" 0 received" in output or " 0 packets received" in output)
    assert _ping(netem, "client2", "server1")[0] == 0  # only client1 is cut off
    assert netem.validate().ok  # the partition is what was asked: every probe lost
    with pytest.raises(NetworkMismatch, match="server1<->client1"):
        Netem(netem.deployment, netem.machines, netem.topology.healed()).validate()
    netem.heal()
    assert _ping(netem, "client1", "server1")[0] == 0
    assert netem.validate().ok


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
    report = Netem(netem.deployment, netem.machines).validate(baseline_pairs=3)
    assert report.ok and all(p.rtt_mean_ms is not None and p.rtt_mean_ms < 20 for p in report.pairs)


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


def test_missing_netem_module_is_named(netem: Netem) -> None:
    machine = netem.machines["client2"]
    machine.execute("rmmod sch_netem 2>&1", timeout=30)
    loaded = machine.execute("[ -d /sys/module/sch_netem ]", timeout=30)[0] == 0
    if loaded:
        pytest.skip("sch_netem is built in (or in use) in this guest kernel")
    machine.execute(
        "mkdir -p /etc/modprobe.d && echo 'install sch_netem /bin/false' "
        "> /etc/modprobe.d/nxc-test-no-netem.conf",
        timeout=30,
    )
    try:
        fresh = Netem(
            netem.deployment, netem.machines, Topology().constrain("server", "client", delay="5ms")
        )
        with pytest.raises(NetemMissing, match=r"client2: the kernel has no 'netem' qdisc"):
            fresh.apply()
    finally:
        machine.execute(
            "rm -f /etc/modprobe.d/nxc-test-no-netem.conf; modprobe sch_netem", timeout=30
        )
