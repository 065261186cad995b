"""The runtime contract: the phases every flavour implements, and what they receive.

``nxc start`` drives a runtime through

    check_host → acquire → launch → (nodes) … → release (``nxc stop``)

* ``check_host(manifest, options)``: raise a one-line error if this machine (or the
  user's account, credentials…) lacks what the flavour needs. Nothing is created.
* ``acquire(ctx, deployment)``: create or reserve what nodes will run on (a switch,
  a Docker network, an OAR job…), recording each resource in ``ctx.ledger`` as it is
  created, and return the deployment rewritten with what only the platform knows
  (ssh endpoints, host names, real NIC MACs, addresses).
* ``launch(ctx, deployment)``: start every node in parallel and return once each
  agent printed its ready line (``nxc-ready node=… boot_id=…``), wherever the runtime
  reads it (console file, container log, ssh); fail naming each late node with
  what was last seen.
* ``nodes(project, deployment)``: one :class:`~nxc.runtime.node.NodeControl` per node,
  rebuilt from the runtime's saved state in any nxc process.
* ``release(project)``: what must happen before the ledger is undone (reboot
  nodes to their standard environment…); the ledger then releases every recorded
  resource through the kinds from ``resource_kinds()``. Must be idempotent and work
  after nxc itself was killed at any moment.

Everything after ``launch`` (driver, connect, netem, monitoring, records) is
flavour-blind. :class:`RuntimeBase` gives the optional parts a default.

Host services. Between ``acquire`` and ``launch`` the session starts services of its
own that nodes reach directly (the sync service, :mod:`nxc.sync`). A runtime says
where they must listen (``service_address``: a TCP address its nodes reach, or None
when it forwards a unix socket itself) and how each node reaches one
(``node_endpoint``); ``launch`` finds them in ``ctx.services``, and the private files
each node must receive besides its host key in ``ctx.node_inputs`` (e.g. ``sync``:
the endpoint and the deployment's token), to hand over like the host key. Nodes reach
services over their management channel, never the experiment network: netem never
shapes or cuts it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from nxc.contracts import Deployment, Manifest
from nxc.errors import NxcError, StartError, StateError
from nxc.fsutil import read_state, write_state
from nxc.ledger import Kind, Ledger, Resource
from nxc.project import Project
from nxc.runtime.node import NodeControl
from nxc.runtime.options import FlavourOptions, Option

__all__ = [
    "HostService",
    "PartialStart",
    "Progress",
    "Runtime",
    "RuntimeBase",
    "RuntimeContext",
    "RuntimeState",
]

Progress = Callable[[str], None]
RUNTIME_STATE_VERSION = 1


class PartialStart(StartError):
    """Some nodes are up and others failed (``failed``: node -> why).

    Raised by ``launch`` or ``relaunch``: ``nxc start`` keeps the deployment (the
    nodes that worked stay up) instead of undoing it, and ``nxc start --retry-failed``
    asks the runtime to redeploy only the failed nodes.
    """

    def __init__(self, message: str, failed: Mapping[str, str]) -> None:
        super().__init__(message)
        self.failed = dict(failed)


class RuntimeState:
    """The runtime's own state file (``current/runtime.json``), safe across threads.

    ``{"nxc_runtime": 1, "flavour": NAME, "state": {...}}``: the ``state`` mapping
    belongs to the flavour; it holds what ``nodes()`` needs to rebuild node handles
    and what ``recover()`` needs to find resources again.
    """

    _lock = threading.Lock()

    def __init__(self, path: Path, flavour: str) -> None:
        self.path = path
        self.flavour = flavour

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> dict[str, Any]:
        document = read_state(self.path, "runtime", RUNTIME_STATE_VERSION, ("flavour", "state"))
        if document["flavour"] != self.flavour:
            raise StateError(
                f"{self.path}: state of flavour {document['flavour']!r}, not {self.flavour!r}"
            )
        state = document["state"]
        if not isinstance(state, dict):
            raise StateError(f"{self.path}: corrupt state file (state is not an object)")
        return state

    def save(self, state: dict[str, Any]) -> None:
        with self._lock:
            write_state(
                self.path,
                "runtime",
                RUNTIME_STATE_VERSION,
                {"flavour": self.flavour, "state": state},
            )

    def update(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Load, change and save under one lock (nodes update it from several threads)."""
        with self._lock:
            state = self.load()
            change(state)
            write_state(
                self.path,
                "runtime",
                RUNTIME_STATE_VERSION,
                {"flavour": self.flavour, "state": state},
            )


@dataclass(frozen=True)
class HostService:
    """A service nxc runs on the host for one deployment, that nodes reach directly.

    ``unix_socket`` always exists (the host side uses it; a runtime may forward it to
    nodes); ``tcp`` is set when the runtime asked for a TCP listener
    (``service_address``).
    """

    name: str
    unix_socket: Path
    tcp: tuple[str, int] | None = None


@dataclass
class RuntimeContext:
    """What ``acquire`` and ``launch`` receive for one start."""

    project: Project
    manifest: Manifest
    options: FlavourOptions
    ledger: Ledger
    runtime_dir: Path  # private, marked as this project's: sockets, logs, inputs
    run_dir: Path  # the run record's directory (kept after stop)
    host_keys: Mapping[str, Path]  # node name -> its private ssh host key
    client_key: Path  # the deployment's private client key (ssh into nodes)
    state: RuntimeState
    ready_timeout: float = 180.0
    progress: Progress = field(default=lambda _msg: None)
    # Free-form facts a runtime wants in the run record (accelerator, job ids…).
    # ``facts["accelerator"]`` goes to the record's host facts; ``facts["grid5000"]``
    # = {"jobs": [{"site", "id", "name"?, "walltime"?, "started_at"?, "nodes"?}],
    # "sites", "clusters", "nodes"} to its Grid'5000 section (schema run-1.json).
    facts: dict[str, Any] = field(default_factory=dict)
    # Times the start's phases: ``launch`` calls ``begin_phase("ready")`` when its
    # nodes are launched and it starts waiting for their ready lines, so that the
    # run record times launching and booting apart.
    begin_phase: Callable[[str], None] = field(default=lambda _name: None)
    # Host services started for this deployment (name -> service), before launch.
    services: dict[str, HostService] = field(default_factory=dict)
    # Private per-node inputs besides the host key: node -> {input name: file (0600)}.
    # A runtime hands each to its node as the agent input ``nxc.<name>=SRC``.
    node_inputs: dict[str, dict[str, Path]] = field(default_factory=dict)

    def say(self, message: str) -> None:
        self.progress(message)


class Runtime(Protocol):
    """One flavour's runtime (see the module documentation for the phases)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    options: ClassVar[tuple[Option, ...]]

    def check_host(self, manifest: Manifest, options: FlavourOptions) -> None: ...

    def service_address(self, ctx: RuntimeContext, deployment: Deployment) -> str | None:
        """Where host services listen on TCP for these nodes (None: unix socket only,
        the runtime forwards it to its nodes)."""
        ...

    def node_endpoint(
        self, ctx: RuntimeContext, deployment: Deployment, node: str, service: HostService
    ) -> tuple[str, int]:
        """The (host, port) at which ``node`` reaches ``service``."""
        ...

    def acquire(self, ctx: RuntimeContext, deployment: Deployment) -> Deployment: ...

    def launch(self, ctx: RuntimeContext, deployment: Deployment) -> None: ...

    def nodes(self, project: Project, deployment: Deployment) -> Mapping[str, NodeControl]: ...

    def release(self, project: Project, progress: Progress) -> list[str]: ...

    def resource_kinds(self) -> Mapping[str, Kind]: ...

    def recover(self, project: Project) -> list[Resource]:
        """Resources this flavour can find from its own state (the ledger may be damaged)."""
        ...

    def health(self, project: Project, deployment: Deployment) -> list[str]:
        """Problems visible now that affect every node (a dead switch…), one line each."""
        ...

    def status(self, project: Project, deployment: Deployment) -> dict[str, str]:
        """Flavour facts for ``nxc status`` (accelerator, job id, remaining walltime…)."""
        ...

    def shell_argv(self, project: Project, deployment: Deployment, node: str) -> list[str] | None:
        """The command opening an interactive shell on ``node`` when it has no ssh
        endpoint (``nxc connect``), or None when the flavour has none."""
        ...

    def relaunch(self, ctx: RuntimeContext, deployment: Deployment) -> None:
        """Redeploy the nodes an earlier ``launch`` reported failed (``PartialStart``)."""
        ...

    def extend(self, project: Project, deployment: Deployment, amount: str) -> list[str]:
        """Ask the platform for more time (``+1:00``); one line per reservation changed."""
        ...


class RuntimeBase:
    """Defaults for the optional parts of :class:`Runtime`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()

    def state(self, project: Project) -> RuntimeState:
        return RuntimeState(project.runtime_file, self.name)

    def service_address(self, ctx: RuntimeContext, deployment: Deployment) -> str | None:
        # Nodes that run on this machine (processes, local containers) reach loopback.
        return "127.0.0.1"

    def node_endpoint(
        self, ctx: RuntimeContext, deployment: Deployment, node: str, service: HostService
    ) -> tuple[str, int]:
        if service.tcp is None:
            raise StateError(
                f"flavour {self.name}: the {service.name} service has no TCP listener "
                "(service_address returned None but node_endpoint is not overridden)"
            )
        return service.tcp

    def release(self, project: Project, progress: Progress) -> list[str]:
        return []

    def resource_kinds(self) -> Mapping[str, Kind]:
        return {}

    def recover(self, project: Project) -> list[Resource]:
        return []

    def health(self, project: Project, deployment: Deployment) -> list[str]:
        return []

    def status(self, project: Project, deployment: Deployment) -> dict[str, str]:
        return {}

    def shell_argv(self, project: Project, deployment: Deployment, node: str) -> list[str] | None:
        return None

    def relaunch(self, ctx: RuntimeContext, deployment: Deployment) -> None:
        raise NxcError(
            f"flavour {self.name} cannot redeploy single nodes: 'nxc stop', then 'nxc start'"
        )

    def extend(self, project: Project, deployment: Deployment, amount: str) -> list[str]:
        raise NxcError(f"flavour {self.name} has no reservation whose time could be extended")
