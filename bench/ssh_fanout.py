"""Fan-out of `true` to N ssh nodes: nxc's SshFleet vs one ssh process per node.

The nodes are real OpenSSH servers, one per network namespace (the test lab of
tests/fixtures/sshd_netns.py: one sshd per namespace, reached through one TCP relay
on 127.0.0.1), so every contender pays the same network path. Compared, for each N:

* nxc, first fan-out: SshFleet connects to the N nodes and runs `true` (cold);
* nxc, next fan-out: the same fleet runs `true` again on its open connections (warm);
* ssh in parallel: N `ssh -F CONFIG NODE true` processes started at once, all awaited;
* ssh one after the other: what the predecessor did, N processes in sequence.

    python bench/ssh_fanout.py [N ...] [--repeat R]     (default: 10 50 100, R = 3)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import fmt, median

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' sshd lab

from nxc.transports.ssh import SshFleet, SshSettings
from tests.fixtures.sshd_netns import SshdCluster


def ssh_argv(cluster: SshdCluster, name: str) -> list[str]:
    return ["ssh", "-F", str(cluster.ssh_config), name, "true"]


def nxc_fanout(cluster: SshdCluster, names: list[str]) -> tuple[float, float]:
    settings = SshSettings(cluster.known_hosts, cluster.ssh_config)
    with SshFleet(names, settings) as fleet:
        began = time.perf_counter()
        fleet.run("true", timeout=120).check()
        cold = time.perf_counter() - began
        began = time.perf_counter()
        fleet.run("true", timeout=120).check()
        warm = time.perf_counter() - began
    return cold, warm


def ssh_parallel(cluster: SshdCluster, names: list[str]) -> float:
    began = time.perf_counter()
    processes = [
        subprocess.Popen(ssh_argv(cluster, name), stdin=subprocess.DEVNULL) for name in names
    ]
    statuses = [p.wait(300) for p in processes]
    elapsed = time.perf_counter() - began
    if any(statuses):
        raise SystemExit(f"ssh failed on {sum(1 for s in statuses if s)} nodes")
    return elapsed


def ssh_sequential(cluster: SshdCluster, names: list[str]) -> float:
    began = time.perf_counter()
    for name in names:
        subprocess.run(ssh_argv(cluster, name), stdin=subprocess.DEVNULL, check=True, timeout=60)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10, 50, 100])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = sorted(args.sizes)
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="nxc-bench-ssh-") as workdir,
        SshdCluster(Path(workdir), max(sizes)) as cluster,
    ):
        print(f"{max(sizes)} sshd nodes up (one per network namespace); median of {args.repeat}")
        for n in sizes:
            names = [node.name for node in cluster.nodes[:n]]
            cold, warm, par, seq = [], [], [], []
            for _ in range(args.repeat):
                c, w = nxc_fanout(cluster, names)
                cold.append(c)
                warm.append(w)
                par.append(ssh_parallel(cluster, names))
                seq.append(ssh_sequential(cluster, names))
            rows.append((n, median(cold), median(warm), median(par), median(seq)))
            print(f"  N={n}: done", flush=True)

    print("\nfan-out of `true` to N nodes (wall time):")
    print(f"{'N':>5} {'nxc first':>11} {'nxc next':>10} {'ssh parallel':>13} {'ssh serial':>11}")
    for n, cold, warm, par, seq in rows:
        print(f"{n:>5} {fmt(cold):>11} {fmt(warm):>10} {fmt(par):>13} {fmt(seq):>11}")
    print("\nspeed-up of nxc (first fan-out / next fan-out):")
    for n, cold, warm, par, seq in rows:
        print(
            f"  N={n:<4} vs ssh parallel {par / cold:5.1f}x / {par / warm:6.1f}x"
            f"    vs ssh serial {seq / cold:6.1f}x / {seq / warm:7.1f}x"
        )
    base = rows[0]
    print(f"\ngrowth with N (time at N / time at N={base[0]}):")
    for n, cold, warm, par, seq in rows:
        print(
            f"  N={n:<4} ({n / base[0]:4.1f}x nodes): nxc first {cold / base[1]:4.1f}x, "
            f"nxc next {warm / base[2]:4.1f}x, ssh parallel {par / base[3]:4.1f}x, "
            f"ssh serial {seq / base[4]:4.1f}x"
        )


if __name__ == "__main__":
    main()
