"""The in-process face of the double, for tests and rehearsal scripts::

with G5kDouble({"alice": "secret"}, clock=Clock(frozen=True)) as g5k:
    client = Grid5000(uri=g5k.url, username="alice", password="secret")
    ...
    g5k.advance(10)          # time passes for OAR and Kadeploy, no sleeping
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from types import TracebackType

from nxc.testbeds.g5k_double.backend import Backend, Fault, Served
from nxc.testbeds.g5k_double.binding import SshEndpoint
from nxc.testbeds.g5k_double.clock import Clock, Timings
from nxc.testbeds.g5k_double.control import TOKEN_HEADER, parse_fault
from nxc.testbeds.g5k_double.deployments import Deployer, Deployment
from nxc.testbeds.g5k_double.errors import ApiError
from nxc.testbeds.g5k_double.inventory import Inventory, default_inventory
from nxc.testbeds.g5k_double.jobs import Job
from nxc.testbeds.g5k_double.server import HttpService


class G5kDouble:
    def __init__(
        self,
        users: Mapping[str, str],
        *,
        inventory: Inventory | None = None,
        clock: Clock | None = None,
        timings: Timings | None = None,
        bindings: Mapping[str, SshEndpoint] | None = None,
        deployer: Deployer | None = None,
        on_freed: Callable[[Job], None] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        control_token: str | None = None,
    ) -> None:
        self.backend = Backend(
            inventory or default_inventory(),
            users,
            clock=clock,
            timings=timings,
            bindings=bindings,
            deployer=deployer,
            on_freed=on_freed,
        )
        self.control_token = control_token or secrets.token_urlsafe(16)
        self.control_header = {TOKEN_HEADER: self.control_token}
        self._host, self._port = host, port
        self._service: HttpService | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> str:
        """Listen (127.0.0.1 only) and serve in a thread; returns the API URL."""
        if self._service is None:
            self._service = HttpService(self.backend, self._host, self._port, self.control_token)
            self._service.start()
        return self.url

    def stop(self) -> None:
        if self._service is not None:
            self._service.stop()
            self._service = None
        self.backend.deployments.join(timeout=5)

    def __enter__(self) -> G5kDouble:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        if self._service is None:
            raise RuntimeError("the double is not started")
        host, port = self._service.address
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        """The API base URL, as python-grid5000's ``uri`` (``…/stable``)."""
        return f"{self.origin}/stable"

    # -- the control path, in process ----------------------------------------------

    @property
    def clock(self) -> Clock:
        return self.backend.clock

    @property
    def timings(self) -> Timings:
        return self.backend.timings

    @property
    def served(self) -> list[Served]:
        with self.backend.lock:
            return list(self.backend.served)

    def advance(self, seconds: float) -> float:
        with self.backend.lock:
            self.backend.clock.advance(seconds)
            return self.backend.tick()

    def set_timings(self, **values: float) -> None:
        with self.backend.lock:
            self.backend.timings.update(values)

    def inject_fault(
        self, status: int = 503, count: int = 1, retry_after: int | None = None
    ) -> None:
        fault = parse_fault({"status": status, "count": count, "retry_after": retry_after})
        with self.backend.lock:
            self.backend.faults.append(Fault(fault.status, fault.count, fault.retry_after))

    def mark_ko(self, *nodes: str) -> None:
        with self.backend.lock:
            self.backend.deployments.ko_nodes.update(nodes)

    def job(self, site: str, uid: int) -> Job:
        with self.backend.lock:
            self.backend.tick()
            return self.backend.jobs.get(site, uid)

    def deployment(self, site: str, uid: str) -> Deployment:
        with self.backend.lock:
            self.backend.tick()
            return self.backend.deployments.get(site, uid)

    def force_job(self, site: str, uid: int, state: str) -> None:
        with self.backend.lock:
            self.backend.jobs.force(site, str(uid), state, self.backend.tick())

    def force_deployment(self, site: str, uid: str, status: str) -> None:
        with self.backend.lock:
            self.backend.deployments.force(site, uid, status, self.backend.tick())

    def join_deployers(self, timeout: float = 30.0) -> None:
        if not self.backend.deployments.join(timeout):
            raise TimeoutError(f"deployers still running after {timeout} s")

    def reset(self) -> None:
        with self.backend.lock:
            self.backend.reset()


__all__ = ["ApiError", "G5kDouble"]
