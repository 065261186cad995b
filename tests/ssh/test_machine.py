"""The driver's Machine, unchanged, over the ssh transport (SshNodeControl)."""

from __future__ import annotations

import os
import secrets
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxc.driver.machine import CommandFailed, ConnectionLost, Machine, WaitExpired
from nxc.errors import StartError
from nxc.log import Logger
from nxc.runtime.node import Capability, CapabilityMissing
from nxc.transports.ssh import (
    PowerHooks,
    SshNodeControl,
    SshNodeUnsupported,
    SshSettings,
    SshTransport,
)
from tests.fixtures.sshd_netns import SshdCluster


@pytest.fixture
def machine(lab: SshdCluster, settings: SshSettings, tmp_path: Path) -> Iterator[Machine]:
    transport = SshTransport(lab.nodes[6].name, settings)
    node = Machine(
        "node7", "worker", 7, SshNodeControl(transport), Logger(), out_dir=tmp_path / "out"
    )
    try:
        yield node
    finally:
        node.release()
        transport.close()


def test_succeed_fail_execute(machine: Machine, lab: SshdCluster) -> None:
    assert lab.nodes[6].address in machine.succeed("ip -4 -br addr show eth0")
    assert machine.succeed("echo a; echo b") == "a\nb\n"
    with pytest.raises(CommandFailed) as caught:
        machine.succeed("echo oops >&2; false; echo not-reached")
    assert caught.value.status == 1 and "oops" in str(caught.value)
    assert "not-reached" not in caught.value.stdout  # strict prelude as in the NixOS driver
    assert machine.fail("exit 4") == ""
    assert machine.execute("echo x; exit 2") == (2, "x\n")
    assert machine.execute("sleep 30", timeout=1)[0] == 124


def test_wait_until_succeeds(machine: Machine, lab: SshdCluster) -> None:
    flag = lab.workdir / f"flag-{secrets.token_hex(3)}"
    timer = threading.Timer(0.5, flag.write_text, args=("ready\n",))
    timer.start()
    try:
        assert machine.wait_until_succeeds(f"cat {flag}", timeout=30) == "ready\n"
    finally:
        timer.join()
    with pytest.raises(WaitExpired) as caught:
        machine.wait_until_succeeds("echo not-yet; false", timeout=1)
    assert "not-yet" in str(caught.value) and "node7" in str(caught.value)


def test_copy_to_and_from_machine(machine: Machine, lab: SshdCluster, tmp_path: Path) -> None:
    source = tmp_path / "tool"
    source.write_bytes(os.urandom(300_000))
    source.chmod(0o750)
    remote = lab.workdir / f"copied-{secrets.token_hex(3)}"
    machine.copy_to_machine(source, f"{remote}/tool")
    assert (remote / "tool").read_bytes() == source.read_bytes()
    assert stat.S_IMODE((remote / "tool").stat().st_mode) == 0o750
    (remote / "sub").mkdir()
    (remote / "sub" / "f").write_text("inner\n")
    back = machine.copy_from_machine(str(remote), "results")
    assert back == tmp_path / "out" / "results" / remote.name
    assert (back / "tool").read_bytes() == source.read_bytes()
    assert (back / "sub" / "f").read_text() == "inner\n"


def test_unreachable_node_is_a_lost_connection_naming_it(sshd_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster: SshdCluster = sshd_cluster(1)
    node = cluster.nodes[0]
    settings = SshSettings(cluster.known_hosts, cluster.ssh_config)
    with SshTransport(node.name, settings) as transport:
        machine = Machine("n1", "r", 1, SshNodeControl(transport), Logger())
        assert machine.succeed("echo hi") == "hi\n"
        cluster.stop_node(node.name)
        with pytest.raises(ConnectionLost, match=f"n1: .*{node.name}: cannot connect"):
            machine.succeed("true")
        cluster.start_node(node.name)
        assert machine.succeed("echo again") == "again\n"


def test_capabilities_follow_the_power_hooks(sshd_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster: SshdCluster = sshd_cluster(1)
    node = cluster.nodes[0]
    settings = SshSettings(cluster.known_hosts, cluster.ssh_config)
    with SshTransport(node.name, settings) as transport:
        bare = SshNodeControl(transport)
        assert bare.capabilities == frozenset() and bare.flavour == "ssh"
        machine = Machine("n1", "r", 1, bare, Logger())
        for action in (machine.crash, machine.shutdown, machine.block):
            with pytest.raises(CapabilityMissing, match=rf"{node.name}: .* on flavour ssh \("):
                action()
        with pytest.raises(SshNodeUnsupported, match="shutdown"):
            bare.shutdown()
        with pytest.raises(SshNodeUnsupported, match="pause"):
            bare.pause()
        # Hooks standing for the platform's power control: here they stop and start sshd
        # (every process of the node's namespace dies, as in a power cut).
        hooks = PowerHooks(
            start=lambda timeout: cluster.start_node(node.name, wait=False),
            shutdown=lambda timeout: cluster.stop_node(node.name),
            crash=lambda: cluster.stop_node(node.name),
        )
        powered = SshNodeControl(transport, power=hooks, flavour="rehearsal")
        assert powered.capabilities == {Capability.POWER, Capability.CRASH}
        machine = Machine("n1", "r", 1, powered, Logger())
        boot = powered.boot_id()
        assert boot is not None and len(boot) == 36
        assert machine.succeed("echo before") == "before\n"
        machine.crash()  # the driver closes its transport here
        assert not machine.is_up() and powered.boot_id() is None
        assert machine.succeed("echo after") == "after\n"  # start() through the hook
        assert machine.is_up()
        machine.shutdown()
        machine.start()
        assert machine.succeed("echo again") == "again\n"
        cluster.stop_node(node.name)
        with pytest.raises(StartError, match=f"{node.name}: not answering ssh after 1s"):
            SshNodeControl(transport).start(timeout=1)
