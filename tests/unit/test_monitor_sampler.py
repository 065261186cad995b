"""nxc-metrics, the node-side sampler, run for real on this host (mawk and busybox awk)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nxc.monitor.parse import MetricsFormatError, parse_metrics
from nxc.monitor.sampler import (
    NoMetricsSource,
    detect_command,
    install_command,
    parse_detection,
    sampler_script,
)
from nxc.paths import AGENT_DIR

SAMPLER = AGENT_DIR / "nxc-metrics"

# What the issue asks nxc-metrics to provide, with node_exporter's label names.
REQUIRED = {
    "node_cpu_seconds_total": {"cpu", "mode"},
    "node_memory_MemTotal_bytes": set(),
    "node_memory_MemFree_bytes": set(),
    "node_memory_MemAvailable_bytes": set(),
    "node_memory_Buffers_bytes": set(),
    "node_memory_Cached_bytes": set(),
    "node_network_receive_bytes_total": {"device"},
    "node_network_transmit_bytes_total": {"device"},
    "node_network_receive_packets_total": {"device"},
    "node_network_transmit_packets_total": {"device"},
    "node_network_receive_errs_total": {"device"},
    "node_network_transmit_errs_total": {"device"},
    "node_network_receive_drop_total": {"device"},
    "node_network_transmit_drop_total": {"device"},
    "node_load1": set(),
    "node_load5": set(),
    "node_load15": set(),
    "node_boot_time_seconds": set(),
    "node_time_seconds": set(),
    "node_procs_running": set(),
}


def awk_only_path(tmp_path: Path, awk: str) -> str:
    """A PATH holding nothing but ``awk``: the sampler may start no other program."""
    bin_dir = tmp_path / f"bin-{awk}"
    bin_dir.mkdir()
    program = shutil.which(awk)
    assert program is not None, f"{awk} is not installed"
    (bin_dir / "awk").symlink_to(program)  # busybox runs its awk applet under this name
    return str(bin_dir)


def run_sampler(path: str, proc: Path | None = None) -> str:
    env = {"PATH": path}
    if proc is not None:
        env["NXC_METRICS_PROC"] = str(proc)
    result = subprocess.run(
        ["/bin/sh", str(SAMPLER)], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


AWKS = [a for a in ("mawk", "gawk", "busybox") if shutil.which(a)]


@pytest.mark.parametrize("awk", AWKS)
def test_sampler_output_parses_with_node_exporter_names(tmp_path: Path, awk: str) -> None:
    text = run_sampler(awk_only_path(tmp_path, awk))
    families = list(text_string_to_metric_families(text))
    samples = {}
    for family in families:
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    for name, label_names in REQUIRED.items():
        assert name in samples, f"{name} missing from nxc-metrics ({awk})"
        for sample in samples[name]:
            assert set(sample.labels) == label_names, (name, sample.labels)
    modes = {s.labels["mode"] for s in samples["node_cpu_seconds_total"]}
    assert {"user", "system", "idle", "iowait", "steal"} <= modes
    assert "lo" in {s.labels["device"] for s in samples["node_network_receive_bytes_total"]}
    # Counters and gauges carry node_exporter's types.
    types = {f.name: f.type for f in families}
    assert types["node_cpu_seconds"] == "counter"
    assert types["node_network_receive_bytes"] == "counter"
    assert types["node_memory_MemTotal_bytes"] == "gauge"
    # Plausible values from this very host.
    total = samples["node_memory_MemTotal_bytes"][0].value
    with open("/proc/meminfo") as meminfo:
        kib = int(meminfo.readline().split()[1])
    assert total == kib * 1024
    boot = samples["node_boot_time_seconds"][0].value
    now = samples["node_time_seconds"][0].value
    assert 0 < boot < now
    assert abs(now - __import__("time").time()) < 5


FAKE_STAT = """\
cpu  300 10 200 5000 40 0 5 7 0 0
cpu0 12345 0 678 90000 12 0 3 4 0 0
cpu1 1 2 3 4 5 6 7 8 0 0
intr 999 1 2 3
ctxt 4242
btime 1700000000
processes 77
procs_running 3
procs_blocked 1
softirq 5 1 1 1 1 1
"""
FAKE_MEMINFO = """\
MemTotal:        2048000 kB
MemFree:         1024000 kB
MemAvailable:    1536000 kB
Buffers:            1000 kB
Cached:             2000 kB
Active(anon):        300 kB
HugePages_Total:       0
"""
FAKE_NETDEV = """\
Inter-|   Receive                                  |  Transmit
 face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls
    lo:   100   2 0 0 0 0 0 0   100   2 0 0 0 0 0 0
  eth0:12345678901  1000 1 2 0 0 0 3 98765432100  900 4 5 0 0 0 0
"""
FAKE_DISKSTATS = """\
 253       0 vda 10 0 2048 30 20 0 4096 40 0 50 70 0 0 0 0
 253       1 vda1 9 0 2000 30 19 0 4000 40 0 50 70 0 0 0 0
   7       0 loop0 1 0 8 0 0 0 0 0 0 0 0 0 0 0 0
"""


@pytest.fixture
def fake_proc(tmp_path: Path) -> Path:
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "stat").write_text(FAKE_STAT)
    (proc / "meminfo").write_text(FAKE_MEMINFO)
    (proc / "net" / "dev").write_text(FAKE_NETDEV)
    (proc / "diskstats").write_text(FAKE_DISKSTATS)
    (proc / "loadavg").write_text("0.50 0.25 0.10 2/99 1234\n")
    return proc


@pytest.mark.parametrize("awk", AWKS)
def test_sampler_converts_units_exactly(tmp_path: Path, fake_proc: Path, awk: str) -> None:
    samples = parse_metrics(run_sampler(awk_only_path(tmp_path, awk), fake_proc))

    def value(metric: str, **labels: str) -> float:
        found = [s.value for s in samples if s.metric == metric and dict(s.labels) == labels]
        assert len(found) == 1, (metric, labels, found)
        return found[0]

    # jiffies / USER_HZ (100); the aggregate "cpu" line is not a CPU
    assert value("node_cpu_seconds_total", cpu="0", mode="user") == 123.45
    assert value("node_cpu_seconds_total", cpu="0", mode="idle") == 900.0
    assert value("node_cpu_seconds_total", cpu="1", mode="steal") == 0.08
    assert {s.labels["cpu"] for s in samples if s.metric == "node_cpu_seconds_total"} == {"0", "1"}
    assert value("node_memory_MemTotal_bytes") == 2048000 * 1024
    assert value("node_memory_MemAvailable_bytes") == 1536000 * 1024
    assert value("node_memory_Active_anon_bytes") == 300 * 1024  # "(anon)" as node_exporter
    assert value("node_memory_HugePages_Total") == 0  # no unit: no _bytes
    # "eth0:12345…" (no space after the colon) is read right; big counters stay exact
    assert value("node_network_receive_bytes_total", device="eth0") == 12345678901
    assert value("node_network_transmit_bytes_total", device="eth0") == 98765432100
    assert value("node_network_receive_errs_total", device="eth0") == 1
    assert value("node_network_receive_drop_total", device="eth0") == 2
    assert value("node_network_transmit_errs_total", device="eth0") == 4
    assert value("node_network_transmit_drop_total", device="eth0") == 5
    assert value("node_network_receive_packets_total", device="lo") == 2
    # sectors of 512 bytes; partitions and loop devices left out (node_exporter's default)
    assert value("node_disk_read_bytes_total", device="vda") == 2048 * 512
    assert value("node_disk_written_bytes_total", device="vda") == 4096 * 512
    assert {s.labels["device"] for s in samples if s.metric.startswith("node_disk_")} == {"vda"}
    assert value("node_load1") == 0.5 and value("node_load15") == 0.1
    assert value("node_procs_running") == 3 and value("node_procs_blocked") == 1
    assert value("node_boot_time_seconds") == 1700000000
    assert value("node_context_switches_total") == 4242
    assert value("node_forks_total") == 77


def test_sampler_fails_loudly_when_proc_is_missing(tmp_path: Path) -> None:
    result = subprocess.run(
        ["/bin/sh", str(SAMPLER)],
        env={"PATH": os.environ["PATH"], "NXC_METRICS_PROC": str(tmp_path / "nothing")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "nothing" in result.stderr


def test_parse_rejects_what_is_not_the_format() -> None:
    with pytest.raises(MetricsFormatError, match="node1: empty answer"):
        parse_metrics("  \n", "node1")
    with pytest.raises(MetricsFormatError, match="node1: not the Prometheus text format"):
        parse_metrics("<html>502 Bad Gateway</html>\n", "node1")
    parsed = parse_metrics('# TYPE x_total counter\nx_total{a="q\\"uote"} 3\n', "n")
    assert parsed[0].metric == "x_total" and parsed[0].labels == {"a": 'q"uote'}
    assert parsed[0].type == "counter"


def run_detection(env_path: str, tmp_path: Path, installed: Path) -> str:
    command = detect_command(installed=str(installed))
    result = subprocess.run(
        ["/bin/sh", "-c", command],
        env={"PATH": env_path},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_detection_prefers_an_installed_sampler_then_offers_to_install(
    tmp_path: Path,
) -> None:
    # A PATH with awk but no curl/wget and no nxc-metrics: "install".
    bare = awk_only_path(tmp_path, "mawk" if shutil.which("mawk") else AWKS[0])
    installed = tmp_path / "run" / "nxc-metrics"
    found = parse_detection("n1", run_detection(bare, tmp_path, installed))
    assert (found.kind, found.fetcher) == ("install", "")
    # The install command writes the very sampler, executable, then detection runs it.
    install = subprocess.run(
        ["/bin/sh", "-c", install_command(str(installed))],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=30,
    )
    assert install.returncode == 0, install.stderr
    assert installed.read_text() == sampler_script()
    assert os.access(installed, os.X_OK)
    found = parse_detection("n1", run_detection(bare, tmp_path, installed))
    assert found.kind == "exec" and str(installed) in found.command
    # nxc-metrics on PATH wins over the installed copy.
    on_path = tmp_path / "image-bin"
    on_path.mkdir()
    shutil.copy(SAMPLER, on_path / "nxc-metrics")
    found = parse_detection("n1", run_detection(f"{on_path}:{bare}", tmp_path, installed))
    assert found.command == str(on_path / "nxc-metrics")


def test_detection_without_awk_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    output = run_detection(str(empty), tmp_path, tmp_path / "absent")
    with pytest.raises(NoMetricsSource, match="n1: no metrics source: no node_exporter"):
        parse_detection("n1", output)
