from __future__ import annotations

from pathlib import Path

import pytest

from nxc.contracts import Manifest
from nxc.errors import NxcError
from nxc.expand import expand, node_mac, parse_role_overrides

KEY = ["ssh-ed25519 AAAA test"]


def test_names_addresses_and_macs_are_deterministic(manifest_file: Path) -> None:
    manifest = Manifest.load(manifest_file)
    first = expand(manifest, {}, "demo-000001", KEY)
    second = expand(manifest, {}, "demo-000001", KEY)
    assert first == second
    assert [n.name for n in first.nodes] == ["server1", "client1", "client2"]
    assert [n.index for n in first.nodes] == [1, 1, 2]
    assert [n.ipv4 for n in first.nodes] == ["198.18.0.1", "198.18.0.2", "198.18.0.3"]
    assert first.nodes[2].ipv6 == "fd00:6e78:63::3"
    assert [n.mac for n in first.nodes] == [node_mac(1), node_mac(2), node_mac(3)]
    assert node_mac(0x010203) == "52:54:00:01:02:03"
    assert first.roles == {"server": 1, "client": 2}


def test_overrides_change_quantities(manifest_file: Path) -> None:
    manifest = Manifest.load(manifest_file)
    deployment = expand(manifest, {"client": 5, "server": 0}, "demo-000001", KEY)
    assert [n.name for n in deployment.nodes] == [f"client{i}" for i in range(1, 6)]
    assert deployment.nodes[0].ipv4 == "198.18.0.1"


def test_unknown_role_lists_known_roles(manifest_file: Path) -> None:
    manifest = Manifest.load(manifest_file)
    with pytest.raises(
        NxcError, match=r"-r db: unknown role \(the composition has: client, server"
    ):
        expand(manifest, {"db": 1}, "demo-000001", KEY)


def test_zero_nodes_is_an_error(manifest_file: Path) -> None:
    manifest = Manifest.load(manifest_file)
    with pytest.raises(NxcError, match="no nodes"):
        expand(manifest, {"client": 0, "server": 0}, "demo-000001", KEY)


def test_small_network_is_an_error(manifest_file: Path) -> None:
    manifest = Manifest.load(manifest_file)
    with pytest.raises(NxcError, match="too small for 3 nodes"):
        expand(manifest, {}, "demo-000001", KEY, ipv4_prefix="198.18.0.0/30")


@pytest.mark.parametrize(
    "value", ["node", "node=", "node=-1", "node=x", "=3", "Node=2", "node=1.5"]
)
def test_bad_role_override(value: str) -> None:
    with pytest.raises(NxcError, match="expected ROLE=N"):
        parse_role_overrides([value])


def test_good_role_overrides() -> None:
    assert parse_role_overrides(["node=3", "db-main=0"]) == {"node": 3, "db-main": 0}
