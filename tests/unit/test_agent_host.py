"""The node agent on the host, without a VM: its input sources, `up --root`, and the
backdoor loop driven by the real BackdoorTransport through a pty (socat plays QEMU's
chardev socket). Real VMs: tests/e2e/test_selftest_image.py.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxc.flavours.vm_ramdisk.backdoor import BackdoorTransport
from nxc.runtime.transport import CommandResult, TransportError

AGENT = Path(__file__).resolve().parents[2] / "nxc" / "agent" / "nxc-agent"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (apt-get install {package})")
    return path


def busybox() -> str:
    return _tool("busybox", "busybox-static")


SHELLS = {"busybox-ash": ["busybox", "sh"], "dash": ["dash"]}


def agent(*args: str, shell: str = "busybox-ash") -> subprocess.CompletedProcess[str]:
    argv = [_tool(SHELLS[shell][0], "busybox-static"), *SHELLS[shell][1:], str(AGENT), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=60, check=False)


def wait_for(predicate, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


# --- command line and sources -------------------------------------------------------------


def test_help_documents_the_inputs() -> None:
    result = agent("--help")
    assert result.returncode == 0
    for word in (
        "--node",
        "--deployment",
        "--hostkey",
        "--backdoor",
        "--mgmt",
        "b64:",
        "gz64:",
        "fwcfg:",
    ):
        assert word in result.stdout


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_sources(tmp_path: Path, shell: str) -> None:
    payload = "line one\nline two with ünïcode\n"
    b64 = base64.b64encode(payload.encode()).decode()
    gz64 = base64.b64encode(gzip.compress(payload.encode())).decode()
    (tmp_path / "f").write_text(payload)
    assert agent("fetch", f"b64:{b64}", shell=shell).stdout == payload
    assert agent("fetch", f"gz64:{gz64}", shell=shell).stdout == payload
    assert agent("fetch", f"file:{tmp_path / 'f'}", shell=shell).stdout == payload


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("b64:!!notbase64", "invalid base64"),
        (f"gz64:{base64.b64encode(b'not gzip').decode()}", "not gzip"),
        ("file:/nonexistent/x", "cannot read"),
        ("fwcfg:opt/nxc/nothing", "fw_cfg"),
        ("ftp:x", "unknown source kind"),
    ],
)
def test_bad_sources_say_why(source: str, message: str) -> None:
    result = agent("fetch", source)
    assert result.returncode != 0
    assert message in result.stderr


# --- up --root ------------------------------------------------------------------------------


def _keypair(path: Path) -> str:
    subprocess.run(
        [
            _tool("ssh-keygen", "openssh-client"),
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            path.name,
            "-f",
            str(path),
        ],
        check=True,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


@pytest.fixture
def deployment(tmp_path: Path) -> dict[str, object]:
    user = _keypair(tmp_path / "user")
    host1 = _keypair(tmp_path / "host1")
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKey" + "x" * 30

    def node(name: str, role: str, index: int, ordinal: int) -> dict[str, object]:
        return {
            "name": name,
            "role": role,
            "index": index,
            "ipv4": f"198.18.0.{ordinal}",
            "ipv6": f"fd00:6e78:63::{ordinal}",
            "mac": f"52:54:00:00:00:{ordinal:02x}",
        }

    return {
        "nxc_deployment": 1,
        "id": "dep-unit-1",
        "composition": "unit",
        "flavour": "vm-ramdisk",
        "network": {
            "ipv4_prefix": "198.18.0.0/16",
            "ipv6_prefix": "fd00:6e78:63::/64",
            "interface": "exp0",
        },
        "ssh": {"authorized_keys": [user, other]},
        "roles": {"server": 1, "client": 2},
        "nodes": [
            {**node("server1", "server", 1, 1), "host_key": host1},
            node("client1", "client", 1, 2),
            node("client2", "client", 2, 3),
        ],
    }


def _gz64(text: str) -> str:
    return "gz64:" + base64.b64encode(gzip.compress(text.encode())).decode()


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_up_from_gz64_and_b64_sources(
    tmp_path: Path, deployment: dict[str, object], shell: str
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    text = json.dumps(deployment, indent=2)
    hostkey = "b64:" + base64.b64encode((tmp_path / "host1").read_bytes()).decode()
    result = agent(
        *("--root", str(root), "--cmdline", "-", "--node", "server1"),
        *("--deployment", _gz64(text), "--hostkey", hostkey),
        shell=shell,
    )
    assert result.returncode == 0, result.stderr
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert result.stdout == f"nxc-ready node=server1 role=server index=1 boot_id={boot_id}\n"
    etc = root / "etc"
    assert (etc / "hostname").read_text() == "server1\n"
    hosts = (etc / "hosts").read_text().splitlines()
    for node in deployment["nodes"]:  # type: ignore[attr-defined]
        assert f"{node['ipv4']} {node['name']}" in hosts
        assert f"{node['ipv6']} {node['name']}" in hosts
    nxc = etc / "nxc"
    assert {p.name: p.read_text() for p in nxc.iterdir() if p.name != "deployment.json"} == {
        "node": "server1\n",
        "role": "server\n",
        "index": "1\n",
        "replicas": "1\n",
        "interface": "exp0\n",
        "env": "NXC_NODE='server1'\nNXC_ROLE='server'\nNXC_INDEX='1'\nNXC_REPLICAS='1'\n"
        "NXC_DEPLOYMENT_ID='dep-unit-1'\n",
    }
    assert json.loads((nxc / "deployment.json").read_text()) == deployment
    keys = (root / "root" / ".ssh" / "authorized_keys").read_text()
    for key in deployment["ssh"]["authorized_keys"]:  # type: ignore[index]
        assert key + "\n" in keys
    private = etc / "ssh" / "ssh_host_ed25519_key"
    assert private.read_bytes() == (tmp_path / "host1").read_bytes()
    assert private.stat().st_mode & 0o077 == 0
    assert (etc / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()[:2] == (
        tmp_path / "host1.pub"
    ).read_text().split()[:2]


def test_arguments_override_the_kernel_command_line(
    tmp_path: Path, deployment: dict[str, object]
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "d.json").write_text(json.dumps(deployment))
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(
        f"quiet nxc.node=client1 nxc.deployment=file:{tmp_path / 'd.json'} console=ttyS0\n"
    )
    result = agent("--root", str(root), "--cmdline", str(cmdline))
    assert result.returncode == 0, result.stderr
    assert "node=client1 role=client index=1 " in result.stdout
    assert (root / "etc" / "nxc" / "replicas").read_text() == "2\n"
    result = agent("--root", str(root), "--cmdline", str(cmdline), "--node", "client2")
    assert "node=client2 role=client index=2 " in result.stdout


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"node": "nobody"},
            "node 'nobody' is not in deployment dep-unit-1 (nodes: server1 client1 client2)",
        ),
        ({"hostkey_of": "client1"}, "does not match nodes[0].host_key"),
        ({"document": '{"nxc_deployment": 2}'}, "nxc_deployment 2 is not supported"),
        (
            {"document": '{"nxc_deployment": 1, "id": "x",'},
            "malformed JSON: line 1: unexpected end of input",
        ),
        ({"document": "[]"}, "not an nxc deployment"),
    ],
)
def test_up_errors_are_one_console_line(
    tmp_path: Path, deployment: dict[str, object], change: dict[str, str], message: str
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    document = change.get("document", json.dumps(deployment))
    (tmp_path / "d.json").write_text(document)
    key = tmp_path / "host1"
    if "hostkey_of" in change:
        _keypair(tmp_path / "other")
        key = tmp_path / "other"
    result = agent(
        *("--root", str(root), "--cmdline", "-", "--node", change.get("node", "server1")),
        *("--deployment", f"file:{tmp_path / 'd.json'}", "--hostkey", f"file:{key}"),
    )
    assert result.returncode == 1
    assert result.stdout.startswith("nxc-agent-error: "), result.stdout
    assert result.stdout.count("\n") == 1
    assert message in result.stdout


def test_missing_inputs_are_errors(tmp_path: Path) -> None:
    result = agent("--root", str(tmp_path), "--cmdline", "-")
    assert result.stdout.startswith("nxc-agent-error: no node name")
    result = agent("--root", str(tmp_path), "--cmdline", "-", "--node", "n1")
    assert result.stdout.startswith("nxc-agent-error: no deployment")


# --- the backdoor loop over a pty ------------------------------------------------------------


class Backdoor:
    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.socket = tmp_path / "bd.sock"
        self.pty = tmp_path / "bd.pty"
        self.state = tmp_path / "state"
        self.log = (tmp_path / "agent.log").open("wb")
        # socat plays QEMU: a pty (the guest's port) and a unix socket server
        self.socat = subprocess.Popen(
            [_tool("socat", "socat"), f"PTY,link={self.pty},rawer", f"UNIX-LISTEN:{self.socket}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            start_new_session=True,
        )
        wait_for(lambda: self.pty.exists() and self.socket.exists(), "socat's pty and socket")
        self.agent = subprocess.Popen(
            [busybox(), "sh", str(AGENT), "backdoor", "--state", str(self.state), str(self.pty)],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
            env={**ENV, "NXC_AGENT_SHELL": f"{busybox()} sh", "HOME": str(tmp_path)},
        )
        wait_for(lambda: (self.state / "backdoor.open").exists(), "the agent to open the pty")
        self.transport = BackdoorTransport(self.socket, "pty-node", connect_timeout=5)
        self.daemons: list[int] = []

    def close(self) -> None:
        self.transport.close()
        for pid in self.daemons:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in (self.agent, self.socat):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def backdoor(tmp_path: Path) -> Iterator[Backdoor]:
    opened = Backdoor(tmp_path)
    try:
        yield opened
    finally:
        opened.close()


def test_backdoor_status_and_streams(backdoor: Backdoor) -> None:
    run = backdoor.transport.run
    assert run("echo out; echo err >&2; exit 3", timeout=10) == CommandResult(3, b"out\n", b"err\n")
    assert run("true") == CommandResult(0, b"", b"")
    assert run("printf 'a\\000b\\377\\n'", timeout=10).stdout == b"a\x00b\xff\n"
    assert run("cat", timeout=10).stdout == b""  # stdin is /dev/null
    assert run("pwd").stdout == b"/\n"
    assert run("exit 255").status == 255
    assert run("kill -9 $$").status == 137


def test_backdoor_large_output_and_command(backdoor: Backdoor) -> None:
    run = backdoor.transport.run
    assert run("head -c 3000000 /dev/zero", timeout=30).stdout == bytes(3000000)
    payload = "x" * 300000
    result = run(f"echo {payload} | wc -c; echo done", timeout=30)
    assert result.stdout.split() == [b"300001", b"done"]


def test_backdoor_timeout_kills_the_command(backdoor: Backdoor) -> None:
    run = backdoor.transport.run
    started = time.monotonic()
    result = run(f"echo $$ > {backdoor.dir}/pid; exec sleep 30", timeout=1)
    assert result.status == 124
    assert time.monotonic() - started < 5
    pid = int((backdoor.dir / "pid").read_text())
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), "the timed-out command to be gone")
    # a command that ignores SIGTERM is killed 2 s later
    started = time.monotonic()
    assert run("trap '' TERM; sleep 30; echo survived", timeout=1).status == 124
    assert time.monotonic() - started < 6
    assert run("echo still here", timeout=5).stdout == b"still here\n"


def test_backdoor_daemons_do_not_block_it(backdoor: Backdoor) -> None:
    run = backdoor.transport.run
    started = time.monotonic()
    # stdout inherited by the daemon (a pipe would block the loop until it exits)
    result = run("sleep 120 & echo $!", timeout=10)
    backdoor.daemons.append(int(result.stdout))
    result = run("setsid sleep 120 >/dev/null 2>&1 & echo $!", timeout=10)
    backdoor.daemons.append(int(result.stdout))
    assert time.monotonic() - started < 5
    for pid in backdoor.daemons:
        assert Path(f"/proc/{pid}").exists(), "the daemon was killed with its command"
    assert run("echo next", timeout=5).stdout == b"next\n"


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def test_backdoor_keeps_working_after_thousands_of_commands(backdoor: Backdoor) -> None:
    run = backdoor.transport.run
    loop_pid = backdoor.agent.pid
    run("true", timeout=5)
    fds_before = len(os.listdir(f"/proc/{loop_pid}/fd"))
    started = time.monotonic()
    count = 2000
    for i in range(count):
        result = run(f"echo {i}", timeout=30 if i % 2 else None)
        assert result.stdout == f"{i}\n".encode(), (i, result)
    elapsed = time.monotonic() - started
    assert len(os.listdir(f"/proc/{loop_pid}/fd")) <= fds_before
    assert _children(loop_pid) == set(), "the loop left children behind"
    leftovers = list((backdoor.state / "backdoor").iterdir())
    assert leftovers == [], leftovers
    print(f"{count} commands in {elapsed:.1f}s ({elapsed / count * 1000:.1f} ms each)")


def test_backdoor_is_thread_safe(backdoor: Backdoor) -> None:
    errors: list[str] = []

    def worker(n: int) -> None:
        for i in range(40):
            out = backdoor.transport.run(f"echo {n}-{i}", timeout=20).stdout
            if out != f"{n}-{i}\n".encode():
                errors.append(f"{n}-{i}: {out!r}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []


def test_host_side_timeout_then_late_answer_is_dropped(backdoor: Backdoor) -> None:
    transport = BackdoorTransport(backdoor.socket, "pty-node", margin=0.5)
    backdoor.transport.close()
    try:
        transport.run("true", timeout=5)
        os.killpg(backdoor.agent.pid, signal.SIGSTOP)  # the guest stops answering
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"pty-node: no answer to `echo late`"):
            transport.run("echo late", timeout=1)
        assert 1.4 < time.monotonic() - started < 4
        os.killpg(backdoor.agent.pid, signal.SIGCONT)
        # the answer to "echo late" arrives first and must be discarded
        assert transport.run("echo fresh", timeout=10).stdout == b"fresh\n"
    finally:
        os.killpg(backdoor.agent.pid, signal.SIGCONT)
        transport.close()


def test_malformed_requests(backdoor: Backdoor) -> None:
    backdoor.transport.close()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(backdoor.socket))
        sock.settimeout(10)
        sock.sendall(
            b"garbage line\n7 x ZWNobw==\n8 0 !!!\n9 0 " + base64.b64encode(b"echo ok") + b"\n"
        )
        data = b""
        while data.count(b"\n") < 3:
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
    answers = [line.split(b" ") for line in data.splitlines()]
    assert [a[:2] for a in answers] == [[b"7", b"125"], [b"8", b"125"], [b"9", b"0"]]
    assert b"malformed timeout" in base64.b64decode(answers[0][3])
    assert b"not valid base64" in base64.b64decode(answers[1][3])
    assert base64.b64decode(answers[2][2]) == b"ok\n"


def test_transport_errors_name_the_node(tmp_path: Path) -> None:
    started = time.monotonic()
    transport = BackdoorTransport(tmp_path / "missing.sock", "ghost", connect_timeout=0.3)
    with pytest.raises(
        TransportError, match=r"ghost: backdoor socket .* not connectable within 0\.3s"
    ):
        transport.run("true")
    assert time.monotonic() - started < 3


def test_closed_connection_is_a_transport_error(backdoor: Backdoor) -> None:
    assert backdoor.transport.run("true", timeout=5).status == 0
    os.killpg(backdoor.socat.pid, signal.SIGKILL)  # "QEMU exited"
    backdoor.socat.wait(timeout=10)
    with pytest.raises(TransportError, match="pty-node: backdoor connection"):
        backdoor.transport.run("sleep 1", timeout=5)


@pytest.mark.parametrize(
    "command",
    [
        "printf '%s|' a 'b c' \"$HOME\" x\\\\y; echo",
        "echo 'semi;colon' && echo \"dq $((1 + 2))\" `echo bt`",
        "set -eu; command set -o pipefail 2>/dev/null || :; echo strict",
        "echo 'two  spaces'",  # not raw-sendable: goes as base64
        "echo tab\there",  # not raw-sendable either
    ],
)
def test_raw_and_base64_forms_run_the_same_text(backdoor: Backdoor, command: str) -> None:
    from nxc.flavours.vm_ramdisk.backdoor import sendable_raw

    expected = subprocess.run(["sh", "-c", command], capture_output=True, env={"HOME": "/"})
    assert sendable_raw(command) == ("  " not in command and "\t" not in command)
    result = backdoor.transport.run(f"HOME=/; {command}" if "$HOME" in command else command, 10)
    assert result.status == 0, result
    assert result.stdout == expected.stdout
