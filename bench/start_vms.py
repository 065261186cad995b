"""`nxc start` of 3 VMs to all-ready vs a plain script launching the same QEMU commands.

The baseline launches exactly the argv nxc recorded for each node (same kernel,
initrd, devices, accelerator, deployment and host keys) in parallel with its own VDE
switch, and waits for the same readiness line on each console: the ratio is nxc's own
overhead (key generation, deployment, state, ledger, CLI start-up). Runs alternate so
both sides share the machine's noise.

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
from typing import Any

from _common import fmt, median, nxc, selftest_project

from nxc.project import Project

READY_TIMEOUT = 120.0


def timed_nxc_start(project: Path, keep: Path) -> tuple[float, dict[str, Any]]:
    begin = time.monotonic()
    nxc("start", "-r", "node=3", cwd=project)
    elapsed = time.monotonic() - begin
    document = json.loads(Project(project).runtime_file.read_text())
    runtime: dict[str, Any] = document["state"]
    # Keep the inputs the QEMU commands read, for the baseline to reuse.
    # (every regular file: the deployment, host keys, input files, the nodes' sync
    # inputs; not the sockets, which the baseline has no service behind)
    run_dir = Path(runtime["runtime_dir"])

    def not_files(directory: str, names: list[str]) -> list[str]:
        return [
            n for n in names if not (Path(directory, n).is_file() or Path(directory, n).is_dir())
        ]

    shutil.copytree(run_dir, keep, ignore=not_files, dirs_exist_ok=True)
    nxc("stop", cwd=project)
    return elapsed, runtime


def timed_plain(runtime: dict[str, Any], inputs: Path) -> float:
    """The same QEMU commands, launched by the simplest possible script."""
    with tempfile.TemporaryDirectory(prefix="nxc-plain-") as tmp:
        tmpdir = Path(tmp)
        for item in inputs.iterdir():
            if item.is_dir():
                shutil.copytree(item, tmpdir / item.name)
            else:
                shutil.copy(item, tmpdir / item.name)
        log_dirs = {str(Path(n["files"]["console_log"]).parent) for n in runtime["nodes"].values()}

        def moved(arg: str) -> str:
            for directory in (runtime["runtime_dir"], *log_dirs):
                arg = arg.replace(directory, tmp)
            return arg

        argvs = [[moved(arg) for arg in node["argv"]] for node in runtime["nodes"].values()]
        processes: list[subprocess.Popen[bytes]] = []
        try:
            begin = time.monotonic()
            processes.append(
                subprocess.Popen(
                    ["vde_switch", "-s", str(tmpdir / "switch")],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            while not (tmpdir / "switch" / "ctl").exists():
                time.sleep(0.005)
            for argv in argvs:
                processes.append(
                    subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )
            pending = set(runtime["nodes"])
            deadline = begin + READY_TIMEOUT
            while pending:
                if time.monotonic() > deadline:
                    raise SystemExit(f"baseline: {sorted(pending)} not ready in {READY_TIMEOUT}s")
                for name in list(pending):
                    log = tmpdir / f"{name}.console.log"
                    if log.exists() and f"nxc-ready node={name} ".encode() in log.read_bytes():
                        pending.discard(name)
                time.sleep(0.02)
            return time.monotonic() - begin
        finally:
            for process in processes:
                process.kill()
                process.wait()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    project = selftest_project()
    nxc_times: list[float] = []
    plain_times: list[float] = []
    accel = "?"
    with tempfile.TemporaryDirectory(prefix="nxc-bench-inputs-") as keep:
        for _ in range(rounds):
            for old in Path(keep).iterdir():
                if old.is_dir():
                    shutil.rmtree(old)
                else:
                    old.unlink()
            elapsed, runtime = timed_nxc_start(project, Path(keep))
            accel = runtime["accel"]
            nxc_times.append(elapsed)
            plain_times.append(timed_plain(runtime, Path(keep)))
    a, b = median(nxc_times), median(plain_times)
    print(f"3 VMs to all-ready ({accel}), median of {rounds}:")
    print(f"  nxc start -r node=3 : {fmt(a)}   (runs: {', '.join(fmt(t) for t in nxc_times)})")
    print(f"  plain parallel qemu : {fmt(b)}   (runs: {', '.join(fmt(t) for t in plain_times)})")
    print(f"  ratio nxc/plain     : {a / b:.3f}  (goal <= 1.15)")


if __name__ == "__main__":
    main()
