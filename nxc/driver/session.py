"""Open a driver on the running deployment: one Machine per node, plus netem."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from nxc.driver.driver import Driver
from nxc.driver.machine import Machine
from nxc.log import log

if TYPE_CHECKING:
    from nxc.running import RunningDeployment


def machines_of(current: RunningDeployment) -> list[Machine]:
    controls = current.nodes()
    return [
        Machine(node.name, node.role, node.index, controls[node.name], log)
        for node in current.deployment.nodes
    ]


@contextlib.contextmanager
def open_driver(current: RunningDeployment, out_dir: Path | None = None) -> Iterator[Driver]:
    """A Driver whose scenario globals hold every node by name, ``netem`` and ``deployment``."""
    from nxc.netem import Netem, Topology

    machines = machines_of(current)
    topology = Topology.from_dict(current.manifest.topology) if current.manifest.topology else None
    netem = Netem(current.deployment, {m.name: m for m in machines}, topology)
    extra = {"netem": netem, "deployment": current.deployment, "manifest": current.manifest}
    for problem in current.health():
        log.warning(problem)
    driver = Driver(machines, log, out_dir or current.run.new_driver_dir(), extra)
    try:
        yield driver
    finally:
        driver.release()
