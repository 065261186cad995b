"""What monitoring costs: guest CPU of 1 s scraping, and the time of one scrape round.

1. Guest CPU. On 3 selftest VMs, windows of WINDOW seconds alternate: idle (nobody
   scrapes), `true` run on every node every second (what any command through the
   backdoor costs), and scraping every second (the real Scraper, the image's nxc-metrics
   through the backdoor). Each guest's busy share is read from its own /proc/stat at both
   ends of each window (one command each end, the same in every kind of window): the
   cost of scraping is the scraping windows' busy % minus the idle windows' busy %.
2. Scrape round. With 3 and then 10 VMs: the wall time of one round (every node scraped
   in parallel, parsed, stored), median of ROUNDS rounds, side by side with a round of
   the bare transport (`true` on every node in parallel), the floor of any scrape.
   Also the driver's own CPU time per node scraped and the store's growth.

    python bench/monitor_cost.py [WINDOW_SECONDS] [ROUNDS]

VMs run under TCG here (2 shared host cores): guest CPU figures are those of an
emulated CPU, so they overstate what a real node pays.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import fmt, median, nxc, selftest_project

from nxc.driver.machine import Machine
from nxc.driver.session import open_driver
from nxc.monitor.hook import MonitorOptions
from nxc.monitor.scraper import Scraper
from nxc.monitor.store import MetricsStore
from nxc.project import Project
from nxc.running import running

OFF = MonitorOptions(enabled=False)


def jiffies(machine: Machine) -> tuple[int, int]:
    """(busy, total) jiffies of all the guest's CPUs, from its /proc/stat."""
    fields = [int(v) for v in machine.succeed("head -n 1 /proc/stat").split()[1:]]
    total = sum(fields[:8])
    idle = fields[3] + fields[4]
    return total - idle, total


def every_second(machines: list[Machine], seconds: float, command: str) -> None:
    """Run ``command`` on every node in parallel once a second for ``seconds``."""
    deadline = time.monotonic() + seconds
    with ThreadPoolExecutor(len(machines)) as pool:
        while time.monotonic() < deadline:
            tick = time.monotonic()
            list(pool.map(lambda m: m.run(command, 30), machines))
            time.sleep(max(0.0, min(1.0 - (time.monotonic() - tick), deadline - time.monotonic())))


def busy_percent(
    machines: list[Machine], seconds: float, kind: str, store: MetricsStore
) -> list[float]:
    before = [jiffies(m) for m in machines]
    if kind == "idle":
        time.sleep(seconds)
    elif kind == "true":
        every_second(machines, seconds, "true")
    else:
        with Scraper(machines, store, interval=1.0):
            time.sleep(seconds)
    after = [jiffies(m) for m in machines]
    return [
        100.0 * (b1 - b0) / max(1, t1 - t0)
        for (b0, t0), (b1, t1) in zip(before, after, strict=True)
    ]


KINDS = {
    "idle": "nobody scrapes",
    "true": "`true` every second (the transport's own cost)",
    "scrape": "scraping every second",
}


def guest_cpu(project: Path, window: float, repeats: int) -> None:
    nxc("start", "-r", "node=3", cwd=project)
    try:
        with open_driver(running(Project(project)), monitor=OFF) as driver:
            machines = driver.machines
            with tempfile.TemporaryDirectory(prefix="nxc-bench-monitor-") as tmp:
                store = MetricsStore.create(Path(tmp) / "metrics.sqlite")
                Scraper(machines, store).scrape_round()  # boot noise settles, image checked
                busy: dict[str, list[list[float]]] = {kind: [] for kind in KINDS}
                for _ in range(repeats):
                    for kind in KINDS:
                        busy[kind].append(busy_percent(machines, window, kind, store))
                store.close()
        print(f"guest CPU, 3 VMs, {repeats} x {window:g} s windows of each kind (alternating):")
        for i, machine in enumerate(machines):
            means = {k: statistics.mean(r[i] for r in busy[k]) for k in KINDS}
            print(
                f"  {machine.name}: idle {means['idle']:5.1f}%, true/s {means['true']:5.1f}%,"
                f" scraping/s {means['scrape']:5.1f}% busy"
            )
        means = {k: statistics.mean(v for r in busy[k] for v in r) for k in KINDS}
        for kind, what in KINDS.items():
            print(f"  mean, {what}: {means[kind]:.1f}% busy")
        print(
            f"  -> 1 s scraping costs {means['scrape'] - means['idle']:.1f} points of a guest CPU"
            f" ({means['true'] - means['idle']:.1f} of which any command per second costs)"
        )
    finally:
        nxc("stop", cwd=project)


def round_times(project: Path, nodes: int, rounds: int) -> None:
    nxc("start", "-r", f"node={nodes}", cwd=project)
    try:
        with open_driver(running(Project(project)), monitor=OFF) as driver:
            machines = driver.machines
            with tempfile.TemporaryDirectory(prefix="nxc-bench-monitor-") as tmp:
                store = MetricsStore.create(Path(tmp) / "metrics.sqlite")
                scraper = Scraper(machines, store)
                scraper.scrape_round()  # detection
                bare: list[float] = []
                scrape: list[float] = []
                cpu: list[float] = []
                with ThreadPoolExecutor(len(machines)) as pool:
                    for _ in range(rounds):
                        begin = time.monotonic()
                        list(pool.map(lambda m: m.succeed("true"), machines))
                        bare.append(time.monotonic() - begin)
                        cpu_begin = time.process_time()
                        scrape.append(scraper.scrape_round())
                        cpu.append(time.process_time() - cpu_begin)
                samples = sum(s.samples for s in store.scrapes()) / max(1, len(store.scrapes()))
                stored = len(store.scrapes())
                store.close()  # checkpoints the write-ahead log into the file
                size = (Path(tmp) / "metrics.sqlite").stat().st_size
        a, b = median(bare), median(scrape)
        print(f"one scrape round, {nodes} VMs, median of {rounds}:")
        print(f"  bare transport (`true` on every node): {fmt(a)}")
        print(f"  scrape (nxc-metrics, parse, store):    {fmt(b)}  ({b / a:.1f}x the bare round)")
        print(
            f"  driver CPU per node scraped: {fmt(median(cpu) / nodes)};"
            f" {samples:.0f} samples per scrape"
        )
        per_hour = size / stored * 3600 if stored else 0
        print(
            f"  store: {size / 1024:.0f} KiB for {stored} scrapes,"
            f" ~{per_hour / 2**20:.1f} MiB per node-hour at 1 s"
        )
    finally:
        nxc("stop", cwd=project)


def main() -> None:
    window = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    project = selftest_project()
    guest_cpu(project, window, repeats=2)
    round_times(project, 3, rounds)
    round_times(project, 10, rounds)


if __name__ == "__main__":
    main()
