"""Sync service with many participants simulated as processes on this machine.

Every participant is a real `nxc-sync` process under busybox sh (what a selftest node
runs), talking RESP over busybox nc to the same per-deployment redis-server that
`nxc start` starts (here on 127.0.0.1).

* barrier latency: N processes run `nxc-sync signal-and-wait STATE N`, which prints
  its sequence number once released; latency = from the last arrival (the service's
  timestamp of the N-th signal) to the last such line read by this harness, spread =
  first to last line. The same with N threads of the Python client in one process
  shows the service's own share (no process to wake per participant). Baseline side
  by side: one `nxc-sync ping` (a whole nxc-sync run: shell, FIFOs, nc, AUTH, one
  request).
* publish → every subscriber received: N processes `nxc-sync --count 1 subscribe`,
  registered (waiting) before the publish; latency = publish to the last line read.

    python bench/sync_processes.py [ROUNDS] [SIZES...]     # default 3 rounds, 10 100 1000
"""

from __future__ import annotations

import os
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import fmt

from nxc.ledger import Ledger
from nxc.sync.client import SyncClient, log_keys
from nxc.sync.service import SyncService, start_service, stop_service

AGENT = Path(__file__).resolve().parents[1] / "nxc" / "agent" / "nxc-sync"


def busybox_env(work: Path, service: SyncService) -> dict[str, str]:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise SystemExit("busybox is needed (apt-get install busybox-static)")
    bin_dir = work / "bin"
    bin_dir.mkdir()
    for applet in subprocess.run(
        [busybox, "--list"], capture_output=True, text=True
    ).stdout.split():
        (bin_dir / applet).symlink_to(busybox)
    assert service.tcp is not None
    config = work / "sync"
    config.write_text(service.node_config("bench", *service.tcp).render())
    config.chmod(0o600)
    return {"PATH": str(bin_dir), "NXC_SYNC_CONFIG": str(config), "TMPDIR": str(work)}


def spawn(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [f"{env['PATH']}/sh", str(AGENT), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def first_lines(processes: list[subprocess.Popen[bytes]], timeout: float) -> list[float]:
    """The time each process printed its first line."""
    selector = selectors.DefaultSelector()
    for process in processes:
        assert process.stdout is not None
        os.set_blocking(process.stdout.fileno(), False)
        selector.register(process.stdout, selectors.EVENT_READ)
    got: list[float] = []
    deadline = time.monotonic() + timeout
    while len(got) < len(processes):
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(got)} of {len(processes)} subscribers received")
        for key, _ in selector.select(timeout=1):
            if key.fileobj.read():  # type: ignore[union-attr]
                got.append(time.time())
                selector.unregister(key.fileobj)
    for process in processes:
        process.wait()
    return got


def barrier_round(
    env: dict[str, str], client: SyncClient, state: str, n: int
) -> tuple[float, float]:
    processes = [spawn(env, "--name", f"p{i}", "signal-and-wait", state, str(n)) for i in range(n)]
    released = first_lines(processes, timeout=600)
    last_arrival = max(t for _, t in client.arrivals(state))
    return max(released) - last_arrival, max(released) - min(released)


def thread_round(service: SyncService, state: str, n: int) -> float:
    released: list[float] = []
    lock = threading.Lock()

    def participant(i: int) -> None:
        with SyncClient(service.config(f"t{i}"), f"t{i}") as client:
            client.signal_and_wait(state, n, timeout=600)
            with lock:
                released.append(time.time())

    threads = [threading.Thread(target=participant, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with service.client("check") as client:
        last_arrival = max(t for _, t in client.arrivals(state))
    return max(released) - last_arrival


def pubsub_round(env: dict[str, str], client: SyncClient, topic: str, n: int) -> float:
    processes = [spawn(env, "--count", "1", "subscribe", topic) for _ in range(n)]
    _values, _times, waiters = log_keys(client.config.scope, "t", topic)
    deadline = time.monotonic() + 300
    while len(client._call("ZRANGEBYSCORE", waiters, "-inf", "+inf")) < n:
        if time.monotonic() > deadline:
            raise SystemExit("subscribers did not register")
        time.sleep(0.01)
    published = time.time()
    client.publish(topic, "go")
    received = first_lines(processes, timeout=300)
    return max(received) - published


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    sizes = [int(a) for a in sys.argv[2:]] or [10, 100, 1000]
    work = Path(tempfile.mkdtemp(prefix="nxc-bench-sync-"))
    runtime = work / "rt"
    runtime.mkdir(mode=0o700)
    service = start_service(
        runtime, work / "sync.log", Ledger(work / "ledger"), "bench", "127.0.0.1"
    )
    try:
        env = busybox_env(work, service)
        client = service.client("harness")
        pings = []
        for _ in range(20):
            begin = time.time()
            subprocess.run([f"{env['PATH']}/sh", str(AGENT), "ping"], env=env, check=True)
            pings.append(time.time() - begin)
        ping = statistics.median(pings)
        print(f"baseline: one nxc-sync run (ping), median of 20: {fmt(ping)}")
        print("barrier (nxc-sync processes), last arrival -> all released:")
        for n in sizes:
            results = [barrier_round(env, client, f"b{n}-{r}", n) for r in range(rounds)]
            latency = statistics.median(r[0] for r in results)
            spread = statistics.median(r[1] for r in results)
            print(
                f"  N={n:5d}: latency {fmt(latency)} (median of {rounds}), "
                f"release spread {fmt(spread)}, {latency / ping:.1f}x one nxc-sync run"
            )
        print("barrier (Python client threads, one process), last arrival -> all released:")
        for n in sizes:
            results = [thread_round(service, f"th{n}-{r}", n) for r in range(rounds)]
            print(f"  N={n:5d}: latency {fmt(statistics.median(results))} (median of {rounds})")
        print("publish -> every subscriber received (nxc-sync subscribe processes):")
        for n in [s for s in sizes if s <= 100] or [10]:
            results = [pubsub_round(env, client, f"t{n}-{r}", n) for r in range(rounds)]
            print(f"  N={n:5d}: {fmt(statistics.median(results))} (median of {rounds})")
        client.close()
    finally:
        stop_service(service)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
