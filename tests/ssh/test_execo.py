"""The execo helper, with the real execo (from PyPI) driving real ssh to the lab's nodes."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from nxc.contracts.deployment import Deployment, Node
from nxc.transports.ssh import SshEndpoint, SshSettings
from nxc.transports.ssh.execo import ExecoMissing, connection_params, deployment_hosts, execo_hosts
from tests.fixtures.sshd_netns import SshdCluster

execo = pytest.importorskip("execo")  # a dev dependency: present in CI

# execo 2.8 still calls threading's camelCase aliases; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_hosts_from_the_ssh_config(lab: SshdCluster, settings: SshSettings) -> None:
    nodes = lab.nodes[:3]
    hosts = execo_hosts([n.name for n in nodes], settings)
    assert [h.address for h in hosts] == [n.name for n in nodes]  # resolved by ssh -F
    assert [h.port for h in hosts] == [n.port for n in nodes]
    assert {(h.user, h.keyfile) for h in hosts} == {("root", str(lab.client_key))}
    params = connection_params(settings)
    remote = execo.Remote(
        "ip -4 -br addr show eth0", hosts, connection_params=params, process_args={"timeout": 60}
    ).run()
    assert remote.ok, [p.stderr for p in remote.processes]
    for process in remote.processes:
        node = next(n for n in nodes if n.name == process.host.address)
        assert f" {node.address}/16" in process.stdout


def test_host_keys_are_checked_through_execo(lab: SshdCluster, tmp_path: Path) -> None:
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{lab.nodes[0].name} {lab.nodes[1].host_key}\n")
    settings = SshSettings(wrong, lab.ssh_config)
    host = execo_hosts([lab.nodes[0].name], settings)[0]
    process = execo.SshProcess(
        "true", host, connection_params=connection_params(settings), timeout=60
    ).run()
    assert not process.ok
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in process.stderr


def test_hosts_of_a_running_deployment(lab: SshdCluster) -> None:
    nodes = lab.nodes[:2]
    known = lab.workdir / "deployment_known_hosts"
    known.write_text("".join(f"[127.0.0.1]:{n.port} {n.host_key}\n" for n in nodes))
    deployment = Deployment(
        id="d",
        composition="c",
        flavour="vm-ramdisk",
        ipv4_prefix="10.0.0.0/24",
        ipv6_prefix="fd00::/64",
        interface="eth1",
        authorized_keys=[],
        roles={"r": 2},
        nodes=[
            Node(f"r{i}", "r", i, f"10.0.0.{i}", f"fd00::{i}", "52:54:00:00:00:01", None, *where)
            for i, where in enumerate([("127.0.0.1", n.port) for n in nodes], 1)
        ],
    )
    running = SimpleNamespace(deployment=deployment, client_key=lab.client_key, known_hosts=known)
    hosts, params = deployment_hosts(running)  # type: ignore[arg-type]
    assert [(h.address, h.port, h.user) for h in hosts] == [
        ("127.0.0.1", n.port, "root") for n in nodes
    ]
    remote = execo.Remote("echo $SSH_CONNECTION", hosts, connection_params=params).run()
    assert remote.ok, [p.stderr for p in remote.processes]


def test_explicit_endpoint_keeps_its_address(lab: SshdCluster) -> None:
    settings = SshSettings(lab.known_hosts, config=())
    host = execo_hosts([SshEndpoint("n", "192.0.2.7", 2222, "alice", Path("/k"))], settings)[0]
    assert (host.address, host.port, host.user, host.keyfile) == ("192.0.2.7", 2222, "alice", "/k")


def test_missing_execo_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, settings: SshSettings
) -> None:
    monkeypatch.setitem(sys.modules, "execo", None)  # what `import execo` sees without it
    with pytest.raises(ExecoMissing, match=r"^execo is not installed: pip install 'nxc\[execo\]'"):
        execo_hosts(["x"], settings)
