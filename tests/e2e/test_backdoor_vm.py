"""The driver's Machine on one real VM (started by the real CLI) over the backdoor: crash and
shutdown never wait for commands in flight, and copies of big files and directories keep
bytes and modes.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nxc.driver.machine import ConnectionLost, Machine
from nxc.project import Project
from tests.conftest import run_nxc
from tests.e2e.conftest import require_host_tools

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def node1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    """One selftest VM (`nxc start -r node=1` in a project of its own) and its Machine."""
    from nxc.driver.session import machines_of
    from nxc.session import running

    require_host_tools()
    directory = tmp_path_factory.mktemp("backdoor-vm")
    result = run_nxc("init", "-t", "selftest", str(directory))
    assert result.returncode == 0, result.stderr
    result = run_nxc("build", "--offline", cwd=directory)
    assert result.returncode == 0, result.stderr
    result = run_nxc("start", "-r", "node=1", cwd=directory)
    machine: Machine | None = None
    try:
        assert result.returncode == 0, result.stderr
        (machine,) = machines_of(running(Project(directory)))
        machine.out_dir = directory / "out"
        yield machine
    finally:
        if machine is not None:
            machine.release()
        run_nxc("stop", cwd=directory)


def stopped_while_running(
    node: Machine, stop: Callable[[], None], how: str
) -> tuple[float, float, list[BaseException]]:
    """Run `sleep 30` on ``node`` in a thread, ``stop`` the node meanwhile; return how long
    ``stop`` took, how long the command took to fail after it, and what it raised."""
    node.succeed("rm -f /tmp/started")
    outcome: list[BaseException] = []
    failed_at: list[float] = []

    def command() -> None:
        try:
            node.succeed("touch /tmp/started; sleep 30")
        except BaseException as exc:
            outcome.append(exc)
        failed_at.append(time.monotonic())

    worker = threading.Thread(target=command)
    worker.start()
    node.wait_for_file("/tmp/started", timeout=60)  # a second command, concurrently
    started = time.monotonic()
    stop()
    took = time.monotonic() - started
    worker.join(60)
    print(
        f"\n{how} with `sleep 30` in flight: {took:.2f}s; the command failed after "
        f"{failed_at[0] - started:.2f}s"
    )
    return took, failed_at[0] - started, outcome


def test_crash_does_not_wait_for_the_command_in_flight(node1: Machine) -> None:
    """crash() of a node running `sleep 30` took 28 s and the command 'succeeded'."""
    took, failed_after, outcome = stopped_while_running(node1, node1.crash, "crash")
    assert took < 10
    assert failed_after < 2
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionLost), outcome
    assert str(outcome[0]) == "node1: the node was crashed while `touch /tmp/started; sleep 30` ran"
    assert not node1.is_up()
    node1.start()
    assert node1.succeed("echo back") == "back\n"


def test_shutdown_does_not_wait_for_the_command_in_flight(node1: Machine) -> None:
    took, failed_after, outcome = stopped_while_running(node1, node1.shutdown, "shutdown")
    assert took < 30  # a clean power-off under emulation, but no 30 s sleep
    assert failed_after < 2
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionLost), outcome
    assert "the node was shut down while `touch /tmp/started; sleep 30` ran" in str(outcome[0])
    node1.start()
    assert node1.succeed("echo back") == "back\n"


def test_copy_a_20_mb_file_both_ways(node1: Machine, tmp_path: Path) -> None:
    payload = os.urandom(20 * 1024 * 1024)
    source = tmp_path / "big.bin"
    source.write_bytes(payload)
    source.chmod(0o640)
    started = time.monotonic()
    node1.copy_to_machine(source, "/tmp/copies/big.bin")
    up = time.monotonic() - started
    remote = node1.succeed("sha256sum /tmp/copies/big.bin; stat -c %a /tmp/copies/big.bin")
    assert remote.split() == [hashlib.sha256(payload).hexdigest(), "/tmp/copies/big.bin", "640"]
    assert node1.succeed("ls -A /tmp/copies") == "big.bin\n"  # no staging file left
    node1.succeed("chmod 751 /tmp/copies/big.bin")
    started = time.monotonic()
    back = node1.copy_from_machine("/tmp/copies/big.bin", tmp_path / "back")
    down = time.monotonic() - started
    print(f"\n20 MB: copy_to_machine {up:.2f}s, copy_from_machine {down:.2f}s")
    assert back == tmp_path / "back" / "big.bin"
    assert back.read_bytes() == payload
    assert back.stat().st_mode & 0o7777 == 0o751
    node1.succeed("rm -rf /tmp/copies")


def test_copy_a_directory_both_ways_keeps_modes(node1: Machine, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "private").mkdir(mode=0o700)
    (tree / "bin" / "run").write_text("#!/bin/sh\necho ran\n")
    (tree / "bin" / "run").chmod(0o755)
    (tree / "private" / "secret").write_bytes(os.urandom(3000))
    (tree / "private" / "secret").chmod(0o600)
    (tree / "link").symlink_to("bin/run")
    node1.copy_to_machine(tree, "/tmp/tree-copy")
    assert node1.succeed("/tmp/tree-copy/link") == "ran\n"
    modes = node1.succeed(
        "cd /tmp/tree-copy && stat -c '%n %a' bin/run private private/secret"
    ).splitlines()
    assert modes == ["bin/run 755", "private 700", "private/secret 600"]
    back = node1.copy_from_machine("/tmp/tree-copy", tmp_path / "back")
    for path in tree.rglob("*"):
        twin = back / path.relative_to(tree)
        assert twin.lstat().st_mode == path.lstat().st_mode, path
        if path.is_file() and not path.is_symlink():
            assert twin.read_bytes() == path.read_bytes()
    node1.succeed("rm -rf /tmp/tree-copy")
