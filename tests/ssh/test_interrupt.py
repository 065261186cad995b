"""Ctrl-C (a real SIGINT to a process waiting in run()) kills the remote command first."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time

import pytest

from tests.fixtures.sshd_netns import SshdCluster, cmdline

# The child waits in SshTransport.run / SshFleet.run, as a scenario script would.
CHILD = """
import sys
from nxc.transports.ssh import SshFleet, SshSettings, SshTransport
mode, known_hosts, config, token, *names = sys.argv[1:]
settings = SshSettings(known_hosts, config)
command = f"sleep {token} & sleep {token}; echo never"
try:
    if mode == "transport":
        with SshTransport(names[0], settings) as transport:
            transport.connect()
            print("connected", flush=True)
            transport.run(command)
    else:
        with SshFleet(names, settings) as fleet:
            fleet.connect().check()
            print("connected", flush=True)
            fleet.run(command)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
print("finished without interruption", flush=True)
"""


def sleeps(lab: SshdCluster, token: str) -> list[int]:
    return [pid for pid in lab.processes_with(token) if cmdline(pid).startswith("sleep ")]


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("mode,count", [("transport", 1), ("fleet", 4)])
def test_sigint_while_waiting_kills_the_remote_command(
    lab: SshdCluster, mode: str, count: int
) -> None:
    token = f"{3000 + secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"
    names = [node.name for node in lab.nodes[:count]]
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            mode,
            str(lab.known_hosts),
            str(lab.ssh_config),
            token,
            *names,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "connected"
        # Both sleeps of every node (one in the background) run before we interrupt.
        _wait_for(lambda: len(sleeps(lab, token)) == 2 * count, 30, "the remote sleeps")
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert (child.returncode, out.strip()) == (130, "interrupted"), err
    # Gone by the time the interrupt reached the script: nothing to wait for.
    assert lab.processes_with(token) == []
