"""Ctrl-C, SIGTERM and SIGHUP during `nxc build` leave no builder process and no build dir.

The flake's only output is a derivation whose builder sleeps (builtins and /bin/sh, as
`sandbox = false` allows here). Each test waits until the builder really runs, signals
`nxc build` the way a user or a terminal would, then checks that nxc exited with
128 + the signal, said so in one line, and left neither the builder nor its
`nix-build-*` directory behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxc.nixbuild import current_system
from tests.nix.nixutil import needs_nix

pytestmark = [pytest.mark.nix, needs_nix]

FLAKE = """\
{
  outputs = { self }: {
    packages.SYSTEM."sleepy::vm-ramdisk" = derivation {
      name = "nxc-sleepy-TOKEN";
      system = "SYSTEM";
      builder = "/bin/sh";
      # A shell with a child, as real builders have; `true` keeps sh from exec'ing sleep.
      args = [ "-c" "/bin/sleep SECONDS; true" ];
    };
  };
}
"""


def processes_with(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture
def sleepy(tmp_path: Path) -> Iterator[tuple[Path, str, Path]]:
    """A flake whose build sleeps; yields (project, marker, TMPDIR); kills leftovers after."""
    token = secrets.token_hex(4)
    # A duration no other process uses: it identifies this test's builder (sh and sleep).
    seconds = f"86399.{int(token, 16) % 10**6:06d}"
    project = tmp_path / "sleepy"
    project.mkdir()
    text = FLAKE.replace("SYSTEM", current_system()).replace("TOKEN", token)
    (project / "flake.nix").write_text(text.replace("SECONDS", seconds))
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    try:
        yield project, seconds, tmpdir
    finally:
        # Only ever this test's own builder, found by its unique duration.
        for pid in processes_with(seconds):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def wait_for(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("signum", "to_group", "code"),
    [
        (signal.SIGINT, True, 130),  # Ctrl-C in a terminal: the whole foreground group
        (signal.SIGINT, False, 130),  # kill -INT <nxc>
        (signal.SIGTERM, False, 143),
        (signal.SIGHUP, False, 129),
        (signal.SIGHUP, True, 129),  # the terminal went away
    ],
)
def test_signal_during_build_leaves_nothing(
    sleepy: tuple[Path, str, Path], signum: int, to_group: bool, code: int
) -> None:
    project, marker, tmpdir = sleepy
    process = subprocess.Popen(
        [sys.executable, "-m", "nxc.cli", "build", "--offline", "-C", "sleepy::vm-ramdisk"],
        cwd=project,
        env={**os.environ, "TMPDIR": str(tmpdir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, as a shell job in a terminal
    )
    try:
        # Both the builder's shell and its sleep must exist before the signal.
        wait_for(lambda: len(processes_with(marker)) >= 2, 60, "the builder to start")
        assert list(tmpdir.glob("nix-build-*")), "nix made no build directory"
        if to_group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # nxc returned only after nix was gone, and nix stops its builder before exiting.
    assert processes_with(marker) == [], f"the builder survived; nxc said: {stderr}"
    assert list(tmpdir.glob("nix-build-*")) == [], "a build directory was left behind"
    assert process.returncode == code, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("nxc: error:")]
    assert len(errors) == 1, stderr
    assert signal.Signals(signum).name in errors[0] and "nix stopped" in errors[0]
    assert "Traceback" not in stderr
