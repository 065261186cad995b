"""Fault plans (pure), partition patterns, timelines, and the injector on local nodes
(real processes on this host: kill, pause; the VM tests do clocks, disks, netem)."""

from __future__ import annotations

import io
import json
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxc.contracts import Deployment
from nxc.driver.local import LocalNodeControl
from nxc.driver.machine import Machine
from nxc.errors import ContractError
from nxc.faults import Fault, FaultError, Injector, Timeline, plan
from nxc.faults.patterns import cuts
from nxc.faults.plans import NetemPlan, PowerPlan, ShellPlan, resolve_nodes
from nxc.log import Logger
from nxc.netem import Topology


def deployment(roles: dict[str, int]) -> Deployment:
    nodes = []
    ordinal = 0
    for role, count in roles.items():
        for index in range(1, count + 1):
            ordinal += 1
            nodes.append(
                {
                    "name": f"{role}{index}",
                    "role": role,
                    "index": index,
                    "ipv4": f"198.18.0.{ordinal}",
                    "ipv6": f"fd00::{ordinal}",
                    "mac": f"52:54:00:00:00:{ordinal:02x}",
                }
            )
    return Deployment.from_dict(
        {
            "nxc_deployment": 1,
            "id": "faults-abc123",
            "composition": "faults",
            "flavour": "vm-ramdisk",
            "network": {
                "ipv4_prefix": "198.18.0.0/16",
                "ipv6_prefix": "fd00::/64",
                "interface": "nxc0",
            },
            "ssh": {"authorized_keys": ["ssh-ed25519 AAAA test"]},
            "roles": roles,
            "nodes": nodes,
        }
    )


def cut_pairs(topology: Topology, dep: Deployment) -> set[tuple[str, str]]:
    return {
        pair for pair, shaping in topology.resolve(dep).items() if shaping.effective_loss >= 100
    }


# -- patterns and plans ---------------------------------------------------------------


def test_partition_patterns_follow_jepsen() -> None:
    nodes = [f"n{i}" for i in range(1, 6)]
    pairs, detail = cuts("halves", nodes, random.Random(1))
    assert len(detail["minority"]) == 2 and len(detail["majority"]) == 3
    assert set(detail["minority"]) | set(detail["majority"]) == set(nodes)
    pairs, detail = cuts("isolate", nodes, random.Random(2))
    assert pairs == [((detail["isolated"],), tuple(n for n in pairs[0][1]))]
    assert detail["isolated"] not in pairs[0][1] and len(pairs[0][1]) == 4
    pairs, detail = cuts("ring", nodes, random.Random(3))
    ring = detail["ring"]
    # 5 nodes: each keeps its two ring neighbours (a majority with itself).
    reachable = {n: set(nodes) - {n} for n in nodes}
    for (a,), (b,) in pairs:
        reachable[a].discard(b)
        reachable[b].discard(a)
    for i, node in enumerate(ring):
        assert reachable[node] == {ring[i - 1], ring[(i + 1) % 5]}
    assert len({frozenset(v | {k}) for k, v in reachable.items()}) == 5
    pairs, detail = cuts("bridge", nodes, random.Random(4))
    (a, b) = pairs[0]
    assert detail["bridge"] not in a + b and len(a) + len(b) == 4
    # Reproducible with a seed, different choices without.
    assert cuts("halves", nodes, random.Random(9)) == cuts("halves", nodes, random.Random(9))
    with pytest.raises(ValueError, match="needs at least 3 nodes"):
        cuts("bridge", nodes[:2], random.Random())


def test_partition_plan_changes_only_the_topology() -> None:
    dep = deployment({"node": 3})
    the_plan = plan(
        Fault("partition", ("node1", "node2", "node3"), {"pattern": "isolate"}),
        dep,
        random.Random(5),
    )
    assert isinstance(the_plan, NetemPlan)
    alone = the_plan.detail["isolated"]
    others = {"node1", "node2", "node3"} - {alone}
    cut = cut_pairs(the_plan.transform(Topology()), dep)
    assert cut == {(alone, o) for o in others} | {(o, alone) for o in others}
    explicit = plan(
        Fault("partition", ("node1",), {"groups": [["node1"], ["node2", "node3"]]}), dep
    )
    assert isinstance(explicit, NetemPlan)
    assert ("node1", "node3") in cut_pairs(explicit.transform(Topology()), dep)
    spike = plan(Fault("loss", ("node1", "node2"), {"loss": "30%"}), dep)
    assert isinstance(spike, NetemPlan)
    shaped = spike.transform(Topology()).resolve(dep)
    assert shaped[("node1", "node2")].effective_loss == pytest.approx(30)
    assert ("node1", "node3") not in shaped or shaped[("node1", "node3")].is_noop()


def test_shell_plans_undo_what_they_did() -> None:
    dep = deployment({"node": 2})
    pause = plan(Fault("pause", ("node1",), {"pattern": "worker.sh"}, "p1"), dep)
    assert isinstance(pause, ShellPlan)
    assert (
        "kill -STOP" in pause.apply["node1"] and "/run/nxc/faults/p1.pids" in pause.apply["node1"]
    )
    assert "kill -CONT" in pause.undo["node1"]
    # The pattern never appears in clear on a command line (it would match itself).
    assert "worker.sh" not in pause.apply["node1"]
    skew = plan(Fault("clock_skew", ("node1", "node2"), {"offset": -30}, "c1"), dep)
    assert isinstance(skew, ShellPlan) and set(skew.apply) == {"node1", "node2"}
    assert "-off" in skew.undo["node2"]
    crash = plan(Fault("crash", ("node2",)), dep)
    assert crash == PowerPlan(("node2",), "crash", "start")
    for bad, message in (
        (Fault("pause", ("node1",), {}), "exactly one of name, pid, pattern, service"),
        (Fault("kill", ("node1",), {"pid": "x"}), "pid must be a number"),
        (Fault("kill", ("node1",), {"name": "a", "signal": "BOOM!"}), "bad signal"),
        (Fault("clock_skew", ("node1",), {"offset": 1.5}), "whole seconds"),
        (Fault("disk_full", ("node1",), {"path": "data"}), "absolute"),
        (Fault("memory", ("node1",), {"size": "lots"}), "size must be like"),
        (Fault("partition", ("node1",), {"pattern": "zigzag"}), "unknown pattern"),
        (Fault("loss", ("node1",), {"delay": "1ms"}), "give the loss"),
        (Fault("boom", ("node1",), {}), "unknown fault 'boom'"),
    ):
        with pytest.raises(FaultError, match=message):
            plan(bad, dep)


def test_targets_are_nodes_or_roles() -> None:
    dep = deployment({"server": 2, "client": 1})
    assert resolve_nodes(dep, None) == ("server1", "server2", "client1")
    assert resolve_nodes(dep, ["client", "server2"]) == ("client1", "server2")
    with pytest.raises(FaultError, match="no node or role named 'db'"):
        resolve_nodes(dep, "db")


# -- timelines ------------------------------------------------------------------------


def test_timeline_files_are_checked(tmp_path: Path) -> None:
    good = Timeline.of(
        [
            {"at": 2, "fault": "pause", "nodes": ["node1"], "name": "x", "for": 1.5},
            {"at": 0.5, "fault": "cpu", "id": "hot"},
            {"at": 4, "heal": "hot"},
        ],
        seed=3,
    )
    assert [(e.at, e.action, e.kind or e.target) for e in good.entries] == [
        (0.5, "fault", "cpu"),
        (2.0, "fault", "pause"),
        (3.5, "heal", "e1"),
        (4.0, "heal", "hot"),
    ]
    assert good.entries[1].params == {"name": "x"}
    path = tmp_path / "bad.yaml"
    for text, message in (
        ("events: []", "not a fault timeline"),
        ("nxc_faults: 1\nevents: []", "non-empty list"),
        ("nxc_faults: 1\nevents: [{at: -1, fault: cpu}]", r"events\[0\]: at must be"),
        ("nxc_faults: 1\nevents: [{at: 1, fault: cpuu}]", "unknown fault 'cpuu'"),
        ("nxc_faults: 1\nevents: [{at: 1, heal: nope}]", "heal 'nope': no fault has that id"),
        ("nxc_faults: 1\nevents: [{at: 1, fault: cpu, heal: x}]", "either fault"),
        ("nxc_faults: 1\nevents: [{at: 1, fault: cpu, for: 0}]", "for must be a positive"),
        (
            "nxc_faults: 1\nevents: [{at: 1, fault: cpu, id: a}, {at: 2, fault: cpu, id: a}]",
            "used twice",
        ),
        ("nxc_faults: [", "malformed YAML"),
    ):
        path.write_text(text)
        with pytest.raises(ContractError, match=message):
            Timeline.load(path)


# -- the injector on local nodes ---------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[Injector, dict[str, Machine]]]:
    logger = Logger(stream=io.StringIO())
    dep = deployment({"node": 2})
    machines = {}
    for node in dep.nodes:
        control = LocalNodeControl(node.name, tmp_path / node.name)
        machines[node.name] = Machine(node.name, node.role, node.index, control, logger)
    injector = Injector(dep, machines, logger, record=tmp_path / "faults.jsonl")
    yield injector, machines
    injector.close()
    for machine in machines.values():
        machine.release()


def counter(tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    """A process that counts into a file every 20 ms, with a recognisable command line."""
    script = tmp_path / f"{name}.sh"
    script.write_text(
        f"n=0; while :; do n=$((n+1)); echo $n > {tmp_path}/{name}.count; sleep 0.02; done\n"
    )
    return subprocess.Popen(["sh", str(script)], start_new_session=True)


def count(tmp_path: Path, name: str) -> int:
    try:
        return int((tmp_path / f"{name}.count").read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def test_pause_then_resume_a_process(
    local: tuple[Injector, dict[str, Machine]], tmp_path: Path
) -> None:
    injector, _ = local
    process = counter(tmp_path, "pauseme")
    try:
        while count(tmp_path, "pauseme") < 3:
            time.sleep(0.02)
        paused = injector.pause("node1", pattern=f"{tmp_path}/pauseme.sh")
        frozen = count(tmp_path, "pauseme")
        time.sleep(0.5)
        assert count(tmp_path, "pauseme") <= frozen + 1, "a paused process made progress"
        paused.heal()
        deadline = time.monotonic() + 10
        while count(tmp_path, "pauseme") <= frozen + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert count(tmp_path, "pauseme") > frozen + 3, "the process did not continue"
        with pytest.raises(FaultError, match="no command line 'nothing-like-this' running"):
            injector.pause("node1", pattern="nothing-like-this")
    finally:
        process.kill()
        process.wait()
    events = [json.loads(line) for line in (tmp_path / "faults.jsonl").read_text().splitlines()]
    assert [(e["event"], e["ok"]) for e in events] == [
        ("fault", True),
        ("heal", True),
        ("fault", False),
    ]


def test_kill_with_restart_and_a_timeline_in_order(
    local: tuple[Injector, dict[str, Machine]], tmp_path: Path
) -> None:
    injector, _ = local
    victim = counter(tmp_path, "victim")
    try:
        timeline = Timeline.of(
            [
                {
                    "at": 0.2,
                    "fault": "kill",
                    "nodes": ["node1"],
                    "pattern": f"{tmp_path}/victim.sh",
                    "signal": "TERM",
                    "restart": f"echo restarted > {tmp_path}/restarted",
                    "id": "k",
                },
                {"at": 0.6, "fault": "cpu", "nodes": ["node2"], "workers": 1, "for": 0.4},
                {"at": 1.4, "heal": "k"},
            ]
        )
        run = injector.timeline(timeline)
        run.wait(timeout=30)
        assert victim.wait(timeout=10) != 0
        # The restart runs in the background, in its own session.
        restarted = tmp_path / "restarted"
        deadline = time.monotonic() + 10
        while not restarted.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert restarted.read_text() == "restarted\n"
    finally:
        if victim.poll() is None:
            victim.kill()
    events = [json.loads(line) for line in (tmp_path / "faults.jsonl").read_text().splitlines()]
    assert [(e["event"], e["id"]) for e in events] == [
        ("fault", "k"),
        ("fault", "e2"),
        ("heal", "e2"),
        ("heal", "k"),
    ]
    for event, at in zip(events, (0.2, 0.6, 1.0, 1.4), strict=True):
        assert at <= event["offset"] < at + 0.5, event
    assert injector.active == []
