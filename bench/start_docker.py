"""`nxc start -f docker` to all-ready vs a plain SDK script starting the same containers,
and vs `nxc start` of the same composition as VMs.

A dockerd of the benchmark's own runs in its own network namespace (no iptables, as
nxc's private daemon); nxc uses it as "the user's" daemon (DOCKER_HOST), with the
selftest image already loaded, so both sides only create the network and containers.
The baseline is the simplest parallel script: it creates the same network (same
addresses) and the same containers (image, command, inputs mounted read-only, tmpfs,
NET_ADMIN, memory limit, MAC and addresses) in a thread pool, starts them, and follows
each log until the agent's ready line; it reuses the inputs nxc wrote. Runs alternate
so both sides share the machine's noise.

    python bench/start_docker.py [ROUNDS] [--no-vms]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import fmt, median, nxc, selftest_project

from nxc.flavours.docker import daemon as daemons
from nxc.flavours.docker.kinds import KINDS
from nxc.ledger import BUILTIN_KINDS, Ledger, ReleaseContext
from nxc.project import Project

SIZES = (3, 10)


def timed_nxc_start(project: Path, nodes: int, keep: Path) -> tuple[float, dict[str, Any]]:
    begin = time.monotonic()
    nxc("start", "-f", "docker", "-r", f"node={nodes}", cwd=project)
    elapsed = time.monotonic() - begin
    state: dict[str, Any] = json.loads(Project(project).runtime_file.read_text())["state"]
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(Path(state["runtime_dir"]) / "inputs", keep)
    nxc("stop", cwd=project)
    return elapsed, state


def timed_plain(api: Any, state: dict[str, Any], inputs: Path, image: str) -> float:
    """The same network and containers, by a plain parallel SDK script."""
    from docker.types import IPAMConfig, IPAMPool

    network = "plain-bench"
    names = sorted(state["nodes"], key=lambda n: int(n.removeprefix("node")))

    def create_and_wait(name: str) -> None:
        node = state["nodes"][name]
        container = f"plain-{name}"
        api.create_container(
            image,
            name=container,
            command=["/init"],
            hostname=name,
            environment={"container": "docker"},
            tty=True,
            stop_signal="SIGUSR2",
            mac_address=node["mac"],
            host_config=api.create_host_config(
                binds={str(inputs / name): {"bind": "/nxc-input", "mode": "ro"}},
                tmpfs={"/run": "", "/run/lock": "", "/tmp": ""},
                cap_add=["NET_ADMIN"],
                mem_limit="256m",
                network_mode=network,
            ),
            networking_config=api.create_networking_config(
                {
                    network: api.create_endpoint_config(
                        ipv4_address=node["ipv4"].split("/")[0],
                        ipv6_address=node["ipv6"].split("/")[0],
                        aliases=[name],
                    )
                }
            ),
        )
        api.start(container)
        seen = b""
        # (a TTY container's log comes a byte at a time from the SDK)
        for chunk in api.logs(container, stream=True, follow=True):
            seen += chunk
            if b"nxc-ready" in seen:
                return
        status = api.inspect_container(container)["State"]
        tail = api.logs(container, tail=10).decode(errors="replace")
        raise SystemExit(f"baseline: {name} stopped before its ready line: {status}\n{tail}")

    begin = time.monotonic()
    api.create_network(
        network,
        driver="bridge",
        enable_ipv6=True,
        ipam=IPAMConfig(
            pool_configs=[
                IPAMPool(subnet="198.18.0.0/16", gateway="198.18.255.254"),
                IPAMPool(subnet="fd00:6e78:63::/64", gateway="fd00:6e78:63:0:ffff:ffff:ffff:fffe"),
            ]
        ),
    )
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(create_and_wait, names))
    elapsed = time.monotonic() - begin
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(lambda n: api.remove_container(f"plain-{n}", force=True, v=True), names))
    api.remove_network(network)
    return elapsed


def timed_vms(project: Path, nodes: int) -> float:
    begin = time.monotonic()
    nxc("start", "-r", f"node={nodes}", cwd=project)
    elapsed = time.monotonic() - begin
    nxc("stop", cwd=project)
    return elapsed


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 3
    with_vms = "--no-vms" not in sys.argv
    project = selftest_project()
    nxc("build", "-f", "docker", "--offline", cwd=project)
    work = Path(tempfile.mkdtemp(prefix="nxc-bench-docker-"))
    ledger = Ledger(work / "ledger.jsonl")
    results: dict[int, dict[str, list[float]]] = {}
    try:
        daemon = daemons.start_private(work, work, f"bench-{os.getpid()}", ledger)
        os.environ["DOCKER_HOST"] = daemon.url
        api = daemons.client(daemon.url).api
        # Load the image once (a first start), outside the measurements.
        nxc("start", "-f", "docker", "-r", "node=1", cwd=project)
        nxc("stop", cwd=project)
        image = api.images(name="nxc-image")[0]["RepoTags"][0]
        for nodes in SIZES:
            times: dict[str, list[float]] = {"nxc": [], "plain": []}
            keep = work / f"inputs-{nodes}"
            for _ in range(rounds):
                elapsed, state = timed_nxc_start(project, nodes, keep)
                times["nxc"].append(elapsed)
                times["plain"].append(timed_plain(api, state, keep, image))
            results[nodes] = times
    finally:
        os.environ.pop("DOCKER_HOST", None)
        owns = lambda path: work in (path, *path.parents)  # noqa: E731
        ledger.release({**BUILTIN_KINDS, **KINDS}, ReleaseContext(owns=owns))
        shutil.rmtree(work, ignore_errors=True)
    vms: dict[int, float] = {}
    if with_vms:
        nxc("build", "--offline", cwd=project)
        for nodes in SIZES:
            vms[nodes] = timed_vms(project, nodes)
    print(f"start to all-ready, selftest image, median of {rounds} (alternating runs):")
    for nodes, times in results.items():
        a, b = median(times["nxc"]), median(times["plain"])
        line = (
            f"  {nodes:2} containers: nxc start -f docker {fmt(a)}, plain SDK script {fmt(b)}, "
            f"ratio {a / b:.2f}x (goal <= 1.2x)"
        )
        if nodes in vms:
            line += f"; nxc start (VMs) {fmt(vms[nodes])}, {vms[nodes] / a:.1f}x the containers"
        print(line)


if __name__ == "__main__":
    main()
