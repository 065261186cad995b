"""SshTransport against real sshd servers: commands, timeouts, sftp, host keys, reconnects."""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxc.errors import NxcError
from nxc.runtime.transport import TransportError
from nxc.transports.ssh import (
    HostKeyRejected,
    SshConnectError,
    SshEndpoint,
    SshError,
    SshFileError,
    SshSettings,
    SshTransport,
    resolve,
)
from tests.fixtures.sshd_netns import SshdCluster


@pytest.fixture
def node1(lab: SshdCluster, settings: SshSettings) -> Iterator[SshTransport]:
    with SshTransport(lab.nodes[0].name, settings) as transport:
        yield transport


def _token() -> str:
    """A unique `sleep` argument, to find the remote process by its command line."""
    return f"{1000 + secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"


# -- commands -------------------------------------------------------------------------


def test_status_stdout_and_stderr_are_separate(node1: SshTransport) -> None:
    result = node1.run("echo out; echo err >&2; exit 3")
    assert (result.status, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert node1.run("true").status == 0
    assert node1.run("exit 255").status == 255


def test_commands_run_in_the_node_with_sh_semantics_and_no_stdin(
    lab: SshdCluster, node1: SshTransport
) -> None:
    # The node's own network namespace: its lab address is on eth0.
    assert lab.nodes[0].address in node1.run("ip -4 -br addr show eth0").output
    # sh -c: $0 is sh, and POSIX sh parses the text whatever the login shell is.
    assert node1.run('echo "$0"').output.strip() == "sh"
    assert node1.run("f() { echo in-f; }; f").output == "in-f\n"
    # stdin is /dev/null: cat ends at once with nothing.
    assert node1.run("cat; echo done", timeout=10).output == "done\n"


def test_a_stderr_line_that_looks_like_the_marker_is_kept(node1: SshTransport) -> None:
    result = node1.run("echo 'nxc-pgid-00000000 1' >&2; echo 'nxc-pgid 2' >&2")
    assert result.stderr == b"nxc-pgid-00000000 1\nnxc-pgid 2\n"


def test_large_binary_output(node1: SshTransport) -> None:
    result = node1.run("head -c 5000000 /dev/zero; printf '\\377'")
    assert len(result.stdout) == 5_000_001 and result.stdout[-1:] == b"\xff"


def test_commands_are_channels_of_one_connection(lab: SshdCluster, node1: SshTransport) -> None:
    node1.run("true")
    for _ in range(20):
        node1.run("true")
    assert node1.link.connects == 1
    # sshd sees one TCP connection from the lab's hub (the relay), not one per command.
    established = lab_connections(lab, 0)
    assert established == 1, established


def lab_connections(lab: SshdCluster, index: int) -> int:
    import subprocess

    out = subprocess.run(
        ["ip", "netns", "exec", lab.nodes[index].netns, "ss", "-Htn", "state", "established"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(1 for line in out.splitlines() if f"{lab.nodes[index].address}:22 " in line)


def test_many_threads_share_one_node(node1: SshTransport) -> None:
    # More threads than sshd's MaxSessions (10): the transport queues them.
    results: dict[int, bytes | str] = {}

    def one(i: int) -> None:
        try:
            results[i] = node1.run(f"sleep 0.2; echo {i}").stdout
        except Exception as err:  # shown in the assertion below
            results[i] = f"{type(err).__name__}: {err}"

    threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == {i: f"{i}\n".encode() for i in range(24)}


# -- timeouts and killing -------------------------------------------------------------


def test_timeout_kills_the_remote_process_group(lab: SshdCluster, node1: SshTransport) -> None:
    a, b = _token(), _token()
    with pytest.raises(TimeoutError) as caught:
        node1.run(f"sleep {a} & sleep {b}; echo never", timeout=1)
    message = str(caught.value)
    assert lab.nodes[0].name in message and "timed out after 1s" in message
    assert "was killed on the node" in message
    # Gone when run() returns: no polling here.
    assert lab.processes_with(a) == [] and lab.processes_with(b) == []
    assert node1.run("echo still usable").output == "still usable\n"


def test_timeout_kills_a_command_that_ignores_sigterm(
    lab: SshdCluster, settings: SshSettings
) -> None:
    token = _token()
    quick = SshSettings(lab.known_hosts, lab.ssh_config, kill_grace=0.5)
    with SshTransport(lab.nodes[1].name, quick) as transport, pytest.raises(TimeoutError):
        transport.run(f"trap '' TERM; sleep {token}; sleep {token}", timeout=1)
    assert lab.processes_with(token) == []


def test_without_the_kill_the_remote_command_would_survive(
    lab: SshdCluster, settings: SshSettings
) -> None:
    """Closing a pty-less channel leaves the command running: why run() kills it."""
    import asyncio

    from nxc.transports.ssh.node import wrap

    token = _token()
    with SshTransport(lab.nodes[2].name, settings) as transport:

        async def open_and_close() -> None:
            conn = await transport.link.connection()
            process = await conn.create_process(wrap(f"sleep {token}"))
            await asyncio.sleep(0.5)
            process.close()
            await asyncio.sleep(0.5)

        transport.loop.call(open_and_close())
        try:
            assert lab.processes_with(token) != []
        finally:
            transport.run(f"pkill -f 'sleep {token}' || true")


def test_timeout_must_be_positive(node1: SshTransport) -> None:
    with pytest.raises(ValueError):
        node1.run("true", timeout=0)


# -- sftp -----------------------------------------------------------------------------


def test_put_and_get_keep_mode_and_content(
    node1: SshTransport, tmp_path: Path, lab: SshdCluster
) -> None:
    remote_dir = lab.workdir / f"remote-{secrets.token_hex(3)}"
    assert node1.run(f"mkdir -p {remote_dir}").status == 0
    for mode in (0o751, 0o600, 0o644):
        source = tmp_path / f"file-{mode:o}"
        source.write_bytes(os.urandom(1000) + b"\n")
        source.chmod(mode)
        node1.put(source, f"{remote_dir}/copy-{mode:o}")
        listing = node1.run(f"stat -c '%a %s' {remote_dir}/copy-{mode:o}").output.split()
        assert listing == [f"{mode:o}", "1001"]
        back = tmp_path / f"back-{mode:o}"
        node1.get(f"{remote_dir}/copy-{mode:o}", back)
        assert back.read_bytes() == source.read_bytes()
        assert stat.S_IMODE(back.stat().st_mode) == mode
    # Nothing half-written is left next to the targets.
    assert sorted(p.name for p in remote_dir.iterdir()) == ["copy-600", "copy-644", "copy-751"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_put_replaces_an_existing_file_atomically(
    node1: SshTransport, tmp_path: Path, lab: SshdCluster
) -> None:
    target = lab.workdir / f"atomic-{secrets.token_hex(3)}"
    target.write_text("old\n")
    target.chmod(0o600)
    inode = target.stat().st_ino
    source = tmp_path / "new"
    source.write_text("new\n")
    source.chmod(0o755)
    node1.put(source, str(target))
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert target.stat().st_ino != inode  # a new file renamed over, not rewritten in place


def test_twenty_megabytes_both_ways(node1: SshTransport, tmp_path: Path, lab: SshdCluster) -> None:
    source = tmp_path / "big"
    source.write_bytes(os.urandom(20 * 1024 * 1024))
    remote = lab.workdir / f"big-{secrets.token_hex(3)}"
    node1.put(source, str(remote))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert node1.run(f"sha256sum {remote}").output.split()[0] == digest
    back = tmp_path / "big-back"
    node1.get(str(remote), back)
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest


def test_copy_errors_name_node_and_path(
    node1: SshTransport, tmp_path: Path, lab: SshdCluster
) -> None:
    name = lab.nodes[0].name
    with pytest.raises(SshFileError, match=f"{name}: .*/no/such/dir/x"):
        source = tmp_path / "x"
        source.write_text("x")
        node1.put(source, "/no/such/dir/x")
    with pytest.raises(SshFileError, match=f"{name}: .*{tmp_path}/missing"):
        node1.put(tmp_path / "missing", "/tmp/x")
    with pytest.raises(SshFileError, match=f"{name}: .*/no/such/file.*"):
        node1.get("/no/such/file", tmp_path / "y")
    with pytest.raises(SshFileError, match="not a regular file"):
        node1.get("/etc", tmp_path / "z")
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()
    # One line, a TransportError for the driver and an NxcError for the CLI.
    with pytest.raises(SshFileError) as caught:
        node1.get("/no/such/file", tmp_path / "y")
    assert isinstance(caught.value, TransportError) and isinstance(caught.value, NxcError)
    assert "\n" not in str(caught.value)


# -- host keys ------------------------------------------------------------------------


def test_host_key_mismatch_is_refused_with_one_clear_line(lab: SshdCluster, tmp_path: Path) -> None:
    first, second = lab.nodes[0], lab.nodes[1]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{first.name} {second.host_key}\n")  # node-1 listed with node-2's key
    transport = SshTransport(first.name, SshSettings(wrong, lab.ssh_config))
    with transport, pytest.raises(HostKeyRejected) as caught:
        transport.run("touch /tmp/should-not-happen")
    message = str(caught.value)
    assert message.startswith(f"{first.name}: host key mismatch")
    assert str(wrong) in message and "\n" not in message


def test_unknown_host_is_refused(lab: SshdCluster, tmp_path: Path) -> None:
    other = tmp_path / "known_hosts"
    other.write_text(f"{lab.nodes[1].name} {lab.nodes[1].host_key}\n")
    transport = SshTransport(lab.nodes[0].name, SshSettings(other, lab.ssh_config))
    with transport, pytest.raises(HostKeyRejected, match=f"has no key for {lab.nodes[0].name}"):
        transport.connect()


def test_known_hosts_is_required(lab: SshdCluster, tmp_path: Path) -> None:
    with pytest.raises(NxcError, match="known_hosts"):
        SshSettings([], lab.ssh_config)
    with pytest.raises(NxcError, match="does not exist"):
        SshSettings(tmp_path / "nope", lab.ssh_config)


# -- config, endpoints, connection errors --------------------------------------------


def test_config_gives_hostname_port_user_identity(lab: SshdCluster, settings: SshSettings) -> None:
    node = lab.nodes[3]
    where = resolve(node.name, settings)
    assert (where.host, where.port, where.user) == ("127.0.0.1", node.port, "root")
    assert where.keyfiles == (lab.client_key,)
    assert where.jump is None and where.host_key_alias == node.name


def test_explicit_endpoint_overrides_the_config(lab: SshdCluster, tmp_path: Path) -> None:
    node = lab.nodes[4]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{node.port} {node.host_key}\n")
    endpoint = SshEndpoint("anything", "127.0.0.1", node.port, "root", lab.client_key)
    with SshTransport(endpoint, SshSettings(known, config=())) as transport:
        assert node.address in transport.run("ip -4 -br addr show eth0").output


def test_wrong_user_is_refused_by_name(lab: SshdCluster, tmp_path: Path) -> None:
    settings = SshSettings(lab.known_hosts, lab.ssh_config, user="nobody")
    transport = SshTransport(lab.nodes[0].name, settings)
    with transport, pytest.raises(SshConnectError, match=f"{lab.nodes[0].name}: .* user nobody"):
        transport.connect()


def test_connect_timeout_on_a_server_that_never_speaks(lab: SshdCluster) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the TCP handshake (backlog), never sends a banner
    try:
        port = silent.getsockname()[1]
        settings = SshSettings(lab.known_hosts, config=(), connect_timeout=1)
        with SshTransport(SshEndpoint("mute", "127.0.0.1", port, "root"), settings) as transport:
            started = time.monotonic()
            with pytest.raises(SshConnectError, match=r"mute: .*no answer within 1s"):
                transport.run("true")
            assert time.monotonic() - started < 30  # bounded, not hung
    finally:
        silent.close()


def test_closed_transport_refuses_commands(lab: SshdCluster, settings: SshSettings) -> None:
    transport = SshTransport(lab.nodes[0].name, settings)
    transport.run("true")
    transport.close()
    transport.close()  # idempotent
    with pytest.raises(SshError, match="closed"):
        transport.run("true")


# -- nodes that stop and come back (own small lab: these stop sshd) ------------------


def test_down_node_then_reconnect_after_restart(sshd_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster: SshdCluster = sshd_cluster(2)
    node = cluster.nodes[0]
    settings = SshSettings(cluster.known_hosts, cluster.ssh_config)
    with SshTransport(node.name, settings) as transport:
        first_shell = transport.run("echo $PPID").output
        cluster.stop_node(node.name)
        with pytest.raises(SshError) as caught:
            transport.run("true")
        assert node.name in str(caught.value)
        cluster.start_node(node.name)
        assert transport.run("echo back").output == "back\n"  # reconnected by itself
        assert transport.link.connects == 2
        assert transport.run("echo $PPID").output != first_shell


def test_restart_between_commands_is_invisible(sshd_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster: SshdCluster = sshd_cluster(1)
    node = cluster.nodes[0]
    with SshTransport(node.name, SshSettings(cluster.known_hosts, cluster.ssh_config)) as t:
        t.run("true")
        cluster.restart_node(node.name)  # as a reboot would: the old connection is dead
        assert t.run("echo fine").output == "fine\n"
        assert t.link.connects == 2


def test_retry_for_waits_for_a_node_coming_back(sshd_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster: SshdCluster = sshd_cluster(1)
    node = cluster.nodes[0]
    cluster.stop_node(node.name)
    settings = SshSettings(cluster.known_hosts, cluster.ssh_config, retry_for=30)
    timer = threading.Timer(1.5, cluster.start_node, args=(node.name,))
    timer.start()
    try:
        with SshTransport(node.name, settings) as transport:
            assert transport.run("echo up").output == "up\n"
    finally:
        timer.join()
    no_retry = SshSettings(cluster.known_hosts, cluster.ssh_config, retry_for=0)
    cluster.stop_node(node.name)
    transport = SshTransport(node.name, no_retry)
    with transport, pytest.raises(SshConnectError, match=f"{node.name}: cannot connect"):
        transport.run("true")
