"""The docker flavour end to end with a private dockerd (``--dockerd private``): the
selftest composition built by real nix, 3 containers, the driver, crash/start,
block/unblock, netem on a host without sch_netem, and a stop that leaves nothing —
with the host's firewall and routes byte-identical before and after."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nxc.ledger import process_start_time
from nxc.project import Project
from tests.conftest import run_nxc
from tests.docker.conftest import host_links, host_network

pytestmark = pytest.mark.docker

SCENARIO = """\
b0 = node1.control.boot_id()
node1.crash()
assert not node1.is_up()
node1.start()
b1 = node1.control.boot_id()
assert b1 and b1 != b0, (b0, b1)
assert node1.succeed("cat /run/nxc/boot_id").strip() == b1
host = open("/proc/sys/kernel/random/boot_id").read().strip()
assert b1 != host, "the container reported the host kernel's boot id"
node1.wait_for_open_port(80)
node1.succeed("wget -q -T 5 -O - http://node2/index.html")
node3.succeed("wget -q -T 5 -O - http://node1/index.html")

# A link coming back takes the segment a moment (neighbour caches): wait for it, bounded.
node2.block()
node1.fail("ping -c 1 -W 1 node2")
node2.fail("ping -c 1 -W 1 node1")
node2.unblock()
assert node2.succeed("cat /sys/class/net/nxc0/address").strip() == "52:54:00:00:00:02"
node1.wait_until_succeeds("ping -c 1 -W 1 node2", timeout=30)
# Docker names the NIC anew at each connection: a second round must work as well.
node2.block()
node1.fail("ping -c 1 -W 1 node2")
node2.unblock()
node1.wait_until_succeeds("wget -q -T 2 -O - http://node2/index.html", timeout=30)
node2.wait_until_succeeds("ping -c 1 -W 1 fd00:6e78:63::3", timeout=30)
"""

TOPOLOGY = """\
nxc_topology: 1
constraints:
  - {from: node1, to: node2, delay: 20ms, loss: 1%}
"""


@dataclass
class Running:
    project_dir: Path
    before: dict[str, str]
    links: set[str]
    start_output: str
    state: dict  # type: ignore[type-arg]


@pytest.fixture(scope="module")
def private3(built_docker: Path) -> Iterator[Running]:
    before = host_network()
    links = host_links()
    result = run_nxc(
        "start", "-f", "docker", "--dockerd", "private", "-r", "node=3", cwd=built_docker
    )
    try:
        assert result.returncode == 0, result.stderr
        state = json.loads(Project(built_docker).runtime_file.read_text())["state"]
        yield Running(built_docker, before, links, result.stdout + result.stderr, state)
    finally:
        run_nxc("stop", cwd=built_docker)


def _client(running: Running):  # type: ignore[no-untyped-def]
    import docker

    return docker.DockerClient(base_url=running.state["daemon"]["url"], version="auto")


def test_containers_run_on_the_private_daemon(private3: Running) -> None:
    assert "starting a private dockerd" in private3.start_output
    daemon = private3.state["daemon"]
    assert daemon["mode"] == "private"
    assert process_start_time(daemon["pid"]) == daemon["start_time"]
    assert Path("/run/netns", daemon["netns"]).exists()
    client = _client(private3)
    label = f"nxc.deployment={private3.state['deployment']}"
    containers = client.containers.list(filters={"label": label})
    assert sorted(c.labels["nxc.node"] for c in containers) == ["node1", "node2", "node3"]
    attrs = containers[0].attrs
    host = attrs["HostConfig"]
    assert host["CapAdd"] == ["NET_ADMIN"] and not host["Privileged"]
    assert host["Memory"] == 256 * 1024 * 1024  # the composition's resources.memory_mb
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/nxc-input"]["RW"] is False
    assert set(host["Tmpfs"]) == {"/run", "/run/lock", "/tmp"}
    network = client.networks.get(private3.state["network"])
    subnets = {pool["Subnet"] for pool in network.attrs["IPAM"]["Config"]}
    assert subnets == {"198.18.0.0/16", "fd00:6e78:63::/64"}
    # The private host key is root's only, inside the container too.
    mode = containers[0].exec_run(["stat", "-c", "%a %U", "/nxc-input/hostkey"]).output
    assert mode.decode().split() == ["600", "root"]
    # The daemon's network stays in its namespace: the host gained no interface.
    assert host_links() == private3.links


def test_status_shows_the_containers(private3: Running) -> None:
    result = run_nxc("status", cwd=private3.project_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("running") == 3
    assert "private dockerd" in result.stdout


def test_test_script_passes(private3: Running) -> None:
    # The selftest testScript: every node resolves every other by name and fetches its
    # page over the deployment network.
    result = run_nxc("driver", "-t", cwd=private3.project_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6/6 subtests passed" in result.stdout + result.stderr


def test_crash_start_block_unblock(private3: Running, tmp_path: Path) -> None:
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    result = run_nxc("driver", str(script), cwd=private3.project_dir)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def test_netem_apply_fails_cleanly_without_sch_netem(private3: Running, tmp_path: Path) -> None:
    from nxc.netem import Netem
    from nxc.netem.apply import NetemMissing
    from nxc.netem.state import session_from_running
    from nxc.running import running

    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY)
    result = run_nxc("netem", "apply", str(topology), cwd=private3.project_dir)
    assert result.returncode == 1
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("nxc: error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "no 'netem' qdisc (sch_netem)" in errors[0]
    session = session_from_running(running(Project(private3.project_dir)))
    try:
        for name, machine in session.machines.items():
            # Nothing half-applied: no HTB root, no ifb, the interface as Docker made it.
            qdiscs = machine.succeed("/usr/sbin/tc qdisc show dev nxc0")
            assert "htb" not in qdiscs and "netem" not in qdiscs, (name, qdiscs)
            assert "ifb" not in machine.succeed("/usr/sbin/ip -o link show"), name
        with pytest.raises(NetemMissing, match=r"validation cannot run.*no 'netem' qdisc"):
            Netem(session.deployment, session.machines, TOPOLOGY_DICT).validate()
    finally:
        for machine in session.machines.values():
            machine.release()


TOPOLOGY_DICT = {
    "nxc_topology": 1,
    "constraints": [{"from": "node1", "to": "node2", "delay": "20ms", "loss": "1%"}],
}


def test_stop_leaves_nothing(private3: Running) -> None:
    daemon = private3.state["daemon"]
    root = Path(daemon["root"])
    runtime_dir = Path(private3.state["runtime_dir"])
    result = run_nxc("stop", cwd=private3.project_dir)
    assert result.returncode == 0, result.stderr
    for node in ("node1", "node2", "node3"):
        assert f"removed container nxc-{private3.state['deployment']}-{node}" in result.stdout
    assert f"removed network {private3.state['network']}" in result.stdout
    assert process_start_time(daemon["pid"]) is None
    leftovers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(root).encode() in (entry / "cmdline").read_bytes():
                    leftovers.append(entry.name)
            except OSError:
                continue
    assert leftovers == []
    assert not Path("/run/netns", daemon["netns"]).exists()
    assert not root.exists() and not runtime_dir.exists()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(root) not in mounts
    project = Project(private3.project_dir)
    assert not project.current_dir.exists() and not project.ledger.path.exists()
    assert host_network() == private3.before
    again = run_nxc("stop", cwd=private3.project_dir)
    assert again.returncode == 0 and again.stdout.strip() == "nothing to stop"
    assert os.path.exists(private3.state["runtime_dir"]) is False
