"""Netem on a running deployment: which machines, which topology is installed.

Library code (no printing): the CLI and ``nxc.session.start`` call these. The
topology nxc installed is recorded in the deployment's own state directory
(``current/``), which ``nxc stop`` removes, so a later deployment never claims
shaping it does not have.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nxc.contracts.deployment import Deployment
from nxc.fsutil import atomic_write, read_json
from nxc.netem.apply import MachineLike, Netem
from nxc.netem.model import Topology
from nxc.netem.tcgen import GenOptions

if TYPE_CHECKING:
    from nxc.running import RunningDeployment

APPLIED_FILE = "netem-topology.json"


@dataclass
class NetemSession:
    deployment: Deployment
    machines: Mapping[str, MachineLike]
    topology: Topology | None = None  # the composition's own, if any
    state_dir: Path | None = None  # where the installed topology is recorded

    @property
    def applied_path(self) -> Path | None:
        return self.state_dir / APPLIED_FILE if self.state_dir else None

    def current_topology(self) -> Topology:
        """What nxc installed last (or the composition's, or none)."""
        path = self.applied_path
        if path is not None and path.is_file():
            return Topology.from_dict(read_json(path), source=str(path))
        return self.topology or Topology()

    def record(self, topology: Topology) -> None:
        if self.applied_path is not None:
            atomic_write(self.applied_path, json.dumps(topology.to_dict(), indent=2) + "\n")

    def forget(self) -> None:
        if self.applied_path is not None:
            self.applied_path.unlink(missing_ok=True)

    def release(self) -> None:
        """Close the channels to the nodes. A VM's backdoor serves one connection at a
        time: a driver opened later in the same process (``nxc start -t``) could not
        reach a node while these stay open."""
        for machine in self.machines.values():
            release = getattr(machine, "release", None)
            if callable(release):
                release()


def session_from_running(current: RunningDeployment) -> NetemSession:
    """Machines over the running deployment's nodes, and its topologies."""
    from nxc.driver.machine import Machine

    controls = current.nodes()
    deployment = current.deployment
    machines = {
        n.name: Machine(n.name, n.role, n.index, controls[n.name]) for n in deployment.nodes
    }
    raw = current.manifest.topology
    topology = Topology.from_dict(raw, source="manifest topology") if raw else None
    return NetemSession(deployment, machines, topology, current.project.current_dir)


def apply_topology(
    session: NetemSession, topology: Topology, options: GenOptions | None = None
) -> Netem:
    """Install ``topology`` on every node and record it; returns the applied Netem."""
    net = Netem(session.deployment, session.machines, topology, options=options)
    net.apply()
    session.record(topology)
    return net
