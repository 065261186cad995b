"""The double's parts without HTTP: OAR expressions, resource requests, the scheduler,
inventory, binding, clock."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nxc.testbeds.g5k_double import Clock, Timings, default_inventory, load_inventory
from nxc.testbeds.g5k_double.binding import BindingError, load_bindings, parse_bindings
from nxc.testbeds.g5k_double.errors import ApiError
from nxc.testbeds.g5k_double.inventory import InventoryError
from nxc.testbeds.g5k_double.oarsql import PropertyError, compile_properties
from nxc.testbeds.g5k_double.resources import (
    Pool,
    ResourceError,
    allocate,
    parse_request,
    parse_walltime,
)
from nxc.testbeds.g5k_double.scheduler import JobTable

KNOWN = frozenset({"cluster", "memnode", "gpu", "host"})


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("cluster='paravance'", True),
        ("cluster = 'parasilo'", False),
        ("cluster != 'parasilo' AND memnode >= 131072", True),
        ("memnode > 200000 OR cluster like 'para%'", True),
        ("cluster LIKE 'p_rasilo'", False),
        ("cluster in ('grisou', 'paravance')", True),
        ("cluster NOT IN ('grisou', 'paravance')", False),
        ("NOT (gpu = 'YES') and (cluster='x' or host like '%.rennes.%')", True),
        ("memnode < 99", False),
        ("", True),
    ],
)
def test_property_expressions(expression: str, expected: bool) -> None:
    props = {"cluster": "paravance", "memnode": 131072, "gpu": "NO", "host": "paravance-1.rennes.x"}
    assert compile_properties(expression, KNOWN)(props) is expected


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("colour='red'", "unknown property 'colour'"),
        ("cluster='a' AND", "expected word, found end of expression"),
        ("cluster 'a'", "expected op"),
        ("cluster = 'a' )", "unexpected ')'"),
        ("cluster NOT = 'a'", "expected IN or LIKE"),
        ("cluster = 'a' # x", "unexpected text"),
    ],
)
def test_property_errors(expression: str, problem: str) -> None:
    with pytest.raises(PropertyError, match=re.escape(problem)):
        compile_properties(expression, KNOWN)


def test_resource_requests() -> None:
    req = parse_request(
        "{cluster='paravance'}/nodes=2+{type='kavlan'}/vlan=1+slash_22=2,walltime=2:30"
    )
    assert [(g.kind, g.count) for g in req.groups] == [("nodes", 2), ("vlan", 1), ("subnet", 2)]
    assert req.walltime == 9000
    assert parse_request("").groups[0].count == 1 and parse_request("").walltime is None
    best = parse_request("{cluster in ('a','b+c')}/cluster=1/nodes=BEST").groups
    assert len(best) == 1 and best[0].count is None and best[0].clusters == 1
    assert parse_request("/host=3/core=2").groups[0].count == 3
    assert [parse_walltime(t) for t in ("2", "1:30", "0:0:45", 60)] == [7200, 5400, 45, 60]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("nodes=0", "count must be >= 1"),
        ("racks=2", "unknown resource level 'racks'"),
        ("{cluster='a'/nodes=1", "unbalanced"),
        ("nodes=1,walltime=soon", "Bad walltime format"),
        ("nodes=1,besteffort=1", "unknown option"),
        ("nodes", "expected level=count"),
    ],
)
def test_resource_request_errors(text: str, problem: str) -> None:
    with pytest.raises(ResourceError, match=problem):
        parse_request(text)


def test_allocation() -> None:
    rennes = default_inventory().site("rennes")
    assert rennes is not None
    pool = Pool(rennes.nodes(), rennes.vlans, rennes.subnets)
    two_clusters = allocate(parse_request("cluster=2/nodes=2"), pool, rennes)
    assert two_clusters is not None
    assert [n.uid for n in two_clusters.nodes] == [
        "parasilo-1", "parasilo-2", "paravance-1", "paravance-2",
    ]  # fmt: skip
    assert (
        allocate(parse_request("cluster=1/nodes=5"), pool, rennes).nodes[0].cluster == "paravance"
    )  # type: ignore[union-attr]
    nets = allocate(parse_request("{type='kavlan-local'}/vlan=3+slash_22=4"), pool, rennes)
    assert nets is not None and nets.vlans == ("1", "2", "3") and len(nets.subnets) == 4
    assert allocate(parse_request("{type='kavlan-local'}/vlan=4"), pool, rennes) is None
    assert allocate(parse_request("slash_22=5"), pool, rennes) is None  # a /20 holds 4
    with_props = allocate(parse_request("nodes=2"), pool, rennes, properties="cluster='paravance'")
    assert with_props is not None and {n.cluster for n in with_props.nodes} == {"paravance"}


def _table(alive: set[str] | None = None) -> tuple[JobTable, Timings]:
    timings = Timings(schedule_s=5, launch_s=5, finish_s=2)
    inv = default_inventory()
    return JobTable(inv, timings, lambda n: alive is None or n.fqdn in alive), timings


def _submit(table: JobTable, resources: str, at: float, user: str = "alice") -> int:
    site = table.inventory.site("rennes")
    assert site is not None
    return table.submit(site, user, {"command": "x", "resources": resources}, at).uid


def test_scheduler_replays_a_long_jump_in_time_order() -> None:
    """One jump of an hour gives what living through the hour gives."""
    results = []
    for steps in ([3600.0], [1.0] * 3600):
        table, _ = _table()
        big = _submit(table, "{cluster='parasilo'}/nodes=4,walltime=0:10", 0)
        small = _submit(table, "{cluster='parasilo'}/nodes=2,walltime=2", 1)
        now = 0.0
        for step in steps:
            now += step
            table.tick(now)
        results.append([(j.uid, j.state, j.started_at, j.stopped_at) for j in table.jobs.values()])
        assert {j.uid: j.state for j in table.jobs.values()} == {
            big: "terminated",
            small: "running",
        }
    assert results[0] == results[1]
    table, _ = _table()
    big = _submit(table, "{cluster='parasilo'}/nodes=4,walltime=0:10", 0)
    small = _submit(table, "{cluster='parasilo'}/nodes=2,walltime=2", 1)
    table.tick(3600)
    started = table.get("rennes", small).started_at
    assert started == 5 + 600 + 2  # big launched at 5, ran 600 s, finished 2 s later


def test_scheduler_waiting_job_delete_and_force() -> None:
    table, _ = _table()
    uid = _submit(table, "nodes=1", 0)
    table.delete("rennes", str(uid), "alice", 1)
    assert table.get("rennes", uid).state == "error"
    with pytest.raises(ApiError, match="already killed"):
        table.delete("rennes", str(uid), "alice", 2)
    other = _submit(table, "{cluster='parasilo'}/nodes=4", 0)
    table.force("rennes", str(other), "running", 0)
    assert table.get("rennes", other).state == "running"
    blocked = _submit(table, "{cluster='parasilo'}/nodes=1", 0)
    with pytest.raises(ApiError, match="not enough free resources") as caught:
        table.force("rennes", str(blocked), "running", 0)
    assert caught.value.status == 409
    with pytest.raises(ApiError, match="unknown job state"):
        table.force("rennes", str(blocked), "sleeping", 0)


def test_scheduler_respects_queue_types_and_dead_nodes() -> None:
    table, _ = _table(alive={"paravance-1.rennes.grid5000.fr", "paravance-2.rennes.grid5000.fr"})
    with pytest.raises(ApiError, match="not enough resources"):
        _submit(table, "nodes=3", 0)
    uid = _submit(table, "nodes=2", 0)
    table.tick(10)
    assert [n.uid for n in table.get("rennes", uid).allocation.nodes] == [
        "paravance-1",
        "paravance-2",
    ]
    site = table.inventory.site("rennes")
    assert site is not None
    with pytest.raises(ApiError, match="queue 'production' does not exist"):
        table.submit(site, "alice", {"command": "x", "queue": "production"}, 0)


def test_inventory_file(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text(
        "sites:\n  lyon:\n    clusters:\n      nova: {nodes: 3, cores: 8,"
        " properties: {gpu: 'NO'}}\n    vlans: {'1': kavlan-local}\n    subnets: 10.0.0.0/21\n"
    )
    inv = load_inventory(path)
    lyon = inv.site("lyon")
    assert lyon is not None and [n.fqdn for n in lyon.nodes()][-1] == "nova-3.lyon.grid5000.fr"
    assert lyon.subnets == ("10.0.0.0/22", "10.0.4.0/22") and lyon.environment("debian12-min")
    path.write_text("sites:\n  lyon:\n    clusters:\n      nova: {nodes: 0}\n")
    with pytest.raises(InventoryError, match=r"inv.yaml: sites.lyon.clusters.nova.nodes: expected"):
        load_inventory(path)
    path.write_text("sites:\n  lyon:\n    clusters: {nova: {nodes: 1}}\n    vlans: {'1': vxlan}\n")
    with pytest.raises(InventoryError, match=re.escape("vlans.1: type must be one of")):
        load_inventory(path)
    path.write_text("sites: [")
    with pytest.raises(InventoryError, match="not valid YAML/JSON"):
        load_inventory(path)
    with pytest.raises(InventoryError, match="cannot read the inventory"):
        load_inventory(tmp_path / "missing.yaml")


BINDING = """\
# nodes of the rehearsal
Host *.rennes.grid5000.fr
    User root
Host paravance-1.rennes.grid5000.fr
    HostName 10.0.0.1
    Port 2201
    User nobody
Host paravance-2
    HostName=10.0.0.2
    Port = 2202
Host access.* !access.nancy.*
    User someone
"""


def test_binding_parses_openssh_style_config(tmp_path: Path) -> None:
    bindings = parse_bindings(BINDING, default_inventory())
    first = bindings["paravance-1.rennes.grid5000.fr"]
    assert (first.hostname, first.port, first.user) == ("10.0.0.1", 2201, "root")  # first wins
    second = bindings["paravance-2.rennes.grid5000.fr"]
    assert (second.hostname, second.port, second.user) == ("10.0.0.2", 2202, None)
    assert set(bindings) == {"paravance-1.rennes.grid5000.fr", "paravance-2.rennes.grid5000.fr"}
    path = tmp_path / "ssh_config"
    path.write_text(BINDING + "Host paravanse-3.rennes.grid5000.fr\n  Port 22\n")
    with pytest.raises(
        BindingError, match=re.escape("ssh_config: host 'paravanse-3.rennes.grid5000.fr' is not")
    ):
        load_bindings(path, default_inventory())
    with pytest.raises(BindingError, match=":1: Match blocks are not supported"):
        parse_bindings("Match host x\n", default_inventory())
    with pytest.raises(BindingError, match="bad port 'ssh'"):
        parse_bindings("Host grisou-1\n Port ssh\n", default_inventory())
    with pytest.raises(BindingError, match="cannot read the binding"):
        load_bindings(tmp_path / "nope", default_inventory())


def test_clock() -> None:
    ticks = iter([100.0, 100.0, 150.0, 150.0, 160.0, 170.0])
    clock = Clock(start=1000.0, source=lambda: next(ticks))
    assert clock.now() == 1000.0
    assert clock.now() == 1050.0  # follows its source
    clock.freeze()
    assert clock.advance(30) == 1080.0 and clock.now() == 1080.0
    clock.unfreeze()
    assert clock.now() == 1090.0
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    timings = Timings()
    with pytest.raises(ValueError, match="unknown timing 'boot_s'"):
        timings.update({"boot_s": 1})
    with pytest.raises(ValueError, match="must be a number >= 0"):
        timings.update({"launch_s": -1})
