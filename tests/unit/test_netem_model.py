from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nxc.errors import ContractError
from nxc.netem.model import PairShaping, Topology
from nxc.netem.netns import make_deployment

DEPLOYMENT = make_deployment({"server": 1, "client": 2})


def topo(**fields: Any) -> Topology:
    return Topology.from_dict({"nxc_topology": 1, **fields}, source="topology.yaml")


def error_of(document: Any) -> str:
    with pytest.raises(ContractError) as info:
        Topology.from_dict(document, source="topology.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text(
        "nxc_topology: 1\n"
        "groups:\n"
        "  site_a: [server]\n"
        "  site_b: {nodes: [client1, client2]}\n"
        "defaults: {rate: 1gbit}\n"
        "constraints:\n"
        "  - {from: site_a, to: site_b, delay: 25ms, jitter: 2ms, distribution: normal,"
        " loss: 1%}\n"
    )
    t = Topology.load(path)
    assert t.source == str(path)
    pairs = t.resolve(DEPLOYMENT)
    assert pairs[("server1", "client1")].delay == 25_000
    assert pairs[("client1", "server1")].delay == 25_000  # symmetric by default
    assert pairs[("server1", "client1")].rate == 1_000_000_000  # inherited from defaults
    assert pairs[("client1", "client2")] == PairShaping(rate=1_000_000_000, origin=("defaults",))
    assert Topology.from_dict(t.to_dict()).resolve(DEPLOYMENT) == pairs


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {
                "nxc_topology": 1,
                "constraints": [
                    {"from": "server", "to": "client", "delay": "1ms"},
                    {"from": "server", "to": "client", "delay": "1ms"},
                    {"from": "server", "to": "client", "delay": "50 ms"},
                ],
            },
            "topology.yaml: constraints[2].delay: '50 ms' is not a duration (e.g. 50ms)",
        ),
        (
            {"nxc_topology": 1, "constraints": [{"from": "a", "to": "b", "loss": "0.5"}]},
            "topology.yaml: constraints[0].loss: '0.5' is not a percentage (e.g. 0.5%)",
        ),
        (
            {"nxc_topology": 1, "constraints": [{"from": "a", "to": "b", "rate": "1xb"}]},
            "topology.yaml: constraints[0].rate: '1xb' is not a rate (e.g. 100mbit)",
        ),
        (
            {"nxc_topology": 1, "constraints": [{"from": "a", "to": "b", "dealy": "5ms"}]},
            "topology.yaml: constraints[0]: unknown key 'dealy' (did you mean 'delay'?)",
        ),
        (
            {"nxc_topology": 1, "constraint": []},
            "topology.yaml: unknown key 'constraint' (did you mean 'constraints'?)",
        ),
        (
            {"constraints": []},
            "topology.yaml: not an nxc topology: field 'nxc_topology' is missing",
        ),
        ({"nxc_topology": 2}, "topology.yaml: nxc_topology 2 is not supported (this nxc reads 1)"),
        (
            {"nxc_topology": 1, "defaults": {"delay": 50}},
            "topology.yaml: defaults.delay: 50 is not a duration (e.g. 50ms)",
        ),
        (
            {"nxc_topology": 1, "constraints": [{"from": "a", "to": "b"}]},
            "topology.yaml: constraints[0]: sets nothing",
        ),
        (
            {"nxc_topology": 1, "constraints": [{"to": "b", "delay": "1ms"}]},
            "topology.yaml: constraints[0]: 'from' is missing",
        ),
        (
            {
                "nxc_topology": 1,
                "constraints": [{"from": "a", "to": "b", "jitter": "1ms", "distribution": "gauss"}],
            },
            "topology.yaml: constraints[0].distribution: 'gauss' is not a distribution",
        ),
        (
            {
                "nxc_topology": 1,
                "constraints": [{"from": "a", "to": "b", "delay": "1ms", "symmetric": "yes"}],
            },
            "topology.yaml: constraints[0].symmetric: must be true or false",
        ),
        (
            {"nxc_topology": 1, "groups": {"g": {"role": ["x"]}}},
            "topology.yaml: groups.g: unknown key 'role' (did you mean 'roles'?)",
        ),
        (
            {"nxc_topology": 1, "partitions": [{"from": "a"}]},
            "topology.yaml: partitions[0]: 'to' is missing",
        ),
        (
            {"nxc_topology": 1, "constraints": [{"from": "a", "to": "b", "limit": 0}]},
            "topology.yaml: constraints[0].limit: 0 is not a packet count",
        ),
        ("just text", "topology.yaml: a topology must be a mapping"),
    ],
)
def test_errors_are_one_line_and_name_the_place(document: Any, expected: str) -> None:
    assert error_of(document).startswith(expected)


def test_malformed_yaml(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("nxc_topology: 1\nconstraints: [\n")
    with pytest.raises(ContractError, match=r"t.yaml: malformed YAML at line \d+"):
        Topology.load(path)
    with pytest.raises(ContractError, match="topology file not found"):
        Topology.load(tmp_path / "missing.yaml")


def test_unknown_names_are_reported_at_resolve_time() -> None:
    t = topo(constraints=[{"from": "server", "to": "clients", "delay": "1ms"}])
    with pytest.raises(ContractError) as info:
        t.resolve(DEPLOYMENT)
    assert str(info.value).startswith(
        "topology.yaml: constraints[0].to: 'clients' is not a group, role or node of the "
        "deployment (did you mean 'client'?)"
    )
    bad_group = topo(groups={"g": {"roles": ["db"]}})
    with pytest.raises(ContractError, match=r"groups\.g\.roles: 'db' is not a role"):
        bad_group.resolve(DEPLOYMENT)


def test_asymmetric_and_override_order() -> None:
    t = topo(
        constraints=[
            {"from": "client", "to": "server", "delay": "10ms", "loss": "5%"},
            {"from": "client1", "to": "server1", "delay": "40ms", "symmetric": False},
            {"from": "server", "to": "client2", "loss": None, "rate": "10mbit", "symmetric": False},
        ]
    )
    pairs = t.resolve(DEPLOYMENT)
    assert pairs[("client1", "server1")].delay == 40_000
    assert pairs[("client1", "server1")].loss == 5.0  # kept from the first entry
    assert pairs[("server1", "client1")].delay == 10_000
    assert pairs[("server1", "client2")].loss == 0.0  # cleared by null
    assert pairs[("server1", "client2")].rate == 10_000_000
    assert pairs[("client2", "server1")].rate is None
    assert pairs[("server1", "client2")].origin == ("constraints[0]", "constraints[2]")
    assert ("client1", "client2") not in pairs


def test_partition_and_heal() -> None:
    t = topo(constraints=[{"from": "server", "to": "client", "delay": "5ms"}])
    cut = t.partition(["server"], ["client1"])
    pairs = cut.resolve(DEPLOYMENT)
    assert pairs[("server1", "client1")].partitioned
    assert pairs[("client1", "server1")].effective_loss == 100.0
    assert not pairs[("server1", "client2")].partitioned
    one_way = t.partition("client2", "server", symmetric=False).resolve(DEPLOYMENT)
    assert one_way[("client2", "server1")].partitioned
    assert not one_way[("server1", "client2")].partitioned
    assert cut.healed().resolve(DEPLOYMENT) == t.resolve(DEPLOYMENT)


def test_python_builder_and_groups() -> None:
    t = (
        Topology()
        .group("site_a", roles=["server"])
        .group("site_b", ["client1", "client2"])
        .with_defaults(delay="1ms")
        .constrain("site_a", "site_b", delay="50ms", loss="1%")
        .constrain("*", "client2", rate="1gbit", symmetric=False)
    )
    pairs = t.resolve(DEPLOYMENT)
    assert pairs[("server1", "client1")].delay == 50_000
    assert pairs[("client1", "client2")].delay == 1_000
    assert pairs[("client1", "client2")].rate == 1_000_000_000
    assert pairs[("client2", "client1")].rate is None
    again = Topology.from_dict(t.to_dict())
    assert again.resolve(DEPLOYMENT) == pairs
    with pytest.raises(ContractError, match=r"constraints\[2\].delay: '5' is not a duration"):
        t.constrain("site_a", "site_b", delay="5")
    with pytest.raises(ContractError, match="not a valid group name"):
        t.group("bad name", ["server"])


def test_reorder_needs_delay() -> None:
    t = topo(constraints=[{"from": "server", "to": "client", "reorder": "10%"}])
    with pytest.raises(ContractError, match=r"constraints\[0\]: reorder needs a delay"):
        t.resolve(DEPLOYMENT)


def test_ambiguous_role_and_node_name() -> None:
    deployment = make_deployment({"a": 1, "a1": 1})
    t = topo(constraints=[{"from": "a1", "to": "a", "delay": "1ms"}])
    with pytest.raises(ContractError, match="'a1' is both a role and a node"):
        t.resolve(deployment)


def test_noop_pairs_are_left_out() -> None:
    t = topo(constraints=[{"from": "server", "to": "client", "delay": "0ms", "loss": "0%"}])
    assert t.resolve(DEPLOYMENT) == {}


def test_describe() -> None:
    shaping = PairShaping(
        delay=50_000, jitter=5_000, distribution="normal", loss=1.0, rate=100_000_000
    )
    assert shaping.describe() == "delay 50ms ±5ms normal, loss 1%, rate 100mbit"
    assert PairShaping(partitioned=True).describe() == "partitioned (100% loss)"
