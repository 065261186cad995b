"""The agent's backdoor loop (Contract 4, protocol 2) on this host, without a VM: the real
agent serves a pty, a relay plays QEMU's chardev socket, and the real BackdoorTransport (and
a real Machine, and the real ptpython shell) drive it. Real VMs:
tests/e2e/test_selftest_image.py.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pty
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nxc.flavours.vm_ramdisk.backdoor import BackdoorTransport, sendable_raw
from nxc.runtime.transport import (
    CommandResult,
    FileTransferError,
    NodeUnreachable,
    OutputTruncated,
    TransportError,
)

AGENT = Path(__file__).resolve().parents[2] / "nxc" / "agent" / "nxc-agent"
REPO = AGENT.parents[2]
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def _tool(name: str, package: str) -> str:
    for directory in ENV["PATH"].split(":"):
        if os.access(f"{directory}/{name}", os.X_OK):
            return f"{directory}/{name}"
    pytest.fail(f"{name} is not installed (apt-get install {package})")


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Chardev:
    """QEMU's ``-chardev socket,server=on`` in front of the guest's port, played with a pty:
    one client at a time, a new one accepted once the last has gone; what the guest
    writes while nobody is connected is dropped."""

    def __init__(self, socket_path: Path, link: Path) -> None:
        self.master, self._slave = os.openpty()  # the slave stays open: no EIO on reads
        tty.setraw(self._slave)
        link.symlink_to(os.ttyname(self._slave))
        self.path = socket_path
        self._server = socket.socket(socket.AF_UNIX)
        self._server.bind(str(socket_path))
        self._server.listen(4)
        self._stop = threading.Event()
        self._client: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready = select.select([self._server, self.master], [], [], 0.1)[0]
            if self.master in ready:
                os.read(self.master, 65536)  # nobody connected: dropped
            if self._server in ready:
                client, _ = self._server.accept()
                self._client = client
                with client:
                    self._relay(client)
                self._client = None

    def _relay(self, client: socket.socket) -> None:
        while not self._stop.is_set():
            ready = select.select([client, self.master], [], [], 0.1)[0]
            if client in ready:
                try:
                    data = client.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                view = memoryview(data)
                while view:
                    view = view[os.write(self.master, view) :]
            if self.master in ready:
                data = os.read(self.master, 65536)
                try:
                    client.sendall(data)
                except OSError:
                    return

    def stop(self) -> None:
        """As QEMU exiting: the socket and the connection go away."""
        self._stop.set()
        self._thread.join(5)
        self._server.close()
        self.path.unlink(missing_ok=True)
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class Backdoor:
    def __init__(self, tmp_path: Path, state_tmpfs: str | None = None) -> None:
        self.dir = tmp_path
        self.socket = tmp_path / "bd.sock"
        self.pty = tmp_path / "bd.pty"
        self.state = tmp_path / "state"
        self.log = (tmp_path / "agent.log").open("wb")
        self.chardev = Chardev(self.socket, self.pty)
        busybox = _tool("busybox", "busybox-static")
        argv = [busybox, "sh", str(AGENT), "backdoor", "--state", str(self.state), str(self.pty)]
        if state_tmpfs is not None:
            # The state directory on a tmpfs of that size, in a mount namespace of the
            # agent's own (as /run on a node): gone with the agent.
            self.state.mkdir()
            mount = f"mount -t tmpfs -o size={state_tmpfs} nxc-test {shlex.quote(str(self.state))}"
            argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                    f'{mount} && exec "$@"', "sh", *argv]  # fmt: skip
        self.agent = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
            env={**ENV, "NXC_AGENT_SHELL": f"{busybox} sh", "HOME": str(tmp_path)},
        )
        log = tmp_path / "agent.log"
        # (a state tmpfs is only visible in the agent's mount namespace: its log says it)
        wait_for(
            lambda: (self.state / "backdoor.open").exists() or b"serving on" in log.read_bytes(),
            "the agent to open the pty",
        )
        self.transport = BackdoorTransport(self.socket, "pty-node", connect_timeout=5)
        self.pids: list[int] = []  # processes the commands started, killed at the end

    def pid(self, name: str, timeout: float = 30.0) -> int:
        path = self.dir / name
        # (generous: under a loaded machine a shell or a command may take a while to start)
        wait_for(lambda: path.exists() and path.read_text().strip(), f"{path}", timeout)
        pid = int(path.read_text())
        self.pids.append(pid)
        return pid

    def close(self) -> None:
        self.transport.close()
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.agent.pid, signal.SIGKILL)
        self.agent.wait(timeout=10)
        # Commands run in sessions of their own: one the agent left (its EXIT trap then
        # waits for a FIFO reader that is gone) is found by its script's path.
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ProcessLookupError):
                    if str(self.state).encode() in (entry / "cmdline").read_bytes():
                        os.kill(int(entry.name), signal.SIGKILL)
        self.chardev.stop()
        self.log.close()


@pytest.fixture
def backdoor(tmp_path: Path) -> Iterator[Backdoor]:
    opened = Backdoor(tmp_path)
    try:
        yield opened
    finally:
        opened.close()


def in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run ``fn`` in a thread; the list gets its result or the exception it raised."""
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(fn())
        except BaseException as exc:  # the test looks at it
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


# --- one command --------------------------------------------------------------------------


def test_status_and_streams(backdoor: Backdoor) -> None:
    run = backdoor.transport.run
    assert run("echo out; echo err >&2; exit 3", timeout=10) == CommandResult(3, b"out\n", b"err\n")
    assert run("true") == CommandResult(0, b"", b"")
    assert run("printf 'a\\000b\\377\\n'", timeout=10).stdout == b"a\x00b\xff\n"
    assert run("cat", timeout=10).stdout == b""  # stdin is /dev/null
    assert run("pwd").stdout == b"/\n"
    assert run("exit 255").status == 255
    assert run("kill -9 $$").status == 137


@pytest.mark.parametrize(
    "command",
    [
        "printf '%s|' a 'b c' \"$HOME\" x\\\\y; echo",
        "echo 'semi;colon' && echo \"dq $((1 + 2))\" `echo bt`",
        "set -eu; command set -o pipefail 2>/dev/null || :; echo strict",
        "echo 'two  spaces'",  # not raw-sendable: goes as a payload
        "echo tab\there",  # not raw-sendable either
        "printf '%s\\n' 'é ü ∑'; echo \"line\ntwo\"",  # multi-byte, multi-line payload
        "x='" + "é" * 1500 + "'; echo ${#x}; printf '%s' \"$x\" | wc -c",  # > 2048 bytes
    ],
)
def test_raw_and_payload_forms_run_the_same_text(backdoor: Backdoor, command: str) -> None:
    expected = subprocess.run(
        [_tool("busybox", "busybox-static"), "sh", "-c", command],
        capture_output=True,
        env={"HOME": "/", "LC_ALL": "C"},
    )
    assert sendable_raw(command) == all(c not in command for c in ("  ", "\t", "\n", "é"))
    result = backdoor.transport.run(f"HOME=/; {command}" if "$HOME" in command else command, 10)
    assert result.status == 0, result
    assert result.stdout == expected.stdout


def test_output_bigger_than_the_state_tmpfs_is_reported_not_cut_silently(
    tmp_path: Path,
) -> None:
    opened = Backdoor(tmp_path, state_tmpfs="256k")
    try:
        with pytest.raises(
            OutputTruncated,
            match=r"pty-node: .* was full when `head -c 1000000 /dev/zero` ended: .*cut short",
        ):
            opened.transport.run("head -c 1000000 /dev/zero", timeout=30)
        # the channel is fine, and so is a command whose output fits
        assert opened.transport.run("echo fits", timeout=10) == CommandResult(0, b"fits\n", b"")
    finally:
        opened.close()


def test_large_output_and_command(backdoor: Backdoor) -> None:
    run = backdoor.transport.run
    assert run("head -c 3000000 /dev/zero", timeout=30).stdout == bytes(3000000)
    payload = "x" * 300000
    result = run(f"echo {payload} | wc -c; echo done", timeout=30)
    assert result.stdout.split() == [b"300001", b"done"]


def test_long_commands_cost_linear_time(backdoor: Backdoor) -> None:
    """The guest decoded long commands in quadratic time (1 MB took minutes under TCG)."""
    run = backdoor.transport.run

    def took(size: int) -> float:
        started = time.monotonic()
        result = run(f": {'y' * size}; echo ok", timeout=120)
        assert result == CommandResult(0, b"ok\n", b""), result
        return time.monotonic() - started

    took(1000)  # warm up
    small = min(took(256 * 1024) for _ in range(2))
    large = took(1024 * 1024)
    print(f"256 KB: {small:.3f}s, 1 MB: {large:.3f}s")
    # linear: about 4x (+ a fixed cost); quadratic: 16x
    assert large < 8 * small + 0.5, (small, large)


def test_timeout_kills_the_command(backdoor: Backdoor) -> None:
    run = backdoor.transport.run
    started = time.monotonic()
    result = run(f"echo $$ > {backdoor.dir}/pid; exec sleep 30", timeout=1)
    assert result.status == 124
    assert time.monotonic() - started < 5
    pid = backdoor.pid("pid")
    wait_for(lambda: not alive(pid), "the timed-out command to be gone")
    # a command that ignores SIGTERM is killed 2 s later
    started = time.monotonic()
    assert run("trap '' TERM; sleep 30; echo survived", timeout=1).status == 124
    assert time.monotonic() - started < 6
    assert run("echo still here", timeout=5).stdout == b"still here\n"


def test_daemons_do_not_block_it(backdoor: Backdoor) -> None:
    run = backdoor.transport.run
    started = time.monotonic()
    # stdout inherited by the daemon (a pipe would block the loop until it exits)
    backdoor.pids.append(int(run("sleep 120 & echo $!", timeout=10).stdout))
    backdoor.pids.append(int(run("setsid sleep 120 >/dev/null 2>&1 & echo $!", timeout=10).stdout))
    assert time.monotonic() - started < 5
    for pid in backdoor.pids:
        assert alive(pid), "the daemon was killed with its command"
    assert run("echo next", timeout=5).stdout == b"next\n"


# --- several commands at once -------------------------------------------------------------


def test_commands_run_concurrently(backdoor: Backdoor) -> None:
    """One long command no longer blocks the node: requests are in flight together."""
    run = backdoor.transport.run
    slow, outcome = in_thread(lambda: run(f"echo $$ > {backdoor.dir}/slow; sleep 3; echo slow"))
    backdoor.pid("slow")
    for i in range(5):
        started = time.monotonic()
        assert run(f"echo {i}", timeout=10).stdout == f"{i}\n".encode()
        assert time.monotonic() - started < 1, "a command waited for the long one"
    slow.join(20)
    assert outcome == [CommandResult(0, b"slow\n", b"")]


def test_many_threads_many_commands(backdoor: Backdoor) -> None:
    errors: list[str] = []

    def worker(n: int) -> None:
        for i in range(40):
            command = f"echo {n}-{i}" if i % 3 else f"printf '%s\\n' '{n}-{i}'\t"
            out = backdoor.transport.run(command, timeout=20).stdout
            if out != f"{n}-{i}\n".encode():
                errors.append(f"{n}-{i}: {out!r}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []


def test_exit_statuses_of_many_commands_ending_together(backdoor: Backdoor) -> None:
    """Every way a command can end, many at once: each answer has its own status (a
    shell's `wait` interrupted by another child's end once gave 145 = 128 + SIGCHLD)."""
    endings = {
        "exit {n}": lambda n: n,  # the EXIT trap tells the runner
        "exec sh -c 'exit {n}'": lambda n: n,  # no trap left: found on a tick
        "trap 'echo mine' EXIT; exit {n}": lambda n: n,  # the command's own trap
        "kill -9 $$": lambda n: 137,  # dies of a signal
    }
    cases = [
        (f"sleep 0.{i % 5}; " + form.format(n=i % 120), status(i % 120))
        for i in range(160)
        for form, status in [list(endings.items())[i % len(endings)]]
    ]
    results: dict[int, CommandResult] = {}

    def run(i: int) -> None:
        results[i] = backdoor.transport.run(cases[i][0], timeout=30)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    wrong = {
        cases[i][0]: (results[i].status, cases[i][1])
        for i in range(len(cases))
        if i not in results or results[i].status != cases[i][1]
    }
    assert wrong == {}
    assert results[2].stdout == b"mine\n"


def _children(pid: int, zombies: bool = False) -> set[int]:
    """The children of ``pid`` that run (or, with ``zombies``, those that are zombies)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and (fields[0] == "Z") == zombies:
            found.add(int(stat.parent.name))
    return found


def test_finished_commands_leave_no_zombies(backdoor: Backdoor) -> None:
    run = backdoor.transport.run
    loop_pid = backdoor.agent.pid
    runner = min(_children(loop_pid))  # started before the ticker
    threads = [threading.Thread(target=run, args=("sleep 0.3",)) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    wait_for(
        lambda: not _children(runner, zombies=True) and not _children(loop_pid, zombies=True),
        "the commands of the burst to be reaped",
    )


def test_keeps_working_after_thousands_of_commands(backdoor: Backdoor) -> None:
    run = backdoor.transport.run
    loop_pid = backdoor.agent.pid
    run("true", timeout=5)
    fds_before = len(os.listdir(f"/proc/{loop_pid}/fd"))
    # the answer writer and the ticker (once the job of `true` has exited)
    wait_for(lambda: len(_children(loop_pid)) == 2, "the loop to have its two helpers only")
    helpers = _children(loop_pid)
    started = time.monotonic()
    count = 2000
    for i in range(count):
        result = run(f"echo {i}", timeout=30 if i % 2 else None)
        assert result.stdout == f"{i}\n".encode(), (i, result)
    elapsed = time.monotonic() - started
    assert len(os.listdir(f"/proc/{loop_pid}/fd")) <= fds_before
    wait_for(lambda: _children(loop_pid) == helpers, "the loop to have no other children")
    wait_for(
        lambda: [p.name for p in (backdoor.state / "backdoor").iterdir()] == ["runner"],
        "the files of answered requests to be removed (the runner's FIFO stays)",
    )
    print(f"{count} commands in {elapsed:.1f}s ({elapsed / count * 1000:.1f} ms each)")


# --- interrupting, cancelling, closing ----------------------------------------------------

MACHINE_SCRIPT = """
import sys, time
from pathlib import Path
from nxc.driver.machine import Machine
from nxc.flavours.vm_ramdisk.backdoor import BackdoorTransport
from nxc.log import Logger

class PtyNode:
    name = "node1"
    def __init__(self, path):
        self._transport = BackdoorTransport(Path(path), "node1", connect_timeout=5)
    def transport(self):
        return self._transport
    def is_running(self):
        return True
    def console_tail(self, lines=20):
        return ""

node1 = Machine("node1", "node", 1, PtyNode(sys.argv[1]), Logger(stream=sys.stderr))
"""


def test_ctrl_c_kills_the_command_on_the_node_and_the_channel_stays_usable(
    backdoor: Backdoor,
) -> None:
    """SIGINT to a process running a command through a Machine (as Ctrl-C in a terminal)."""
    backdoor.transport.close()  # QEMU serves one client at a time
    script = MACHINE_SCRIPT + textwrap.dedent(
        f"""
        node1.succeed("true")
        print("ready", flush=True)
        try:
            node1.succeed("echo $$ > {backdoor.dir}/long; exec sleep 100000")
        except KeyboardInterrupt as exc:
            print("interrupted:", exc, flush=True)
        print("next:", node1.succeed("echo next").strip(), flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(backdoor.socket)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        pid = backdoor.pid("long")
        assert alive(pid)
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        lines = out.splitlines()
        assert lines[0] == "interrupted: node1: interrupted; the command was killed on node1", (
            out,
            err,
        )
        assert lines[1] == "next: next", (out, err)
        assert time.monotonic() - interrupted < 2, "the next command came too late"
        assert not alive(pid), "the interrupted command still runs on the node"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


SHELL_SCRIPT = MACHINE_SCRIPT + textwrap.dedent(
    """
    from nxc.driver.driver import Driver
    from nxc.driver.shell import interactive_shell
    interactive_shell(Driver([node1], Logger(stream=sys.stderr)))
    """
)


def test_ctrl_c_in_the_interactive_shell(backdoor: Backdoor) -> None:
    """The real ptpython shell on a terminal: ^C kills the node's command, the next works."""
    backdoor.transport.close()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the shell, with the pty as its controlling terminal
        os.chdir(REPO)
        env = {**os.environ, "TERM": "dumb", "PROMPT_TOOLKIT_NO_CPR": "1"}
        os.execve(sys.executable, [sys.executable, "-c", SHELL_SCRIPT, str(backdoor.socket)], env)
    seen = bytearray()

    def expect(text: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {text!r} on the terminal; it shows:\n{seen[-3000:]!r}"
            if select.select([fd], [], [], remaining)[0]:
                with contextlib.suppress(OSError):
                    seen.extend(os.read(fd, 65536))

    try:
        expect(b"nxc driver shell", 60)
        time.sleep(0.5)  # let the prompt come up
        os.write(
            fd, f'node1.succeed("echo $$ > {backdoor.dir}/long; exec sleep 100000")\r'.encode()
        )
        long_pid = backdoor.pid("long")
        del seen[:]
        interrupted = time.monotonic()
        os.write(fd, b"\x03")
        expect(b"\rKeyboardInterrupt: node1: interrupted; the command was killed on node1", 10)
        os.write(fd, b'node1.succeed("echo next-$((6 * 7))")\r')
        expect(b"next-42", 10)
        assert time.monotonic() - interrupted < 3
        assert not alive(long_pid), "the interrupted command still runs on the node"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)


def test_host_side_timeout_kills_the_command(backdoor: Backdoor) -> None:
    """The guest's watchdog should have answered: the host gives up and cancels."""
    transport = BackdoorTransport(backdoor.socket, "pty-node", margin=0.2)
    backdoor.transport.close()
    try:
        started = time.monotonic()
        # TERM is ignored (by sleep too), so the guest's watchdog answers only after
        # its KILL, 2 s later: the host's deadline (1.2 s) comes first
        with pytest.raises(TimeoutError) as caught:
            transport.run(f"trap '' TERM; echo $$ > {backdoor.dir}/pid; sleep 30", timeout=1)
        assert "pty-node: no answer to `trap '' TERM;" in str(caught.value)
        assert str(caught.value).endswith("was killed on pty-node")
        assert time.monotonic() - started < 5
        assert not alive(backdoor.pid("pid"))
        assert transport.run("echo fresh", timeout=10).stdout == b"fresh\n"
    finally:
        transport.close()


def test_no_confirmation_then_late_answer_is_dropped(backdoor: Backdoor) -> None:
    transport = BackdoorTransport(backdoor.socket, "pty-node", margin=0.5, cancel_grace=0.5)
    backdoor.transport.close()
    try:
        transport.run("true", timeout=5)
        os.killpg(backdoor.agent.pid, signal.SIGSTOP)  # the guest stops answering
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"pty-node: no answer to `echo late`.*no confirm"):
            transport.run("echo late", timeout=1)
        assert 1.9 < time.monotonic() - started < 5
        os.killpg(backdoor.agent.pid, signal.SIGCONT)
        # the answer to "echo late" may arrive: nobody awaits it any more
        assert transport.run("echo fresh", timeout=10).stdout == b"fresh\n"
    finally:
        os.killpg(backdoor.agent.pid, signal.SIGCONT)
        transport.close()


def test_close_does_not_wait_for_commands_in_flight(backdoor: Backdoor) -> None:
    transport = backdoor.transport
    thread, outcome = in_thread(
        lambda: transport.run(f"echo $$ > {backdoor.dir}/pid; exec sleep 30")
    )
    pid = backdoor.pid("pid")
    started = time.monotonic()
    transport.close()
    thread.join(5)
    assert time.monotonic() - started < 1
    assert len(outcome) == 1 and isinstance(outcome[0], TransportError), outcome
    assert re.fullmatch(
        r"pty-node: the connection was closed while `echo \$\$ > .*` ran "
        r"\(the node was crashed, stopped or released\)",
        str(outcome[0]),
    ), outcome[0]
    with pytest.raises(TransportError, match="pty-node: backdoor transport is closed"):
        transport.run("true")
    # the node was asked to kill what nobody awaits any more
    wait_for(lambda: not alive(pid), "the command of the closed connection to be killed", 5)
    fresh = BackdoorTransport(backdoor.socket, "pty-node", connect_timeout=5)
    try:
        assert fresh.run("echo again", timeout=5).stdout == b"again\n"
    finally:
        fresh.close()


def test_qemu_gone_fails_commands_in_flight(backdoor: Backdoor) -> None:
    transport = backdoor.transport
    assert transport.run("true", timeout=5).status == 0
    thread, outcome = in_thread(lambda: transport.run("sleep 30"))
    time.sleep(0.3)
    backdoor.chardev.stop()  # "QEMU exited"
    thread.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], TransportError), outcome
    assert "pty-node: backdoor connection closed while running `sleep 30`" in str(outcome[0])
    with pytest.raises(TransportError, match=r"pty-node: backdoor socket .* not connectable"):
        transport.run("true")


def test_transport_errors_name_the_node(tmp_path: Path) -> None:
    started = time.monotonic()
    transport = BackdoorTransport(tmp_path / "missing.sock", "ghost", connect_timeout=0.3)
    with pytest.raises(
        TransportError, match=r"ghost: backdoor socket .* not connectable within 0\.3s"
    ):
        transport.run("true")
    assert time.monotonic() - started < 3


def test_malformed_requests(backdoor: Backdoor) -> None:
    backdoor.transport.close()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(backdoor.socket))
        sock.settimeout(10)
        sock.sendall(
            b"garbage line\n7 x =echo\n8 0 ZWNobw==\n9 0 :abc\n"
            b"10 0 :10:6\ncat; echo\nINPUT!11 0 =echo ok\n"
        )
        data = b""
        while data.count(b"\n") < 5:
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
    answers = {a[0]: a[1:] for a in (line.split(b" ") for line in data.splitlines())}
    assert {k: v[0] for k, v in answers.items()} == {
        b"7": b"125",
        b"8": b"125",
        b"9": b"125",
        b"10": b"0",
        b"11": b"0",
    }
    assert b"malformed timeout" in base64.b64decode(answers[b"7"][2])
    assert b"protocol 2" in base64.b64decode(answers[b"8"][2])
    assert b"malformed payload length" in base64.b64decode(answers[b"9"][2])
    assert base64.b64decode(answers[b"10"][1]) == b"INPUT!\n"
    assert base64.b64decode(answers[b"11"][1]) == b"ok\n"


# --- files --------------------------------------------------------------------------------


def test_put_and_get_keep_bytes_and_modes(backdoor: Backdoor, tmp_path: Path) -> None:
    transport = backdoor.transport
    source = tmp_path / "blob"
    payload = os.urandom(3 * 1024 * 1024 + 5) + bytes(range(256))
    source.write_bytes(payload)
    source.chmod(0o751)
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "blob").write_text("old")
    transport.put(source, str(remote / "blob"))
    assert (remote / "blob").read_bytes() == payload
    assert (remote / "blob").stat().st_mode & 0o7777 == 0o751
    assert sorted(p.name for p in remote.iterdir()) == ["blob"]  # no staging file left
    (remote / "blob").chmod(0o640)
    back = tmp_path / "back"
    transport.get(str(remote / "blob"), back)
    assert back.read_bytes() == payload
    assert back.stat().st_mode & 0o7777 == 0o640
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    transport.put(empty, str(remote / "empty"))
    transport.get(str(remote / "empty"), tmp_path / "empty-back")
    assert (tmp_path / "empty-back").read_bytes() == b""
    # the channel is still in step: commands and copies interleave
    assert transport.run("echo after", timeout=5).stdout == b"after\n"


def test_put_and_get_errors_name_node_and_path(backdoor: Backdoor, tmp_path: Path) -> None:
    transport = backdoor.transport
    source = tmp_path / "f"
    source.write_text("x")
    with pytest.raises(FileTransferError, match=r"pty-node: cannot write /nonexistent/dir/f: "):
        transport.put(source, "/nonexistent/dir/f")
    with pytest.raises(FileTransferError, match=r"pty-node: cannot read /nonexistent: no such"):
        transport.get("/nonexistent", tmp_path / "x")
    with pytest.raises(FileTransferError, match=r"pty-node: cannot read /: not a regular file"):
        transport.get("/", tmp_path / "x")
    with pytest.raises(FileTransferError, match="is not a regular file"):
        transport.put(tmp_path, "/tmp/x")
    assert not (tmp_path / "x").exists()
    assert transport.run("echo fine", timeout=5).stdout == b"fine\n"


def test_an_agent_of_protocol_1_is_named(tmp_path: Path) -> None:
    """An image built by an older nxc rejects the handshake's payload form as bad base64
    (status 125): the host says to rebuild rather than failing later in odd ways."""
    path = tmp_path / "old.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)

    def old_agent() -> None:
        connection, _ = server.accept()
        with connection:
            data = b""
            while b"\n" not in data.lstrip(b"\n"):
                data += connection.recv(4096)
            request_id = data.split()[0]
            error = base64.b64encode(b"nxc-agent: the command is not valid base64\n")
            connection.sendall(request_id + b" 125 - " + error + b"\n")
            connection.recv(4096)

    thread = threading.Thread(target=old_agent, daemon=True)
    thread.start()
    transport = BackdoorTransport(path, "old-node", connect_timeout=5)
    try:
        with pytest.raises(NodeUnreachable, match="old-node: the node's agent does not speak"):
            transport.run("true")
    finally:
        transport.close()
        server.close()
