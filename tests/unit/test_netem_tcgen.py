from __future__ import annotations

import re

import pytest

from nxc.netem import tcgen
from nxc.netem.model import PairShaping, Topology
from nxc.netem.netns import make_deployment
from nxc.netem.tcgen import GenOptions, InstalledState, Qdisc

OPTS = GenOptions()
SMALL = make_deployment({"server": 1, "client": 2})


def scripts(topology: Topology, deployment=SMALL, options: GenOptions = OPTS):  # type: ignore[no-untyped-def]
    return tcgen.install_all(tcgen.plan(topology, deployment), options)


def test_server_client_tree() -> None:
    t = Topology().constrain("server", "client", delay="50ms", loss="1%", rate="100mbit")
    out = scripts(t)
    assert out["server1"].tc == (
        "qdisc add dev nxc0 root handle 6e78: htb default 1",
        "class add dev nxc0 parent 6e78: classid 6e78:1 htb rate 100gbit ceil 100gbit "
        "burst 25000000 cburst 25000000 quantum 60000",
        "qdisc add dev nxc0 parent 6e78:1 handle 8000: pfifo limit 1000",
        "class add dev nxc0 parent 6e78: classid 6e78:3 htb rate 100mbit ceil 100mbit "
        "burst 25000 cburst 25000 quantum 60000",
        "qdisc add dev nxc0 parent 6e78:3 handle 8002: netem limit 1417 delay 50ms loss 1%",
        "class add dev nxc0 parent 6e78: classid 6e78:4 htb rate 100mbit ceil 100mbit "
        "burst 25000 cburst 25000 quantum 60000",
        "qdisc add dev nxc0 parent 6e78:4 handle 8003: netem limit 1417 delay 50ms loss 1%",
        "filter add dev nxc0 parent 6e78: protocol ip prio 1 u32 match ip dst 198.18.0.2/32 "
        "flowid 6e78:3",
        "filter add dev nxc0 parent 6e78: protocol ipv6 prio 2 u32 match ip6 dst "
        "fd00:6e78:63::2/128 flowid 6e78:3",
        "filter add dev nxc0 parent 6e78: protocol ip prio 1 u32 match ip dst 198.18.0.3/32 "
        "flowid 6e78:4",
        "filter add dev nxc0 parent 6e78: protocol ipv6 prio 2 u32 match ip6 dst "
        "fd00:6e78:63::3/128 flowid 6e78:4",
    )
    assert out["server1"].ip_before == () and out["server1"].ip_after == ()
    # the clients only shape towards the server (symmetric), not between themselves
    client = out["client1"].tc_batch
    assert "match ip dst 198.18.0.1/32 flowid 6e78:2" in client
    assert "198.18.0.3" not in client
    assert client.endswith("\n") and client.count("\n") == 7


def test_asymmetric_constraint_only_shapes_one_side() -> None:
    t = Topology().constrain("server", "client", delay="20ms", symmetric=False)
    out = scripts(t)
    assert "netem limit" in out["server1"].tc_batch
    assert out["client1"].is_empty() and out["client2"].is_empty()
    sym = scripts(Topology().constrain("server", "client", delay="20ms"))
    assert "match ip dst 198.18.0.1/32" in sym["client1"].tc_batch


def test_ipv6_filters_can_be_turned_off() -> None:
    t = Topology().constrain("server", "client1", delay="1ms")
    with_v6 = scripts(t)["server1"].tc_batch
    assert "protocol ipv6 prio 2 u32 match ip6 dst fd00:6e78:63::2/128 flowid 6e78:3" in with_v6
    without = scripts(t, options=GenOptions(ipv6=False))["server1"].tc_batch
    assert "ipv6" not in without


def test_full_mesh_of_100_nodes() -> None:
    deployment = make_deployment({"node": 100})
    t = Topology().with_defaults(delay="10ms", rate="1gbit")
    out = scripts(t, deployment)
    assert len(out) == 100
    for name, script in out.items():
        lines = script.tc
        assert len(lines) == 3 + 99 * 4, name
        assert sum(line.startswith("class add") for line in lines) == 100
        assert sum(" netem limit " in line for line in lines) == 99
        assert sum("protocol ip prio" in line for line in lines) == 99
        assert sum("protocol ipv6 prio" in line for line in lines) == 99
        classids = re.findall(r"classid (\S+)", script.tc_batch)
        assert len(set(classids)) == len(classids) == 100
        handles = re.findall(r" handle (\S+) ", script.tc_batch)
        assert len(set(handles)) == len(handles) == 101  # root + default leaf + 99 leaves
        own = deployment.node(name)
        assert f"dst {own.ipv4}/32" not in script.tc_batch
    last = out["node100"].tc_batch
    assert "classid 6e78:64 htb rate 1gbit" in last  # node99 is at position 98 -> minor 0x64
    assert "parent 6e78:64 handle 8063: netem limit 1834 delay 10ms" in last


def test_partition_is_a_full_loss_leaf() -> None:
    t = Topology().constrain("server", "client", rate="10mbit").partition("server", "client1")
    server = scripts(t)["server1"].tc
    assert "qdisc add dev nxc0 parent 6e78:3 handle 8002: netem limit 1000 loss 100%" in server
    assert any("classid 6e78:4 htb rate 10mbit" in line for line in server)


@pytest.mark.parametrize(
    ("shaping", "expected"),
    [
        (PairShaping(delay=50_000, rate=100_000_000), 1000 + 417),
        (PairShaping(delay=50_000), 1000 + 41_667),
        (PairShaping(delay=10_000, jitter=5_000, rate=10_000_000), 1000 + 25),
        (PairShaping(loss=1.0), 1000),
        (PairShaping(delay=50_000, limit=77), 77),
        (PairShaping(delay=1_000_000_000), 10_000_000),
    ],
)
def test_limit_sizing(shaping: PairShaping, expected: int) -> None:
    assert tcgen.netem_limit(shaping, OPTS) == expected


def test_limit_covers_bandwidth_delay_product() -> None:
    shaping = PairShaping(delay=100_000, rate=1_000_000_000)
    in_flight = 1_000_000_000 / 8 * 0.1 / OPTS.packet_bytes
    assert tcgen.netem_limit(shaping, OPTS) >= in_flight + OPTS.min_limit


def test_netem_arguments() -> None:
    shaping = PairShaping(
        delay=20_000,
        jitter=3_000,
        distribution="paretonormal",
        loss=0.5,
        corrupt=0.1,
        duplicate=1.0,
        reorder=25.0,
    )
    assert tcgen.leaf_args(shaping, OPTS) == (
        "netem limit 1000 delay 20ms 3ms distribution paretonormal loss 0.5% corrupt 0.1% "
        "duplicate 1% reorder 25%"
    ).replace("limit 1000", f"limit {tcgen.netem_limit(shaping, OPTS)}")
    uniform = PairShaping(delay=20_000, jitter=3_000, distribution="uniform")
    assert "distribution" not in tcgen.leaf_args(uniform, OPTS)
    jitter_only = PairShaping(jitter=2_000)
    assert "delay 0us 2ms" in tcgen.leaf_args(jitter_only, OPTS)
    assert tcgen.leaf_args(shaping, GenOptions(leaf="pfifo")).startswith("pfifo limit ")


def test_htb_burst_is_explicit_at_high_rates() -> None:
    assert tcgen.htb_burst(10_000) == 3200
    assert tcgen.htb_burst(100_000_000_000) == 25_000_000


def test_ingress_through_ifb() -> None:
    t = Topology().constrain("client", "server", rate="10mbit", side="destination", symmetric=False)
    out = scripts(t)
    server = out["server1"]
    assert server.ip_before == ("link add nxi-nxc0 type ifb", "link set dev nxi-nxc0 up")
    batch = server.tc_batch
    assert "qdisc add dev nxi-nxc0 root handle 6e78: htb default 1" in batch
    assert "match ip src 198.18.0.2/32 flowid 6e78:3" in batch
    assert "match ip6 src fd00:6e78:63::3/128 flowid 6e78:4" in batch
    assert batch.endswith(
        "qdisc add dev nxc0 handle ffff: ingress\n"
        "filter add dev nxc0 parent ffff: protocol all prio 28280 u32 match u32 0 0 "
        "action mirred egress redirect dev nxi-nxc0\n"
    )
    assert "dev nxc0 root" not in batch
    assert out["client1"].is_empty()


def test_ifb_name_fits_ifnamsiz() -> None:
    assert tcgen.ifb_name("enp0s31f6-long") == "nxi-enp0s31f6-l"
    assert len(tcgen.ifb_name("x" * 15)) == 15


# -------------------------------------------------------------- state and reset

REAL_SHOW = """\
qdisc htb 6e78: root refcnt 3 r2q 10 default 0x1 direct_packets_stat 0 direct_qlen 1000
qdisc pfifo 8003: parent 6e78:4 limit 1417p
qdisc pfifo 8000: parent 6e78:1 limit 1000p
qdisc ingress ffff: parent ffff:fff1 ----------------
"""
REAL_FILTERS = """\
filter parent ffff: protocol all pref 28280 u32 chain 0
filter parent ffff: protocol all pref 28280 u32 chain 0 fh 800: ht divisor 1
filter parent ffff: protocol all pref 28280 u32 chain 0 fh 800::800 order 2048 key ht 800 \
bkt 0 terminal flowid not_in_hw
  match 00000000/00000000 at 0
\taction order 1: mirred (Egress Redirect to device nxi-nxc0) stolen
"""


def test_parse_state() -> None:
    qdiscs = tcgen.parse_qdiscs(REAL_SHOW)
    assert qdiscs[0] == Qdisc("htb", "6e78:", "root")
    assert Qdisc("ingress", "ffff:", "ffff:fff1") in qdiscs
    assert tcgen.parse_filter_prefs(REAL_FILTERS) == (28280,)
    state = InstalledState("nxc0", qdiscs, (28280,), ifb_present=True)
    assert state.ours_at_root and state.our_ingress_filter and state.has_ingress_qdisc
    assert tcgen.parse_qdiscs("qdisc noqueue 0: dev nxc0 root refcnt 2")[0].handle == "0:"


def test_reset_removes_only_ours() -> None:
    state = InstalledState("nxc0", tcgen.parse_qdiscs(REAL_SHOW), (28280,), ifb_present=True)
    script = tcgen.reset_script("n", state)
    assert script.tc == (
        "qdisc del dev nxc0 root",
        "filter del dev nxc0 parent ffff: protocol all prio 28280",
        "qdisc del dev nxc0 ingress",
    )
    assert script.ip_after == ("link del nxi-nxc0",)
    # someone else's ingress filter keeps the ingress qdisc
    shared = InstalledState("nxc0", tcgen.parse_qdiscs(REAL_SHOW), (28280, 7))
    assert tcgen.reset_script("n", shared).tc == (
        "qdisc del dev nxc0 root",
        "filter del dev nxc0 parent ffff: protocol all prio 28280",
    )
    foreign = InstalledState("nxc0", (Qdisc("tbf", "1:", "root"),), (7,))
    assert tcgen.reset_script("n", foreign).is_empty()
    clean = InstalledState("nxc0", (Qdisc("noqueue", "0:", "root"),))
    assert tcgen.reset_script("n", clean).is_empty()


def test_foreign_root_is_refused() -> None:
    plans = tcgen.plan(Topology().constrain("server", "client", delay="5ms"), SMALL)
    foreign = InstalledState("nxc0", (Qdisc("htb", "1:", "root"),))
    with pytest.raises(tcgen.ForeignQdisc) as info:
        tcgen.install_script(plans["server1"], foreign, OPTS)
    assert str(info.value).startswith(
        "server1: nxc0 already has a root qdisc that nxc did not install (htb 1:)"
    )
    default = InstalledState("nxc0", (Qdisc("pfifo_fast", "0:", "root"),))
    assert tcgen.install_script(plans["server1"], default, OPTS).tc[0].startswith("qdisc add")
    ours = InstalledState("nxc0", (Qdisc("htb", "6e78:", "root"),))
    assert tcgen.install_script(plans["server1"], ours, OPTS).tc[0] == "qdisc del dev nxc0 root"


# -------------------------------------------------------------- run-time changes


def test_update_changes_leaves_in_place() -> None:
    base = Topology().constrain("server", "client", delay="50ms")
    old = tcgen.plan(base, SMALL)
    new = tcgen.plan(base.partition("server", "client1"), SMALL, previous=old)
    ours = InstalledState("nxc0", (Qdisc("htb", "6e78:", "root"),))
    script = tcgen.update_script(old["server1"], new["server1"], ours, OPTS)
    assert script is not None
    assert script.tc == (
        "qdisc change dev nxc0 parent 6e78:3 handle 8002: netem limit 1000 loss 100%",
    )
    nothing = tcgen.update_script(old["client2"], new["client2"], ours, OPTS)
    assert nothing is not None and nothing.is_empty()


def test_update_adds_classes_and_keeps_old_ones_as_pass_through() -> None:
    base = Topology().constrain("server", "client1", delay="5ms")
    old = tcgen.plan(base, SMALL)
    moved = Topology().constrain("server", "client2", rate="1mbit")
    new = tcgen.plan(moved, SMALL, previous=old)
    assert [c.peer for c in new["server1"].egress.classes] == ["client1", "client2"]  # type: ignore[union-attr]
    ours = InstalledState("nxc0", (Qdisc("htb", "6e78:", "root"),))
    script = tcgen.update_script(old["server1"], new["server1"], ours, OPTS)
    assert script is not None
    assert script.tc[0] == "qdisc change dev nxc0 parent 6e78:3 handle 8002: netem limit 1000"
    assert script.tc[1].startswith("class add dev nxc0 parent 6e78: classid 6e78:4 htb rate 1mbit")
    assert script.tc[-1].endswith("match ip6 dst fd00:6e78:63::3/128 flowid 6e78:4")
    # if the tree is gone (someone reset it), a full install is needed
    gone = InstalledState("nxc0", (Qdisc("noqueue", "0:", "root"),))
    assert tcgen.update_script(old["server1"], new["server1"], gone, OPTS) is None
