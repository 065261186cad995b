"""g5k-ramdisk: Grid'5000 nodes, as reserved (standard environment, root through
``sudo-g5k``), kexec'ed in parallel into their role's kernel + initrd.

``acquire`` reserves (one OAR job per site, reused by name) and asks every node's
standard environment for its boot id, NICs and means of becoming root; ``launch``
pushes kernel + initrd, hands each node its own inputs in an archive appended to the
initrd, kexecs every node at once and waits until each answers as its role with a new
boot id (see :mod:`nxc.flavours.g5k_common.handoff`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from nxc.contracts import Deployment, Manifest
from nxc.flavours.g5k_common.options import PUSH_OPTIONS, RESERVATION_OPTIONS
from nxc.flavours.g5k_common.runtime import G5kRuntimeBase, std_settings
from nxc.flavours.g5k_common.settings import G5kSettings
from nxc.flavours.g5k_common.stdenv import NodeFacts, probe
from nxc.runtime.contract import RuntimeContext
from nxc.runtime.options import Option
from nxc.transports.ssh import SshFleet


class G5kRamdiskRuntime(G5kRuntimeBase):
    name: ClassVar[str] = "g5k-ramdisk"
    summary: ClassVar[str] = "Grid'5000 nodes kexec'ed into each role's kernel + initrd"
    options: ClassVar[tuple[Option, ...]] = RESERVATION_OPTIONS + PUSH_OPTIONS
    job_types: ClassVar[tuple[str, ...]] = ()

    def check_artifacts(self, manifest: Manifest) -> None:
        manifest.require_boot_artifacts()

    def prepare_nodes(
        self,
        ctx: RuntimeContext,
        deployment: Deployment,
        fqdns: Mapping[str, str],
        settings: G5kSettings,
    ) -> tuple[dict[str, NodeFacts], dict[str, str]]:
        names = {fqdn: name for name, fqdn in fqdns.items()}
        ctx.say(f"connecting to {len(names)} nodes (standard environment)")
        wait = float(ctx.options.get("stdenv-timeout", default=180.0))
        with SshFleet(list(names), std_settings(settings, retry_for=wait)) as fleet:
            facts, errors = probe(fleet, list(names), timeout=60)
        by_node = {names[fqdn]: f for fqdn, f in facts.items()}
        failures = {names[fqdn]: why for fqdn, why in errors.items()}
        for name, node_facts in list(by_node.items()):
            problem = _unusable(node_facts)
            if problem:
                failures[name] = problem
                del by_node[name]
        return by_node, failures


def _unusable(facts: NodeFacts) -> str | None:
    try:
        facts.root_prefix  # noqa: B018 - raises when there is no way to become root
    except Exception as exc:  # StartError, one line naming the node
        return str(exc)
    if not facts.kexec:
        return f"{facts.fqdn}: kexec is not installed in the standard environment"
    return None
