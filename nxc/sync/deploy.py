"""The sync service in ``nxc start``: start it, give every node its way in.

Flavour-blind: the runtime says where the service must listen and how each node
reaches it (:meth:`~nxc.runtime.contract.RuntimeBase.service_address`,
:meth:`~nxc.runtime.contract.RuntimeBase.node_endpoint`); each node's ``sync`` input
(endpoint, token, its role's ``start_after`` conditions) goes in
``ctx.node_inputs`` for the runtime to hand over like the host key.
"""

from __future__ import annotations

from pathlib import Path

from nxc.contracts import Deployment, Manifest
from nxc.errors import ContractError
from nxc.fsutil import atomic_write, private_dir
from nxc.runtime.contract import HostService, Runtime, RuntimeContext
from nxc.sync.service import SyncService, start_service

__all__ = ["SYNC_INPUT", "resolve_start_after", "start_for_deployment", "state_file"]

SYNC_INPUT = "sync"


def state_file(current_dir: Path) -> Path:
    return current_dir / "sync.json"


def resolve_start_after(
    manifest: Manifest, deployment: Deployment, role: str
) -> tuple[str, float | None]:
    """A role's ``start_after`` as ``"STATE=COUNT …"`` with role counts resolved for
    this deployment (``count = "server"``: every node of role server now), and the
    longest timeout asked for (None: the default)."""
    spec = manifest.roles[role].start_after
    words = []
    timeouts = []
    for number, condition in enumerate(spec):
        count = condition["count"]
        where = f"roles.{role}.start_after[{number}]"
        if isinstance(count, str):
            if count == "all":
                count = len(deployment.nodes)
            elif count in manifest.roles:
                count = len(deployment.nodes_of(count))
            else:
                known = ", ".join(sorted(manifest.roles))
                raise ContractError(
                    f"{where}: count {count!r} is neither a number, 'all' nor a role "
                    f"(roles: {known})"
                )
        words.append(f"{condition['state']}={int(count)}")
        if condition.get("timeout") is not None:
            timeouts.append(float(condition["timeout"]))
    return " ".join(words), max(timeouts) if timeouts else None


def start_for_deployment(
    ctx: RuntimeContext, runtime: Runtime, deployment: Deployment
) -> SyncService:
    """Start the deployment's sync service; fill ``ctx.services`` and ``ctx.node_inputs``."""
    ctx.say("starting the sync service")
    address = runtime.service_address(ctx, deployment)
    service = start_service(
        ctx.runtime_dir, ctx.run_dir / "sync.log", ctx.ledger, deployment.id, address
    )
    service.save(state_file(ctx.project.current_dir))
    host = HostService("sync", service.unix_socket, service.tcp)
    ctx.services["sync"] = host
    node_dir = private_dir(ctx.runtime_dir / "sync" / "nodes")
    conditions = {
        role: resolve_start_after(ctx.manifest, deployment, role)
        for role in {node.role for node in deployment.nodes}
    }
    for node in deployment.nodes:
        host_name, port = runtime.node_endpoint(ctx, deployment, node.name, host)
        start_after, timeout = conditions[node.role]
        config = service.node_config(node.name, host_name, port, start_after)
        text = config.render()
        if timeout is not None:
            text += f"NXC_START_AFTER_TIMEOUT={int(timeout)}\n"
        path = node_dir / node.name
        atomic_write(path, text, 0o600)
        ctx.node_inputs.setdefault(node.name, {})[SYNC_INPUT] = path
    ctx.facts["sync"] = service.public()
    return service
