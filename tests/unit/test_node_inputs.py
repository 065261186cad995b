"""The per-node input files the host renders for the agent (nxc/runtime/node_inputs.py)."""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
from pathlib import Path

import pytest

from nxc.contracts import Deployment, Node
from nxc.runtime import node_inputs


def deployment(**changes: object) -> Deployment:
    nodes = [
        Node("server1", "server", 1, "198.18.0.1", "fd00::1", "52:54:00:00:00:0A", "ssh-ed25519 K"),
        Node("client1", "client", 1, "198.18.0.2", "", "52:54:00:00:00:0b"),
        Node("client2", "client", 2, "198.18.0.3/24", "fd00::3/120", "52:54:00:00:00:0c"),
    ]
    base = Deployment(
        id="dep-1",
        composition="unit",
        flavour="vm-ramdisk",
        ipv4_prefix="198.18.0.0/16",
        ipv6_prefix="fd00::/64",
        interface="nxc0",
        authorized_keys=["ssh-ed25519 AAA user@a", "ssh-rsa BBB user@b"],
        roles={"server": 1, "client": 2},
        nodes=nodes,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def env_of(text: str) -> dict[str, str]:
    """What a POSIX shell makes of the env file (the agent sources it)."""
    script = f"{text}\nset | grep '^NXC_'"
    out = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, check=True, env={}
    ).stdout
    values = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        values[key] = shlex.split(value)[0] if value else ""
    return values


def test_env_holds_the_nodes_values() -> None:
    files = node_inputs.render(deployment(), "server1").files
    assert set(files) == {"env", "hosts", "authorized_keys", "deployment.json"}
    assert env_of(files["env"]) == {
        "NXC_INPUTS": "1",
        "NXC_NODE": "server1",
        "NXC_ROLE": "server",
        "NXC_INDEX": "1",
        "NXC_REPLICAS": "1",
        "NXC_DEPLOYMENT_ID": "dep-1",
        "NXC_NODES": "server1 client1 client2",
        "NXC_INTERFACE": "nxc0",
        "NXC_MAC": "52:54:00:00:00:0a",
        "NXC_IPV4": "198.18.0.1/16",
        "NXC_IPV6": "fd00::1/64",
        "NXC_HOST_KEY": "ssh-ed25519 K",
    }
    client1 = env_of(node_inputs.render(deployment(), "client1").files["env"])
    assert (client1["NXC_REPLICAS"], client1["NXC_IPV6"], client1["NXC_HOST_KEY"]) == ("2", "", "")
    client2 = env_of(node_inputs.render(deployment(), "client2").files["env"])
    assert (client2["NXC_IPV4"], client2["NXC_IPV6"]) == ("198.18.0.3/24", "fd00::3/120")


def test_replicas_counted_when_roles_lack_the_role() -> None:
    env = node_inputs.render(deployment(roles={}), "client2").files["env"]
    assert env_of(env)["NXC_REPLICAS"] == "2"


def test_odd_values_stay_one_shell_word() -> None:
    odd = deployment(id="it's $(not) `run`\nat all")
    env = env_of(node_inputs.render(odd, "server1").files["env"])
    assert env["NXC_DEPLOYMENT_ID"] == "it's $(not) `run` at all"


def test_hosts_and_keys() -> None:
    files = node_inputs.render(deployment(), "client1").files
    assert files["hosts"] == (
        "# written by nxc for deployment dep-1\n"
        "127.0.0.1 localhost\n"
        "::1 localhost ip6-localhost ip6-loopback\n"
        # server is the only node of its role: also reachable as "server"
        "198.18.0.1 server1 server\nfd00::1 server1 server\n"
        "198.18.0.2 client1\n"
        "198.18.0.3 client2\nfd00::3 client2\n"
    )
    assert files["authorized_keys"] == "ssh-ed25519 AAA user@a\nssh-rsa BBB user@b\n"
    assert json.loads(files["deployment.json"]) == deployment().to_dict()


def test_unknown_node_names_the_nodes() -> None:
    with pytest.raises(KeyError, match="no node named 'nobody' in deployment dep-1"):
        node_inputs.render(deployment(), "nobody")


def test_write_modes(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    paths = node_inputs.write(node_inputs.render(deployment(), "server1"), tmp_path / "in", key)
    assert (tmp_path / "in").stat().st_mode & 0o777 == 0o700
    assert {name: p.stat().st_mode & 0o777 for name, p in paths.items()} == {
        "env": 0o644,
        "hosts": 0o644,
        "authorized_keys": 0o644,
        "deployment.json": 0o644,
        "hostkey": 0o600,
    }
    assert paths["hostkey"].read_text() == key.read_text()
