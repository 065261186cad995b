"""g5k-ramdisk: Grid'5000 nodes, as reserved, kexec'ed in parallel into their role's
kernel + initrd.

``acquire`` reserves (one OAR job per site, reused by name) and brings every node to
a standard environment where nxc is root: in a normal job the one Grid'5000 gives
(as the user, root through ``sudo-g5k``); in a ``deploy`` job (``--job-type deploy``,
or a job reused or attached that has that type) there is no ``sudo-g5k``, so a
standard environment (``--deploy-env``, default ``debian12-min``) is first deployed
through the API's deployments endpoint with the deployment's client key, KO nodes
retried as g5k-image does, and nxc connects as root. Then it asks every node for its
boot id, NICs and means of becoming root; ``launch`` pushes kernel + initrd, hands
each node its own inputs in an archive appended to the initrd, kexecs every node at
once and waits until each answers as its role with a new boot id (see
:mod:`nxc.flavours.g5k_common.handoff`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from nxc.contracts import Deployment, Manifest
from nxc.flavours.g5k_common.options import (
    DEFAULT_STDENV,
    PUSH_OPTIONS,
    RESERVATION_OPTIONS,
    STDENV_OPTIONS,
)
from nxc.flavours.g5k_common.runtime import (
    G5kRuntimeBase,
    config_file,
    deployed_settings,
    std_settings,
)
from nxc.flavours.g5k_common.settings import G5kSettings
from nxc.flavours.g5k_common.stdenv import NodeFacts, probe
from nxc.flavours.g5k_image.kadeploy import DEPLOYMENT_KIND, Batch, DeploymentKind, Kadeploy
from nxc.ledger import Kind
from nxc.project import Project
from nxc.runtime.contract import RuntimeContext
from nxc.runtime.options import Option
from nxc.transports.ssh import SshFleet, SshSettings


class G5kRamdiskRuntime(G5kRuntimeBase):
    name: ClassVar[str] = "g5k-ramdisk"
    summary: ClassVar[str] = "Grid'5000 nodes kexec'ed into each role's kernel + initrd"
    options: ClassVar[tuple[Option, ...]] = RESERVATION_OPTIONS + PUSH_OPTIONS + STDENV_OPTIONS
    job_types: ClassVar[tuple[str, ...]] = ()

    def check_artifacts(self, manifest: Manifest) -> None:
        manifest.require_boot_artifacts()

    def _in_deploy_job(self, project: Project) -> bool:
        return bool(self.state(project).load().get("deploy_job"))

    def source_settings(self, project: Project, settings: G5kSettings) -> SshSettings:
        if self._in_deploy_job(project):
            return deployed_settings(project, settings)
        return std_settings(settings)

    def prepare_nodes(
        self,
        ctx: RuntimeContext,
        deployment: Deployment,
        fqdns: Mapping[str, str],
        settings: G5kSettings,
    ) -> tuple[dict[str, NodeFacts], dict[str, str]]:
        names = {fqdn: name for name, fqdn in fqdns.items()}
        failures: dict[str, str] = {}
        if self._in_deploy_job(ctx.project):
            reached, failures = self._deploy_stdenv(ctx, deployment, fqdns, settings)
            ctx.say(f"connecting to {len(reached)} nodes as root (deployed environment)")
            fleet = SshFleet(reached, deployed_settings(ctx.project, settings))
        else:
            reached = list(names)
            ctx.say(f"connecting to {len(names)} nodes (standard environment)")
            wait = float(ctx.options.get("stdenv-timeout", default=180.0))
            fleet = SshFleet(reached, std_settings(settings, retry_for=wait))
        facts: dict[str, NodeFacts] = {}
        errors: dict[str, str] = {}
        if reached:
            with fleet:
                facts, errors = probe(fleet, reached, timeout=60)
        by_node = {names[fqdn]: f for fqdn, f in facts.items()}
        failures.update({names[fqdn]: why for fqdn, why in errors.items()})
        for name, node_facts in list(by_node.items()):
            problem = _unusable(node_facts)
            if problem:
                failures[name] = problem
                del by_node[name]
        return by_node, failures

    def _deploy_stdenv(
        self,
        ctx: RuntimeContext,
        deployment: Deployment,
        fqdns: Mapping[str, str],
        settings: G5kSettings,
    ) -> tuple[list[str], dict[str, str]]:
        """Deploy the standard environment with the client key: the FQDNs deployed, and
        per node name why not."""
        environment = str(ctx.options.get("deploy-env", default=DEFAULT_STDENV))
        batches = stdenv_batches(fqdns, environment)
        kadeploy = Kadeploy(
            settings.config.client(),
            ctx.ledger,
            self.name,
            {"config_file": config_file(settings)},
            ctx.say,
        )
        ctx.say(
            f"deploy job: deploying {environment} on {len(fqdns)} nodes with Kadeploy "
            f"({len(batches)} deployment(s)), then root with the deployment's key"
        )
        kadeploy.deploy(
            batches,
            deployment.authorized_keys[0],
            retries=int(ctx.options.get("deploy-retries", default=2)),
            timeout=float(ctx.options.get("deploy-timeout", default=1800.0)),
        )
        return stdenv_outcome(batches, fqdns, environment)

    def resource_kinds(self) -> Mapping[str, Kind]:
        kinds = dict(super().resource_kinds())
        kinds[DEPLOYMENT_KIND] = DeploymentKind()
        return kinds


def stdenv_batches(fqdns: Mapping[str, str], environment: str) -> list[Batch]:
    """One deployment of ``environment`` per site (one environment for every role)."""
    by_site: dict[str, Batch] = {}
    for fqdn in fqdns.values():
        site = fqdn.split(".")[1] if fqdn.count(".") >= 1 else ""
        batch = by_site.setdefault(
            site, Batch(site, "", environment, [], label=f"{environment} on {site}")
        )
        batch.pending.append(fqdn)
    return list(by_site.values())


def stdenv_outcome(
    batches: Sequence[Batch], fqdns: Mapping[str, str], environment: str
) -> tuple[list[str], dict[str, str]]:
    """The FQDNs deployed, and per node name why its deployment failed."""
    names = {fqdn: name for name, fqdn in fqdns.items()}
    ok = [fqdn for batch in batches for fqdn in batch.ok]
    failed = {
        names[fqdn]: f"{fqdn}: deploying {environment} (deploy job) failed: {why}"
        for batch in batches
        for fqdn, why in batch.ko.items()
    }
    return ok, failed


def _unusable(facts: NodeFacts) -> str | None:
    try:
        facts.root_prefix  # noqa: B018 - raises when there is no way to become root
    except Exception as exc:  # StartError, one line naming the node
        return str(exc)
    if not facts.kexec:
        where = "the deployed environment" if facts.uid == 0 else "the standard environment"
        return f"{facts.fqdn}: kexec is not installed in {where} (kexec-tools)"
    return None
