"""Generated batches applied for real with this host's tc, inside network namespaces.

The host kernel has no netem (see MACHINE-NOTES), so the trees are built with a
substitute leaf (pfifo) — same classes, handles and filters — and the netem arguments are
checked separately: tc parses them in user space before the kernel refuses the kind, so a
"kind is unknown" answer proves the syntax. Everything lives in namespaces made here.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from rich.console import Console

from nxc.netem import tcgen
from nxc.netem.apply import Netem, NetemMissing
from nxc.netem.model import Topology
from nxc.netem.netns import NetnsMachine, lab, make_deployment
from nxc.netem.tcgen import GenOptions
from nxc.netem.validate import NetworkMismatch

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("tc") is None or shutil.which("ip") is None,
    reason="needs root and iproute2 to make network namespaces",
)

DEPLOYMENT = make_deployment({"server": 1, "client": 2})
SUBSTITUTE = GenOptions(leaf="pfifo")


@pytest.fixture
def nodes() -> Iterator[dict[str, NetnsMachine]]:
    with lab(DEPLOYMENT) as machines:
        yield machines


def sh(machine: NetnsMachine, command: str) -> str:
    status, output = machine.execute(command + " 2>&1", timeout=30)
    assert status == 0, output
    return output


def test_tree_is_accepted_and_reset_removes_exactly_it(nodes: dict[str, NetnsMachine]) -> None:
    server = nodes["server1"]
    # things that are not nxc's: an ingress filter on the NIC and a qdisc on another device
    sh(server, "tc qdisc add dev nxc0 handle ffff: ingress")
    sh(
        server,
        "tc filter add dev nxc0 parent ffff: protocol ip prio 7 u32 match u32 0 0 "
        "action mirred egress redirect dev lo",
    )
    sh(
        server,
        "ip link add foreign0 type ifb && tc qdisc add dev foreign0 root handle 1: "
        "tbf rate 1mbit burst 10kb latency 50ms",
    )
    before = sh(server, "tc qdisc show; tc filter show dev nxc0 ingress")

    topology = (
        Topology()
        .constrain("server", "client", delay="50ms", rate="100mbit")
        .constrain("client2", "server", rate="10mbit", side="destination", symmetric=False)
    )
    net = Netem(DEPLOYMENT, nodes, topology, options=SUBSTITUTE)
    net.apply()
    qdiscs = sh(server, "tc qdisc show dev nxc0")
    assert "qdisc htb 6e78: root" in qdiscs
    assert "qdisc pfifo 8002: parent 6e78:3 limit 1417p" in qdiscs
    ifb = sh(server, "tc qdisc show dev nxi-nxc0; tc filter show dev nxi-nxc0")
    assert "qdisc htb 6e78: root" in ifb and "match c6120003/ffffffff at 12" in ifb
    ingress = sh(server, "tc filter show dev nxc0 ingress")
    assert "pref 28280" in ingress and "pref 7" in ingress
    filters = sh(server, "tc filter show dev nxc0")
    assert filters.count("flowid 6e78:") == 4  # 2 clients x (IPv4 + IPv6)
    assert "match fd006e78/ffffffff at 24" in filters  # the IPv6 filter is real u32
    classes = sh(nodes["client1"], "tc class show dev nxc0")
    assert "class htb 6e78:2 root leaf 8001: prio 0 rate 100Mbit" in classes

    net.reset()
    assert sh(server, "tc qdisc show; tc filter show dev nxc0 ingress") == before
    assert "nxi-" not in sh(server, "ip link")
    for name in ("client1", "client2"):
        assert sh(nodes[name], "tc qdisc show dev nxc0").startswith("qdisc noqueue 0: root")


def test_run_time_changes_keep_the_filters(nodes: dict[str, NetnsMachine]) -> None:
    net = Netem(
        DEPLOYMENT,
        nodes,
        Topology().constrain("server", "client1", rate="20mbit"),
        options=SUBSTITUTE,
    )
    net.apply()
    handles = sh(nodes["server1"], "tc filter show dev nxc0")
    net.set("server", "client1", rate="5mbit")
    net.set("server", "client2", rate="7mbit")
    net.partition("server", "client1")
    net.heal()
    classes = sh(nodes["server1"], "tc class show dev nxc0")
    assert "class htb 6e78:3 root leaf 8002: prio 0 rate 5Mbit" in classes
    assert "class htb 6e78:4 root leaf 8003: prio 0 rate 7Mbit" in classes
    after = sh(nodes["server1"], "tc filter show dev nxc0")
    assert all(line in after for line in handles.splitlines())  # same filters, same handles
    assert after.count("flowid") == 4
    net.reset()
    assert "6e78" not in sh(nodes["server1"], "tc qdisc show")


def test_foreign_root_qdisc_is_refused_and_kept(nodes: dict[str, NetnsMachine]) -> None:
    client = nodes["client2"]
    sh(client, "tc qdisc add dev nxc0 root handle 1: tbf rate 5mbit burst 10kb latency 50ms")
    net = Netem(
        DEPLOYMENT,
        nodes,
        Topology().constrain("server", "client", rate="20mbit"),
        options=SUBSTITUTE,
    )
    with pytest.raises(
        tcgen.ForeignQdisc, match=r"client2: nxc0 already has a root qdisc .*tbf 1:"
    ):
        net.apply()
    assert "6e78" in sh(nodes["client1"], "tc qdisc show dev nxc0")
    net.reset()
    assert sh(client, "tc qdisc show dev nxc0").startswith("qdisc tbf 1: root")
    assert "6e78" not in sh(nodes["client1"], "tc qdisc show dev nxc0")


def test_missing_netem_is_reported_per_node(nodes: dict[str, NetnsMachine]) -> None:
    net = Netem(DEPLOYMENT, nodes, Topology().constrain("server", "client", delay="5ms"))
    with pytest.raises(NetemMissing) as info:
        net.apply()
    message = str(info.value)
    assert message.startswith(
        "netem apply failed on 3 nodes: server1: the kernel has no 'netem' qdisc (sch_netem)"
    )
    assert "\n" not in message
    for machine in nodes.values():
        assert "6e78" not in sh(machine, "tc qdisc show")
    assert net.probe()["client1"]["htb"] == "ok"


def test_netem_arguments_pass_tc_parsing(nodes: dict[str, NetnsMachine]) -> None:
    topology = (
        Topology()
        .constrain(
            "server",
            "client1",
            delay="50ms",
            jitter="5ms",
            distribution="normal",
            loss="0.5%",
            corrupt="0.1%",
            duplicate="1%",
            reorder="25%",
        )
        .constrain(
            "server", "client2", delay="1.5ms", jitter="250us", distribution="pareto", rate="10kbit"
        )
        .constrain("client1", "client2", jitter="1ms", distribution="paretonormal")
        .partition("client2", "client1")
    )
    server = nodes["server1"]
    sh(server, "tc qdisc add dev nxc0 root handle 6e78: htb default 1")
    sh(server, "tc class add dev nxc0 parent 6e78: classid 6e78:9 htb rate 1mbit")
    lines = [
        line
        for script in tcgen.install_all(tcgen.plan(topology, DEPLOYMENT)).values()
        for line in script.tc
        if " netem " in line
    ]
    assert len(lines) == 6
    for line in lines:
        args = line.split(" netem ", 1)[1]
        status, output = server.execute(
            f"tc qdisc add dev nxc0 parent 6e78:9 handle 99: netem {args} 2>&1", timeout=30
        )
        assert status != 0
        assert "Specified qdisc kind is unknown" in output, (args, output)
    sh(server, "tc qdisc del dev nxc0 root")


def test_validation_measures_rate_and_catches_missing_delay(
    nodes: dict[str, NetnsMachine],
) -> None:
    if shutil.which("ping") is None:
        pytest.skip("no ping on this host")
    net = Netem(
        DEPLOYMENT,
        nodes,
        Topology().constrain("server", "client1", rate="20mbit"),
        options=SUBSTITUTE,
    )
    net.apply()
    rate = shutil.which("iperf3") is not None
    report = net.validate(rate=rate, rate_seconds=2, console=Console(file=io.StringIO()))
    assert report.ok
    pair = next(p for p in report.pairs if p.kind == "constrained")
    assert pair.probes == pair.received == 20
    if rate:
        assert pair.measured_rate_bps is not None
        assert 16e6 <= pair.measured_rate_bps <= 22e6
    # the substitute leaf does not delay: asking for 50 ms must fail validation
    net.set("server", "client2", delay="50ms")
    with pytest.raises(NetworkMismatch, match=r"server1<->client2: RTT \d"):
        net.validate()
    net.reset()


def test_lab_is_cleaned_up() -> None:
    with lab(DEPLOYMENT) as machines:
        names = {m.netns for m in machines.values()}
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(re.search(rf"^{n}\b", listed, re.M) for n in names)
