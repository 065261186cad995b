"""NixOS test-driver compatibility, on two real selftest VMs (one deployment for the module).

Each test exercises methods and globals of the NixOS test driver as its documentation and
sources describe them (signatures, defaults, return values, exceptions, wording) against
nodes booted by the real CLI: role ``server`` (server1) and role ``my_client``, whose
node is ``my-client1`` (a role name with ``_``; host names spell it ``-``). Both roles have
one node, so both are also reachable by their role names.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nxc.driver.driver import Driver, GlobalTimeout
from nxc.driver.machine import CommandFailed, ConnectionLost, Machine, WaitExpired
from nxc.driver.polling import RetryTime
from nxc.errors import MachineError, WaitTimeout
from nxc.log import Logger
from nxc.project import Project
from tests.conftest import run_nxc
from tests.e2e.conftest import require_host_tools

pytestmark = pytest.mark.vm

COMPOSITION = """\
# Two roles with one node each; `my_client` checks role names with '_'.
{ ... }:
{
  roles.server = {
    quantity = 1;
    resources.memory_mb = 256;
    packages = [ "/usr/bin/socat" ];
    startup = ''
      mkdir -p /srv/www
      echo "page of server" > /srv/www/index.html
      busybox httpd -p 8000 -h /srv/www
    '';
  };
  roles.my_client = { quantity = 1; resources.memory_mb = 256; };
}
"""


@dataclass
class Parity:
    project_dir: Path
    driver: Driver
    logger: Logger

    @property
    def server(self) -> Machine:
        return self.driver.machine("server1")

    @property
    def client(self) -> Machine:
        return self.driver.machine("my-client1")

    def attach(self) -> None:
        from nxc.driver.session import machines_of
        from nxc.session import running

        machines = machines_of(running(Project(self.project_dir)))
        for machine in machines:
            machine.logger = self.logger
        out = self.project_dir / "out"
        self.driver = Driver(machines, self.logger, out)

    def detach(self) -> None:
        self.driver.release()


@pytest.fixture(scope="module")
def parity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parity]:
    require_host_tools()
    directory = tmp_path_factory.mktemp("parity")
    result = run_nxc("init", "-t", "selftest", str(directory))
    assert result.returncode == 0, result.stderr
    (directory / "composition.nix").write_text(COMPOSITION)
    result = run_nxc("build", "--offline", cwd=directory)
    assert result.returncode == 0, result.stderr
    result = run_nxc("start", cwd=directory)
    state: Parity | None = None
    try:
        assert result.returncode == 0, result.stderr
        state = Parity(directory, None, Logger(keep=100_000))  # type: ignore[arg-type]
        state.attach()
        yield state
    finally:
        if state is not None and state.driver is not None:
            state.detach()
        run_nxc("stop", cwd=directory)


@pytest.fixture
def detached(parity: Parity) -> Iterator[Parity]:
    """The module's machines disconnected (QEMU serves one backdoor client per VM), so
    that a CLI process can drive the nodes; reattached afterwards."""
    parity.detach()
    try:
        yield parity
    finally:
        parity.attach()


# -- signatures --------------------------------------------------------------------

# NixOS's Machine methods: (parameter names after self, defaults that must agree).
NIXOS_SIGNATURES: dict[str, tuple[list[str], dict[str, object]]] = {
    "succeed": (["commands", "timeout"], {"timeout": None}),
    "fail": (["commands", "timeout"], {"timeout": None}),
    "execute": (
        ["command", "check_return", "check_output", "timeout"],
        {"check_return": True, "check_output": True, "timeout": 900},
    ),
    "wait_until_succeeds": (["command", "timeout"], {"timeout": 900}),
    "wait_until_fails": (["command", "timeout"], {"timeout": 900}),
    "wait_for_file": (["filename", "timeout"], {"timeout": 900}),
    "wait_for_open_port": (["port", "addr", "timeout"], {"addr": "localhost", "timeout": 900}),
    "wait_for_closed_port": (["port", "addr", "timeout"], {"addr": "localhost", "timeout": 900}),
    "wait_for_open_unix_socket": (
        ["addr", "is_datagram", "timeout"],
        {"is_datagram": False, "timeout": 900},
    ),
    "wait_for_unit": (["unit", "user", "timeout"], {"user": None, "timeout": 900}),
    "wait_for_console_text": (["regex", "timeout"], {"timeout": None}),
    "get_unit_info": (["unit", "user"], {"user": None}),
    "get_unit_property": (["unit", "property", "user"], {"user": None}),
    "require_unit_state": (["unit", "require_state"], {"require_state": "active"}),
    "systemctl": (["q", "user"], {"user": None}),
    "start_job": (["jobname", "user"], {"user": None}),
    "stop_job": (["jobname", "user"], {"user": None}),
    "copy_from_host": (["source", "target"], {}),
    "copy_from_host_via_shell": (["source", "target"], {}),
    "copy_from_machine": (["source", "target_dir"], {"target_dir": ""}),
    "copy_from_vm": (["source", "target_dir"], {"target_dir": ""}),
    "forward_port": (["host_port", "guest_port"], {"host_port": 8080, "guest_port": 80}),
    "nested": (["message", "attrs"], {}),
    "start": (["allow_reboot"], {"allow_reboot": False}),
    "sleep": (["secs"], {}),
    "get_console_log": ([], {}),
    "wait_for_shutdown": ([], {}),
    "shutdown": ([], {}),
    "crash": ([], {}),
    "block": ([], {}),
    "unblock": ([], {}),
    "is_up": ([], {}),
    "log": (["message"], {}),
    "release": ([], {}),
}


@pytest.mark.parametrize("method", sorted(NIXOS_SIGNATURES))
def test_machine_methods_have_the_nixos_signature(method: str) -> None:
    names, defaults = NIXOS_SIGNATURES[method]
    parameters = list(inspect.signature(getattr(Machine, method)).parameters.values())[1:]
    ours = [p.name for p in parameters]
    # NixOS's parameters come first, in order (nxc may add keyword ones after them)
    assert ours[: len(names)] == names, f"{method}{inspect.signature(getattr(Machine, method))}"
    for name, value in defaults.items():
        assert parameters[ours.index(name)].default == value, (method, name)


# -- commands ----------------------------------------------------------------------


def test_durations_are_timedeltas_or_numbers(parity: Parity) -> None:
    server = parity.server
    second = dt.timedelta(seconds=1)
    assert server.succeed("echo ok", timeout=dt.timedelta(seconds=30)) == "ok\n"
    assert server.fail("false", timeout=dt.timedelta(seconds=30)) == ""
    assert server.execute("sleep 5", timeout=second)[0] == 124
    assert server.execute("sleep 5", timeout=1)[0] == 124
    with pytest.raises(WaitExpired, match=r"action timed out after [\d.]+ seconds \(timeout=1\)"):
        server.wait_until_succeeds("false", timeout=second)
    server.wait_until_fails("false", timeout=dt.timedelta(seconds=30))
    started = time.monotonic()
    server.sleep(secs=0.5)
    server.sleep(duration=dt.timedelta(milliseconds=500))
    server.sleep(0.2)
    assert time.monotonic() - started >= 1.2
    with pytest.raises(TypeError, match="timedelta or a number of seconds"):
        server.succeed("true", timeout="10")  # type: ignore[arg-type]


def test_retry_passes_the_remaining_time_and_last_try(parity: Parity) -> None:
    seen: list[RetryTime] = []

    def not_yet(remaining: RetryTime) -> bool:
        seen.append(remaining)
        return False

    with pytest.raises(WaitTimeout, match=r"action timed out after [\d.]+ seconds \(timeout=0.5\)"):
        parity.driver.retry(not_yet, timeout=dt.timedelta(milliseconds=500))
    assert len(seen) >= 2
    assert all(isinstance(r, dt.timedelta) for r in seen)
    assert [bool(r) for r in seen] == [False] * (len(seen) - 1) + [True]  # NixOS's last_try
    assert seen[0] > seen[-2] and seen[-1] == dt.timedelta(0)
    calls = iter([False, False, True])
    parity.driver.retry(lambda: next(calls), timeout_seconds=30)  # no argument, older name
    marker = "/tmp/retry-marker"
    parity.server.execute(f"rm -f {marker}; (sleep 1; touch {marker}) >/dev/null 2>&1 &")
    parity.driver.retry(
        lambda _last: parity.server.execute(f"test -e {marker}")[0] == 0, timeout=30
    )


def test_nixos_error_wording(parity: Parity) -> None:
    server = parity.server
    with pytest.raises(CommandFailed, match=r"command `false` failed \(exit code 1\)") as failed:
        server.succeed("false")
    assert failed.value.status == 1
    with pytest.raises(CommandFailed, match=r"command `true` unexpectedly succeeded"):
        server.fail("true")
    with pytest.raises(MachineError, match="exit code 3"):
        server.succeed("exit 3")


def test_execute_statuses(parity: Parity) -> None:
    server = parity.server
    assert server.execute("echo out; exit 4") == (4, "out\n")
    assert server.execute("echo out; exit 4", check_return=False) == (-1, "out\n")
    assert server.execute("touch /tmp/bg-started", check_output=False) == (-2, "")
    server.wait_for_file("/tmp/bg-started", timeout=30)


def test_commands_run_in_tmp_with_bash(parity: Parity) -> None:
    server = parity.server
    assert server.succeed("pwd") == "/tmp\n"
    assert server.succeed('echo "${BASH_VERSION:+bash}"') == "bash\n"
    assert server.succeed("a=(x y z); [[ ${#a[@]} == 3 ]] && echo arrays") == "arrays\n"
    server.fail("false | true")  # pipefail
    server.fail("echo $undefined_variable")  # set -u
    server.fail("false; true")  # set -e
    assert server.succeed("echo relative > here.txt; cat /tmp/here.txt") == "relative\n"


def test_output_of_background_jobs_is_kept(parity: Parity) -> None:
    server = parity.server
    out = server.succeed("(sleep 1; echo late) & echo early")
    assert out.splitlines() == ["early", "late"]
    # a daemon left holding stdout costs at most the grace, and keeps running
    started = time.monotonic()
    pid = server.succeed("sleep 900 & echo $!").strip()
    took = time.monotonic() - started
    assert server.background_grace <= took < server.background_grace + 10
    assert server.succeed(f"kill {pid} && echo killed") == "killed\n"


def test_wait_for_file_keeps_globs_and_home(parity: Parity) -> None:
    server = parity.server
    server.succeed("rm -f /tmp/glob-*; touch /tmp/glob-42")
    server.wait_for_file("/tmp/glob-*", timeout=30)
    server.succeed('touch "$HOME/home-marker"')
    server.wait_for_file("$HOME/home-marker", timeout=30)
    with pytest.raises(WaitExpired, match="action timed out"):
        server.wait_for_file("/tmp/nothing-*", timeout=1)


def test_console_text_spans_lines_and_has_command_output(parity: Parity) -> None:
    client = parity.client
    token = f"marker-{time.monotonic_ns()}"
    client.succeed(f"echo {token}-one > /dev/console; echo {token}-two > /dev/console")
    assert client.wait_for_console_text(f"{token}-one\n{token}-two", timeout=30)
    assert f"{token}-one" in client.get_console_log()
    # consumed: the same text does not match twice, new text does
    with pytest.raises(WaitExpired):
        client.wait_for_console_text(f"{token}-one", timeout=1)
    client.succeed(f"echo {token}-one > /dev/console")
    client.wait_for_console_text(f"{token}-one", timeout=dt.timedelta(seconds=30))


def test_ports_and_unix_sockets(parity: Parity) -> None:
    server = parity.server
    server.wait_for_open_port(8000, timeout=dt.timedelta(seconds=60))
    parity.client.wait_for_open_port(8000, "server", timeout=60)  # the role alias
    server.wait_for_closed_port(8001, timeout=10)
    server.execute("socat UNIX-LISTEN:/tmp/stream.sock,fork EXEC:cat >/dev/null 2>&1 </dev/null &")
    server.wait_for_open_unix_socket("/tmp/stream.sock", timeout=30)
    server.execute("socat -u UNIX-RECV:/tmp/dgram.sock - >/dev/null 2>&1 </dev/null &")
    server.wait_for_open_unix_socket("/tmp/dgram.sock", is_datagram=True, timeout=30)
    with pytest.raises(WaitExpired, match=r"UNIX-domain stream socket /tmp/dgram\.sock"):
        server.wait_for_open_unix_socket("/tmp/dgram.sock", timeout=1)


def test_units_without_systemd(parity: Parity) -> None:
    server = parity.server
    for unit in ("multi-user.target", "network.target", "network-online.target"):
        server.wait_for_unit(unit, timeout=dt.timedelta(seconds=60))
    with pytest.raises(MachineError, match="needs systemd"):
        server.wait_for_unit("nginx.service", timeout=5)
    with pytest.raises(MachineError, match="needs systemd"):
        server.get_unit_property(unit="nginx.service", property="ActiveState")
    with pytest.raises(MachineError, match="needs systemd"):
        server.start_job(jobname="nginx.service")


def test_copies(parity: Parity, tmp_path: Path) -> None:
    server = parity.server
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(5000))
    source.chmod(0o640)
    server.copy_from_host(str(source), "/tmp/copies/a/payload.bin")
    assert server.succeed("stat -c %a /tmp/copies/a/payload.bin") == "640\n"
    server.copy_from_host_via_shell(str(source), "/tmp/copies/b/payload.bin")
    assert server.succeed("cmp /tmp/copies/a/payload.bin /tmp/copies/b/payload.bin && echo same")
    back = server.copy_from_vm("/tmp/copies/b/payload.bin", "back")
    assert back == parity.driver.out_dir / "back" / "payload.bin"
    assert back.read_bytes() == source.read_bytes()


def test_forward_port(parity: Parity) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    parity.server.forward_port(host_port=port, guest_port=8000)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=30) as reply:
        assert reply.read() == b"page of server\n"


def test_nested_and_log(parity: Parity) -> None:
    mark = parity.logger.mark()
    with parity.server.nested("a block", {"step": "one"}):
        parity.server.log("inside")
    scope = parity.driver.globals()
    scope["log"].log("plain line")
    scope["log"].log("with attributes", {"phase": "setup"})
    with scope["log"].nested("outer", {"phase": "run"}):
        scope["log"].info("in outer")
    records = parity.logger.records(mark)
    begin = next(r for r in records if r.message == "a block" and r.kind == "begin")
    assert begin.attrs == {"node": "server1", "step": "one"}
    assert any(r.message == "with attributes" and r.attrs == {"phase": "setup"} for r in records)
    assert any(r.message == "outer" and r.attrs.get("phase") == "run" for r in records)


# -- globals -----------------------------------------------------------------------


def test_globals(parity: Parity) -> None:
    scope = parity.driver.globals()
    for name in (
        "t",
        "os",
        "join_all",
        "polling_condition",
        "serial_stdout_on",
        "serial_stdout_off",
        "retry",
        "subtest",
        "start_all",
        "log",
        "driver",
    ):
        assert name in scope, name  # fmt: skip
    assert scope["os"] is os
    scope["t"].assertEqual(1, 1)
    with pytest.raises(AssertionError):
        scope["t"].assertIn("x", "abc")
    # nodes by name (hyphens bound with '_', as NixOS does) and by role (one node each)
    assert scope["server1"] is parity.server and scope["server"] is parity.server
    assert scope["my_client1"] is parity.client and scope["my_client"] is parity.client
    assert "machine" not in scope  # two nodes
    single = Driver([parity.server], parity.logger, parity.driver.out_dir)
    assert single.globals()["machine"] is parity.server
    assert parity.driver.machine("my-client") is parity.client


def test_role_names_reach_nodes_from_the_nodes_and_the_cli(parity: Parity) -> None:
    server = parity.server
    assert server.succeed("hostname") == "server1\n"
    assert parity.client.succeed("hostname") == "my-client1\n"
    hosts = server.succeed("cat /etc/hosts")
    assert any(line.split()[1:] == ["my-client1", "my-client"] for line in hosts.splitlines())
    server.succeed("ping -c 1 -W 5 my-client")
    status = run_nxc("status", cwd=parity.project_dir, env={"COLUMNS": "200"})
    assert status.returncode == 0, status.stderr
    assert "my-client1 (my-client)" in status.stdout and "server1 (server)" in status.stdout
    for alias in ("my_client", "my-client"):
        shell = subprocess_input(["connect", alias], parity.project_dir, "hostname\n")
        assert "my-client1" in shell, shell


def subprocess_input(args: list[str], cwd: Path, text: str) -> str:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "nxc.cli", *args],
        cwd=cwd,
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.stdout + done.stderr


def test_polling_condition(parity: Parity) -> None:
    parity.server.succeed("rm -f /tmp/stop-flag")
    script = """
@polling_condition(seconds_interval=0)
def no_stop_flag():
    "the stop flag is absent"
    server.succeed("test ! -e /tmp/stop-flag")

with no_stop_flag:
    server.succeed("true")
    server.succeed("touch /tmp/stop-flag")
    server.succeed("echo never reached")
"""
    assert not parity.driver.run_script(script, "polling.py")
    report = json.loads((parity.driver.out_dir / "report.json").read_text())
    assert "Polling condition failed: the stop flag is absent" in report["error"]["message"]
    waiting = """
flag_gone = polling_condition(
    lambda: server.execute("test ! -e /tmp/stop-flag")[0] == 0,
    description="flag removed", seconds_interval=0)
server.execute("(sleep 1; rm -f /tmp/stop-flag) >/dev/null 2>&1 &")
flag_gone.wait(timeout=30)
with flag_gone:
    server.succeed("true")
"""
    assert parity.driver.run_script(waiting, "wait.py")


def test_serial_stdout_on_logs_console_lines(parity: Parity) -> None:
    mark = parity.logger.mark()
    parity.driver.serial_stdout_on()
    try:
        parity.client.succeed("echo serial-line-xyz > /dev/console")

        def logged() -> bool:
            return any(
                r.message.strip() == "serial-line-xyz" and r.attrs.get("stream") == "serial"
                for r in parity.logger.records(mark)
            )

        parity.driver.retry(lambda: logged(), timeout=30)
    finally:
        parity.driver.serial_stdout_off()
    serial = [
        r.attrs["node"]
        for r in parity.logger.records(mark)
        if r.message.strip() == "serial-line-xyz" and r.attrs.get("stream") == "serial"
    ]
    assert serial == ["my-client1"]


def test_global_timeout(parity: Parity) -> None:
    started = time.monotonic()
    ok = parity.driver.run_script(
        "try:\n    server.succeed('sleep 60')\nexcept Exception:\n    pass\n"
        "server.succeed('echo after')\n",
        "slow.py",
        global_timeout=dt.timedelta(seconds=2),
    )
    assert not ok
    assert time.monotonic() - started < 30
    report = json.loads((parity.driver.out_dir / "report.json").read_text())
    assert report["error"]["type"] == GlobalTimeout.__name__
    assert "ran past 2s" in report["error"]["message"]
    parity.detach()  # the timeout released the machines: fresh ones for the next tests
    parity.attach()
    assert parity.server.succeed("echo usable") == "usable\n"


def test_global_timeout_from_the_cli(detached: Parity, tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text("server.succeed('sleep 120')\n")
    started = time.monotonic()
    result = run_nxc(
        "driver", str(script), "--global-timeout", "3", "--no-monitor", cwd=detached.project_dir
    )
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 60
    assert "global timeout: the scenario ran past 3s" in result.stderr


# -- lifecycle ---------------------------------------------------------------------


def test_wait_for_shutdown_then_start(parity: Parity) -> None:
    client = parity.client
    assert client.execute("poweroff", check_return=False)[0] == -1
    client.wait_for_shutdown(timeout=dt.timedelta(seconds=120))
    assert not client.is_up()
    client.start(allow_reboot=False)
    assert client.succeed("echo back") == "back\n"
    parity.driver.run_script("my_client.crash()\njoin_all(timeout=60)\n", "join.py")
    assert not client.is_up()
    client.start()
    client.wait_for_unit("multi-user.target")


def test_crash_fails_the_command_in_flight_at_once(parity: Parity) -> None:
    client = parity.client
    errors: list[BaseException] = []

    def long_command() -> None:
        try:
            client.succeed("touch /tmp/long-started; sleep 60")
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=long_command)
    worker.start()
    client.wait_for_file("/tmp/long-started", timeout=60)
    started = time.monotonic()
    client.crash()
    worker.join(30)
    assert time.monotonic() - started < 15
    assert len(errors) == 1 and isinstance(errors[0], ConnectionLost), errors
    assert "the node was crashed while" in str(errors[0])
    client.start()
    assert client.succeed("echo back") == "back\n"


def test_ctrl_c_in_the_shell_kills_the_command_and_keeps_the_channel(detached: Parity) -> None:
    pexpect = pytest.importorskip("pexpect")
    import sys

    shell = pexpect.spawn(
        sys.executable,
        ["-m", "nxc.cli", "driver", "--no-monitor"],
        cwd=str(detached.project_dir),
        env={**os.environ, "TERM": "xterm", "NO_COLOR": "1"},
        dimensions=(40, 200),
        encoding="utf-8",
        timeout=120,
    )
    try:
        shell.expect("nxc driver shell")
        shell.expect(">>>")
        shell.sendline('server.succeed("touch /tmp/ctrl-c-started; sleep 600")')
        time.sleep(5)  # the command is running on the node
        started = time.monotonic()
        shell.sendintr()
        shell.expect(r"KeyboardInterrupt: server1: interrupted; the command was killed")
        assert time.monotonic() - started < 30
        shell.sendline('print("answer:", server.succeed("echo still-usable").strip())')
        shell.expect("answer: still-usable", timeout=60)
        shell.sendline('print("running:", server.succeed("ps | grep -c \'[s]leep 600\' || true"))')
        shell.expect(r"running: 0", timeout=60)
        shell.sendline("exit()")
        shell.expect(pexpect.EOF, timeout=60)
    finally:
        shell.close(force=True)
