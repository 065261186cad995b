"""What both Grid'5000 flavours share: reservation (acquire), the standard
environment's facts, the kexec handoff (launch), retrying failed nodes, the jobs as
ledger resources, ``status`` and ``extend``.

A flavour subclass says which OAR job types it needs and how its nodes get to a
state where the handoff can run (:meth:`G5kRuntimeBase.prepare_nodes`): g5k-ramdisk
takes them as Grid'5000 gives them (standard environment, ``sudo-g5k``) or, in a
``deploy`` job, first deploys a standard environment with the client key; g5k-image
first deploys its image through the API's deployments endpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from nxc.contracts import Deployment, Manifest, Node
from nxc.errors import NxcError, StartError, StateError
from nxc.flavours.g5k_common.handoff import Handoff, Target, kernel_params
from nxc.flavours.g5k_common.node import G5kNode, console_tail
from nxc.flavours.g5k_common.reservation import (
    JOB_KIND,
    JobKind,
    JobNameKind,
    default_job_name,
    reservation_spec,
    reserve_nodes,
    reserver_from,
)
from nxc.flavours.g5k_common.settings import G5kSettings, resolve_settings
from nxc.flavours.g5k_common.stdenv import Nic, NodeFacts
from nxc.g5k import JobRef, JobState, Reserver
from nxc.g5k.errors import G5kError
from nxc.ledger import Kind, Resource
from nxc.project import Project
from nxc.runtime.contract import (
    HostService,
    PartialStart,
    Progress,
    RuntimeBase,
    RuntimeContext,
)
from nxc.runtime.memory import boot_memory_mb
from nxc.runtime.options import FlavourOptions, Option
from nxc.transports.ssh import SshFleet, SshSettings, resolve

STD_CONNECT_TIMEOUT = 15.0
STD_RETRY = 180.0  # nodes just handed out may still be booting their standard environment
ROLE_CONNECT_TIMEOUT = 5.0
DEPLOYED_RETRY = 120.0  # a node Kadeploy reported OK may still be starting its sshd


def config_file(settings: G5kSettings) -> str | None:
    source = settings.config.source
    return source if source and Path(source).is_file() else None


def std_settings(settings: G5kSettings, retry_for: float = STD_RETRY) -> SshSettings:
    """ssh to the standard environment: the user, the nodes' usual host keys."""
    if not settings.known_hosts:
        raise StartError(
            "no known_hosts file lists the nodes' host keys (~/.ssh/known_hosts, "
            "/etc/ssh/ssh_known_hosts): give --known-hosts FILE (or NXC_G5K_KNOWN_HOSTS)"
        )
    return SshSettings(
        settings.known_hosts,
        config=settings.ssh_config or (),
        user=settings.config.username or None,
        connect_timeout=STD_CONNECT_TIMEOUT,
        retry_for=retry_for,
    )


def deployed_settings(
    project: Project, settings: G5kSettings, retry_for: float = DEPLOYED_RETRY
) -> SshSettings:
    """ssh to a system Kadeploy deployed: root with the deployment's key (given to
    Kadeploy), the node's own host key (kept by Grid'5000's postinstall)."""
    return SshSettings(
        settings.known_hosts,
        config=settings.ssh_config or (),
        user="root",
        identity=project.keys_dir / "id_ed25519",
        connect_timeout=STD_CONNECT_TIMEOUT,
        retry_for=retry_for,
    )


def deploy_job(jobs: Sequence[JobState]) -> bool:
    """Whether the nodes come in ``deploy`` jobs (root only once an environment is
    deployed on them) rather than as Grid'5000 gives them (root through ``sudo-g5k``).
    From the jobs' own types: a job reused by name or attached with --job says which."""
    deploy = sorted(str(j.ref) for j in jobs if "deploy" in j.types)
    other = sorted(str(j.ref) for j in jobs if "deploy" not in j.types)
    if deploy and other:
        raise StartError(
            f"job(s) {', '.join(deploy)} are deploy jobs and {', '.join(other)} are not: "
            "use jobs of the same kind on every site"
        )
    return bool(deploy)


def role_settings(project: Project, ssh_config: Sequence[str]) -> SshSettings:
    """ssh to nodes running their role: root, the deployment's key and host keys."""
    return SshSettings(
        project.keys_dir / "known_hosts",
        config=[Path(p) for p in ssh_config] or (),
        user="root",
        identity=project.keys_dir / "id_ed25519",
        connect_timeout=ROLE_CONNECT_TIMEOUT,
    )


def facts_to_state(facts: NodeFacts) -> dict[str, Any]:
    data = dataclasses.asdict(facts)
    data["nics"] = {k: dataclasses.asdict(v) for k, v in facts.nics.items()}
    return data


def facts_from_state(data: Mapping[str, Any]) -> NodeFacts:
    values = dict(data)
    values["nics"] = {
        k: Nic(v["device"], v["mac"], tuple(v["addresses"])) for k, v in data["nics"].items()
    }
    return NodeFacts(**values)


class G5kRuntimeBase(RuntimeBase):
    """The shared phases (see the module documentation)."""

    job_types: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[tuple[Option, ...]] = ()

    # -- hooks of the flavours --------------------------------------------------------

    def check_artifacts(self, manifest: Manifest) -> None:
        raise NotImplementedError

    def prepare_nodes(
        self,
        ctx: RuntimeContext,
        deployment: Deployment,
        fqdns: Mapping[str, str],
        settings: G5kSettings,
    ) -> tuple[dict[str, NodeFacts], dict[str, str]]:
        """Bring nodes to a system the handoff starts from; per node its facts or why not."""
        raise NotImplementedError

    def source_settings(self, project: Project, settings: G5kSettings) -> SshSettings:
        """ssh to the system the handoff starts from (the standard environment)."""
        return std_settings(settings)

    def boot_files(self, ctx: RuntimeContext, node: Node) -> tuple[Path, Path, str]:
        """The role's kernel, initrd and kernel parameters for ``node``."""
        role = ctx.manifest.roles[node.role]
        assert role.kernel is not None and role.initrd is not None
        return role.kernel, role.initrd, role.kernel_params

    # -- check_host / acquire -----------------------------------------------------------

    def check_host(self, manifest: Manifest, options: FlavourOptions) -> None:
        resolve_settings(options)
        self.check_artifacts(manifest)

    def acquire(self, ctx: RuntimeContext, deployment: Deployment) -> Deployment:
        settings = resolve_settings(ctx.options)
        config = settings.config
        reserver = Reserver(config.client(), config.username)
        name = ctx.options.get("job-name") or default_job_name(
            ctx.manifest.composition, ctx.project.root
        )
        spec = reservation_spec(
            deployment, ctx.options, str(name), settings.default_site, self.job_types
        )
        state: dict[str, Any] = {
            "settings": settings.to_state(),
            "job_name": spec.name,
            "jobs": [],
            "nodes": {},
            "runtime_dir": str(ctx.runtime_dir),
            "timings": {},
        }
        ctx.state.save(state)
        began = time.monotonic()
        reserved = reserve_nodes(
            reserver,
            spec,
            deployment,
            ledger=ctx.ledger,
            owner=self.name,
            keep=bool(ctx.options.get("keep-job", default=False)),
            attach=list(ctx.options.get("job", default=[]) or []),
            timeout=float(ctx.options.get("job-timeout", default=3600.0)),
            say=ctx.say,
            ledger_extra={"config_file": config_file(settings)},
        )
        state["jobs"] = [str(st.ref) for st in reserved.jobs]
        state["deploy_job"] = deploy_job(reserved.jobs)
        state["timings"]["reserve"] = time.monotonic() - began
        state["nodes"] = {
            n.name: {"fqdn": reserved.fqdn[n.name], "role": n.role, "state": "reserved"}
            for n in deployment.nodes
        }
        ctx.facts["jobs"] = state["jobs"]
        ctx.state.save(state)
        ctx.say(f"nodes: {', '.join(reserved.fqdn[n.name] for n in deployment.nodes)}")
        self._write_ssh_config(ctx.project, settings)

        began = time.monotonic()
        facts, errors = self.prepare_nodes(ctx, reserved.deployment, reserved.fqdn, settings)
        # prepare_nodes may have saved its own facts (g5k-image: what it published)
        keep = ("nodes", "jobs", "timings", "deploy_job")
        state = {**ctx.state.load(), **{k: state[k] for k in keep}}
        state["timings"]["prepare"] = time.monotonic() - began
        if not facts:
            raise StartError(_failure_text("no node could be prepared", reserved.fqdn, errors))
        resolver = std_settings(settings, retry_for=0)
        reach: dict[str, Any] = {"listen": [], "nodes": {}, "jump": None}
        nodes = []
        for node in reserved.deployment.nodes:
            fqdn = reserved.fqdn[node.name]
            entry = state["nodes"][node.name]
            # Every node gets its endpoint (and so its known_hosts line), failed ones too:
            # --retry-failed reaches them as their role with the same keys.
            where = resolve(fqdn, resolver)
            node = replace(
                node, ssh_host=where.host, ssh_port=where.port if where.port != 22 else None
            )
            node_facts = facts.get(node.name)
            if node_facts is None:
                entry.update(state="failed", error=errors.get(node.name, "not prepared"))
                nodes.append(node)
                continue
            try:
                nic = node_facts.experiment_nic(ctx.options.get("experiment-nic"))
            except StartError as exc:
                entry.update(state="failed", error=str(exc))
                nodes.append(node)
                continue
            _note_reach(reach, node.name, where.host, where.jump, node_facts)
            entry.update(state="prepared", facts=facts_to_state(node_facts), nic=nic.device)
            nodes.append(replace(node, mac=nic.mac))
        state["reach"] = reach
        ctx.state.save(state)
        return replace(reserved.deployment, nodes=nodes)

    def _write_ssh_config(self, project: Project, settings: G5kSettings) -> None:
        """``current/ssh_config`` for ``nxc connect``: the user's config, included."""
        lines = [f"Include {p.resolve()}" for p in settings.ssh_config]
        path = project.current_dir / "ssh_config"
        path.write_text("".join(f"{line}\n" for line in lines) or "# no ssh config\n")
        path.chmod(0o600)

    # -- host services (the sync service) -------------------------------------------------

    def service_address(self, ctx: RuntimeContext, deployment: Deployment) -> str | None:
        """Where nxc's services listen for the nodes: this machine's address on its route
        to them (the source of its ssh connections; on the rehearsal testbed, loopback,
        which QEMU's user network forwards the nodes to)."""
        reach = ctx.state.load().get("reach") or {}
        if reach.get("jump"):
            roles = sorted(
                {n.role for n in deployment.nodes if ctx.manifest.roles[n.role].start_after}
            )
            if roles:
                raise StartError(
                    f"role(s) {', '.join(roles)} have start_after, but the nodes are reached "
                    f"through the jump host {reach['jump']} and cannot reach the sync service "
                    "on this machine: run nxc on the site's frontend"
                )
            ctx.say(
                f"the nodes are reached through {reach['jump']}: they cannot reach the sync "
                "service on this machine (run nxc on the site's frontend to use it)"
            )
            return "127.0.0.1"  # the host side only; the nodes get no sync input
        listen = list(reach.get("listen") or [])
        if not listen:
            raise StartError(
                "cannot tell this machine's address on its route to the nodes "
                "(needed by the nodes to reach the sync service)"
            )
        # One address on the route to every node; nodes behind several routes (multi-homed
        # frontend): every address (the service's ACL password still guards it).
        return listen[0] if len(listen) == 1 else "0.0.0.0"

    def node_endpoint(
        self, ctx: RuntimeContext, deployment: Deployment, node: str, service: HostService
    ) -> tuple[str, int]:
        if service.tcp is None:
            raise StateError(f"the {service.name} service has no TCP listener")
        reach = ctx.state.load().get("reach") or {}
        seen = reach.get("nodes") or {}
        # a node that failed before its probe: where the others see this machine
        address = seen.get(node) or next(iter(seen.values()), "") or service.tcp[0]
        return address, service.tcp[1]

    def _private_inputs(self, ctx: RuntimeContext, state: Mapping[str, Any]) -> dict[str, Any]:
        """Per node, the private inputs to hand over besides the host key (``sync``)."""
        if (state.get("reach") or {}).get("jump"):
            return {}  # the nodes cannot reach nxc's services (see service_address)
        return {name: dict(files) for name, files in ctx.node_inputs.items()}

    # -- launch / relaunch ------------------------------------------------------------------

    def launch(self, ctx: RuntimeContext, deployment: Deployment) -> None:
        state = ctx.state.load()
        todo = [n.name for n in deployment.nodes if state["nodes"][n.name]["state"] == "prepared"]
        self._handoff(ctx, deployment, state, todo)

    def relaunch(self, ctx: RuntimeContext, deployment: Deployment) -> None:
        state = ctx.state.load()
        failed = [n for n, e in state["nodes"].items() if e["state"] != "ready"]
        if not failed:
            ctx.say("no failed node to redeploy")
            return
        ctx.say(f"redeploying {len(failed)} failed node(s): {', '.join(failed)}")
        settings = self._settings_from_state(state)
        fqdns = {name: state["nodes"][name]["fqdn"] for name in failed}
        subset = replace(deployment, nodes=[n for n in deployment.nodes if n.name in fqdns])
        facts, errors = self.prepare_nodes(ctx, subset, fqdns, settings)
        state = {**ctx.state.load(), "nodes": state["nodes"]}
        nodes = []
        for node in deployment.nodes:
            entry = state["nodes"][node.name]
            if node.name not in fqdns:
                nodes.append(node)
                continue
            if node.name not in facts:
                entry.update(state="failed", error=errors.get(node.name, "not prepared"))
                nodes.append(node)
                continue
            nic = facts[node.name].experiment_nic(ctx.options.get("experiment-nic"))
            entry.update(state="prepared", facts=facts_to_state(facts[node.name]), error=None)
            if facts[node.name].client and "reach" in state:
                state["reach"]["nodes"][node.name] = facts[node.name].client
            nodes.append(replace(node, mac=nic.mac))
        ctx.state.save(state)
        deployment = replace(deployment, nodes=nodes)
        from nxc.fsutil import atomic_write

        atomic_write(ctx.project.deployment_file, deployment.to_json(), 0o600)
        todo = [name for name in failed if state["nodes"][name]["state"] == "prepared"]
        self._handoff(ctx, deployment, state, todo, retried=failed)

    def _handoff(
        self,
        ctx: RuntimeContext,
        deployment: Deployment,
        state: dict[str, Any],
        todo: Sequence[str],
        retried: Sequence[str] | None = None,
    ) -> None:
        settings = self._settings_from_state(state)
        consoles = Path(state["settings"]["consoles"]) if state["settings"]["consoles"] else None
        targets = []
        for name in todo:
            node = deployment.node(name)
            entry = state["nodes"][name]
            facts = facts_from_state(entry["facts"])
            kernel, initrd, params = self.boot_files(ctx, node)
            needed = boot_memory_mb(kernel, initrd, ctx.manifest.image_kind)
            if facts.mem_kb and facts.mem_kb // 1024 < needed:
                entry.update(
                    state="failed",
                    error=f"has {facts.mem_kb // 1024} MiB of memory, role {node.role}'s image "
                    f"needs about {needed} MiB to boot (pick nodes with more: --properties)",
                )
                continue
            targets.append(
                Target(node, entry["fqdn"], facts, kernel, initrd,
                       kernel_params(params, node, facts.cmdline))
            )  # fmt: skip
        site_net = {t.name: t.facts.site_net() for t in targets}
        std = SshFleet([t.fqdn for t in targets], self.source_settings(ctx.project, settings))
        role = SshFleet(
            [t.fqdn for t in targets], role_settings(ctx.project, state["settings"]["ssh_config"])
        )
        handoff = Handoff(
            deployment,
            targets,
            std,
            role,
            ctx.host_keys,
            say=ctx.say,
            shared_dir=self.shared_dir(ctx),
            work_dir=ctx.runtime_dir,
            private=self._private_inputs(ctx, state),
            console=lambda fqdn: console_tail(consoles, fqdn),
        )
        try:
            began = time.monotonic()
            self.transfer(ctx, handoff)
            ctx.say(f"kexec on {len(handoff.alive())} nodes")
            handoff.load(site_net)
            handoff.execute()
            kexec_done = time.monotonic()
            state["timings"]["push"] = handoff.timings.get("push", 0.0)
            state["timings"]["kexec"] = kexec_done - began - state["timings"]["push"]
            handoff.wait_ready(ctx.ready_timeout)
            state["timings"]["ready"] = handoff.timings.get("ready", 0.0)
        finally:
            std.close()
            role.close()
            for target in targets:
                entry = state["nodes"][target.name]
                if target.error is None and target.boot_id:
                    entry.update(state="ready", boot_id=target.boot_id, error=None)
                else:
                    entry.update(state="failed", error=target.error or "interrupted")
            ctx.state.save(state)
            ctx.facts["timings"] = dict(state["timings"])
        self._conclude(state, retried)

    def transfer(self, ctx: RuntimeContext, handoff: Handoff) -> None:
        """Get kernel + initrd onto the nodes (g5k-image has them there already)."""
        handoff.stage()
        handoff.push()

    def shared_dir(self, ctx: RuntimeContext) -> Path | None:
        if ctx.options.get("push", default="sftp") != "shared":
            return None
        given = ctx.options.get("shared-dir")
        return Path(str(given)).expanduser() if given else Path.home() / ".cache/nxc/g5k"

    def _conclude(self, state: dict[str, Any], retried: Sequence[str] | None) -> None:
        nodes = state["nodes"]
        failed = {
            n: e.get("error") or e["state"] for n, e in nodes.items() if e["state"] != "ready"
        }
        if not failed:
            return
        ready = [n for n, e in nodes.items() if e["state"] == "ready"]
        text = _failure_text(
            f"{len(failed)} of {len(nodes)} nodes failed",
            {n: nodes[n]["fqdn"] for n in nodes},
            failed,
        )
        if ready:
            redo = " ".join(failed)
            raise PartialStart(
                f"{text}\n{len(ready)} node(s) are up ({', '.join(ready)}); fix the cause, then "
                f"'nxc start --retry-failed' redeploys {redo} only (or 'nxc stop')",
                failed,
            )
        raise StartError(text)

    # -- after launch ------------------------------------------------------------------------

    def _settings_from_state(self, state: Mapping[str, Any]) -> G5kSettings:
        saved = state["settings"]
        options = FlavourOptions(
            self.name,
            {
                "g5k-config": {"": saved.get("config_file")} if saved.get("config_file") else {},
                "ssh-config": {"": saved["ssh_config"][0]} if saved.get("ssh_config") else {},
                "known-hosts": {"": saved["known_hosts"][0]} if saved.get("known_hosts") else {},
                "consoles": {"": saved["consoles"]} if saved.get("consoles") else {},
            },
        )
        return resolve_settings(options)

    def nodes(self, project: Project, deployment: Deployment) -> dict[str, G5kNode]:
        runtime = self.state(project)
        if not runtime.exists():
            raise StateError("no running deployment (run 'nxc start' first)")
        state = runtime.load()
        try:
            settings = role_settings(project, state["settings"]["ssh_config"])
            consoles = state["settings"].get("consoles")
            return {
                name: G5kNode(
                    name,
                    entry["fqdn"],
                    self.name,
                    settings,
                    ready=entry["state"] == "ready",
                    boot_id=entry.get("boot_id"),
                    consoles=Path(consoles) if consoles else None,
                )
                for name, entry in state["nodes"].items()
            }
        except (KeyError, TypeError) as exc:
            raise StateError(f"{runtime.path}: corrupt state file ({exc!r})") from None

    def resource_kinds(self) -> Mapping[str, Kind]:
        return {JOB_KIND: JobKind(), JobNameKind.name: JobNameKind()}

    def recover(self, project: Project) -> list[Resource]:
        with contextlib.suppress(StateError, KeyError, TypeError):
            state = self.state(project).load()
            extra = {"config_file": state["settings"].get("config_file")}
            return [
                Resource(JOB_KIND, ref, f"OAR job {ref}", None, dict(extra), self.name)
                for ref in state["jobs"]
            ]
        return []

    def _jobs(self, project: Project) -> tuple[list[JobRef], Reserver]:
        state = self.state(project).load()
        refs = [JobRef.parse(r) for r in state.get("jobs", [])]
        return refs, reserver_from(state["settings"])

    def status(self, project: Project, deployment: Deployment) -> dict[str, str]:
        try:
            refs, reserver = self._jobs(project)
            if not refs:
                return {}
            states = reserver.status(refs)
        except (NxcError, KeyError, TypeError) as exc:
            return {"jobs": f"unknown ({str(exc).splitlines()[0]})"}
        now = reserver.now()
        return {"jobs": "; ".join(st.summary(now) for st in states)}

    def health(self, project: Project, deployment: Deployment) -> list[str]:
        with contextlib.suppress(StateError, KeyError, TypeError):
            state = self.state(project).load()
            failed = [n for n, e in state["nodes"].items() if e["state"] != "ready"]
            if failed:
                return [
                    f"node(s) {', '.join(failed)} failed to deploy "
                    "(nxc start --retry-failed redeploys them)"
                ]
        return []

    def extend(self, project: Project, deployment: Deployment, amount: str) -> list[str]:
        refs, reserver = self._jobs(project)
        if not refs:
            raise NxcError("this deployment has no OAR job")
        lines = []
        for ref in refs:
            try:
                after = reserver.extend(ref, amount)
            except G5kError as exc:
                raise NxcError(str(exc)) from None
            lines.append(f"job {after.summary(reserver.now())} (asked {amount})")
        return lines

    def release(self, project: Project, progress: Progress) -> list[str]:
        return []


def _note_reach(
    reach: dict[str, Any], name: str, host: str, jump: str | None, facts: NodeFacts
) -> None:
    """Record how ``name`` and this machine reach each other (``service_address``)."""
    if jump:
        reach["jump"] = jump
        return
    source = _source_address(host)
    if source and source not in reach["listen"]:
        reach["listen"].append(source)
    if facts.client:
        reach["nodes"][name] = facts.client


def _source_address(host: str) -> str | None:
    """This machine's address on its route to ``host`` (no packet is sent)."""
    import socket

    try:
        family, _kind, _proto, _name, address = socket.getaddrinfo(host, 22, socket.AF_INET)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(address)
            return str(probe.getsockname()[0])
    except OSError:
        return None


def _failure_text(head: str, fqdns: Mapping[str, str], failed: Mapping[str, str]) -> str:
    lines = [f"{head}: {', '.join(failed)}"]
    for name, why in failed.items():
        fqdn = fqdns.get(name)
        where = f" ({fqdn})" if fqdn else ""
        if fqdn:
            why = why.removeprefix(f"{fqdn}: ")
        lines.append(f"{name}{where}: {why}")
    return "\n".join(lines)
