"""Barrier latency on 3 selftest VMs (TCG here), through the real path: nxc-sync in
the guest, QEMU's forward on the management NIC, the deployment's redis-server.

Each round every node runs `nxc-sync signal-and-wait rK 3 && nxc-sync signal rK-done`.
All times are the service's own (one clock): last arrival = the 3rd signal of rK;
each node's release is seen through its rK-done signal, which costs one more
nxc-sync run. That cost is measured side by side (the gap between two back-to-back
`nxc-sync signal` runs on a node) and subtracted for the estimate.

    python bench/sync_vm_barrier.py [ROUNDS]
"""

from __future__ import annotations

import statistics
import sys

from _common import fmt, nxc, selftest_project

from nxc.driver.session import machines_of
from nxc.project import Project
from nxc.session import running


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    project = selftest_project()
    nxc("start", "-r", "node=3", cwd=project)
    try:
        current = running(Project(project))
        machines = machines_of(current)
        with current.sync().client("bench") as sync:
            gaps = []
            for k in range(rounds):
                machines[0].succeed(f"nxc-sync signal base{k}-a && nxc-sync signal base{k}-b")
                gaps.append(sync.arrivals(f"base{k}-b")[0][1] - sync.arrivals(f"base{k}-a")[0][1])
            one_run = statistics.median(gaps)
            latencies, spreads = [], []
            for k in range(rounds):
                for machine in machines:
                    machine.execute(
                        f"nxc-sync signal-and-wait r{k} 3 && nxc-sync signal r{k}-done",
                        check_output=False,
                    )
                sync.barrier(f"r{k}-done", 3, timeout=120)
                last_arrival = max(t for _, t in sync.arrivals(f"r{k}"))
                done = [t for _, t in sync.arrivals(f"r{k}-done")]
                latencies.append(max(done) - last_arrival)
                spreads.append(max(done) - min(done))
        for machine in machines:
            machine.release()
    finally:
        nxc("stop", cwd=project)
    raw = statistics.median(latencies)
    print(f"barrier on 3 VMs, median of {rounds} rounds (service clock):")
    print(f"  one nxc-sync run in a guest (baseline): {fmt(one_run)}")
    print(f"  last arrival -> last release seen:      {fmt(raw)}")
    print(f"  estimated release latency (minus one run): {fmt(max(raw - one_run, 0.0))}")
    print(f"  release spread between the 3 nodes:    {fmt(statistics.median(spreads))}")
    print(f"  ratio last-release-seen / one run:     {raw / one_run:.2f}x")


if __name__ == "__main__":
    main()
