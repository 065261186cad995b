"""Machine semantics, run for real against local nodes (sh -c on this host).

Each behaviour that depends on the node's tools is also run with a node whose PATH
holds busybox only, as in the selftest images.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nxc.driver.local import LocalNodeControl, LocalNodeUnsupported
from nxc.driver.machine import (
    CommandFailed,
    ConnectionLost,
    Machine,
    WaitExpired,
    tail,
)
from nxc.errors import MachineError, WaitTimeout
from nxc.log import Logger
from nxc.runtime.node import CapabilityMissing

BUSYBOX = shutil.which("busybox")

MakeMachine = Callable[..., Machine]


def busybox_path(directory: Path) -> dict[str, str]:
    """An environment whose PATH holds busybox applets only."""
    assert BUSYBOX is not None
    directory.mkdir(exist_ok=True)
    import subprocess

    applets = subprocess.run(
        [BUSYBOX, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        link = directory / applet
        if not link.exists():
            link.symlink_to(BUSYBOX)
    return {"PATH": str(directory), "HOME": "/", "TMPDIR": str(directory.parent)}


@pytest.fixture(params=["sh", "busybox"])
def flavour(request: pytest.FixtureRequest) -> str:
    if request.param == "busybox" and BUSYBOX is None:
        pytest.skip("busybox is not installed")
    return str(request.param)


@pytest.fixture
def logger() -> Logger:
    return Logger(stream=io.StringIO())


@pytest.fixture
def make(tmp_path: Path, logger: Logger) -> Iterator[MakeMachine]:
    controls: list[LocalNodeControl] = []

    def factory(
        name: str = "node1", *, flavour: str = "sh", strict: bool = True, running: bool = True
    ) -> Machine:
        root = tmp_path / name
        if flavour == "busybox":
            env = busybox_path(tmp_path / "bb")
            control = LocalNodeControl(
                name, root, env, running=running, shell=str(tmp_path / "bb" / "sh")
            )
        else:
            control = LocalNodeControl(name, root, running=running)
        controls.append(control)
        return Machine(
            name, "node", len(controls), control, logger, out_dir=tmp_path / "out", strict=strict
        )

    yield factory
    for control in controls:
        control.close()


# -- succeed / fail / execute ------------------------------------------------------


def test_succeed_returns_stdout_of_each_command(make: MakeMachine) -> None:
    node = make()
    assert node.succeed("echo one") == "one\n"
    assert node.succeed("echo a", "echo b >&2; echo c") == "a\nc\n"
    assert (node.name, node.role, node.index) == ("node1", "node", 1)


def test_succeed_failure_names_node_command_status_and_output(make: MakeMachine) -> None:
    node = make()
    with pytest.raises(CommandFailed) as caught:
        node.succeed("echo some output; echo oops >&2; exit 3")
    err = caught.value
    assert isinstance(err, MachineError)
    assert (err.node, err.status) == ("node1", 3)
    assert err.command == "echo some output; echo oops >&2; exit 3"
    message = str(err)
    assert message.startswith(
        "node1: command `echo some output; echo oops >&2; exit 3` failed (exit code 3)"
    )
    assert "some output" in message and "oops" in message


def test_output_tail_in_errors_is_bounded(make: MakeMachine) -> None:
    node = make()
    with pytest.raises(CommandFailed) as caught:
        node.succeed("i=0; while [ $i -lt 500 ]; do echo line$i; i=$((i+1)); done; exit 1")
    message = str(caught.value)
    assert "line499" in message and "line10\n" not in message
    assert "earlier lines" in message
    assert len(message) < 3000


def test_strict_mode_stops_at_first_failure(make: MakeMachine) -> None:
    strict = make("strict")
    loose = make("loose", strict=False)
    strict.fail("false; true")
    loose.succeed("false; true")
    strict.fail("echo $NXC_SURELY_UNSET_VARIABLE")


def test_pipefail_where_the_shell_has_it(make: MakeMachine) -> None:
    if BUSYBOX is None:
        pytest.skip("busybox is not installed")
    node = make(flavour="busybox")
    node.fail("false | cat")
    assert node.succeed("echo x | cat") == "x\n"


def test_fail_returns_output_and_raises_on_success(make: MakeMachine) -> None:
    node = make()
    assert node.fail("echo nope; exit 2") == "nope\n"
    with pytest.raises(CommandFailed, match=r"node1: command `true` unexpectedly succeeded"):
        node.fail("true")


def test_execute_returns_status_and_stdout(make: MakeMachine) -> None:
    node = make()
    assert node.execute("echo out; echo err >&2; exit 4") == (4, "out\n")
    assert node.execute("printf 'a\\nb'") == (0, "a\nb")


def test_execute_timeout_kills_and_gives_124(make: MakeMachine) -> None:
    node = make()
    started = time.monotonic()
    status, _ = node.execute("sleep 30", timeout=0.5)
    assert status == 124
    assert time.monotonic() - started < 5


def test_succeed_timeout_says_so(make: MakeMachine) -> None:
    node = make()
    with pytest.raises(
        CommandFailed,
        match=r"node1: command `sleep 30` failed \(exit code 124: timed out after 0.5s\)",
    ):
        node.succeed("sleep 30", timeout=0.5)


def test_execute_without_output_runs_in_background(make: MakeMachine) -> None:
    node = make()
    started = time.monotonic()
    assert node.execute("sleep 0.3; echo done > bg-file", check_output=False) == (-2, "")
    assert time.monotonic() - started < 2
    node.wait_for_file("bg-file", timeout=10)
    assert node.succeed("cat bg-file") == "done\n"


def test_binary_and_invalid_utf8_output_is_replaced_not_fatal(make: MakeMachine) -> None:
    node = make()
    out = node.succeed("printf 'a\\377b'")
    assert out == "a\ufffdb"


def test_commands_and_output_are_logged(make: MakeMachine, logger: Logger) -> None:
    node = make()
    node.succeed("echo hello-from-node")
    node.execute("seq 1 1000")
    records = logger.records()
    begins = [r.message for r in records if r.kind == "begin"]
    assert "must succeed: echo hello-from-node" in begins
    lines = [r for r in records if r.kind == "line" and r.attrs.get("stream") == "stdout"]
    assert lines[0].message == "hello-from-node" and lines[0].attrs["node"] == "node1"
    assert lines[1].message.endswith("1000") and "earlier lines" in lines[1].message
    assert len(lines[1].message) < 5000


def test_tail_helper() -> None:
    assert tail("") == ""
    assert tail("a\nb\nc\n", lines=2) == "[… 1 earlier lines]\nb\nc"
    assert tail("x" * 100, chars=10) == "…" + "x" * 10


# -- waits -------------------------------------------------------------------------


def test_wait_until_succeeds_retries_until_success(make: MakeMachine) -> None:
    node = make()
    command = "n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count; [ $n -ge 2 ] && echo ok"
    assert node.wait_until_succeeds(command, timeout=20) == "ok\n"
    assert node.succeed("cat count") == "3\n"


def test_wait_until_succeeds_timeout_reports_node_what_and_last_output(
    make: MakeMachine,
) -> None:
    node = make()
    started = time.monotonic()
    with pytest.raises(WaitExpired) as caught:
        node.wait_until_succeeds("echo still-not-ready; exit 1", timeout=0.6)
    elapsed = time.monotonic() - started
    assert 0.6 <= elapsed < 3
    err = caught.value
    assert isinstance(err, WaitTimeout)
    assert err.node == "node1" and err.attempts >= 2
    message = str(err)
    assert message.startswith("node1: action timed out after ")
    assert "(timeout=0.6) waiting for `echo still-not-ready; exit 1` to succeed" in message
    assert "still-not-ready" in message and "status 1" in message


def test_wait_until_fails(make: MakeMachine) -> None:
    node = make()
    node.succeed("touch flag")
    node.execute("sleep 0.3; rm flag", check_output=False)
    node.wait_until_fails("test -e flag", timeout=10)
    with pytest.raises(WaitTimeout, match="to fail"):
        node.wait_until_fails("true", timeout=0.3)


def test_wait_for_file(make: MakeMachine) -> None:
    node = make()
    node.execute("sleep 0.2; mkdir -p d; touch d/f", check_output=False)
    node.wait_for_file("d/f", timeout=10)
    expected = (
        r"node1: action timed out after 0\.\d+ seconds \(timeout=0\.3\) waiting for file nowhere"
    )
    with pytest.raises(WaitTimeout, match=expected):
        node.wait_for_file("nowhere", timeout=0.3)


def _listener() -> tuple[socket.socket, int]:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server, server.getsockname()[1]


def _free_port() -> int:
    server, port = _listener()
    server.close()
    return port


def test_wait_for_open_and_closed_port(make: MakeMachine, flavour: str) -> None:
    node = make(flavour=flavour)
    if flavour == "sh" and shutil.which("nc") is None and shutil.which("bash") is None:
        pytest.skip("this host has neither nc nor bash to probe ports")
    server, port = _listener()
    try:
        node.wait_for_open_port(port, addr="127.0.0.1", timeout=10)
        with pytest.raises(WaitTimeout, match=f"TCP port {port} on 127.0.0.1 to close"):
            node.wait_for_closed_port(port, addr="127.0.0.1", timeout=0.3)
    finally:
        server.close()
    node.wait_for_closed_port(port, addr="127.0.0.1", timeout=10)
    closed = _free_port()
    with pytest.raises(WaitTimeout, match=f"TCP port {closed} on 127.0.0.1 to open") as caught:
        node.wait_for_open_port(closed, addr="127.0.0.1", timeout=0.3)
    assert "nothing accepted a connection" in str(caught.value)


def test_wait_for_open_port_sees_a_late_listener(make: MakeMachine, flavour: str) -> None:
    node = make(flavour=flavour)
    port = _free_port()
    holder: list[socket.socket] = []
    timer = threading.Timer(0.3, lambda: holder.append(_bind(port)))
    timer.start()
    try:
        node.wait_for_open_port(port, addr="127.0.0.1", timeout=10)
    finally:
        timer.join()
        for server in holder:
            server.close()


def _bind(port: int) -> socket.socket:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(8)
    return server


def test_wait_for_unit_without_systemd_is_a_clear_error(make: MakeMachine) -> None:
    if BUSYBOX is None:
        pytest.skip("busybox is not installed")
    node = make(flavour="busybox")
    with pytest.raises(MachineError, match=r"node1: wait_for_unit\('sshd'\) needs systemd"):
        node.wait_for_unit("sshd", timeout=1)
    with pytest.raises(MachineError, match="needs systemd"):
        node.systemctl("status")


def test_wait_for_console_text(make: MakeMachine) -> None:
    node = make()
    node.succeed("echo marker-42")
    assert "marker-42" in node.wait_for_console_text(r"marker-\d+", timeout=1)
    with pytest.raises(WaitTimeout, match="console text matching"):
        node.wait_for_console_text("never-printed", timeout=0.2)


# -- copies ------------------------------------------------------------------------


def test_copy_file_round_trip_binary(make: MakeMachine, flavour: str, tmp_path: Path) -> None:
    node = make(flavour=flavour)
    payload = os.urandom(3 * 45_000 + 17) + bytes(range(256))
    source = tmp_path / "blob.bin"
    source.write_bytes(payload)
    source.chmod(0o750)
    node.copy_to_machine(source, "remote/dir/blob.bin")
    assert node.succeed("wc -c < remote/dir/blob.bin").strip() == str(len(payload))
    assert node.succeed("ls remote/dir") == "blob.bin\n"  # no staging files left
    node.succeed("test -x remote/dir/blob.bin")
    back = node.copy_from_machine("remote/dir/blob.bin", "fetched")
    assert back == tmp_path / "out" / "fetched" / "blob.bin"
    assert back.read_bytes() == payload
    assert back.stat().st_mode & 0o100


def test_copy_empty_file_and_into_directory(make: MakeMachine, tmp_path: Path) -> None:
    node = make()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    node.succeed("mkdir -p target")
    node.copy_to_machine(empty, "target/")
    assert node.succeed("wc -c < target/empty").strip() == "0"
    assert node.copy_from_machine("target/empty").read_bytes() == b""


def test_copy_directory_round_trip(make: MakeMachine, flavour: str, tmp_path: Path) -> None:
    node = make(flavour=flavour)
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "empty-dir").mkdir()
    (tree / "a.txt").write_text("alpha\n")
    (tree / "sub" / "bin").write_bytes(os.urandom(100_000))
    (tree / "sub" / "deeper" / ("long-name-" + "x" * 120)).write_bytes(b"\x00\x01\x02")
    (tree / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (tree / "run.sh").chmod(0o755)
    (tree / "link").symlink_to("a.txt")
    node.copy_to_machine(tree, "copied")
    assert node.succeed("cat copied/a.txt") == "alpha\n"
    assert node.succeed("./copied/run.sh") == "ran\n"
    assert node.succeed("cat copied/link") == "alpha\n"
    node.succeed("test -d copied/empty-dir")
    back = node.copy_from_machine("copied", "again")
    assert back == tmp_path / "out" / "again" / "copied"
    for path in tree.rglob("*"):
        twin = back / path.relative_to(tree)
        if path.is_symlink():
            assert twin.is_symlink() and os.readlink(twin) == os.readlink(path)
        elif path.is_dir():
            assert twin.is_dir()
        else:
            assert twin.read_bytes() == path.read_bytes(), path
    assert os.access(back / "run.sh", os.X_OK)


def test_copy_errors_name_the_missing_side(make: MakeMachine, tmp_path: Path) -> None:
    node = make()
    with pytest.raises(MachineError, match="does not exist on the host"):
        node.copy_to_machine(tmp_path / "absent", "x")
    with pytest.raises(MachineError, match="node1: copy_from_machine: absent does not exist"):
        node.copy_from_machine("absent")


# -- lifecycle ---------------------------------------------------------------------


def test_crash_then_command_starts_the_node_again(make: MakeMachine, logger: Logger) -> None:
    node = make()
    node.succeed("true")
    assert node.is_up()
    node.crash()
    assert not node.is_up()
    assert node.succeed("echo back") == "back\n"
    assert node.is_up()
    assert any("not running; starting it" in r.message for r in logger.records())


def test_start_and_shutdown(make: MakeMachine) -> None:
    node = make(running=False)
    assert not node.is_up()
    node.start()
    assert node.is_up()
    node.start()  # already running: nothing to do
    node.shutdown()
    assert not node.is_up()


def test_block_on_a_local_node_is_a_clear_error(make: MakeMachine) -> None:
    node = make()
    with pytest.raises(CapabilityMissing, match=r"block\(\) is not available on flavour local"):
        node.block()
    with pytest.raises(CapabilityMissing, match=r"unblock\(\)"):
        node.unblock()
    # The control itself refuses too, for callers that bypass the Machine.
    with pytest.raises(LocalNodeUnsupported, match="no experiment NIC"):
        node.control.block()


def crash_once_started(node: Machine, marker: Path) -> threading.Thread:
    """Crash the node's control (behind the machine's back) once ``marker`` exists."""

    def crash() -> None:
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        node.control.crash()

    thread = threading.Thread(target=crash)
    thread.start()
    return thread


def test_crash_during_a_command_is_a_lost_connection(make: MakeMachine, tmp_path: Path) -> None:
    node = make()
    crasher = crash_once_started(node, tmp_path / "node1" / "started")
    try:
        with pytest.raises(ConnectionLost, match="node1: lost the connection"):
            node.succeed("touch started; sleep 30")
    finally:
        crasher.join()


def test_execute_tolerates_lost_connection_without_check_return(
    make: MakeMachine, tmp_path: Path
) -> None:
    node = make()
    crasher = crash_once_started(node, tmp_path / "node1" / "started")
    try:
        assert node.execute("touch started; sleep 30", check_return=False) == (-1, "")
    finally:
        crasher.join()


def test_console_tail_shows_recent_commands(make: MakeMachine) -> None:
    node = make()
    node.succeed("echo visible-on-console")
    assert "visible-on-console" in node.console_tail(5)


def test_sleep_is_logged_as_discouraged(make: MakeMachine, logger: Logger) -> None:
    node = make()
    node.sleep(0.01)
    assert any(r.message.startswith("sleeping 0.01s") for r in logger.records())


def test_one_machine_from_many_threads(make: MakeMachine) -> None:
    node = make()
    results: list[str] = []

    def work(i: int) -> None:
        results.append(node.succeed(f"echo {i}").strip())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results, key=int) == [str(i) for i in range(8)]


def test_crash_does_not_wait_for_a_command_in_flight(make: MakeMachine, tmp_path: Path) -> None:
    node = make()
    outcome: list[tuple[int, str]] = []
    worker = threading.Thread(
        target=lambda: outcome.append(node.execute("touch started; sleep 30", check_return=False))
    )
    worker.start()
    deadline = time.monotonic() + 10
    while not (tmp_path / "node1" / "started").exists():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.01)
    started = time.monotonic()
    node.crash()
    worker.join(10)
    assert time.monotonic() - started < 5
    assert outcome == [(-1, "")]
