#!/usr/bin/env python3
"""Time to generate and apply a 100-node full-mesh topology on one node (99 destinations).

Compares one ``tc -batch`` with one ``tc`` process per command. Runs on this host inside a
network namespace created (and deleted) here. The host kernel has no netem qdisc, so the
leaves are a substitute (pfifo) with the same tree of HTB classes and u32 filters; the
VM-based figures (real netem) come with the VM runtime.

    sudo python3 bench/netem_apply.py [--nodes 100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nxc.netem import tcgen
from nxc.netem.apply import Netem
from nxc.netem.model import Topology
from nxc.netem.netns import NetnsMachine, make_deployment


def run(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True)


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}: {done.stdout}{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (creates a network namespace)")

    deployment = make_deployment({"node": args.nodes})
    topology = Topology().with_defaults(delay="10ms", jitter="1ms", loss="0.1%", rate="1gbit")
    options = tcgen.GenOptions(leaf="pfifo")

    start = time.perf_counter()
    plans = tcgen.plan(topology, deployment)
    scripts = tcgen.install_all(plans, options)
    generate_all = time.perf_counter() - start
    start = time.perf_counter()
    one = tcgen.install_all({"node1": tcgen.plan(topology, deployment)["node1"]}, options)["node1"]
    generate_one = time.perf_counter() - start
    netem_lines = tcgen.install_all({"node1": plans["node1"]})["node1"].tc
    lines = one.tc
    assert scripts["node1"].tc == lines

    ns = f"nxb{secrets.token_hex(3)}"
    batch_times: list[float] = []
    single_times: list[float] = []
    facade_times: list[float] = []
    try:
        run("ip", "netns", "add", ns)
        run("ip", "-n", ns, "link", "add", "nxc0", "type", "veth", "peer", "name", "peer0")
        run("ip", "-n", ns, "link", "set", "nxc0", "up")
        run("ip", "-n", ns, "link", "set", "peer0", "up")
        reset = ["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "nxc0", "root"]
        with tempfile.TemporaryDirectory(prefix="nxc-bench-") as tmp:
            batch_file = Path(tmp) / "node1.tc"
            batch_file.write_text(one.tc_batch)
            loop = Path(tmp) / "one-by-one.sh"
            loop.write_text(
                "tc=$(command -v tc)\n" + "".join(f"$tc {line} || exit 1\n" for line in lines)
            )
            for _ in range(args.repeat):
                batch_times.append(
                    timed(["ip", "netns", "exec", ns, "tc", "-batch", str(batch_file)])
                )
                run(*reset)
                single_times.append(timed(["ip", "netns", "exec", ns, "sh", str(loop)]))
                run(*reset)
        # the real path: detect + probe + inspect + one batch, through a Machine-like object
        # (every node name maps to the same namespace; only node1 is applied)
        machines = {n.name: NetnsMachine(n.name, ns) for n in deployment.nodes}
        for _ in range(args.repeat):
            net = Netem(deployment, machines, topology, options=options)
            start = time.perf_counter()
            net.apply(nodes=["node1"])
            facade_times.append(time.perf_counter() - start)
            run(*reset)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)

    batch = statistics.median(batch_times)
    single = statistics.median(single_times)
    facade = statistics.median(facade_times)
    print(
        f"nxc netem apply benchmark: {args.nodes}-node full mesh, one node "
        f"({args.nodes - 1} destinations), median of {args.repeat}"
    )
    print(
        "host kernel has no netem: leaves are pfifo here (same HTB classes + u32 filters); "
        "real netem figures need the VM run"
    )
    print(
        f"  commands per node            : {len(lines)} "
        f"({sum(' netem ' in line for line in netem_lines)} netem leaves, "
        f"{sum(line.startswith('filter') for line in lines)} u32 filters)"
    )
    print(f"  generate all {args.nodes} nodes' batches : {generate_all * 1000:8.1f} ms")
    print(f"  plan all pairs + one node's batch : {generate_one * 1000:8.1f} ms")
    print(f"  apply, one tc -batch         : {batch * 1000:8.1f} ms")
    print(f"  apply, one tc per command    : {single * 1000:8.1f} ms")
    print(f"  ratio (per-command / batch)  : {single / batch:8.1f} x")
    print(f"  Netem facade, one node (detect+probe+inspect+batch): {facade * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
