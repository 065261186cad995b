"""nxc-metrics in container mode (what the docker flavour's nodes run), on cgroup v2 and
v1 trees laid out as Docker shows them, with every awk the images may have. The real
containers' figures are checked in test_docker_experiments."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from nxc.monitor.parse import parse_metrics
from nxc.paths import AGENT_DIR

SAMPLER = AGENT_DIR / "nxc-metrics"
AWKS = [a for a in ("mawk", "gawk", "busybox") if shutil.which(a)]
MIB = 1024 * 1024


def _proc(root: Path) -> Path:
    proc = root / "proc"
    (proc / "net").mkdir(parents=True)
    # The host's view: 4 CPUs, 8 GiB, a load: none of it may leak into container mode.
    (proc / "stat").write_text(
        "cpu  100 0 100 1000 0 0 0 0 0 0\n"
        + "".join(f"cpu{i} 25 0 25 250 0 0 0 0 0 0\n" for i in range(4))
        + "intr 5\nctxt 6\nbtime 1700000000\nprocesses 7\nprocs_running 9\nprocs_blocked 0\n"
    )
    (proc / "meminfo").write_text(
        "MemTotal:        8388608 kB\nMemFree:         4194304 kB\nMemAvailable:    6291456 kB\n"
    )
    (proc / "net" / "dev").write_text(
        "Inter-|   Receive                            |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets "
        "errs drop fifo colls carrier compressed\n"
        "    lo:     100       1    0    0    0     0          0         0      100       1"
        "    0    0    0     0       0          0\n"
        "  nxc0:    5000      10    0    0    0     0          0         0     7000      12"
        "    1    2    0     0       0          0\n"
    )
    (proc / "uptime").write_text("1000.00 3000.00\n")
    (proc / "loadavg").write_text("7.00 7.00 7.00 1/100 42\n")
    (proc / "diskstats").write_text("   8       0 sda 1 0 2 3 4 0 5 6 0 7 8\n")
    return proc


def _v2(root: Path, limited: bool) -> Path:
    cgroup = root / "cg2"
    cgroup.mkdir()
    (cgroup / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (cgroup / "cpu.stat").write_text(
        "usage_usec 30000000\nuser_usec 20000000\nsystem_usec 10000000\nnr_periods 0\n"
    )
    (cgroup / "memory.current").write_text(f"{100 * MIB}\n")
    (cgroup / "memory.max").write_text(f"{256 * MIB}\n" if limited else "max\n")
    (cgroup / "memory.stat").write_text(f"anon {60 * MIB}\ninactive_file {30 * MIB}\n")
    (cgroup / "cpu.max").write_text("50000 100000\n" if limited else "max 100000\n")
    (cgroup / "cpuset.cpus.effective").write_text("0-1\n")
    return cgroup


def _v1(root: Path) -> Path:
    cgroup = root / "cg1"
    for controller in ("cpuacct", "memory", "cpu", "cpuset"):
        (cgroup / controller).mkdir(parents=True)
    (cgroup / "cpuacct" / "cpuacct.usage").write_text("30000000000\n")
    (cgroup / "cpuacct" / "cpuacct.usage_user").write_text("20000000000\n")
    (cgroup / "cpuacct" / "cpuacct.usage_sys").write_text("10000000000\n")
    (cgroup / "memory" / "memory.usage_in_bytes").write_text(f"{100 * MIB}\n")
    # Docker's "no limit" on cgroup v1: a huge number, more than the host has.
    (cgroup / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (cgroup / "memory" / "memory.stat").write_text(
        f"cache 1\ninactive_file {10 * MIB}\ntotal_inactive_file {30 * MIB}\n"
    )
    (cgroup / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (cgroup / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (cgroup / "cpuset" / "cpuset.effective_cpus").write_text("0,2-3\n")
    return cgroup


def _run(tmp_path: Path, awk: str, cgroup: Path, proc: Path) -> dict[tuple[str, str], float]:
    bin_dir = tmp_path / f"bin-{awk}"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "awk").exists():
        (bin_dir / "awk").symlink_to(shutil.which(awk) or awk)
    env = {
        "PATH": str(bin_dir),
        "NXC_METRICS_MODE": "container",
        "NXC_METRICS_CGROUP": str(cgroup),
        "NXC_METRICS_PROC": str(proc),
    }
    done = subprocess.run(["/bin/sh", str(SAMPLER)], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    samples = parse_metrics(done.stdout)
    return {(s.metric, ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))): s.value
            for s in samples}  # fmt: skip


@pytest.mark.parametrize("awk", AWKS)
def test_cgroup_v2_limited(tmp_path: Path, awk: str) -> None:
    found = _run(tmp_path, awk, _v2(tmp_path, limited=True), _proc(tmp_path))
    assert found[("node_cpu_seconds_total", "cpu=all,mode=user")] == 20
    assert found[("node_cpu_seconds_total", "cpu=all,mode=system")] == 10
    # idle: 2 CPUs (the cpuset) x 1000 s of uptime, less what the container used.
    assert found[("node_cpu_seconds_total", "cpu=all,mode=idle")] == 2 * 1000 - 30
    assert found[("container_cpu_usage_seconds_total", "")] == 30
    assert found[("container_spec_cpu_quota", "")] == 50000
    assert found[("node_memory_MemTotal_bytes", "")] == 256 * MIB
    assert found[("node_memory_MemFree_bytes", "")] == 156 * MIB
    assert found[("node_memory_MemAvailable_bytes", "")] == (256 - 70) * MIB
    assert found[("container_memory_working_set_bytes", "")] == 70 * MIB
    assert found[("node_network_transmit_bytes_total", "device=nxc0")] == 7000
    assert found[("node_network_receive_bytes_total", "device=lo")] == 100
    names = {name for name, _ in found}
    # The host's figures stay out: no per-CPU lines, no load, disks or processes.
    assert not names & {"node_load1", "node_procs_running", "node_boot_time_seconds"}
    assert not any(name.startswith("node_disk_") for name in names)
    assert "node_time_seconds" in names


@pytest.mark.parametrize("awk", AWKS)
def test_cgroup_v2_unlimited_memory_is_the_hosts(tmp_path: Path, awk: str) -> None:
    found = _run(tmp_path, awk, _v2(tmp_path, limited=False), _proc(tmp_path))
    assert found[("node_memory_MemTotal_bytes", "")] == 8 * 1024 * MIB
    assert ("container_spec_memory_limit_bytes", "") not in found
    assert ("container_spec_cpu_quota", "") not in found


@pytest.mark.parametrize("awk", AWKS)
def test_cgroup_v1(tmp_path: Path, awk: str) -> None:
    found = _run(tmp_path, awk, _v1(tmp_path), _proc(tmp_path))
    assert found[("node_cpu_seconds_total", "cpu=all,mode=user")] == 20
    # cpuset "0,2-3": 3 CPUs.
    assert found[("node_cpu_seconds_total", "cpu=all,mode=idle")] == 3 * 1000 - 30
    assert found[("node_memory_MemTotal_bytes", "")] == 8 * 1024 * MIB
    # Working set: usage less the hierarchy's inactive file pages (total_inactive_file).
    assert found[("container_memory_working_set_bytes", "")] == 70 * MIB
    assert ("container_spec_cpu_quota", "") not in found


def test_host_mode_is_unchanged_without_the_variable(tmp_path: Path) -> None:
    proc = _proc(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "NXC_METRICS_PROC": str(proc)}
    done = subprocess.run(["/bin/sh", str(SAMPLER)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    names = {s.metric for s in parse_metrics(done.stdout)}
    assert {"node_load1", "node_boot_time_seconds", "node_disk_reads_completed_total"} <= names
    assert not any(name.startswith("container_") for name in names)
