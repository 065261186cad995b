"""Everything the double knows, behind one lock: the HTTP layer and the control path
both act through a ``Backend``."""

from __future__ import annotations

import dataclasses
import hmac
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nxc.testbeds.g5k_double.binding import SshEndpoint
from nxc.testbeds.g5k_double.clock import Clock, Timings
from nxc.testbeds.g5k_double.deployments import Deployer, DeploymentTable
from nxc.testbeds.g5k_double.inventory import Inventory, Node
from nxc.testbeds.g5k_double.jobs import Job
from nxc.testbeds.g5k_double.scheduler import JobTable

FAULT_TEXTS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Server Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class Fault:
    """Answer the next ``count`` API requests with ``status``."""

    status: int
    count: int
    retry_after: int | None = None  # seconds, sent as a Retry-After header


@dataclass(frozen=True)
class Served:
    """One API request as the double answered it (for tests to count retries)."""

    method: str
    path: str
    status: int
    user: str | None


class Backend:
    def __init__(
        self,
        inventory: Inventory,
        users: Mapping[str, str],
        *,
        clock: Clock | None = None,
        timings: Timings | None = None,
        bindings: Mapping[str, SshEndpoint] | None = None,
        deployer: Deployer | None = None,
        on_freed: Callable[[Job], None] | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.inventory = inventory
        self.users = dict(users)
        self.clock = clock or Clock()
        self.initial_timings = dataclasses.replace(timings or Timings())
        self.timings = dataclasses.replace(self.initial_timings)
        self.bindings = dict(bindings or {})
        self.absent: set[str] = set()  # node FQDNs rebooting: not given to jobs for now
        self.on_freed = on_freed
        self.jobs = self._job_table()
        self.deployments = DeploymentTable(self.timings, deployer)
        self.faults: list[Fault] = []
        self.served: list[Served] = []

    def _job_table(self) -> JobTable:
        return JobTable(self.inventory, self.timings, self.alive, self.available, self.on_freed)

    def alive(self, node: Node) -> bool:
        """With a binding, only bound nodes exist for OAR; without one, all do."""
        return not self.bindings or node.fqdn in self.bindings

    def available(self, node: Node) -> bool:
        return node.fqdn not in self.absent

    def set_absent(self, fqdns: set[str] | frozenset[str], absent: bool) -> None:
        """Mark nodes as rebooting (absent) or back; caller holds ``lock``."""
        if absent:
            self.absent |= set(fqdns)
            return
        self.absent -= set(fqdns)
        now = self.clock.now()
        for site in {fqdn.split(".")[1] for fqdn in fqdns if fqdn.count(".") >= 2}:
            self.jobs.unblock(site, now)

    def authenticate(self, user: str, password: str) -> bool:
        expected = self.users.get(user)
        return expected is not None and hmac.compare_digest(expected, password)

    def tick(self) -> float:
        now = self.clock.now()
        self.jobs.tick(now)
        self.deployments.tick(now)
        return now

    def take_fault(self) -> Fault | None:
        while self.faults:
            fault = self.faults[0]
            if fault.count <= 0:
                self.faults.pop(0)
                continue
            fault.count -= 1
            return fault
        return None

    def reset(self) -> None:
        """Forget jobs, deployments, faults, KO marks and the request log; restore timings."""
        self.timings.update(self.initial_timings.as_dict())
        self.jobs = self._job_table()
        deployer = self.deployments.deployer
        for deployment in self.deployments.items.values():
            deployment.cancelled.set()
        self.deployments = DeploymentTable(self.timings, deployer, self.deployments.fetch)
        self.faults.clear()
        self.served.clear()
