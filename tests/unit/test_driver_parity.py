"""NixOS-compatibility logic of the driver that needs no VM: durations, retry, polling
conditions, the scenario log, the global timeout, names (local nodes: real processes)."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxc.contracts import Deployment
from nxc.contracts.deployment import Node
from nxc.driver.driver import Driver, GlobalTimeout
from nxc.driver.duration import DurationError, optional_seconds, seconds
from nxc.driver.local import LocalNodeControl
from nxc.driver.machine import CommandFailed, Machine
from nxc.driver.polling import RetryTime, retry
from nxc.errors import NxcError, WaitTimeout
from nxc.expand import host_name, parse_role_overrides, role_aliases
from nxc.log import Logger
from nxc.runtime.node_inputs import render_hosts


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Driver]:
    logger = Logger(keep=10_000)
    controls = [
        LocalNodeControl("server1", tmp_path / "server1"),
        LocalNodeControl("my-client1", tmp_path / "my-client1"),
        LocalNodeControl("worker1", tmp_path / "worker1"),
        LocalNodeControl("worker2", tmp_path / "worker2"),
    ]
    roles = [("server", 1), ("my_client", 1), ("worker", 1), ("worker", 2)]
    machines = [
        Machine(c.name, role, index, c, logger)
        for c, (role, index) in zip(controls, roles, strict=True)
    ]
    yield Driver(machines, logger, tmp_path / "out")
    for control in controls:
        control.close()


def test_durations() -> None:
    assert seconds(dt.timedelta(minutes=1, milliseconds=500)) == 60.5
    assert seconds(3) == 3.0 and seconds(0.25) == 0.25
    assert optional_seconds(None) is None
    for bad in (True, "10", None):
        with pytest.raises(DurationError, match="timedelta or a number of seconds"):
            seconds(bad)  # type: ignore[arg-type]
    assert issubclass(DurationError, TypeError) and issubclass(DurationError, NxcError)


def test_retry_time_is_remaining_time_and_last_try() -> None:
    early, last = RetryTime(2.5, False), RetryTime(0, True)
    assert early == dt.timedelta(seconds=2.5) and not early
    assert last == dt.timedelta(0) and last
    calls: list[bool] = []
    with pytest.raises(WaitTimeout, match=r"^action timed out after 0\.\d\d seconds"):
        retry(lambda last_try: calls.append(bool(last_try)), timeout=0.3)
    assert calls[-1] is True and not any(calls[:-1]) and len(calls) >= 2
    retry(lambda: True, timeout_seconds=dt.timedelta(seconds=1))


def test_polling_condition_fails_the_next_command(driver: Driver, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    script = f"""
@polling_condition(seconds_interval=0)
def flag_absent():
    "no flag"
    return not os.path.exists({str(flag)!r})

with flag_absent:
    server.succeed("true")
    open({str(flag)!r}, "w").close()
    server.succeed("true")
"""
    assert not driver.run_script(script, "poll.py")
    report = json.loads((driver.out_dir / "report.json").read_text())
    assert report["error"]["type"] == "PollingConditionFailed"
    assert report["error"]["message"] == "Polling condition failed: no flag"
    flag.unlink()
    waited = f"""
cond = polling_condition(lambda: os.path.exists({str(flag)!r}), description="flag there")
server.execute("sleep 0.3; touch {flag}", check_output=False)
cond.wait(timeout=dt.timedelta(seconds=10))
"""
    assert driver.run_script("import datetime as dt\n" + waited, "wait.py")


def test_polling_interval_limits_checks(driver: Driver) -> None:
    calls = []
    cond = driver.polling_condition(lambda: calls.append(1), interval=dt.timedelta(hours=1))
    with cond:
        for _ in range(3):
            driver.machine("server1").succeed("true")
    assert len(calls) == 1  # None counts as "holds"; then not due for an hour
    with pytest.raises(NxcError, match="not both"):
        driver.polling_condition(lambda: True, seconds_interval=1, interval=dt.timedelta(1))


def test_scenario_log_forms(driver: Driver) -> None:
    mark = driver.logger.mark()
    assert driver.run_script(
        'log.log("one")\nlog.log("two", {"k": "v"})\nlog.log("warning", "three")\n'
        'with log.nested("four", {"k": "w"}):\n    log.info("five")\n'
        'with server.nested("six", {"step": 1}):\n    pass\n',
        "log.py",
    )
    records = {r.message: r for r in driver.logger.records(mark)}
    assert records["two"].attrs == {"k": "v"}
    assert records["three"].level.name == "WARNING"
    assert records["four"].attrs == {"k": "w"} and "five" in records
    assert records["six"].attrs == {"node": "server1", "step": 1}


def test_globals_and_names(driver: Driver) -> None:
    scope = driver.globals()
    assert scope["server"] is driver.machine("server1")
    assert scope["my_client"] is scope["my_client1"] is driver.machine("my-client1")
    assert "worker" not in scope  # two nodes: no alias
    assert driver.machine("my_client") is driver.machine("my-client") is scope["my_client"]
    scope["t"].assertEqual(2, 2)
    with pytest.raises(AssertionError):
        scope["t"].assertTrue(False)


def test_global_timeout_fails_even_a_scenario_that_catches(driver: Driver) -> None:
    started = time.monotonic()
    script = (
        "import time\ntry:\n    time.sleep(30)\nexcept Exception:\n    pass\n"
        "server.succeed('echo never')\n"
    )
    assert not driver.run_script(script, "slow.py", global_timeout=0.5)
    assert time.monotonic() - started < 10
    report = json.loads((driver.out_dir / "report.json").read_text())
    assert report["error"]["type"] == GlobalTimeout.__name__
    assert report["error"]["message"].startswith(
        "global timeout: the scenario ran past 0.5s (--global-timeout)"
    )
    assert driver.run_script("server.succeed('true')", "fast.py", global_timeout=30)


def test_role_names_and_host_names(tmp_path: Path) -> None:
    assert host_name("my_server") == "my-server"
    assert parse_role_overrides(["my_server=2"]) == {"my_server": 2}
    pairs = [("server1", "server"), ("my-client1", "my_client"), ("w1", "w"), ("w2", "w")]
    assert role_aliases(pairs) == {"server": "server1", "my-client": "my-client1"}
    assert role_aliases([("web", "web")]) == {}  # a node already has the role's name
    nodes = [
        Node("server1", "server", 1, "10.0.0.1", "fd00::1", "52:54:00:00:00:01"),
        Node("w1", "w", 1, "10.0.0.2", "fd00::2", "52:54:00:00:00:02"),
        Node("w2", "w", 2, "10.0.0.3", "fd00::3", "52:54:00:00:00:03"),
    ]
    deployment = Deployment(
        id="dep-1",
        composition="c",
        flavour="vm-ramdisk",
        ipv4_prefix="10.0.0.0/24",
        ipv6_prefix="fd00::/64",
        interface="eth1",
        authorized_keys=["ssh-ed25519 AAAA"],
        roles={"server": 1, "w": 2},
        nodes=nodes,
    )
    hosts = render_hosts(deployment).splitlines()
    assert "10.0.0.1 server1 server" in hosts
    assert "10.0.0.2 w1" in hosts and "10.0.0.3 w2" in hosts


def test_command_wrapper_is_invisible(driver: Driver) -> None:
    """Background output kept, nothing on stderr, no file left behind, status kept."""
    server = driver.machine("server1")
    assert server.succeed("(sleep 0.5; echo late) & echo early") == "early\nlate\n"
    with pytest.raises(CommandFailed) as caught:
        server.succeed("echo out; false | true")
    assert (caught.value.status, caught.value.stdout, caught.value.stderr) == (1, "out\n", "")
    assert server.execute("printf 'no newline'") == (0, "no newline")
    control = server.control
    assert isinstance(control, LocalNodeControl)
    assert list(Path(control.command_tmpdir).iterdir()) == []
