"""g5k-image: Grid'5000 nodes deployed with each role's image through the API's
deployments endpoint (Kadeploy), then handed their per-node inputs by kexec.

``acquire`` reserves a ``deploy`` job (reused by name), publishes every role's image
tarball and environment description over http(s), deploys them (one deployment per
role and site, in parallel, KO nodes retried up to ``--deploy-retries`` times) with the
deployment's client key, and asks each deployed node — booted in the image's
*bootstrap* mode, with the node's own Grid'5000 host key and Kadeploy's
``authorized_keys`` — for its boot id and NICs. ``launch`` is g5k-ramdisk's handoff:
the node's own inputs (deployment, host key…) in an archive appended to the role's
initrd, ``kexec`` into it, ready = a new boot id and the role's ready line. The
image itself holds no secret: what is private to a node never leaves nxc but over
ssh to that node.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from nxc.contracts import Deployment, Manifest
from nxc.errors import ContractError
from nxc.flavours.g5k_common.options import IMAGE_OPTIONS, RESERVATION_OPTIONS
from nxc.flavours.g5k_common.runtime import G5kRuntimeBase, config_file, deployed_settings
from nxc.flavours.g5k_common.settings import G5kSettings
from nxc.flavours.g5k_common.stdenv import NodeFacts, probe
from nxc.flavours.g5k_image.kadeploy import DEPLOYMENT_KIND, Batch, DeploymentKind, Kadeploy
from nxc.flavours.g5k_image.publish import publish
from nxc.ledger import Kind
from nxc.project import Project
from nxc.runtime.contract import RuntimeContext
from nxc.runtime.options import Option
from nxc.transports.ssh import SshFleet, SshSettings

CONSOLE = "console=tty0 console=ttyS0,115200n8"
BOOTSTRAP_RETRY = 120.0


class G5kImageRuntime(G5kRuntimeBase):
    name: ClassVar[str] = "g5k-image"
    summary: ClassVar[str] = "Grid'5000 nodes deployed with each role's image (Kadeploy)"
    options: ClassVar[tuple[Option, ...]] = RESERVATION_OPTIONS + IMAGE_OPTIONS
    job_types: ClassVar[tuple[str, ...]] = ("deploy",)

    def check_artifacts(self, manifest: Manifest) -> None:
        where = manifest.source or "manifest"
        for role in manifest.roles.values():
            if not role.image or not role.image.get("file"):
                raise ContractError(f"{where}: roles.{role.name}.image is missing")
        manifest.require_boot_artifacts()

    def source_settings(self, project: Project, settings: G5kSettings) -> SshSettings:
        """The deployed image's bootstrap system: root with the deployment's key (given
        to Kadeploy), the node's own host key (kept by Grid'5000's postinstall)."""
        return deployed_settings(project, settings, retry_for=BOOTSTRAP_RETRY)

    def _publish_mode(
        self, ctx: RuntimeContext, settings: G5kSettings
    ) -> tuple[str, Path | None, str | None]:
        mode = str(ctx.options.get("publish", default="auto"))
        public_dir, public_url = settings.public_dir, settings.public_url
        home_public = Path.home() / "public"
        if mode == "auto":
            # ~/public only when talking to Grid'5000 itself (a frontend); a rehearsal
            # or another testbed gets nxc's own server.
            on_g5k = "grid5000.fr" in settings.config.uri and home_public.is_dir()
            mode = "public" if public_dir is not None or on_g5k else "serve"
        if mode == "public":
            public_dir = public_dir or home_public
            if public_url is None:
                site = next(iter(self._sites(ctx)), "rennes")
                public_url = f"http://public.{site}.grid5000.fr/~{settings.config.username}"
        return mode, public_dir, public_url

    def _sites(self, ctx: RuntimeContext) -> list[str]:
        state = ctx.state.load()
        return sorted({ref.split(":")[0] for ref in state.get("jobs", [])})

    def prepare_nodes(
        self,
        ctx: RuntimeContext,
        deployment: Deployment,
        fqdns: Mapping[str, str],
        settings: G5kSettings,
    ) -> tuple[dict[str, NodeFacts], dict[str, str]]:
        state = ctx.state.load()
        roles = sorted({n.role for n in deployment.nodes if n.name in fqdns})
        published = dict(state.get("published") or {})
        missing = [r for r in roles if r not in published]
        if missing:
            mode, public_dir, public_url = self._publish_mode(ctx, settings)
            done = publish(
                ctx,
                dict.fromkeys(missing),
                mode=mode,
                public_dir=public_dir,
                public_url=public_url,
                serve_address=str(ctx.options.get("serve-address", default="127.0.0.1")),
                console=CONSOLE,
            )
            published.update(done.environments)
            state["published"] = published
            ctx.state.save(state)
        batches: dict[tuple[str, str], Batch] = {}
        for node in deployment.nodes:
            if node.name not in fqdns:
                continue
            fqdn = fqdns[node.name]
            site = fqdn.split(".")[1]
            batch = batches.setdefault(
                (site, node.role), Batch(site, node.role, published[node.role], [])
            )
            batch.pending.append(fqdn)
        kadeploy = Kadeploy(
            settings.config.client(),
            ctx.ledger,
            self.name,
            {"config_file": config_file(settings)},
            ctx.say,
        )
        ctx.say(f"deploying {len(fqdns)} nodes with Kadeploy ({len(batches)} deployment(s))")
        kadeploy.deploy(
            list(batches.values()),
            deployment.authorized_keys[0],
            retries=int(ctx.options.get("deploy-retries", default=2)),
            timeout=float(ctx.options.get("deploy-timeout", default=1800.0)),
        )
        names = {fqdn: name for name, fqdn in fqdns.items()}
        failures = {names[f]: why for b in batches.values() for f, why in b.ko.items()}
        ok = [f for b in batches.values() for f in b.ok]
        facts: dict[str, NodeFacts] = {}
        if ok:
            ctx.say(f"connecting to {len(ok)} deployed nodes (bootstrap)")
            with SshFleet(ok, self.source_settings(ctx.project, settings)) as fleet:
                found, errors = probe(fleet, ok, timeout=60)
            facts = {names[f]: v for f, v in found.items()}
            failures.update({names[f]: why for f, why in errors.items()})
        return facts, failures

    def resource_kinds(self) -> Mapping[str, Kind]:
        kinds = dict(super().resource_kinds())
        kinds[DEPLOYMENT_KIND] = DeploymentKind()
        return kinds

    def shared_dir(self, ctx: RuntimeContext) -> Path | None:
        with contextlib.suppress(Exception):
            return super().shared_dir(ctx)
        return None
