"""docker: one container per node on a per-deployment Docker network.

Phases (see :mod:`nxc.runtime.contract`): ``acquire`` chooses the daemon (the user's,
or a private one it starts in its own network namespace), makes each role's image
available (loaded once per store path) and creates the deployment's network with its
IPv4 and IPv6 prefixes; ``launch`` writes each node's inputs, creates and starts every
container in parallel and waits for each agent's ready line in the container's log.

Each container gets its node's addresses, MAC and name on the network, its inputs
read-only at ``/nxc-input`` (``deployment.json``, ``agent.env``, and ``hostkey``,
readable by the container's root only), tmpfs ``/run``, ``/run/lock`` and ``/tmp``, a
TTY as console, ``NET_ADMIN`` for ``ip``/``tc`` and the memory and CPU limits of its
role. NixOS roles run systemd as PID 1: privileged by default (see flavours/docker).
"""

from __future__ import annotations

import contextlib
import ipaddress
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from nxc.contracts import Deployment, Manifest
from nxc.contracts.deployment import Node
from nxc.errors import NxcError, StartError, StateError
from nxc.flavours.docker import daemon as daemons
from nxc.flavours.docker.daemon import Daemon
from nxc.flavours.docker.images import ImageSpec, ensure_image, has_image, image_ref
from nxc.flavours.docker.kinds import KINDS
from nxc.flavours.docker.management import Management, create_network, start_relay
from nxc.flavours.docker.node import (
    DOCKER_FIRST_NIC,
    EXEC_PATH,
    SCRATCH_TMPFS,
    DockerNode,
    wait_all_ready,
)
from nxc.fsutil import atomic_write, private_dir
from nxc.ledger import Kind, Resource, process_start_time
from nxc.parallel import each, fan_out
from nxc.project import Project
from nxc.runtime import node_inputs
from nxc.runtime.contract import (
    HostService,
    Progress,
    RuntimeBase,
    RuntimeContext,
    RuntimeState,
)
from nxc.runtime.options import FlavourOptions, Option
from nxc.wait import Attempt, PollExpired, poll

__all__ = ["DockerRuntime"]

FLAVOUR = "docker"
INPUT_DIR = "/nxc-input"
# systemd as PID 1 wants /run and /run/lock as tmpfs before it starts; the selftest
# init keeps its state (and the boot id) in /run, fresh at every start.
TMPFS = {
    "/run": "rw,nosuid,nodev,mode=755",
    "/run/lock": "rw,nosuid,nodev,noexec,mode=1777",
    "/tmp": "rw,nosuid,nodev,mode=1777",
}


# /tmp without a memory limit of the node: a size that cannot starve the host.
SCRATCH_DEFAULT_MIB = 256


def _tmpfs(memory_mib: int | None) -> dict[str, str]:
    """The tmpfs mounts of a node; /tmp (what disk_full may fill) sized at a quarter of
    its memory, so that filling it leaves the node's programs room to run."""
    mounts = dict(TMPFS)
    size = max(1, memory_mib // 4) if memory_mib else SCRATCH_DEFAULT_MIB
    mounts[SCRATCH_TMPFS] += f",size={size}m"
    return mounts


def project_key(project: Project) -> str:
    """What labels every Docker object of this project (its state directory's name)."""
    return project.state_dir.name


def _labels(project: Project, deployment_id: str, **more: str) -> dict[str, str]:
    return {"nxc.project": project_key(project), "nxc.deployment": deployment_id, **more}


def _with_length(address: str, prefix: str) -> str:
    if not address or "/" in address:
        return address
    return f"{address}/{ipaddress.ip_network(prefix, strict=False).prefixlen}"


def _gateway(prefix: str) -> str:
    """The Docker network's gateway: the last usable address (nodes count from the first)."""
    network = ipaddress.ip_network(prefix, strict=False)
    return str(network.broadcast_address - 1)


def _volume_binds(
    api: Any, specs: list[str], role: str, labels: dict[str, str], record: Any
) -> dict[str, dict[str, str]]:
    """NixOS Compose's extraVolumes ("SRC:DST[:MODE]") as binds; a named volume nxc must
    create is labelled and recorded, an existing one (the user's) is used as it is."""
    from docker.errors import NotFound

    binds: dict[str, dict[str, str]] = {}
    for spec in specs:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
            raise NxcError(f"role {role}: volume {spec!r}: expected SRC:/DEST[:ro|rw]")
        source, target = parts[0], parts[1]
        mode = parts[2] if len(parts) == 3 else "rw"
        if source.startswith("/"):
            if not Path(source).exists():
                raise NxcError(f"role {role}: volume {spec!r}: {source} does not exist")
        else:
            try:
                api.inspect_volume(source)
            except NotFound:
                record("docker-volume", source, f"volume {source}")
                api.create_volume(source, labels=labels)
        binds[source] = {"bind": target, "mode": mode}
    return binds


# What the run record keeps of the daemon (a whitelist: `docker info` also holds the
# host's name, ids, registry settings and paths).
_INFO_FACTS = (
    "ServerVersion", "OperatingSystem", "KernelVersion", "Architecture", "NCPU", "MemTotal",
    "Driver", "CgroupDriver", "CgroupVersion", "DefaultRuntime", "Isolation",
)  # fmt: skip


def _daemon_facts(api: Any) -> dict[str, Any]:
    """The daemon's versions and the facts that change how containers behave."""
    facts: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        version = api.version()
        facts["api_version"] = version.get("ApiVersion")
        facts["git_commit"] = version.get("GitCommit")
    with contextlib.suppress(Exception):
        info = api.info()
        facts.update({key: info[key] for key in _INFO_FACTS if key in info})
        facts["runtimes"] = sorted((info.get("Runtimes") or {}).keys())
    return facts


def _port_bindings(specs: list[str], role: str) -> tuple[list[Any], dict[str, Any]]:
    """NixOS Compose's dockerPorts ("[IP:]HOST:CONTAINER[/PROTO]") for the Docker API."""
    from docker.utils.ports import split_port

    exposed: list[Any] = []
    bindings: dict[str, Any] = {}
    for spec in specs:
        try:
            internal, external = split_port(str(spec))
        except ValueError as exc:
            raise NxcError(f"role {role}: port {spec!r}: {exc}") from None
        for index, port in enumerate(internal):
            number, _, proto = str(port).partition("/")
            exposed.append((int(number), proto or "tcp"))
            bindings[f"{number}/{proto or 'tcp'}"] = external[index] if external else None
    return exposed, bindings


class DockerRuntime(RuntimeBase):
    name: ClassVar[str] = FLAVOUR
    summary: ClassVar[str] = "one container per node on a Docker daemon (yours or a private one)"
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "dockerd",
            "Docker daemon: user (DOCKER_HOST, else the default socket) or private "
            "(nxc starts an isolated one in its own network namespace; needs root).",
            type="choice",
            choices=("user", "private"),
            default="user",
        ),
        Option(
            "memory",
            "Memory in MiB per node, for every role or one (default: the role's resources).",
            type="int",
            per_role=True,
            minimum=6,
            metavar="[ROLE=]MiB",
        ),
        Option(
            "cpus",
            "CPUs per node, for every role or one (default: the role's resources).",
            type="int",
            per_role=True,
            minimum=1,
        ),
        Option(
            "privileged",
            "Privileged containers: auto = NixOS roles only (systemd as PID 1 needs a "
            "writable cgroup); otherwise NET_ADMIN is the only capability added.",
            type="choice",
            choices=("auto", "yes", "no"),
            default="auto",
        ),
    )

    # -- check_host ---------------------------------------------------------------

    def _specs(self, manifest: Manifest, roles: list[str] | None = None) -> dict[str, ImageSpec]:
        base = manifest.source.parent if manifest.source else None
        return {
            name: ImageSpec.from_manifest(name, role.container, base)
            for name, role in manifest.roles.items()
            if roles is None or name in roles
        }

    def check_host(self, manifest: Manifest, options: FlavourOptions) -> None:
        self._specs(manifest)
        try:
            import docker  # noqa: F401
        except ImportError:
            raise NxcError(
                "the docker flavour needs the Docker SDK for Python (pip install docker)"
            ) from None
        if options.get("dockerd", default="user") == "private":
            daemons.check_private_host()
        else:
            daemons.client(daemons.user_daemon().url).ping()

    # -- acquire ------------------------------------------------------------------

    def acquire(self, ctx: RuntimeContext, deployment: Deployment) -> Deployment:
        if ctx.options.get("dockerd", default="user") == "private":
            ctx.say("starting a private dockerd (own network namespace, no iptables)")
            daemon = daemons.start_private(ctx.runtime_dir, ctx.run_dir, deployment.id, ctx.ledger)
        else:
            daemon = daemons.user_daemon()
            ctx.say(f"using the Docker daemon at {daemon.url} ({daemon.source})")
        ctx.facts["dockerd"] = daemon.describe()
        network = f"nxc-{deployment.id}"
        ctx.state.save(
            {
                "daemon": daemon.to_dict(),
                "project": project_key(ctx.project),
                "deployment": deployment.id,
                "network": network,
                "runtime_dir": str(ctx.runtime_dir),
                "run_dir": str(ctx.run_dir),
                "nodes": {},
            }
        )
        api = daemons.client(daemon.url).api
        ctx.facts["docker"] = _daemon_facts(api)
        used = sorted({n.role for n in deployment.nodes})
        self._images(ctx, api, daemon, list(self._specs(ctx.manifest, used).values()))
        bridge = self._network(ctx, api, daemon, deployment, network)
        management = self._management(ctx, api, daemon, deployment)
        ctx.state.update(lambda state: state.update(management=management.to_dict()))
        if bridge is None:
            return deployment
        # The user's daemon runs here: its bridge is in this network namespace, and the
        # containers' sshd is reachable at their addresses.
        nodes = [replace(n, ssh_host=n.ipv4.split("/")[0], ssh_port=22) for n in deployment.nodes]
        return replace(deployment, nodes=nodes)

    def _management(
        self, ctx: RuntimeContext, api: Any, daemon: Daemon, deployment: Deployment
    ) -> Management:
        """The management network (host services reach containers there, see
        :mod:`nxc.flavours.docker.management`)."""
        name = f"nxc-{deployment.id}-mgmt"
        self._record(ctx, daemon)(
            "docker-network", name, "management network", deployment=deployment.id
        )
        management = create_network(
            api, name, _labels(ctx.project, deployment.id), daemon.netns if daemon.private else None
        )
        if not management.relay:
            ctx.say(f"warning: containers get no sync service: {management.why}")
        return management

    # -- host services ----------------------------------------------------------------

    def service_address(self, ctx: RuntimeContext, deployment: Deployment) -> str | None:
        # No TCP listener on the host: a relay on the management network's gateway
        # forwards to the service's unix socket (see flavours/docker/management.py).
        return None

    def node_endpoint(
        self, ctx: RuntimeContext, deployment: Deployment, node: str, service: HostService
    ) -> tuple[str, int]:
        state = ctx.state.load()
        management = Management.from_dict(state["management"])
        if not management.relay:
            return management.gateway, 0  # not handed to the nodes (launch says why)
        relays = state.setdefault("relays", {})
        if service.name not in relays:
            log = ctx.run_dir / f"{service.name}-relay.log"
            port = start_relay(management, service.unix_socket, ctx.ledger, service.name, log)
            ctx.state.update(lambda saved: saved.setdefault("relays", {}).update(
                {service.name: port}
            ))  # fmt: skip
            relays[service.name] = port
        return management.gateway, int(relays[service.name])

    def _record(self, ctx: RuntimeContext, daemon: Daemon) -> Any:
        def record(kind: str, ident: str, description: str, **extra: Any) -> Resource:
            return ctx.ledger.record(
                kind, ident, description, owner=FLAVOUR, url=daemon.url,
                private=daemon.private, **extra,
            )  # fmt: skip

        return record

    def _images(
        self, ctx: RuntimeContext, api: Any, daemon: Daemon, specs: list[ImageSpec]
    ) -> None:
        record = self._record(ctx, daemon)
        distinct = {spec.path: spec for spec in specs}.values()
        missing = [spec for spec in distinct if not has_image(api, image_ref(spec))]
        if not missing:
            ctx.say("images already loaded")
            return
        ctx.say(f"loading {len(missing)} image(s) into the Docker daemon")

        def load(spec: ImageSpec) -> None:
            ref = image_ref(spec)
            # The user's daemon keeps it for the next start; a private one goes anyway.
            record("docker-image", ref, f"image of {spec.path}", keep=not daemon.private)
            ensure_image(api, spec)

        each(load, missing, "loading images", label=lambda spec: str(spec.path))

    def _network(
        self, ctx: RuntimeContext, api: Any, daemon: Daemon, deployment: Deployment, name: str
    ) -> str | None:
        """Create the deployment's network; its bridge's name if it is visible here."""
        from docker.errors import APIError
        from docker.types import IPAMConfig, IPAMPool

        gateways = (_gateway(deployment.ipv4_prefix), _gateway(deployment.ipv6_prefix))
        for node in deployment.nodes:
            if {node.ipv4.split("/")[0], node.ipv6.split("/")[0]} & set(gateways):
                raise NxcError(
                    f"the experiment network {deployment.ipv4_prefix} has no room left for "
                    f"the Docker network's gateway ({gateways[0]}) beside "
                    f"{len(deployment.nodes)} nodes"
                )
        self._record(ctx, daemon)(
            "docker-network", name, "deployment network", deployment=deployment.id
        )
        ipam = IPAMConfig(
            pool_configs=[
                IPAMPool(subnet=deployment.ipv4_prefix, gateway=gateways[0]),
                IPAMPool(subnet=deployment.ipv6_prefix, gateway=gateways[1]),
            ]
        )
        try:
            created = api.create_network(
                name,
                driver="bridge",
                ipam=ipam,
                enable_ipv6=True,
                check_duplicate=True,
                labels=_labels(ctx.project, deployment.id),
            )
        except APIError as exc:
            raise StartError(
                f"cannot create the Docker network {name} ({deployment.ipv4_prefix}, "
                f"{deployment.ipv6_prefix}): {exc.explanation or exc} (does another network "
                "on this daemon use these addresses?)"
            ) from None
        if daemon.private:
            return None
        bridge = "br-" + str(created["Id"])[:12]
        return bridge if Path("/sys/class/net", bridge).exists() else None

    # -- launch -------------------------------------------------------------------

    def launch(self, ctx: RuntimeContext, deployment: Deployment) -> None:
        state = ctx.state.load()
        daemon = Daemon.from_dict(state["daemon"], str(ctx.state.path))
        client = daemons.client(daemon.url)
        api = client.api
        record = self._record(ctx, daemon)
        specs = self._specs(ctx.manifest, sorted({n.role for n in deployment.nodes}))
        management = Management.from_dict(state["management"])
        private_inputs = ctx.node_inputs if management.relay else {}
        inputs = ctx.runtime_dir / "inputs"
        inputs.mkdir(mode=0o700, exist_ok=True)
        nodes: list[tuple[Node, DockerNode, dict[str, Any]]] = []
        for node in deployment.nodes:
            role = ctx.manifest.roles[node.role]
            spec = specs[node.role]
            directory = self._write_inputs(
                ctx, inputs, node, deployment, private_inputs.get(node.name, {})
            )
            container = f"nxc-{deployment.id}-{node.name}"
            environment = self._environment(deployment, node)
            # With their prefix lengths: unblock gives the NIC back its addresses.
            ipv4 = _with_length(node.ipv4, deployment.ipv4_prefix)
            ipv6 = _with_length(node.ipv6, deployment.ipv6_prefix)
            state["nodes"][node.name] = {
                "container": container,
                "image": image_ref(spec),
                "ipv4": ipv4,
                "ipv6": ipv6,
                "mac": node.mac,
                "environment": environment,
            }
            control = DockerNode(
                name=node.name,
                container=container,
                network=state["network"],
                ipv4=ipv4,
                ipv6=ipv6,
                mac=node.mac,
                interface=deployment.interface,
                environment=environment,
                client=client,
                state=ctx.state,
            )
            create = self._create_args(
                ctx, api, daemon, state["network"], deployment, node, role, spec, directory
            )
            create["name"] = container
            nodes.append((node, control, create))
        ctx.state.save(state)

        def start(item: tuple[Node, DockerNode, dict[str, Any]]) -> None:
            node, control, create = item
            record("docker-container", control.container, f"container of {node.name}")
            self._create(api, node, create)
            self._connect_management(api, node, control.container, management)
            control.boot(since=None)

        ctx.say(f"starting {len(nodes)} containers")
        try:
            each(start, nodes, "starting containers", label=lambda item: item[0].name)
        except BaseException:
            for _node, control, _create in nodes:
                control.stop_following()
            raise
        ctx.begin_phase("ready")
        wait_all_ready([control for _n, control, _c in nodes], ctx.ready_timeout, ctx.progress)

    @staticmethod
    def _create(api: Any, node: Node, create: dict[str, Any]) -> None:
        from docker.errors import APIError

        try:
            api.create_container(**create)
        except APIError as exc:
            raise StartError(
                f"{node.name}: cannot create its container: {exc.explanation or exc}"
            ) from None

    @staticmethod
    def _connect_management(api: Any, node: Node, container: str, management: Management) -> None:
        from docker.errors import APIError

        try:
            api.connect_container_to_network(container, management.network)
        except APIError as exc:
            raise StartError(
                f"{node.name}: cannot connect it to the management network "
                f"{management.network}: {exc.explanation or exc}"
            ) from None

    @staticmethod
    def _write_inputs(
        ctx: RuntimeContext,
        inputs: Path,
        node: Node,
        deployment: Deployment,
        private: dict[str, Path],
    ) -> Path:
        # The agent finds them at /nxc-input (Contract 3) and reads no kernel command line
        # there (the host's). The private host key stays readable by the container's root
        # only; the directory is searchable so that the read-only mount works.
        directory = inputs / node.name
        node_inputs.write(
            node_inputs.render(deployment, node.name), directory, ctx.host_keys[node.name]
        )
        (directory / "agent.env").write_text('NXC_AGENT_ARGS="--cmdline -"\n')
        (directory / "agent.env").chmod(0o644)
        # The node's private inputs besides its host key (sync: the service's endpoint
        # and the deployment's token): 0600 like the host key, root of the node only.
        for name, source in private.items():
            atomic_write(directory / name, source.read_bytes(), 0o600)
        directory.chmod(0o755)
        return directory

    @staticmethod
    def _environment(deployment: Deployment, node: Node) -> dict[str, str]:
        """What every exec runs with (the backdoor's commands see the same)."""
        return {
            "PATH": EXEC_PATH,
            "HOME": "/root",
            "NXC_NODE": node.name,
            "NXC_ROLE": node.role,
            "NXC_INDEX": str(node.index),
            "NXC_REPLICAS": str(deployment.roles.get(node.role, 0)),
            "NXC_DEPLOYMENT_ID": deployment.id,
            # /proc shows the host's CPU and memory: nxc-metrics reads the cgroup.
            "NXC_METRICS_MODE": "container",
        }

    def _create_args(
        self,
        ctx: RuntimeContext,
        api: Any,
        daemon: Daemon,
        network: str,
        deployment: Deployment,
        node: Node,
        role: Any,
        spec: ImageSpec,
        inputs: Path,
    ) -> dict[str, Any]:
        labels = _labels(ctx.project, deployment.id, **{"nxc.node": node.name})
        entry = role.container or {}
        binds = {str(inputs): {"bind": INPUT_DIR, "mode": "ro"}}
        binds.update(
            _volume_binds(
                api, list(entry.get("volumes", [])), node.role,
                _labels(ctx.project, deployment.id), self._record(ctx, daemon),
            )
        )  # fmt: skip
        exposed, bindings = _port_bindings(list(entry.get("ports", [])), node.role)
        memory = ctx.options.get("memory", node.role, role.memory_mb)
        cpus = ctx.options.get("cpus", node.role, role.cpus)
        wanted = ctx.options.get("privileged", node.role, "auto")
        privileged = wanted == "yes" or (wanted == "auto" and ctx.manifest.image_kind == "nixos")
        host_config = api.create_host_config(
            binds=binds,
            tmpfs=_tmpfs(memory),
            privileged=privileged,
            cap_add=None if privileged else ["NET_ADMIN"],
            mem_limit=f"{memory}m" if memory else None,
            memswap_limit=f"{memory}m" if memory else None,
            nano_cpus=int(cpus * 1e9) if cpus else None,
            network_mode=network,
            port_bindings=bindings or None,
            cgroupns="private" if ctx.manifest.image_kind == "nixos" else None,
        )
        endpoint = api.create_endpoint_config(
            ipv4_address=node.ipv4.split("/")[0],
            ipv6_address=node.ipv6.split("/")[0] or None,
            aliases=[node.name],
        )
        return {
            "image": image_ref(spec),
            "command": [spec.init] if spec.init else None,
            "hostname": node.name,
            "environment": {"container": "docker"},
            "tty": True,
            "stop_signal": spec.stop_signal,
            "labels": labels,
            "mac_address": node.mac,
            "ports": exposed or None,
            "host_config": host_config,
            "networking_config": api.create_networking_config({network: endpoint}),
        }

    # -- after launch ---------------------------------------------------------------

    def _load(self, project: Project) -> tuple[RuntimeState, dict[str, Any], Daemon]:
        runtime = self.state(project)
        if not runtime.exists():
            raise StateError("no running deployment (run 'nxc start' first)")
        state = runtime.load()
        try:
            daemon = Daemon.from_dict(state["daemon"], str(runtime.path))
        except KeyError:
            raise StateError(f"{runtime.path}: corrupt state file (no daemon)") from None
        return runtime, state, daemon

    def nodes(self, project: Project, deployment: Deployment) -> dict[str, DockerNode]:
        runtime, state, daemon = self._load(project)
        client = daemons.client(daemon.url)
        found = {}
        try:
            for name, entry in state["nodes"].items():
                found[name] = DockerNode(
                    name=name,
                    container=entry["container"],
                    network=state["network"],
                    ipv4=entry["ipv4"],
                    ipv6=entry["ipv6"],
                    mac=entry["mac"],
                    interface=deployment.interface,
                    environment=dict(entry["environment"]),
                    client=client,
                    state=runtime,
                    last_boot_id=entry.get("boot_id"),
                    docker_nic=entry.get("docker_nic") or DOCKER_FIRST_NIC,
                )
        except (KeyError, TypeError, AttributeError) as exc:
            raise StateError(f"{runtime.path}: corrupt state file ({exc!r})") from None
        return found

    def shell_argv(self, project: Project, deployment: Deployment, node: str) -> list[str]:
        """``nxc connect`` without ssh: an interactive shell through ``docker exec``."""
        _runtime, state, daemon = self._load(project)
        try:
            container = state["nodes"][node]["container"]
        except (KeyError, TypeError):
            raise StateError(f"no container recorded for node {node}") from None
        return [sys.executable, "-m", "nxc.flavours.docker.shell", daemon.url, container, node]

    def resource_kinds(self) -> dict[str, Kind]:
        return dict(KINDS)

    def release(self, project: Project, progress: Progress) -> list[str]:
        """Remove every container at once (the ledger would, one after the other).

        A container recorded but not found may still be on its way: ``nxc start`` was
        killed while its create request was in flight, and the daemon finishes it (with
        vfs storage, a second or more later). A create with the same name tells: the
        daemon refuses it while the name is taken; then wait for that container and
        remove it.
        """
        try:
            _runtime, state, daemon = self._load(project)
            entries = {e["container"]: e for e in state["nodes"].values()}
            api = daemons.client(daemon.url).api
        except (NxcError, KeyError, TypeError, AttributeError):
            return []  # the ledger's own entries are released next, one by one
        recorded = {r.ident for r in project.ledger.entries() if r.kind == "docker-container"}
        names = [name for name in entries if name in recorded]
        if not names:
            return []
        from docker.errors import NotFound

        _save_console_logs(api, state, {n: e for n, e in state["nodes"].items()
                                        if e["container"] in names}, progress)  # fmt: skip
        progress(f"removing {len(names)} containers")

        def remove(name: str) -> str | None:
            try:
                api.remove_container(name, force=True, v=True)
            except NotFound:
                if not _create_in_flight(api, name, entries[name].get("image")):
                    return None
                _wait_created(api, name)
                api.remove_container(name, force=True, v=True)
                return f"removed container {name} (created after its start was stopped)"
            return f"removed container {name}"

        done = []
        for outcome in fan_out(remove, names):
            if outcome.ok and outcome.value:
                done.append(outcome.value)
        return done

    def recover(self, project: Project) -> list[Resource]:
        """What this project's deployment created, found without the ledger: the
        labelled objects on its daemon, and private dockerds under its runtime dirs.

        In the order of creation (the ledger releases backwards): runtime directories,
        then a private daemon's namespace and process, then Docker objects."""
        directories: list[Resource] = []
        daemons_found: list[Resource] = []
        objects: list[Resource] = []
        daemon = None
        with contextlib.suppress(NxcError, KeyError, TypeError):
            _runtime, _state, daemon = self._load(project)
            if daemon.private and daemon.pid is not None:
                if daemon.netns:
                    daemons_found.append(Resource("netns", daemon.netns, "network namespace"))
                daemons_found.append(
                    Resource("dockerd", str(daemon.pid), "private dockerd", daemon.start_time,
                             {"root": daemon.root, "netns": daemon.netns}, FLAVOUR)
                )  # fmt: skip
        if daemon is not None and not daemon.private:
            objects = self._labelled(project, daemon)
        known = {r.ident for r in daemons_found if r.kind == "dockerd"}
        relays: list[Resource] = []
        for directory in project.marked_runtime_dirs():
            directories.append(Resource("path", str(directory), "runtime directory"))
            for pid in _processes_under(directory, {"socat"}):
                relays.append(
                    Resource("process", str(pid), "host service relay (socat)",
                             process_start_time(pid))
                )  # fmt: skip
            root = directory / "docker"
            for pid in _processes_under(root, {"dockerd"}):
                if str(pid) not in known:
                    daemons_found.append(
                        Resource("dockerd", str(pid), f"dockerd of {root}",
                                 process_start_time(pid), {"root": str(root)}, FLAVOUR)
                    )  # fmt: skip
        # The relays came after the networks: released (backwards) first.
        return directories + daemons_found + objects + relays

    def _labelled(self, project: Project, daemon: Daemon) -> list[Resource]:
        try:
            client = daemons.client(daemon.url)
        except NxcError:
            return []
        extra = {"url": daemon.url, "private": False}
        label = f"nxc.project={project_key(project)}"
        found = []
        with contextlib.suppress(Exception):
            for container in client.api.containers(all=True, filters={"label": label}):
                name = container["Names"][0].lstrip("/")
                found.append(Resource("docker-container", name, "container", None, extra, FLAVOUR))
            for volume in client.api.volumes(filters={"label": label}).get("Volumes") or []:
                found.append(
                    Resource("docker-volume", volume["Name"], "volume", None, extra, FLAVOUR)
                )
            for network in client.api.networks(filters={"label": label}):
                found.append(
                    Resource("docker-network", network["Name"], "network", None, extra, FLAVOUR)
                )
        # In creation order (released backwards: containers before their network).
        return list(reversed(found))

    def health(self, project: Project, deployment: Deployment) -> list[str]:
        try:
            _runtime, state, daemon = self._load(project)
        except NxcError:
            return ["the docker runtime state is unreadable (nxc stop, then start again)"]
        dead = daemon.pid is not None and process_start_time(daemon.pid) != daemon.start_time
        if daemon.private and dead:
            return [
                f"the private dockerd (pid {daemon.pid}) is not running: the containers "
                "are gone (nxc stop, then start again)"
            ]
        try:
            api = daemons.client(daemon.url).api
            api.inspect_network(state["network"])
        except NxcError as exc:
            return [str(exc)]
        except Exception as exc:
            return [f"the deployment's Docker network {state.get('network')} is gone: {exc}"]
        return []

    def status(self, project: Project, deployment: Deployment) -> dict[str, str]:
        with contextlib.suppress(NxcError, KeyError):
            _runtime, state, daemon = self._load(project)
            return {"dockerd": daemon.describe(), "network": str(state["network"])}
        return {}


CONSOLE_LOG_MAX = 16 * 1024 * 1024


def _save_console_logs(
    api: Any, state: dict[str, Any], nodes: dict[str, Any], progress: Progress
) -> None:
    """Before the containers go: each one's log (its console: every boot, with Docker's
    timestamps) in the run record's ``nodes/``, named in run.json as the VMs' are.
    Best effort: a record must never block a stop."""
    run_dir = Path(str(state.get("run_dir") or ""))
    if not state.get("run_dir") or not (run_dir / "run.json").is_file():
        return
    from docker.errors import DockerException

    progress("saving the containers' logs in the run record")
    saved: dict[str, str] = {}
    for name, entry in nodes.items():
        try:
            raw = api.logs(entry["container"], timestamps=True)
        except (DockerException, KeyError, TypeError):
            continue
        if len(raw) > CONSOLE_LOG_MAX:
            raw = b"[... start cut: the log was longer than 16 MiB]\n" + raw[-CONSOLE_LOG_MAX:]
        with contextlib.suppress(NxcError, OSError):
            atomic_write(private_dir(run_dir / "nodes") / f"{name}.console.log",
                         raw.replace(b"\r", b""))  # fmt: skip
            saved[name] = f"nodes/{name}.console.log"
    if not saved:
        return
    from nxc.runs import RunRecord

    with contextlib.suppress(NxcError, OSError):
        record = RunRecord(run_dir)
        logs = dict(record.load().get("logs") or {})
        for name, path in saved.items():
            logs[name] = {**dict(logs.get(name) or {}), "console": path}
        record.update(logs=logs)


def _create_in_flight(api: Any, name: str, image: str | None) -> bool:
    """Whether a create of container ``name`` is under way on the daemon (it holds the
    name): a placeholder create conflicts then; otherwise it is removed at once."""
    from docker.errors import APIError

    if not image:
        return False
    try:
        placeholder = api.create_container(image, name=name, command=["true"])
    except APIError as exc:
        return bool(exc.status_code == 409)
    with contextlib.suppress(APIError):
        api.remove_container(placeholder["Id"], force=True)
    return False


CREATE_WAIT = 120.0


def _wait_created(api: Any, name: str) -> None:
    from docker.errors import NotFound

    def created(_remaining: float) -> Attempt[bool]:
        try:
            api.inspect_container(name)
        except NotFound:
            return Attempt.not_yet("not created yet")
        return Attempt.ok(True)

    try:
        poll(f"container {name} to be created", created, CREATE_WAIT)
    except PollExpired as exc:
        raise NxcError(f"{exc} (its name stays taken on the daemon)") from None


def _processes_under(root: Path, names: set[str]) -> list[int]:
    """Processes called one of ``names`` whose argv names ``root`` (a private daemon, a
    relay to a socket of that runtime directory: only nxc's own)."""
    needle = str(root).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        named = argv and Path(argv[0].decode(errors="replace")).name in names
        if named and any(needle in arg for arg in argv[1:]):
            found.append(int(entry.name))
    return found
