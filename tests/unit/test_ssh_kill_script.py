"""The ssh transport's kill script, run by each shell a node may have as login shell.

Real process groups on this host; the script is what runs on a node when a command
times out or is interrupted (see nxc/transports/ssh/node.py).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from nxc.transports.ssh.node import kill_script

SHELLS = {
    "dash": ["dash"],
    "bash": ["bash"],
    "busybox": ["busybox", "sh"],
}


@pytest.fixture(params=sorted(SHELLS))
def shell(request: pytest.FixtureRequest) -> list[str]:
    argv = SHELLS[request.param]
    if not shutil.which(argv[0]):
        pytest.skip(f"{argv[0]} is not installed")
    return argv


def _group_alive(pgid: int) -> list[int]:
    """PIDs of non-zombie processes in process group ``pgid``."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":
            alive.append(int(entry))
    return alive


def _cleanup(group: subprocess.Popen[bytes]) -> None:
    if _group_alive(group.pid):
        os.killpg(group.pid, 9)
    group.wait(10)


def _start(command: str) -> subprocess.Popen[bytes]:
    group = subprocess.Popen(["sh", "-c", command], start_new_session=True)
    deadline = time.monotonic() + 10
    while len(_group_alive(group.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    return group


def test_term_stops_the_whole_group(shell: list[str]) -> None:
    token = f"{secrets.randbelow(10**6) + 5000}.{secrets.randbelow(1000)}"
    group = _start(f"sleep {token} & sleep {token}; wait")
    try:
        assert len(_group_alive(group.pid)) == 3
        done = subprocess.run([*shell, "-c", kill_script(group.pid, 2.0)], timeout=30)
        assert done.returncode == 0
        assert _group_alive(group.pid) == []
    finally:
        _cleanup(group)


def test_kill_after_grace_for_a_group_ignoring_term(shell: list[str]) -> None:
    token = f"{secrets.randbelow(10**6) + 5000}.{secrets.randbelow(1000)}"
    group = _start(f"trap '' TERM; sleep {token} & sleep {token}; wait")
    try:
        started = time.monotonic()
        done = subprocess.run([*shell, "-c", kill_script(group.pid, 0.5)], timeout=30)
        assert done.returncode == 0 and _group_alive(group.pid) == []
        assert time.monotonic() - started >= 0.5  # TERM was tried first, for the grace
    finally:
        _cleanup(group)


def test_a_group_already_gone_is_success(shell: list[str]) -> None:
    group = subprocess.Popen(["true"], start_new_session=True)
    group.wait(10)
    done = subprocess.run([*shell, "-c", kill_script(group.pid, 2.0)], timeout=30)
    assert done.returncode == 0
