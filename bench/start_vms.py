"""`nxc start` of 3 VMs to all-ready vs a plain script launching the same QEMU commands.

The baseline launches exactly the argv nxc recorded for each node (same kernel,
initrd, devices, accelerator) in parallel and waits for the same readiness line on
each console, with the same VDE switch: the ratio is nxc's own overhead (keys,
deployment, state, ledger, CLI start-up). Runs alternate to share machine noise.

    python bench/start_vms.py [ROUNDS]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import fmt, median, nxc, selftest_project


def timed_nxc_start(project: Path) -> tuple[float, dict]:  # type: ignore[type-arg]
    begin = time.monotonic()
    nxc("start", "-r", "node=3", cwd=project)
    elapsed = time.monotonic() - begin
    runtime = json.loads((project / ".nxc" / "runtime.json").read_text())
    nxc("stop", cwd=project)
    return elapsed, runtime


def timed_plain(runtime: dict, project: Path) -> float:  # type: ignore[type-arg]
    """Same QEMU commands, launched by the simplest possible script."""
    with tempfile.TemporaryDirectory(prefix="nxc-plain-") as tmp:
        tmpdir = Path(tmp)
        old_dir = runtime["run_dir"]
        argvs = [
            [arg.replace(old_dir, tmp) for arg in node["argv"]]
            for node in runtime["nodes"].values()
        ]
        # Per-node files the argv expects: deployment and host keys are not
        # regenerated here (the baseline skips that work by design).
        shutil.copy(project / ".nxc" / "runs" / runtime["deployment"] / "deployment.json",
                    tmpdir / "deployment.json")  # fmt: skip
        for name in runtime["nodes"]:
            (tmpdir / f"{name}.hostkey").write_text(
                (project / ".nxc" / "bench-hostkeys" / name).read_text()
            )
        begin = time.monotonic()
        switch = subprocess.Popen(
            ["vde_switch", "-s", str(tmpdir / "switch")], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        while not (tmpdir / "switch" / "ctl").exists():
            time.sleep(0.005)
        vms = [
            subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for a in argvs
        ]
        names = list(runtime["nodes"])
        pending = set(names)
        while pending:
            for name in list(pending):
                log = tmpdir / f"{name}.console.log"
                if log.exists() and f"nxc-ready node={name} ".encode() in log.read_bytes():
                    pending.discard(name)
            time.sleep(0.02)
        elapsed = time.monotonic() - begin
        for vm in vms:
            vm.kill()
            vm.wait()
        switch.kill()
        switch.wait()
        return elapsed


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    project = selftest_project()
    nxc_times, plain_times = [], []
    for _ in range(rounds):
        elapsed, runtime = timed_nxc_start(project)
        nxc_times.append(elapsed)
        # Keep a copy of the host keys for the baseline (stop removed the originals).
        keys = project / ".nxc" / "bench-hostkeys"
        keys.mkdir(parents=True, exist_ok=True)
        for name in runtime["nodes"]:
            (keys / name).write_text(_dummy_host_key(project, name))
        plain_times.append(timed_plain(runtime, project))
    a, b = median(nxc_times), median(plain_times)
    accel = runtime["accel"]
    print(f"3 VMs to all-ready ({accel}), median of {rounds}:")
    print(f"  nxc start -r node=3 : {fmt(a)}   (runs: {', '.join(fmt(t) for t in nxc_times)})")
    print(f"  plain parallel qemu : {fmt(b)}   (runs: {', '.join(fmt(t) for t in plain_times)})")
    print(f"  ratio nxc/plain     : {a / b:.3f}  (goal <= 1.15)")


def _dummy_host_key(project: Path, name: str) -> str:
    from nxc.keys import generate_key

    pair = generate_key(project / ".nxc" / "bench-hostkeys" / f"{name}.tmp", name)
    text = pair.private.read_text()
    pair.private.unlink()
    pair.public.unlink()
    return text


if __name__ == "__main__":
    main()
