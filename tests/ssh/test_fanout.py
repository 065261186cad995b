"""The fan-out API over 20 real sshd nodes, a down node, jump hosts, bounded concurrency."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
from pathlib import Path

import pytest

from nxc.transports.ssh import FanoutFailed, SshFleet, SshSettings
from tests.fixtures.sshd_netns import SshdCluster


def test_one_command_on_twenty_nodes(lab: SshdCluster, fleet: SshFleet) -> None:
    result = fleet.run("ip -4 -br addr show eth0", timeout=60)
    assert result.ok and result.failed == [] and result.errors == {}
    assert [o.node for o in result] == [n.name for n in lab.nodes]  # the fleet's order
    for node in lab.nodes:
        assert f" {node.address}/16" in result[node.name].stdout  # each ran on its own node
    assert fleet.run("true").ok  # reusing the 20 connections
    assert all(t.link.connects == 1 for t in fleet)


def test_statuses_are_per_node(lab: SshdCluster, fleet: SshFleet) -> None:
    # Odd nodes fail: the node's address ends in its number.
    result = fleet.run("n=$(ip -4 -br addr show eth0 | sed 's|.*\\.||; s|/.*||'); exit $((n % 2))")
    odd = [n.name for n in lab.nodes if int(n.address.rsplit(".", 1)[1]) % 2]
    assert sorted(result.failed) == sorted(odd) and result.errors == {}
    assert len(result.results) == 20
    with pytest.raises(FanoutFailed) as caught:
        result.check()
    message = str(caught.value)
    assert message.startswith("`n=$(ip -4 -br addr show eth0")
    assert f"failed on {len(odd)} of 20 nodes" in message and odd[0] in message
    assert "and 5 more" in message and "\n" not in message


def _intervals(result_stdout: list[str]) -> int:
    """Largest number of [start, end] intervals that overlap."""
    events: list[tuple[float, int]] = []
    for text in result_stdout:
        start, end = (float(x) for x in text.split())
        events += [(start, 1), (end, -1)]
    running = peak = 0
    for _, step in sorted(events):
        running += step
        peak = max(peak, running)
    return peak


def test_max_parallel_bounds_concurrency(fleet: SshFleet) -> None:
    command = "a=$(date +%s.%N); sleep 0.3; b=$(date +%s.%N); echo $a $b"
    nodes = fleet.names[:9]
    bounded = fleet.run(command, nodes=nodes, max_parallel=3)
    assert bounded.ok and len(bounded) == 9
    assert _intervals([o.stdout for o in bounded]) <= 3
    free = fleet.run(command, nodes=nodes)
    assert _intervals([o.stdout for o in free]) > 3


def test_timeout_on_some_nodes_kills_there_and_reports_them(
    lab: SshdCluster, fleet: SshFleet
) -> None:
    token = f"{2000 + secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"
    slow = {lab.nodes[2].address, lab.nodes[5].address}
    command = (
        "a=$(ip -4 -br addr show eth0 | awk '{print $3}' | cut -d/ -f1); "
        f"case $a in {'|'.join(sorted(slow))}) sleep {token};; esac; echo fast"
    )
    result = fleet.run(command, timeout=2)
    assert sorted(result.errors) == sorted([lab.nodes[2].name, lab.nodes[5].name])
    assert "timed out after 2s" in result.errors[lab.nodes[2].name]
    assert len(result.results) == 18 and all(r.output == "fast\n" for r in result.results.values())
    assert lab.processes_with(token) == []


def test_put_and_get_on_every_node(lab: SshdCluster, fleet: SshFleet, tmp_path: Path) -> None:
    source = tmp_path / "payload"
    source.write_bytes(os.urandom(4096))
    source.chmod(0o640)
    nodes = fleet.names[:5]
    # The lab's nodes share this host's file system: all five write the same path.
    target = str(lab.workdir / "fan-put")
    assert fleet.put(source, target, nodes=nodes).check().ok
    assert Path(target).read_bytes() == source.read_bytes()
    assert stat.S_IMODE(Path(target).stat().st_mode) == 0o640
    got = fleet.get(target, tmp_path / "back", nodes=nodes).check()
    assert len(got) == 5
    for name in nodes:
        back = tmp_path / "back" / name / "fan-put"
        assert back.read_bytes() == source.read_bytes()


def test_a_down_node_is_reported_by_name_and_the_others_succeed(sshd_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster: SshdCluster = sshd_cluster(5)
    down = cluster.nodes[2]
    cluster.stop_node(down.name)
    settings = SshSettings(cluster.known_hosts, cluster.ssh_config)
    with SshFleet([n.name for n in cluster.nodes], settings) as fleet:
        result = fleet.run("echo ok", timeout=30)
        assert list(result.errors) == [down.name]
        assert result.errors[down.name].startswith(f"{down.name}: cannot connect")
        assert result[down.name].result is None and not result[down.name].ok
        assert {name: r.output for name, r in result.results.items()} == {
            n.name: "ok\n" for n in cluster.nodes if n is not down
        }
        with pytest.raises(FanoutFailed, match=f"failed on 1 of 5 nodes: {down.name}: cannot"):
            result.check()
        connected = fleet.connect()
        assert connected.failed == [down.name]
        cluster.start_node(down.name)
        assert fleet.run("echo ok").ok  # the node is back: the next fan-out reaches it


def test_proxyjump_through_one_shared_jump_connection(lab: SshdCluster) -> None:
    assert lab.jump is not None
    hidden = lab.nodes[:5]
    settings = SshSettings(lab.known_hosts, lab.ssh_config_jump)
    with SshFleet([n.name for n in hidden], settings) as fleet:
        result = fleet.run('ip -4 -br addr show eth0; echo "client=$SSH_CLIENT"').check()
        for node in hidden:
            assert f" {node.address}/16" in result[node.name].stdout
            # sshd saw the connection come from the jump host, not from the relay.
            assert f"client={lab.jump.address} " in result[node.name].stdout
        out = subprocess.run(
            ["ip", "netns", "exec", lab.jump.netns, "ss", "-Htn", "state", "established"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        incoming = [line for line in out.splitlines() if f"{lab.jump.address}:22 " in line]
        outgoing = [line for line in out.splitlines() if line.split()[-1].endswith(":22")]
        assert len(incoming) == 1, out  # one connection to the jump host for all 5 nodes
        assert len(outgoing) == 5, out


def test_unknown_node_name_and_duplicates(fleet: SshFleet, settings: SshSettings) -> None:
    with pytest.raises(KeyError, match="no node 'nope'"):
        fleet.run("true", nodes=["nope"])
    with pytest.raises(ValueError, match="given twice"):
        SshFleet(["a", "a"], settings)
