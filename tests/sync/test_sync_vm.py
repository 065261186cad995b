"""The sync service with real VMs: programs on three selftest nodes reach the
deployment's redis-server through the VMs' management NIC (QEMU forwards a guest
address to the service's unix socket), with real netem on the experiment NIC."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nxc.netem import Netem
from nxc.project import Project
from nxc.session import running
from nxc.sync.client import SyncClient
from tests.e2e.conftest import VmCluster

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def client(vms: VmCluster) -> Iterator[SyncClient]:
    with running(Project(vms.project_dir)).sync().client("test") as made:
        yield made


def test_programs_on_nodes_meet_at_a_barrier(vms: VmCluster, client: SyncClient) -> None:
    # Start one program per node, then only read what they leave: nothing relays.
    for machine in vms.machines.values():
        machine.execute(
            "nxc-sync signal-and-wait vm-meet 3 > /tmp/meet.seq && nxc-sync signal vm-released",
            check_output=False,
        )
    client.barrier("vm-released", 3, timeout=120)
    seqs = sorted(int(m.succeed("cat /tmp/meet.seq")) for m in vms.machines.values())
    assert seqs == [1, 2, 3]
    arrived = client.arrivals("vm-meet")
    released = client.arrivals("vm-released")
    assert sorted(who for who, _ in arrived) == ["node1", "node2", "node3"]
    last_arrival = max(t for _, t in arrived)
    times = [t for _, t in released]
    # Each node's "released" signal comes after the last arrival; their spread bounds
    # the release spread (plus one nxc-sync start per node, ~0.1-0.4 s under TCG).
    spread = max(times) - min(times)
    print(
        f"barrier on 3 VMs: release spread {spread:.3f}s, "
        f"last arrival -> last released signal {max(times) - last_arrival:.3f}s"
    )
    assert all(t >= last_arrival for t in times)
    assert spread < 5.0, f"the barrier released its nodes {spread:.2f}s apart"


def test_a_late_subscriber_sees_every_message_in_order(vms: VmCluster) -> None:
    node1, node2, node3 = (vms.machines[n] for n in ("node1", "node2", "node3"))
    for n in range(1, 5):
        node1.succeed(f"nxc-sync publish vm-news 'item {n}'")
    node3.execute("nxc-sync --count 6 subscribe vm-news > /tmp/news", check_output=False)
    node2.succeed("nxc-sync publish vm-news 'item 5'")
    node1.succeed("nxc-sync publish vm-news 'item 6'")
    node3.wait_until_succeeds("test $(wc -l < /tmp/news) -eq 6", timeout=60)
    assert node3.succeed("cat /tmp/news").splitlines() == [f"item {n}" for n in range(1, 7)]


def test_discover_returns_the_three_records(vms: VmCluster, client: SyncClient) -> None:
    records = client.discover("node", 3, timeout=60)
    by_name = {r["name"]: r for r in records}
    assert sorted(by_name) == ["node1", "node2", "node3"]
    for node in vms.deployment.nodes:
        assert by_name[node.name]["ipv4"] == node.ipv4.split("/")[0]
        assert by_name[node.name]["role"] == "node"
    seen = vms.machines["node2"].succeed("nxc-sync --field ipv4 discover node 3").split()
    assert sorted(seen) == sorted(n.ipv4.split("/")[0] for n in vms.deployment.nodes)


def test_a_partition_does_not_cut_the_sync_service(vms: VmCluster, client: SyncClient) -> None:
    net = Netem(vms.deployment, vms.machines)
    net.reset()
    node1 = vms.machines["node1"]
    try:
        net.partition("node1", ["node2", "node3"])
        address = vms.deployment.node("node2").ipv4.split("/")[0]
        status, _ = node1.execute(f"ping -c 2 -W 1 {address}", timeout=30)
        assert status != 0, "the partition does not cut node1 from node2"
        for machine in vms.machines.values():
            machine.execute(
                "nxc-sync signal-and-wait across 3 && touch /tmp/across", check_output=False
            )
        client.barrier("across", 3, timeout=120)
        for machine in vms.machines.values():
            machine.wait_for_file("/tmp/across", timeout=60)
        # Even with its experiment NIC down, a node still reaches the service.
        node1.block()
        try:
            assert node1.succeed("nxc-sync signal cut-off") == "1\n"
        finally:
            node1.unblock()
    finally:
        net.reset()


def test_wrong_or_foreign_tokens_cannot_join(
    vms: VmCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from nxc.ledger import Ledger
    from nxc.sync.service import start_service, stop_service

    node2 = vms.machines["node2"]
    assert node2.succeed("stat -c %a /etc/nxc/sync").strip() == "600"
    token = node2.succeed(". /etc/nxc/sync && echo $NXC_SYNC_TOKEN").strip()
    assert token and token not in node2.succeed("cat /proc/cmdline")
    wrong = "sed 's/^NXC_SYNC_TOKEN=.*/NXC_SYNC_TOKEN=%s/' /etc/nxc/sync > /tmp/sync.other"
    node2.succeed(wrong % ("0" * 48))
    status, _ = node2.execute("NXC_SYNC_CONFIG=/tmp/sync.other nxc-sync signal intruder")
    assert status == 3
    # Another deployment's service and token: the token opens only its own service.
    other_dir = tmp_path_factory.mktemp("other-sync")
    other = start_service(other_dir, other_dir / "log", Ledger(other_dir / "ledger"), "other")
    try:
        node2.succeed(wrong % other.token)
        status, _ = node2.execute("NXC_SYNC_CONFIG=/tmp/sync.other nxc-sync signal intruder")
        assert status == 3
    finally:
        stop_service(other)
    with running(Project(vms.project_dir)).sync().client("check") as ours:
        assert ours.count("intruder") == 0
