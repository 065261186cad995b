"""Driver: scripts and their reports, subtests, parallel helpers.

Nodes are local (sh -c on this host, each in its own directory). The sync service
(barriers, topics) is tested in tests/sync.
"""

from __future__ import annotations

import io
import json
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nxc.driver.driver import Driver, python_name
from nxc.driver.local import LocalNodeControl
from nxc.driver.machine import Machine
from nxc.errors import MachineError, NxcError
from nxc.log import Logger

MakeDriver = Callable[..., Driver]


@pytest.fixture
def logger() -> Logger:
    return Logger(stream=io.StringIO())


@pytest.fixture
def make(tmp_path: Path, logger: Logger) -> Iterator[MakeDriver]:
    controls: list[LocalNodeControl] = []

    def factory(
        roles: dict[str, int] | None = None,
        *,
        running: bool = True,
        extra: dict[str, Any] | None = None,
        shell: str = "/bin/sh",
        env: dict[str, str] | None = None,
    ) -> Driver:
        machines = []
        for role, count in (roles or {"node": 2}).items():
            for index in range(1, count + 1):
                name = f"{role}{index}"
                control = LocalNodeControl(
                    name, tmp_path / "nodes" / name, env, running=running, shell=shell
                )
                controls.append(control)
                machines.append(Machine(name, role, index, control, logger))
        return Driver(machines, logger, tmp_path / "out", extra)

    yield factory
    for control in controls:
        control.close()


def reports(driver: Driver) -> tuple[dict[str, Any], ET.Element]:
    report = json.loads((driver.out_dir / "report.json").read_text())
    xml = ET.parse(driver.out_dir / "report.xml").getroot()
    return report, xml


# -- scripts and reports -----------------------------------------------------------

PASSING = """\
start_all()
for m in machines:
    with subtest(f"{m.name} answers"):
        assert m.succeed("echo hi") == "hi\\n"
with subtest("roles"):
    assert [m.name for m in roles["server"]] == ["server1"]
    assert server1.role == "server" and client2.index == 2
    assert answer == 42
"""


def test_passing_script_writes_both_reports(make: MakeDriver) -> None:
    driver = make({"server": 1, "client": 2}, extra={"answer": 42})
    assert driver.run_script(PASSING, "scenario.py") is True
    report, xml = reports(driver)
    assert report["nxc_report"] == 1 and report["success"] is True and report["error"] is None
    assert [s["name"] for s in report["subtests"]] == [
        "server1 answers",
        "client1 answers",
        "client2 answers",
        "roles",
    ]
    assert all(s["success"] and s["duration"] >= 0 for s in report["subtests"])
    assert {m["name"]: m["role"] for m in report["machines"]} == {
        "server1": "server",
        "client1": "client",
        "client2": "client",
    }
    assert any("must succeed: echo hi" in r["msg"] for r in report["log"])
    assert xml.tag == "testsuites" and xml.get("failures") == "0" and xml.get("errors") == "0"
    cases = xml.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == [
        "server1 answers",
        "client1 answers",
        "client2 answers",
        "roles",
        "scenario.py (whole script)",
    ]
    assert not xml.findall(".//failure")
    out = cases[0].find("system-out")
    assert out is not None and out.text is not None and "server1: hi" in out.text


FAILING = """\
def check(machine):
    out = machine.succeed("echo got-this")
    assert "expected" in out, f"{machine.name} said {out.strip()!r}"

with subtest("first"):
    node1.succeed("true")
with subtest("second"):
    check(node2)
with subtest("never reached"):
    pass
"""


def test_failing_script_reports_the_scenario_traceback(make: MakeDriver) -> None:
    driver = make()
    assert driver.run_script(FAILING, "failing.py") is False
    report, xml = reports(driver)
    assert report["success"] is False
    error = report["error"]
    assert error["type"] == "AssertionError" and error["kind"] == "failure"
    assert error["message"] == "node2 said 'got-this'"
    trace = error["traceback"]
    assert 'File "failing.py", line 8' in trace and "check(node2)" in trace
    assert 'File "failing.py", line 3' in trace and 'assert "expected" in out' in trace
    assert "nxc/driver" not in trace and "contextlib" not in trace
    assert [(s["name"], s["success"]) for s in report["subtests"]] == [
        ("first", True),
        ("second", False),
    ]
    assert report["subtests"][1]["error"]["message"] == "node2 said 'got-this'"
    assert xml.get("failures") == "2"  # the subtest and the whole script
    failures = xml.findall(".//testcase/failure")
    assert [f.get("type") for f in failures] == ["AssertionError", "AssertionError"]
    assert failures[0].get("message") == "node2 said 'got-this'"
    assert failures[0].text is not None and "check(node2)" in failures[0].text


def test_machine_error_in_script_is_a_failure_naming_node_and_command(
    make: MakeDriver,
) -> None:
    driver = make()
    assert driver.run_script('node1.succeed("echo bad-news; exit 7")\n', "s.py") is False
    report, xml = reports(driver)
    error = report["error"]
    assert error["type"] == "CommandFailed" and error["kind"] == "failure"
    assert error["message"].startswith(
        "node1: command `echo bad-news; exit 7` failed (exit code 7)"
    )
    assert "bad-news" in error["message"]
    assert 'File "s.py", line 1' in error["traceback"]
    assert xml.findall(".//failure")


def test_bare_assert_message_quotes_the_line(make: MakeDriver) -> None:
    driver = make()
    assert driver.run_script("x = 1\nassert x == 2\n", "bare.py") is False
    report, _ = reports(driver)
    assert report["error"]["message"] == "AssertionError at bare.py:2: assert x == 2"


def test_unexpected_exception_is_a_junit_error(make: MakeDriver) -> None:
    driver = make()
    assert driver.run_script("{}['missing']\n", "oops.py") is False
    report, xml = reports(driver)
    assert report["error"]["kind"] == "error" and report["error"]["type"] == "KeyError"
    assert xml.get("errors") == "1" and xml.findall(".//error")


def test_syntax_error_is_reported(make: MakeDriver) -> None:
    driver = make()
    assert driver.run_script("if True\n    pass\n", "broken.py") is False
    report, _ = reports(driver)
    assert report["error"]["type"] == "SyntaxError"
    assert "broken.py" in report["error"]["traceback"]


def test_sys_exit_codes(make: MakeDriver) -> None:
    driver = make()
    assert driver.run_script("import sys\nsys.exit(0)\n", "ok.py") is True
    assert driver.run_script("import sys\nsys.exit(3)\n", "three.py") is False
    assert reports(driver)[0]["error"]["message"] == "the scenario exited with 3"


def test_control_characters_in_output_keep_the_xml_valid(make: MakeDriver) -> None:
    driver = make()
    script = 'node1.succeed("printf \'\\\\033[1mbold\\\\001\\\\n\'")\nassert False, "\\x1b"\n'
    assert driver.run_script(script, "ctl.py") is False
    _, xml = reports(driver)  # parses
    assert xml.findall(".//failure")


def test_globals(make: MakeDriver) -> None:
    driver = make({"web-server": 1}, extra={"netem": "model"})
    names = driver.globals()
    assert names["web_server1"] is driver.machines[0]
    assert names["machine"] is driver.machines[0]  # the only node, as in NixOS tests
    assert names["netem"] == "model" and names["driver"] is driver
    for key in ("machines", "start_all", "subtest", "log", "run_parallel", "barrier"):
        assert key in names
    assert python_name("1st") == "_1st"


def test_duplicate_names_are_refused(logger: Logger, tmp_path: Path) -> None:
    control = LocalNodeControl("a", tmp_path / "a")
    try:
        machines = [Machine("a", "r", 1, control, logger), Machine("a", "r", 2, control, logger)]
        with pytest.raises(NxcError, match="share a name: a"):
            Driver(machines, logger, tmp_path)
    finally:
        control.close()


def test_subtests_nest_and_time(make: MakeDriver) -> None:
    driver = make()
    with driver.subtest("outer"), driver.subtest("inner"):
        time.sleep(0.05)
    with pytest.raises(MachineError), driver.subtest("broken"):
        driver.machines[0].succeed("false")
    results = {s.name: s for s in driver.subtests}
    assert results["inner"].duration >= 0.05 and results["outer"].duration >= 0.05
    assert not results["broken"].success and results["broken"].error is not None
    assert results["broken"].error.type == "CommandFailed"


def test_machines_get_the_driver_out_dir(make: MakeDriver, tmp_path: Path) -> None:
    driver = make()
    driver.machines[0].succeed("echo payload > f")
    assert driver.machines[0].copy_from_machine("f") == tmp_path / "out" / "f"


# -- parallel helpers --------------------------------------------------------------


def test_start_all_starts_every_node_in_parallel(make: MakeDriver) -> None:
    driver = make({"node": 3}, running=False)
    assert not any(m.is_up() for m in driver.machines)
    driver.start_all()
    assert all(m.is_up() for m in driver.machines)


def test_run_parallel_is_concurrent_and_ordered(make: MakeDriver) -> None:
    driver = make({"node": 4})
    started = time.monotonic()
    out = driver.run_parallel(lambda m: m.succeed("sleep 0.4; echo $NXC_NODE").strip())
    assert out == ["node1", "node2", "node3", "node4"]
    assert time.monotonic() - started < 1.4


def test_run_parallel_raises_first_failure_with_notes(make: MakeDriver) -> None:
    driver = make({"node": 3})
    with pytest.raises(MachineError) as caught:
        driver.run_parallel(lambda m: m.succeed(f"[ {m.index} -eq 2 ]"))
    err = caught.value
    assert str(err).startswith("node1: ")
    assert [n.split(":")[0] for n in err.__notes__] == ["also failed on node3"]


def test_run_parallel_logs_nest_under_the_caller(make: MakeDriver, logger: Logger) -> None:
    driver = make()
    mark = logger.mark()
    with logger.nested("outer"):
        driver.run_parallel(lambda m: m.succeed("true"))
    depths = {r.message: r.depth for r in logger.records(mark) if r.kind == "begin"}
    assert depths["outer"] == 0
    assert depths["must succeed: true"] == 2


def test_script_from_another_thread_is_fine(make: MakeDriver) -> None:
    driver = make({"node": 1})
    result: list[bool] = []
    thread = threading.Thread(
        target=lambda: result.append(driver.run_script("node1.succeed('true')"))
    )
    thread.start()
    thread.join()
    assert result == [True]


# -- interactive shell -------------------------------------------------------------


def test_shell_refuses_without_a_terminal(make: MakeDriver) -> None:
    from nxc.driver.shell import interactive_shell

    driver = make()
    with pytest.raises(NxcError) as caught:
        interactive_shell(driver, stdin=io.StringIO(), stdout=io.StringIO())
    message = str(caught.value)
    assert "\n" not in message
    assert "needs a terminal, but standard input is not one" in message


def test_shell_banner_lists_nodes_by_role(make: MakeDriver) -> None:
    from nxc.driver.shell import banner

    text = banner(make({"server": 1, "client": 2}))
    assert "  client (2): client1, client2" in text
    assert "  server (1): server1 (or server)" in text
    assert "start_all" in text and 'server1.succeed("uname -a")' in text


SHELL_PROGRAM = """\
import sys
from pathlib import Path
from nxc.driver.driver import Driver
from nxc.driver.local import LocalNodeControl
from nxc.driver.machine import Machine
from nxc.driver.shell import interactive_shell
control = LocalNodeControl("node1", Path(sys.argv[1]) / "node1")
driver = Driver([Machine("node1", "node", 1, control)], out_dir=Path(sys.argv[1]))
interactive_shell(driver, history=Path(sys.argv[1]) / "state" / "shell-history")
print("SHELL-" + "DONE")
"""


def test_shell_in_a_terminal(tmp_path: Path) -> None:
    pytest.importorskip("ptpython")
    import os
    import pty
    import select
    import sys

    program = tmp_path / "shell.py"
    program.write_text(SHELL_PROGRAM)
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        env = {**os.environ, "PROMPT_TOOLKIT_NO_CPR": "1"}
        os.execve(sys.executable, [sys.executable, str(program), str(tmp_path)], env)
    seen = b""

    def read_until(marker: bytes, timeout: float = 20) -> None:
        """Read until ``marker`` appears in output not yet matched."""
        nonlocal seen
        deadline = time.monotonic() + timeout
        while marker not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {marker!r} in the shell's output: {seen[-2000:]!r}"
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if ready:
                try:
                    seen += os.read(fd, 65536)
                except OSError:
                    raise AssertionError(
                        f"shell closed before {marker!r}: {seen[-2000:]!r}"
                    ) from None
        consumed.append(seen[: seen.index(marker) + len(marker)])
        seen = seen[seen.index(marker) + len(marker) :]

    consumed: list[bytes] = []
    try:
        read_until(b"node (1): node1")
        read_until(b">>>")
        os.write(fd, b"print('X' + node1.succeed('echo from-shell').strip())\r")
        read_until(b"Xfrom-shell")
        read_until(b">>>")  # the next prompt: the shell is ready for input again
        os.write(fd, b"\x04")
        read_until(b"SHELL-DONE")
    finally:
        deadline = time.monotonic() + 10
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:
            os.kill(pid, 9)
            done = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert "echo from-shell" in (tmp_path / "state" / "shell-history").read_text()


def test_tracebacks_keep_scenario_frames_only() -> None:
    import nxc.driver.machine as machine_module
    from nxc.driver.driver import _is_internal

    assert _is_internal(machine_module.__file__)
    assert _is_internal(json.__file__)
    template = Path(machine_module.__file__).parents[2] / "compositions" / "selftest" / "test.py"
    assert not _is_internal(str(template))
    assert not _is_internal(machine_module.__file__, script=machine_module.__file__)
    assert not _is_internal("testScript")
