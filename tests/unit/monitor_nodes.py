"""Local nodes for the monitoring tests: real shells on this host, each in a private
network namespace (so that 127.0.0.1:9100 is the node's own, never the host's).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nxc.driver.local import LocalNodeControl
from nxc.driver.machine import Machine
from nxc.log import Logger
from nxc.paths import AGENT_DIR

SAMPLER = AGENT_DIR / "nxc-metrics"
_counter = itertools.count()


def require_root_netns() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("the monitoring tests need root and iproute2 (network namespaces)")


@contextlib.contextmanager
def netns() -> Iterator[str]:
    """A fresh network namespace with its loopback up (removed afterwards)."""
    require_root_netns()
    name = f"nxc-monitor-{os.getpid()}-{next(_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        # A NIC besides lo (node_exporter leaves lo out of its network metrics).
        subprocess.run(
            ["ip", "-n", name, "link", "add", "nxcm0", "type", "veth", "peer", "name", "nxcm1"],
            check=True,
        )
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@dataclass
class LocalCluster:
    """Machines over local nodes, each node's commands run inside ``ns``."""

    ns: str
    root: Path
    logger: Logger
    machines: list[Machine] = field(default_factory=list)
    controls: list[LocalNodeControl] = field(default_factory=list)

    def add(self, name: str, role: str, index: int, path: str) -> Machine:
        """A node whose PATH is ``path`` (put nxc-metrics or not in it)."""
        shell = self.root / f"shell-{name}"
        shell.write_text(f'#!/bin/sh\nexec ip netns exec {self.ns} /bin/sh "$@"\n')
        shell.chmod(0o755)
        env = {"PATH": path, "HOME": str(self.root), "NXC_NODE": name}
        control = LocalNodeControl(name, self.root / name, env, shell=str(shell))
        self.controls.append(control)
        machine = Machine(name, role, index, control, self.logger)
        self.machines.append(machine)
        return machine

    def close(self) -> None:
        for machine in self.machines:
            machine.release()
        for control in self.controls:
            control.close()


def image_bin(root: Path, *, sampler: bool = True, slow: float = 0.0) -> str:
    """A PATH like an image's: the host's tools, plus nxc-metrics if ``sampler``
    (``slow``: the sampler sleeps that long first)."""
    directory = root / f"bin-{next(_counter)}"
    directory.mkdir()
    if sampler:
        if slow:
            (directory / "nxc-metrics").write_text(
                f"#!/bin/sh\nsleep {slow}\nexec /bin/sh {SAMPLER}\n"
            )
            (directory / "nxc-metrics").chmod(0o755)
        else:
            shutil.copy(SAMPLER, directory / "nxc-metrics")
    return f"{directory}:/usr/sbin:/usr/bin:/sbin:/bin"


@contextlib.contextmanager
def local_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with netns() as ns:
        logger = Logger(stream=io.StringIO(), color=False)
        cluster = LocalCluster(ns, tmp_path, logger)
        try:
            yield cluster
        finally:
            cluster.close()


def wait_for(what: str, check: object, timeout: float = 30.0) -> None:
    """Poll ``check()`` until true; fail naming ``what`` after ``timeout`` seconds."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
