"""The sync service, monitoring, faults and run records on docker, for real: a selftest
composition with a start order (two servers, a client that starts after both signalled)
built by real nix, three containers on a private dockerd, the deployment's redis
reached from inside the containers through the management network's relay."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nxc.project import Project
from nxc.session import running
from nxc.sync.client import SyncClient
from tests.conftest import run_nxc
from tests.docker.conftest import require_docker

pytestmark = pytest.mark.docker

COMPOSITION = """\
# The ring template's start order on docker: servers signal ring-connected once they
# serve; the client starts after every server did (server2 is late on purpose).
{ ... }:
{
  roles.server = {
    quantity = 2;
    resources.memory_mb = 256;
    startup = ''
      . /etc/nxc/env
      mkdir -p /srv && echo "$NXC_NODE" > /srv/index.html
      busybox httpd -p 80 -h /srv
      if [ "$NXC_INDEX" = 2 ]; then sleep 3; fi
      nxc-sync signal ring-connected
    '';
  };
  roles.client = {
    quantity = 1;
    resources.memory_mb = 256;
    start_after = { state = "ring-connected"; count = "server"; timeout = 120; };
    startup = ''
      nxc-sync signal client-started
      for s in server1 server2; do wget -q -T 5 -O - http://$s/index.html >> /tmp/seen; done
    '';
  };
}
"""
NODES = ("server1", "server2", "client1")


@dataclass
class Deployed:
    project_dir: Path
    state: dict[str, Any]
    machines: dict[str, Any]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    from nxc.driver.session import machines_of

    require_docker()
    directory = tmp_path_factory.mktemp("docker-experiments")
    result = run_nxc("init", "-t", "selftest", str(directory))
    assert result.returncode == 0, result.stderr
    (directory / "composition.nix").write_text(COMPOSITION)
    result = run_nxc("build", "-f", "docker", "--offline", cwd=directory)
    assert result.returncode == 0, result.stderr
    result = run_nxc("start", "-f", "docker", "--dockerd", "private", cwd=directory)
    machines: dict[str, Any] = {}
    try:
        assert result.returncode == 0, result.stderr
        state = json.loads(Project(directory).runtime_file.read_text())["state"]
        machines = {m.name: m for m in machines_of(running(Project(directory)))}
        yield Deployed(directory, state, machines)
    finally:
        for machine in machines.values():
            machine.release()
        run_nxc("stop", cwd=directory)


@pytest.fixture(scope="module")
def client(deployed: Deployed) -> Iterator[SyncClient]:
    with running(Project(deployed.project_dir)).sync().client("test") as made:
        yield made


def _driver(deployed: Deployed, tmp_path: Path, scenario: str) -> str:
    script = tmp_path / "scenario.py"
    script.write_text(scenario)
    result = run_nxc("driver", str(script), cwd=deployed.project_dir)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


# -- the sync service ---------------------------------------------------------------------


def test_sync_input_is_private_and_the_management_network_internal(deployed: Deployed) -> None:
    import docker

    machine = deployed.machines["client1"]
    assert machine.succeed("stat -c '%a %U' /nxc-input/sync /etc/nxc/sync").split() == [
        "600", "root", "600", "root",
    ]  # fmt: skip
    token = machine.succeed(". /etc/nxc/sync && echo $NXC_SYNC_TOKEN").strip()
    host = machine.succeed(". /etc/nxc/sync && echo $NXC_SYNC_HOST").strip()
    management = deployed.state["management"]
    assert host == management["gateway"] and management["relay"].startswith("netns:")
    api = docker.APIClient(base_url=deployed.state["daemon"]["url"], version="auto")
    try:
        network = api.inspect_network(management["network"])
        assert network["Internal"] is True
        attached = {c["Name"] for c in network["Containers"].values()}
        assert attached == {f"nxc-{deployed.state['deployment']}-{n}" for n in NODES}
        # The token reaches the container as a file only: not in its configuration.
        inspected = json.dumps(api.inspect_container(f"nxc-{deployed.state['deployment']}-client1"))
        assert token and token not in inspected
    finally:
        api.close()


def test_start_after_orders_the_client_after_both_servers(
    deployed: Deployed, client: SyncClient
) -> None:
    client.barrier("client-started", 1, timeout=120)
    connected = client.arrivals("ring-connected")
    started = client.arrivals("client-started")
    assert sorted(who for who, _ in connected) == ["server1", "server2"]
    assert started[0][0] == "client1"
    assert started[0][1] >= max(t for _, t in connected), (connected, started)
    machine = deployed.machines["client1"]
    machine.wait_until_succeeds("test $(wc -l < /tmp/seen) -eq 2", timeout=60)
    assert machine.succeed("cat /tmp/seen").split() == ["server1", "server2"]
    assert "waiting for 2 signal(s) of ring-connected" in machine.succeed("cat /run/nxc/sync.log")


def test_containers_meet_at_a_barrier(deployed: Deployed, client: SyncClient) -> None:
    # Start one program per container, then only read what they leave: nothing relays.
    for machine in deployed.machines.values():
        machine.execute(
            "nxc-sync signal-and-wait dk-meet 3 > /tmp/meet.seq && nxc-sync signal dk-released",
            check_output=False,
        )
    client.barrier("dk-released", 3, timeout=60)
    seqs = sorted(int(m.succeed("cat /tmp/meet.seq")) for m in deployed.machines.values())
    assert seqs == [1, 2, 3]
    arrived = client.arrivals("dk-meet")
    released = client.arrivals("dk-released")
    assert sorted(who for who, _ in arrived) == sorted(NODES)
    last_arrival = max(t for _, t in arrived)
    times = [t for _, t in released]
    spread = max(times) - min(times)
    print(
        f"barrier on 3 containers: release spread {spread:.3f}s, "
        f"last arrival -> last released signal {max(times) - last_arrival:.3f}s"
    )
    assert all(t >= last_arrival for t in times)
    assert spread < 5.0, f"the barrier released its containers {spread:.2f}s apart"


def test_a_blocked_container_still_reaches_the_sync_service(
    deployed: Deployed, client: SyncClient
) -> None:
    # block() disconnects the experiment network; the management network stays. (No
    # netem partition here: this host's kernel has no sch_netem, see test_faults.)
    server1 = deployed.machines["server1"]
    server1.block()
    try:
        server1.fail("ping -c 1 -W 1 server2")
        for machine in deployed.machines.values():
            machine.execute(
                "nxc-sync signal-and-wait dk-across 3 && touch /tmp/across", check_output=False
            )
        client.barrier("dk-across", 3, timeout=60)
        for machine in deployed.machines.values():
            machine.wait_for_file("/tmp/across", timeout=30)
        assert server1.succeed("nxc-sync signal dk-cut-off") == "1\n"
    finally:
        server1.unblock()
    deployed.machines["client1"].wait_until_succeeds("ping -c 1 -W 1 server1", timeout=30)


def test_a_wrong_token_cannot_join(deployed: Deployed, client: SyncClient) -> None:
    machine = deployed.machines["server2"]
    wrong = "sed 's/^NXC_SYNC_TOKEN=.*/NXC_SYNC_TOKEN=%s/' /etc/nxc/sync > /tmp/sync.other"
    machine.succeed(wrong % ("0" * 48))
    status, _ = machine.execute("NXC_SYNC_CONFIG=/tmp/sync.other nxc-sync signal dk-intruder")
    assert status == 3
    assert client.count("dk-intruder") == 0
    # The same file with the right token joins (the refusal was the token's).
    assert machine.succeed("nxc-sync signal dk-member") == "1\n"


# -- monitoring ---------------------------------------------------------------------------

METRICS_SCENARIO = """\
import time
for machine in (server1, server2, client1):
    assert machine.succeed("echo $NXC_METRICS_MODE").strip() == "container"
monitor.sync()
t0 = time.time()
load = faults.cpu("server2", workers=1)
time.sleep(5)
monitor.sync()
load.heal()
t1 = time.time()
server1.succeed("ping -q -c 20 -i 0.05 -s 1000 server2")
monitor.sync()
busy = {m: [round(p.value, 1) for p in monitor.cpu_percent(m, since=t0, until=t1)]
        for m in ("server1", "server2", "client1")}
used = {m: monitor.increase(m, "container_cpu_usage_seconds_total", t0, until=t1)
        for m in ("server1", "server2", "client1")}
sent = monitor.increase("server1", "node_network_transmit_bytes_total", t1,
                        {"device": "nxc0"})
got = monitor.increase("server2", "node_network_receive_bytes_total", t1, {"device": "nxc0"})
idle = monitor.increase("client1", "node_network_receive_bytes_total", t1, {"device": "nxc0"})
total = monitor.query("server2", "node_memory_MemTotal_bytes")[-1].value
print("RESULT", json.dumps({"busy": busy, "used": used, "sent": sent, "got": got,
                            "idle": idle, "total": total}))
"""


def test_cpu_load_shows_on_the_loaded_container_only(deployed: Deployed, tmp_path: Path) -> None:
    output = _driver(deployed, tmp_path, "import json\n" + METRICS_SCENARIO)
    line = next(ln for ln in output.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    busy = {node: statistics.median(values) for node, values in result["busy"].items()}
    used = result["used"]
    print(f"while server2 ran one CPU worker: median busy % {busy}, CPU seconds {used}")
    # One busy loop on a 2-CPU host: up to ~50% of the CPUs the container may use, much
    # less when other jobs load the host; the others only run the scrapes. So: relative.
    others = ("server1", "client1")
    assert busy["server2"] > 3 * max(max(busy[n] for n in others), 1.0), busy
    assert used["server2"] > 5 * max(used[n] for n in others) and used["server2"] > 0.2, used
    # Each container's own NIC: 20 pings of 1 kB out of server1 and into server2.
    assert result["sent"] > 20_000 and result["got"] > 20_000, result
    assert result["idle"] < 5_000, result
    # MemTotal is the container's memory limit (256 MiB), not the host's memory.
    assert result["total"] == 256 * 1024 * 1024


# -- faults -------------------------------------------------------------------------------

FAULTS_SCENARIO = """\
from nxc.faults.plans import FaultError
from nxc.netem.apply import NetemMissing

def refused(call, *words):
    try:
        call()
    except (FaultError, NetemMissing) as exc:
        text = str(exc)
        assert "\\n" not in text, text
        for word in words:
            assert word in text, (word, text)
        print("REFUSED", text)
        return
    raise AssertionError(f"not refused: {words}")

date0 = int(client1.succeed("date +%s"))
refused(lambda: faults.clock_skew("client1", offset=3600), "clock_skew is refused",
        "shares the host kernel's clock")
assert abs(int(client1.succeed("date +%s")) - date0) < 30
refused(lambda: faults.disk_full("client1", path="/"), "disk_full is refused",
        "host's disk", "/tmp")
refused(lambda: faults.disk_full("client1", path="/var/lib/../../srv"), "disk_full is refused")
refused(lambda: faults.partition(pattern="halves", seed=1), "no 'netem' qdisc (sch_netem)")
refused(lambda: faults.loss(loss="30%"), "no 'netem' qdisc (sch_netem)")

# disk_full on the container's /tmp: writes fail, then succeed after the heal.
full = faults.disk_full("client1", path="/tmp")
client1.fail("dd if=/dev/zero of=/tmp/more bs=1k count=64")
full.heal()
client1.succeed("dd if=/dev/zero of=/tmp/more bs=1k count=64 && rm /tmp/more")

# pause: a counting process makes no progress, then goes on.
server1.succeed("(i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done) "
                ">/dev/null 2>&1 &")
server1.wait_until_succeeds("test $(cat /tmp/count) -gt 3", timeout=20)
paused = faults.pause("server1", pattern="while :; do i=")
before = server1.succeed("cat /tmp/count")
time.sleep(1)
assert server1.succeed("cat /tmp/count") == before
paused.heal()
server1.wait_until_succeeds(f"test $(cat /tmp/count) -gt {int(before) + 3}", timeout=20)

# kill: the counter is gone (or a zombie), and counts no more.
faults.kill("server1", pattern="while :; do i=")
stopped = server1.succeed("cat /tmp/count")
time.sleep(0.5)
assert server1.succeed("cat /tmp/count") == stopped

# memory: the container's cgroup holds the extra 32 MiB, then lets it go.
usage = "cat /sys/fs/cgroup/memory/memory.usage_in_bytes 2>/dev/null || " \\
        "cat /sys/fs/cgroup/memory.current"
base = int(server2.succeed(usage))
held = faults.memory("server2", size="32M")
assert int(server2.succeed(usage)) - base > 30 * 1024 * 1024
held.heal()
assert int(server2.succeed(usage)) - base < 8 * 1024 * 1024
"""


def test_faults_on_containers(deployed: Deployed, tmp_path: Path) -> None:
    output = _driver(deployed, tmp_path, "import time\n" + FAULTS_SCENARIO)
    assert output.count("REFUSED ") == 5, output[-4000:]
    run = Path(running(Project(deployed.project_dir)).run.directory)
    events = [json.loads(line) for line in (run / "faults.jsonl").read_text().splitlines()]
    kinds = [(e["event"], e["kind"], e["ok"]) for e in events]
    # Refused before anything ran: the flavour's refusals leave no event; netem's
    # failures are recorded as failed faults.
    assert ("fault", "clock_skew", True) not in kinds
    assert ("fault", "partition", False) in kinds
    for kind in ("disk_full", "pause", "kill", "memory"):
        assert ("fault", kind, True) in kinds, kinds
    assert ("heal", "disk_full", True) in kinds and ("heal", "pause", True) in kinds


# -- the run record -------------------------------------------------------------------------


def test_zz_stop_keeps_container_logs_and_no_secret(deployed: Deployed) -> None:
    from nxc.records.secrets import scan_tree

    project = Project(deployed.project_dir)
    current = running(project)
    run = current.run
    token = current.sync().token
    host_keys = [p.read_bytes() for p in (project.keys_dir / "hosts").iterdir()
                 if not p.name.endswith(".pub")]  # fmt: skip
    for machine in deployed.machines.values():
        machine.release()
    deployed.machines.clear()
    result = run_nxc("stop", cwd=deployed.project_dir)
    assert result.returncode == 0, result.stderr
    document = run.load()
    for node in NODES:
        log = run.directory / "nodes" / f"{node}.console.log"
        assert f"nxc-ready node={node}" in log.read_text()
        assert (log.stat().st_mode & 0o777) == 0o600
        assert document["logs"][node]["console"] == f"nodes/{node}.console.log"
    facts = document["facts"]["docker"]
    assert facts["ServerVersion"] and facts["Driver"] == "vfs" and facts["CgroupVersion"]
    assert "Name" not in facts and "ID" not in facts  # the host's name and daemon id
    assert list(scan_tree(run.directory)) == []
    for path in run.directory.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert token.encode() not in data, path
            for key in host_keys:
                body = b"".join(key.splitlines()[1:-1])
                assert body[:64] not in data.replace(b"\n", b""), path
