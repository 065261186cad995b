"""g5k-ramdisk deployment on the rehearsal testbed (VMs standing in for reserved nodes).

1. Deployment time to all-ready for 1 and 3 nodes: nxc's handoff (one asyncssh
   connection per node, every step on all nodes at once) against the predecessor's way
   (one `ssh`/`scp` process per step, one node after the other: push, kexec, wait for
   it, then the next node) on the same nodes, with the same kernel, initrd and inputs.
   Both run inside `nxc start` (reservation and standard-environment probe included in
   the total), only the handoff differs; rounds alternate so both share the noise.
2. `nxc start -t` for 3 nodes to a passing testScript, broken down into reserve /
   probe / push / kexec / ready / testScript.

    python bench/g5k_deploy.py [--rounds N] [--config-dir DIR]

With --config-dir an existing testbed is used (else one is brought up and down).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import fmt, median, nxc

from nxc.flavours.g5k_common import handoff as handoff_module
from nxc.flavours.g5k_common import runtime as runtime_module
from nxc.flavours.g5k_common.handoff import Handoff, Target, node_archive
from nxc.project import Project


class SequentialHandoff(Handoff):
    """The predecessor's way: OpenSSH processes, one node after the other."""

    def _ssh(self, target: Target, command: str, root: bool = False) -> str:
        settings = (self.role_fleet if root else self.std).settings
        argv = [
            "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={settings.known_hosts[0]}", "-o", "ConnectTimeout=5",
            # a session opened just before the node kexecs would hang (no RST comes)
            "-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=3",
        ]  # fmt: skip
        if settings.config:
            argv += ["-F", str(settings.config[0])]
        if root:
            argv += ["-i", str(settings.identity[0]), "-l", "root"]
        try:
            done = subprocess.run(
                [*argv, target.fqdn, command], capture_output=True, text=True, timeout=60
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{target.fqdn}: {command[:40]}: no answer in 60 s") from None
        if done.returncode != 0:
            raise RuntimeError(f"{target.fqdn}: {command[:40]}: {done.stderr.strip()[-200:]}")
        return done.stdout

    def _scp(self, target: Target, source: Path, dest: str) -> None:
        settings = self.std.settings
        argv = ["scp", "-q", "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={settings.known_hosts[0]}"]  # fmt: skip
        if settings.config:
            argv += ["-F", str(settings.config[0])]
        subprocess.run([*argv, str(source), f"{target.fqdn}:{dest}"], check=True)

    def stage(self) -> None:
        pass

    def push(self) -> None:
        self.timings["push"] = 0.0

    def load(self, site_net: Any) -> None:
        self._site_net = site_net

    def execute(self) -> None:
        pass

    def wait_ready(self, timeout: float) -> None:
        began = time.monotonic()
        for target in self.targets:
            d = f"/dev/shm/nxc-seq-{self.deployment.id}"
            self._ssh(target, f"rm -rf {d} && mkdir -m 700 {d}")
            self._scp(target, target.kernel, f"{d}/kernel")
            self._scp(target, target.initrd, f"{d}/initrd")
            archive = node_archive(
                self.deployment, target, self.host_keys[target.name].read_bytes(),
                self._site_net.get(target.name, ()), target.initrd.stat().st_size,
                self.private.get(target.name),
            )  # fmt: skip
            local = handoff_module._private_temp(archive, self.work_dir)
            self._scp(target, local, f"{d}/inputs")
            local.unlink()
            sudo = target.facts.root_prefix
            self._ssh(
                target,
                f"cat {d}/initrd {d}/inputs > {d}/all && {sudo}kexec -l {d}/kernel "
                f"--initrd={d}/all --append={shlex.quote(target.params)} && rm -rf {d}",
            )
            self._ssh(
                target, f"{sudo}sh -c '(sleep 0.5; exec kexec -e) </dev/null >/dev/null 2>&1 &'"
            )
            while time.monotonic() - began < timeout:
                try:
                    out = self._ssh(
                        target, "cat /run/nxc/ready; cat /proc/sys/kernel/random/boot_id", root=True
                    )
                except RuntimeError:
                    time.sleep(0.5)
                    continue
                lines = out.split()
                if lines and lines[-1] != target.facts.boot_id and "nxc-ready" in out:
                    target.boot_id = lines[-1]
                    break
                time.sleep(0.5)
            else:
                target.fail("sequential", "not ready in time")
        self.timings["ready"] = time.monotonic() - began


def start_stop(project: Path, env: dict[str, str], nodes: int, sequential: bool) -> dict[str, Any]:
    """One `nxc start` (in this process, so the handoff can be swapped) and stop."""
    from nxc import session

    os.environ.update(env)
    runtime_module.Handoff = SequentialHandoff if sequential else Handoff  # type: ignore[misc]
    proj = Project(project)
    manifest = session.manifest_for(proj, "g5k-ramdisk", None)
    request = session.StartRequest(overrides={"node": nodes}, ready_timeout=900)
    began = time.monotonic()
    session.start(proj, manifest, request)
    total = time.monotonic() - began
    timings = json.loads(proj.runtime_file.read_text())["state"]["timings"]
    session.stop(proj)
    launch = timings.get("push", 0) + timings.get("kexec", 0) + timings.get("ready", 0)
    return {"total": total, "launch": launch, **timings}


def testscript_breakdown(project: Path, env: dict[str, str]) -> dict[str, float]:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "nxc.cli", "start", "-f", "g5k-ramdisk", "--timeout", "900", "-t"],
        cwd=project, env={**os.environ, **env}, capture_output=True, text=True,
    )  # fmt: skip
    total = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"nxc start -t failed:\n{done.stderr[-2000:]}")
    timings = json.loads(Project(project).runtime_file.read_text())["state"]["timings"]
    nxc("stop", cwd=project)
    accounted = sum(timings.get(k, 0.0) for k in ("reserve", "prepare", "push", "kexec", "ready"))
    return {**timings, "total": total, "testScript and the rest": total - accounted}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--config-dir", type=Path)
    args = parser.parse_args()
    own = args.config_dir is None
    testbed = args.config_dir or Path(tempfile.mkdtemp(prefix="nxc-bench-g5k-")) / "testbed"
    if own:
        nxc("g5k", "rehearsal", "up", "--nodes", "3", "--config-dir", str(testbed), cwd=Path.cwd())
    try:
        env = {}
        for line in (testbed / "env").read_text().splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip("'")
        project = Path(tempfile.mkdtemp(prefix="nxc-bench-g5k-proj-"))
        nxc("init", "-t", "selftest", str(project), cwd=Path.cwd())
        nxc("build", "-f", "g5k-ramdisk", "--offline", cwd=project)
        results: dict[tuple[int, bool], list[dict[str, Any]]] = {}
        for _ in range(args.rounds):
            for nodes in (1, 3):
                for sequential in (False, True):
                    result = start_stop(project, env, nodes, sequential)
                    results.setdefault((nodes, sequential), []).append(result)
                    how = "sequential ssh" if sequential else "nxc"
                    print(
                        f"  {nodes} node(s), {how}: launch {fmt(result['launch'])}, "
                        f"start {fmt(result['total'])}",
                        flush=True,
                    )
        print("\ng5k-ramdisk, deployment (push + kexec + ready), median of", args.rounds)
        print(
            f"{'nodes':>5} | {'nxc launch':>11} | {'sequential ssh':>14} | {'speed-up':>8} | "
            f"{'nxc start total':>15}"
        )
        for nodes in (1, 3):
            ours = median([r["launch"] for r in results[(nodes, False)]])
            theirs = median([r["launch"] for r in results[(nodes, True)]])
            total = median([r["total"] for r in results[(nodes, False)]])
            print(
                f"{nodes:>5} | {fmt(ours):>11} | {fmt(theirs):>14} | {theirs / ours:>7.2f}x | "
                f"{fmt(total):>15}"
            )
        one = median([r["launch"] for r in results[(1, False)]])
        three = median([r["launch"] for r in results[(3, False)]])
        seq1 = median([r["launch"] for r in results[(1, True)]])
        seq3 = median([r["launch"] for r in results[(3, True)]])
        print(
            f"3 nodes / 1 node: nxc {three / one:.2f}x (goal <= 1.3x), "
            f"sequential {seq3 / seq1:.2f}x"
        )
        print("\nnxc start -t, 3 nodes (reserve / probe / push / kexec / ready / testScript):")
        breakdown = testscript_breakdown(project, env)
        for key in (
            "reserve",
            "prepare",
            "push",
            "kexec",
            "ready",
            "testScript and the rest",
            "total",
        ):
            print(f"  {key:24} {fmt(breakdown.get(key, 0.0))}")
    finally:
        if own:
            nxc("g5k", "rehearsal", "down", "--config-dir", str(testbed), cwd=Path.cwd())


if __name__ == "__main__":
    main()
