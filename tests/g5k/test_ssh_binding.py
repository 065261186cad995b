"""Bound nodes really answer ssh: real sshd servers in a network namespace of the test
stand in for two paravance nodes; a job reserved through nxc hands them out and the
binding file works as the ssh client's config, unchanged."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxc.g5k.plan import ReservationSpec, RoleRequest
from nxc.g5k.reserve import Reserver, reserve
from nxc.testbeds.g5k_double import Clock, G5kDouble, default_inventory, load_bindings

from .conftest import TIMINGS, USERS, client_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or (shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists()),
    reason="needs root (network namespace) and OpenSSH's sshd",
)
PORTS = {"paravance-1.rennes.grid5000.fr": 2201, "paravance-2.rennes.grid5000.fr": 2202}


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def _wait_listening(netns: str, ports: list[int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        seen = subprocess.run(
            ["ip", "netns", "exec", netns, "ss", "-ltnH"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if all(f"127.0.0.1:{port}" in seen for port in ports):
            return
        time.sleep(0.05)
    raise TimeoutError(f"sshd not listening on {ports} after {timeout} s; ss saw: {seen!r}")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Two sshd in a fresh netns; yields (netns, binding file)."""
    netns = f"nxg5kd{os.getpid()}{secrets.token_hex(2)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        host_pub = _keygen(tmp_path / "host_key")
        (tmp_path / "authorized_keys").write_text(_keygen(tmp_path / "id") + "\n")
        known = "".join(f"[127.0.0.1]:{port} {host_pub}\n" for port in PORTS.values())
        (tmp_path / "known_hosts").write_text(known)
        for port in PORTS.values():
            config = tmp_path / f"sshd_{port}"
            config.write_text(
                f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path}/host_key\n"
                f"AuthorizedKeysFile {tmp_path}/authorized_keys\nPidFile {tmp_path}/{port}.pid\n"
                "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            )
            servers.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", netns, "/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        _wait_listening(netns, list(PORTS.values()))
        binding = tmp_path / "ssh_config"
        binding.write_text(
            f"Host *.grid5000.fr\n  User root\n  IdentityFile {tmp_path}/id\n"
            f"  UserKnownHostsFile {tmp_path}/known_hosts\n  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n  ConnectTimeout 10\n"
            + "".join(
                f"Host {fqdn}\n  HostName 127.0.0.1\n  Port {port}\n"
                for fqdn, port in PORTS.items()
            )
        )
        yield netns, binding
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)
        subprocess.run(["ip", "netns", "delete", netns], check=False)


def test_job_nodes_answer_ssh_through_the_binding(lab: tuple[str, Path]) -> None:
    netns, binding = lab
    bindings = load_bindings(binding, default_inventory())
    assert {fqdn: e.port for fqdn, e in bindings.items()} == PORTS
    with G5kDouble(USERS, clock=Clock(frozen=True), timings=TIMINGS, bindings=bindings) as g5k:
        reserver = Reserver(
            client_for(g5k), "alice", sleep=lambda s: g5k.advance(s), monotonic=g5k.clock.now
        )
        spec = ReservationSpec(
            "rehearsal", (RoleRequest("server", 1, "rennes"), RoleRequest("client", 1, "rennes"))
        )
        result = reserve(reserver, spec, timeout=60, poll=2)
    assert set(result.roles["server"] + result.roles["client"]) == set(PORTS)
    for fqdn, port in PORTS.items():
        done = subprocess.run(
            ["ip", "netns", "exec", netns, "ssh", "-F", str(binding), fqdn, "echo $SSH_CONNECTION"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[2:] == ["127.0.0.1", str(port)]  # that node's own server
