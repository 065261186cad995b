"""Open a driver on the running deployment: one Machine per node, plus netem and monitor."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from nxc.driver.driver import Driver
from nxc.driver.machine import Machine
from nxc.driver.sync import Sync, SyncUnavailable
from nxc.errors import NxcError, StateError
from nxc.faults.injector import Injector
from nxc.fsutil import read_json
from nxc.log import log
from nxc.runs import DRIVER_LOG_FILE

if TYPE_CHECKING:
    from nxc.monitor.hook import MonitorOptions
    from nxc.running import RunningDeployment


def machines_of(current: RunningDeployment) -> list[Machine]:
    controls = current.nodes()
    return [
        Machine(
            node.name,
            node.role,
            node.index,
            controls[node.name],
            log,
            ssh_argv=current.ssh_argv(node.name) if node.ssh_host is not None else None,
        )
        for node in current.deployment.nodes
    ]


@contextlib.contextmanager
def open_driver(
    current: RunningDeployment,
    out_dir: Path | None = None,
    *,
    monitor: MonitorOptions | None = None,
) -> Iterator[Driver]:
    """A Driver whose scenario globals hold every node by name, ``netem``, ``monitor``
    and ``deployment``.

    ``monitor``: scrape every node in the background while the driver is open (default:
    every second; ``MonitorOptions(enabled=False)`` for none) into the run's
    ``metrics.sqlite``.
    """
    from nxc.monitor.hook import monitoring
    from nxc.netem import Netem, Topology
    from nxc.netem.state import APPLIED_FILE

    machines = machines_of(current)
    topology = Topology.from_dict(current.manifest.topology) if current.manifest.topology else None
    applied = current.project.current_dir / APPLIED_FILE
    if applied.is_file():
        # What nxc start --netem (or nxc netem apply) installed, not just the
        # composition's: netem.validate() must check what is on the nodes.
        topology = Topology.from_dict(read_json(applied), source=str(applied))
    netem = Netem(current.deployment, {m.name: m for m in machines}, topology)
    extra = {"netem": netem, "deployment": current.deployment, "manifest": current.manifest}
    for problem in current.health():
        log.warning(problem)
    session_dir = out_dir or current.run.new_driver_dir()
    netem.report_dir = session_dir
    # The run record keeps every driver session: its command line, and its whole log
    # as JSON lines (replayed from the start, so it holds what came before too).
    with contextlib.suppress(NxcError, ValueError):
        where = session_dir.relative_to(current.run.directory)
        current.run.add_command("driver", dir=str(where))
    log_file = session_dir / DRIVER_LOG_FILE
    log.attach_file(log_file)
    sync = None
    with contextlib.suppress(SyncUnavailable, StateError):
        sync = Sync(
            current.sync().client("driver"),
            log,
            len(current.deployment.nodes),
            {role: len(current.deployment.nodes_of(role)) for role in current.deployment.roles},
        )
    # Faults: recorded in the run record; whatever is still applied when the driver
    # ends is healed.
    faults = Injector(
        current.deployment,
        {m.name: m for m in machines},
        log,
        netem=netem,
        record=current.run.directory / "faults.jsonl",
    )
    extra["faults"] = faults
    driver = Driver(machines, log, session_dir, extra, sync=sync)
    try:
        with monitoring(
            current.run_dir, machines, monitor, deployment_id=current.deployment.id, logger=log
        ) as watch:
            driver.extra_globals["monitor"] = watch
            yield driver
    finally:
        try:
            for problem in faults.close():
                log.warning(problem)
        finally:
            driver.release()
            log.detach_file(log_file)
