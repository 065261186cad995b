"""The running deployment of a project, as every command after ``nxc start`` sees it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nxc.contracts import Deployment, Manifest
from nxc.errors import NxcError, StateError
from nxc.fsutil import read_state
from nxc.project import Project
from nxc.runs import RunRecord
from nxc.runtime import registry
from nxc.runtime.contract import Runtime
from nxc.runtime.node import NodeControl

if TYPE_CHECKING:
    from nxc.sync.service import SyncService

__all__ = ["CURRENT_VERSION", "RunningDeployment", "running"]

CURRENT_VERSION = 1


@dataclass(frozen=True)
class RunningDeployment:
    project: Project
    deployment: Deployment
    manifest: Manifest
    run: RunRecord

    @property
    def run_dir(self) -> Path:
        return self.run.directory

    @property
    def runtime(self) -> Runtime:
        return registry.load(self.deployment.flavour)

    @property
    def client_key(self) -> Path:
        return self.project.keys_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.project.keys_dir / "known_hosts"

    def sync(self) -> SyncService:
        """The deployment's sync service (a one-line error if it has none)."""
        from nxc.sync.deploy import state_file
        from nxc.sync.service import load_service

        return load_service(state_file(self.project.current_dir))

    def nodes(self) -> dict[str, NodeControl]:
        return dict(self.runtime.nodes(self.project, self.deployment))

    def health(self) -> list[str]:
        """Problems that affect the whole deployment now (one line each)."""
        problems = list(self.runtime.health(self.project, self.deployment))
        try:
            service = self.sync()
        except StateError:
            return problems
        if not service.is_running():
            problems.append(
                f"the sync service (redis-server, pid {service.pid}) is not running: nodes "
                "cannot meet at barriers (nxc stop, then start again)"
            )
        return problems

    @property
    def ssh_config(self) -> Path:
        """An ssh config the runtime wrote for this deployment (e.g. one that includes
        the user's, for ProxyJump to Grid'5000 nodes); absent for local flavours."""
        return self.project.current_dir / "ssh_config"

    def ssh_argv(self, node_name: str) -> list[str]:
        node = self.deployment.node(node_name)
        if node.ssh_host is None:
            raise NxcError(f"{node_name}: the deployment has no ssh endpoint for it")
        config = ["-F", str(self.ssh_config)] if self.ssh_config.is_file() else []
        return [
            "ssh",
            *config,
            "-i", str(self.client_key),
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "LogLevel=ERROR",
            "-p", str(node.ssh_port or 22),
            f"root@{node.ssh_host}",
        ]  # fmt: skip


def running(project: Project) -> RunningDeployment:
    """The deployment started in ``project``, or a one-line error if there is none."""
    if not project.deployment_file.exists():
        raise StateError(f"no running deployment in {project.root} (run 'nxc start' first)")
    deployment = Deployment.load(project.deployment_file)
    meta = read_state(project.run_file, "current", CURRENT_VERSION, ("manifest", "run_dir"))
    manifest = Manifest.load(Path(meta["manifest"]))
    return RunningDeployment(project, deployment, manifest, RunRecord(Path(meta["run_dir"])))
