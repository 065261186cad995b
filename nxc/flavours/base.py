"""The one interface every flavour's runtime implements."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nxc.contracts import Deployment, Manifest
from nxc.project import Project
from nxc.runtime.transport import NodeControl

FLAVOURS = ("vm-ramdisk", "docker", "g5k-ramdisk", "g5k-image")
DEFAULT_FLAVOUR = "vm-ramdisk"


@dataclass
class StartOptions:
    """Run-time choices the user makes on the command line."""

    ready_timeout: float = 180.0
    accel: str = "auto"  # auto | kvm | tcg (VM flavours)
    memory_mb: dict[str, int] = field(default_factory=dict)  # role ("" = all) -> MiB
    cpus: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class Runtime(Protocol):
    """Launches a deployment's nodes and gives the driver a handle on each.

    Every resource a runtime creates goes into ``project.ledger`` *before* it can
    leak, so ``stop`` (and Ctrl-C during ``start``) leave nothing behind.
    """

    flavour: str

    def check_host(self) -> None:
        """Raise a one-line error if this machine lacks what the flavour needs."""
        ...

    def prepare(self, deployment: Deployment, options: StartOptions) -> Deployment:
        """Fill in what only the runtime knows (e.g. ssh endpoints) before nodes see it."""
        ...

    def start(
        self,
        project: Project,
        manifest: Manifest,
        deployment: Deployment,
        host_keys: dict[str, Path],
        options: StartOptions,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        """Launch every node in parallel and return once all report ready."""
        ...

    def nodes(self, project: Project) -> Mapping[str, NodeControl]:
        """Handles on the running nodes, from the state a previous ``start`` left."""
        ...


def get_runtime(flavour: str) -> Runtime:
    from nxc.errors import NxcError

    if flavour == "vm-ramdisk":
        from nxc.flavours.vm_ramdisk.runtime import VmRamdiskRuntime

        return VmRamdiskRuntime()
    if flavour in FLAVOURS:
        raise NxcError(
            f"flavour '{flavour}' cannot be started by this version of nxc yet "
            "(available: vm-ramdisk)"
        )
    raise NxcError(f"unknown flavour '{flavour}' (known: {', '.join(FLAVOURS)})")
