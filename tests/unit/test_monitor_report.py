"""``nxc report``: real plots (matplotlib) and a self-contained HTML page for a real run.

The run is made the way ``nxc driver -t`` makes one: a Driver runs a scenario (subtests,
marks, a node crash) on real local nodes while the monitoring hook scrapes them.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from nxc.driver.driver import Driver
from nxc.monitor.hook import METRICS_FILE, MonitorOptions, monitoring
from nxc.monitor.report import write_report
from nxc.netem.validate import PairReport, Tolerances, ValidationReport
from nxc.project import Project
from nxc.runs import PhaseClock, RunRecord, now
from tests.conftest import run_nxc
from tests.unit.monitor_nodes import image_bin, local_cluster

PNG = b"\x89PNG\r\n\x1a\n"

SCENARIO = """\
with subtest("warm up"):
    monitor.sync()
    monitor.sync()
monitor.mark("load phase")
with subtest("busy loop on node1"):
    node1.succeed("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
    monitor.sync()
with subtest("crash node2"):
    node2.crash()
    retry(lambda last: any(g.node == "node2" for g in monitor.gaps()), 30)
    monitor.sync(["node1"])
with subtest("a failing check"):
    assert 1 + 1 == 3, "arithmetic is broken"
"""


SECOND_SESSION = """\
with subtest("second session"):
    monitor.sync()
"""


def make_run(tmp_path: Path) -> Path:
    """A run record as nxc leaves one: two driver sessions, metrics, node consoles."""
    (tmp_path / "flake.nix").write_text("{ }\n")
    record = RunRecord.create(Project(tmp_path), "demo-123abc", "demo", "vm-ramdisk")
    run_dir = record.directory
    (run_dir / "manifest.json").write_text(json.dumps({"composition": "demo"}))
    clock = PhaseClock(record)
    clock.add("acquire", now(), 0.25)
    clock.add("launch", now(), 1.5)
    record.mark("running")
    with local_cluster(tmp_path) as cluster:
        path = image_bin(tmp_path)
        cluster.add("node1", "server", 1, path)
        cluster.add("node2", "client", 1, path)
        for session, scenario, passes in (
            ("001-first", SCENARIO, False),
            ("002-second", SECOND_SESSION, True),
        ):
            if session == "002-second":
                cluster.machines[1].start()
            driver = Driver(cluster.machines, cluster.logger, run_dir / "driver" / session)
            with monitoring(
                run_dir, cluster.machines, MonitorOptions(interval=0.2), logger=cluster.logger
            ) as monitor:
                driver.extra_globals["monitor"] = monitor
                assert driver.run_script(scenario, f"{session}.py") is passes
        record.mark("stopped")
        # The runtime keeps each node's console in the run record (a local node's
        # "console" is the list of commands it ran).
        (run_dir / "nodes").mkdir()
        for machine in cluster.machines:
            text = machine.console_tail(50)
            (run_dir / "nodes" / f"{machine.name}.console.log").write_text(text + "\n")
    report = ValidationReport(
        "demo-123abc",
        "ipv4",
        0.4,
        Tolerances(),
        [
            PairReport(
                "node1", "node2", "shaped", "50ms", "-", 20, 20, 50.4, 2.0,
                50.9, 50.5, 50.8, 52.0, 0.0, 0.02, 0.0, rtt_ms=50.9,
            )
        ],
    )  # fmt: skip
    (run_dir / "netem-validation.json").write_text(report.to_json())
    return run_dir


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.images: list[dict[str, str]] = []
        self.references: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.images.append(values)
        for key in ("src", "href", "action", "data"):
            if key in values:
                self.references.append(values[key])

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = make_run(tmp_path_factory.mktemp("report"))
    write_report(run_dir)
    return run_dir


def test_plots_are_real_pngs(report_run: Path) -> None:
    from matplotlib import image

    for name in ("cpu.png", "memory.png", "network.png"):
        path = report_run / "report" / name
        assert path.read_bytes().startswith(PNG)
        pixels = image.imread(path)
        assert pixels.shape[1] == 1000 and pixels.shape[0] >= 300
        # Not a blank canvas: lines, spans and text were drawn.
        assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[2])[::97]}) > 20


def test_html_names_nodes_subtests_marks_gaps_and_netem(report_run: Path) -> None:
    html = (report_run / "report" / "index.html").read_text()
    page = _Page()
    page.feed(html)
    text = " ".join(" ".join(page.text).split())
    assert "nxc run demo-123abc" in text and "composition demo" in text
    assert "run stopped · flavour vm-ramdisk" in text
    phases = html[html.index("run phase") : html.index('id="subtests"')]
    for phase in ("acquire", "launch", "status: started", "status: running", "status: stopped"):
        assert phase in phases
    assert "1.50" in phases  # launch's duration
    assert "FAILED 001-first.py (driver session 001-first)" in text
    assert "3/4 subtests passed" in text
    assert "PASSED 002-second.py (driver session 002-second)" in text
    for name in (
        "warm up",
        "busy loop on node1",
        "crash node2",
        "a failing check",
        "second session",
    ):
        assert name in text
    assert "arithmetic is broken" in text
    assert "load phase" in text
    for node in ("node1", "node2"):
        assert f"{node} (role" in text
    assert "nxc-metrics at" in text  # where the metrics came from
    # When node2 stopped answering; the first session ended before it came back.
    gaps = html[html.index('id="gaps"') : html.index('id="marks"')]
    assert "node2" in gaps and "node1" not in gaps
    assert re.search(r"\d\d:\d\d:\d\d\.\d{3} UTC \(t\+\d+\.\d s\)", gaps)
    assert re.search(r"never \(until the end of the recording at \d\d:\d\d:\d\d", gaps)
    assert "node1 ↔ node2" in text and "50.4 ± 2.0" in text
    # Logs of each node: the console tail and the driver's lines about it.
    assert "console of node1" in text and "driver log lines about node2" in text
    assert "node_time_seconds" in html[html.index("console of node1") :]  # its content
    assert "monitor: node2 stopped answering" in text


def test_html_is_self_contained(report_run: Path) -> None:
    html = (report_run / "report" / "index.html").read_text()
    page = _Page()
    page.feed(html)
    assert "link" not in page.tags and "iframe" not in page.tags
    assert not re.search(r"url\(|@import|https?://", html.split("<body>")[0])
    for reference in page.references:
        assert reference.startswith(("data:image/png;base64,", "#")), reference
    assert len(page.images) == 3
    files = {p.name: p.read_bytes() for p in (report_run / "report").glob("*.png")}
    embedded = [base64.b64decode(img["src"].split(",", 1)[1]) for img in page.images]
    assert sorted(embedded) == sorted(files.values())


def test_html_renders_in_headless_chromium(report_run: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("needs Debian's chromium (scripts/setup installs it)")
    page = report_run / "report" / "index.html"
    result = subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
            "--v=0", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
            "--dump-dom", page.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    # The page's own check found every plot decodable.
    assert 'data-nxc-images="ok"' in result.stdout
    assert "warm up" in result.stdout


def test_report_cli_writes_where_asked(report_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    result = run_nxc("report", str(report_run), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert f"report: {out / 'index.html'}" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "cpu.png",
        "index.html",
        "memory.png",
        "network.png",
    ]


def test_report_cli_errors_are_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "runs" / "nothing"
    empty.mkdir(parents=True)
    result = run_nxc("report", str(empty))
    assert result.returncode == 1
    assert result.stderr.startswith("nxc: error: ")
    assert "nothing to report (no metrics.sqlite, no scenario report)" in result.stderr
    assert "Traceback" not in result.stderr
    (tmp_path / "flake.nix").write_text("{ }\n")
    result = run_nxc("report", "unknown-run", "-p", str(tmp_path))
    assert result.returncode == 1 and "no run 'unknown-run'" in result.stderr


def test_report_without_scenario_or_with_metrics_only(tmp_path: Path, report_run: Path) -> None:
    # Metrics but no scenario report: plots and tables, and says there was no scenario.
    only_metrics = tmp_path / "only-metrics"
    only_metrics.mkdir()
    shutil.copy(report_run / METRICS_FILE, only_metrics / METRICS_FILE)
    files = write_report(only_metrics)
    assert len(files.images) == 3
    assert "No scenario report" in files.html.read_text()
