"""Start, inspect and stop a deployment: the logic behind ``nxc start/status/stop``.

Importable from Python, so that a researcher's own script does exactly what the CLI
does::

    from nxc.project import Project
    from nxc import session

    project = Project.find()
    manifest = session.manifest_for(project, "vm-ramdisk", None)
    current = session.start(project, manifest, session.StartRequest(overrides={"node": 3}))
    ...
    session.stop(project)

``start`` drives the flavour's runtime through its phases (see
:mod:`nxc.runtime.contract`), writes the run record, applies the composition's
network topology (or the one asked for), and on any failure or interruption undoes
everything before the error propagates.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nxc.contracts import Manifest
from nxc.errors import NxcError, StateError
from nxc.expand import expand, role_quantities
from nxc.fsutil import atomic_write, private_dir, read_json, write_state
from nxc.keys import generate_key, known_hosts_line
from nxc.ledger import BUILTIN_KINDS, Kind, ReleaseReport, Resource
from nxc.project import Project
from nxc.records.gather import record_build, record_node_logs
from nxc.records.host import host_facts
from nxc.running import CURRENT_VERSION, RunningDeployment, running
from nxc.runs import PhaseClock, RunRecord, now
from nxc.runtime import registry
from nxc.runtime.contract import PartialStart, Progress, Runtime, RuntimeContext, RuntimeState
from nxc.runtime.options import FlavourOptions, resolve_options
from nxc.signals import shielded
from nxc.tools import require_tool

__all__ = [
    "DEFAULT_FLAVOUR",
    "RunningDeployment",
    "StartRequest",
    "clean",
    "manifest_for",
    "prepare",
    "retry_failed",
    "running",
    "start",
    "status",
    "stop",
]

DEFAULT_FLAVOUR = "vm-ramdisk"


@dataclass(frozen=True)
class StartRequest:
    """What the user asked ``nxc start`` for (everything but the manifest)."""

    overrides: Mapping[str, int] = field(default_factory=dict)  # -r ROLE=N
    options: Mapping[str, Any] = field(default_factory=dict)  # flavour options, raw
    ready_timeout: float = 180.0
    topology: Path | None = None  # --netem FILE
    composition_topology: bool = True  # apply the composition's own topology


def manifest_for(project: Project, flavour: str | None, manifest_path: Path | None) -> Manifest:
    """The manifest to start: an explicit file, or the project's last build of ``flavour``."""
    if manifest_path is not None:
        return Manifest.load(manifest_path)
    builds = project.builds()
    if flavour is None:
        flavour = DEFAULT_FLAVOUR if DEFAULT_FLAVOUR in builds or not builds else next(iter(builds))
    flavour = registry.canonical(flavour)
    record = builds.get(flavour)
    if record is None:
        built = ", ".join(builds) or "none"
        raise StateError(
            f"no build of flavour '{flavour}' in {project.root} (built: {built}); "
            f"run 'nxc build -f {flavour}' first"
        )
    try:
        return Manifest.load(Path(record["manifest"]))
    except (KeyError, TypeError):
        raise StateError(f"{project.builds_file}: corrupt build record for {flavour}") from None


def new_deployment_id(composition: str) -> str:
    stem = "".join(c if c.isalnum() else "-" for c in composition.lower())[:24].strip("-")
    return f"{stem or 'run'}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Prepared:
    runtime: Runtime
    options: FlavourOptions
    quantities: dict[str, int]
    topology: Any  # nxc.netem.Topology | None


def prepare(project: Project, manifest: Manifest, request: StartRequest) -> Prepared:
    """Check everything the user gave before anything is created (one-line errors)."""
    runtime = registry.load(manifest.flavour)
    quantities = role_quantities(manifest, request.overrides)
    if not request.ready_timeout > 0:
        raise NxcError(f"--timeout {request.ready_timeout:g}: must be a positive number of seconds")
    composition = manifest.flavour_options.get(runtime.name, {})
    options = resolve_options(
        runtime.name, runtime.options, request.options, composition, manifest.roles
    )
    topology = None
    if request.topology is not None:
        from nxc.netem import Topology

        topology = Topology.load(request.topology)
    runtime.check_host(manifest, options)
    require_tool("redis-server")  # the sync service every deployment has
    return Prepared(runtime, options, quantities, topology)


def start(
    project: Project,
    manifest: Manifest,
    request: StartRequest | None = None,
    progress: Progress | None = None,
) -> RunningDeployment:
    """Expand, key, acquire, launch and wait: returns once every node reports ready.

    On any failure or interruption (Ctrl-C, SIGTERM, SIGHUP), everything already
    created is released before the error propagates, and the run record says the
    start failed and why.
    """
    request = request or StartRequest()
    say = progress or (lambda _msg: None)
    checked_at, t0 = now(), time.monotonic()
    prepared = prepare(project, manifest, request)
    check_seconds = time.monotonic() - t0
    runtime = prepared.runtime
    project.ensure_state_dir()
    if project.current_dir.exists() or project.ledger.exists():
        raise StateError(
            f"a deployment is already running in {project.root}, or the last one was not "
            "fully stopped (run 'nxc stop' first)"
        )
    deployment_id = new_deployment_id(manifest.composition)
    run = RunRecord.create(
        project,
        deployment_id,
        manifest.composition,
        runtime.name,
        manifest=str(manifest.source) if manifest.source else None,
        options=prepared.options.as_dict(),
        roles=prepared.quantities,
        ready_timeout=request.ready_timeout,
        request={
            "roles": dict(request.overrides),
            "options": _jsonable(request.options),
            "ready_timeout": request.ready_timeout,
            "netem": "netem-topology.json" if request.topology is not None else None,
            "composition_topology": request.composition_topology,
        },
        host=host_facts(),
    )
    clock = PhaseClock(run)
    clock.add("check", checked_at, check_seconds)
    try:
        current = _start(project, manifest, request, prepared, deployment_id, run, clock, say)
    except PartialStart as exc:
        # Some nodes are up: keep them (and the reservation) for --retry-failed.
        with contextlib.suppress(Exception):
            run.mark("partial", error=str(exc).splitlines()[0], failed=exc.failed)
        raise
    except BaseException as exc:
        with shielded():
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            with contextlib.suppress(Exception):
                run.mark("failed", error=reason)
            stop(project, progress=say, mark_run=False)
        raise
    return current


def _jsonable(value: Any) -> Any:
    """Flavour options as given (tuples from the command line become lists)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _start(
    project: Project,
    manifest: Manifest,
    request: StartRequest,
    prepared: Prepared,
    deployment_id: str,
    run: RunRecord,
    clock: PhaseClock,
    say: Progress,
) -> RunningDeployment:
    runtime = prepared.runtime
    ledger = project.ledger
    ledger.record_path(project.current_dir, "deployment state")
    private_dir(project.current_dir)
    runtime_dir = project.make_runtime_dir(deployment_id)
    ledger.record_path(runtime_dir, "runtime directory")
    write_state(
        project.run_file,
        "current",
        CURRENT_VERSION,
        {
            "manifest": str(manifest.source or run.directory / "manifest.json"),
            "run_dir": str(run.directory),
            "flavour": runtime.name,
        },
    )
    with clock.phase("record"):
        say("recording the build's inputs and store paths")
        run.write_json("manifest.json", manifest.raw)
        record_build(project, manifest, run)

    with clock.phase("expand"):
        client = generate_key(project.keys_dir / "id_ed25519", f"nxc-{deployment_id}")
        deployment = expand(
            manifest,
            prepared.quantities,
            deployment_id,
            [client.public_text],
            created_at=run.load().get("started_at"),
        )
        host_keys: dict[str, Path] = {}
        nodes = []
        for node in deployment.nodes:
            pair = generate_key(project.keys_dir / "hosts" / node.name, f"{node.name}-host")
            host_keys[node.name] = pair.private
            nodes.append(replace(node, host_key=pair.public_text))
        deployment = replace(deployment, nodes=nodes)

    ctx = RuntimeContext(
        project=project,
        manifest=manifest,
        options=prepared.options,
        ledger=ledger,
        runtime_dir=runtime_dir,
        run_dir=run.directory,
        host_keys=host_keys,
        client_key=client.private,
        state=RuntimeState(project.runtime_file, runtime.name),
        ready_timeout=request.ready_timeout,
        progress=say,
        begin_phase=clock.begin,
    )
    with clock.phase("acquire"):
        deployment = runtime.acquire(ctx, deployment)
        # The sync service nodes reach directly (its process is in the ledger at once).
        from nxc.sync.deploy import start_for_deployment

        start_for_deployment(ctx, runtime, deployment)
        known = [
            known_hosts_line(n.ssh_host, n.ssh_port, n.host_key)
            for n in deployment.nodes
            if n.ssh_host and n.host_key
        ]
        atomic_write(project.keys_dir / "known_hosts", "\n".join(known) + "\n", 0o600)
        atomic_write(project.deployment_file, deployment.to_json(), 0o600)
        # The deployment holds public keys only: it belongs in the record as it is.
        run.write("deployment.json", deployment.to_json())

    # A runtime that calls ctx.begin_phase("ready") splits this into launch + ready.
    try:
        with clock.phase("launch"):
            runtime.launch(ctx, deployment)
    finally:
        with contextlib.suppress(NxcError):
            run.update(facts=_jsonable(ctx.facts))
    current = RunningDeployment(project, deployment, manifest, run)
    _after_launch(current, request, prepared.topology, ctx, clock, say)
    return current


def _after_launch(
    current: RunningDeployment,
    request: StartRequest,
    topology: Any,
    ctx: RuntimeContext,
    clock: PhaseClock,
    say: Progress,
) -> None:
    """Apply the topology asked for (or the composition's) and mark the run running."""
    manifest, run, deployment = current.manifest, current.run, current.deployment
    if topology is None and request.composition_topology and manifest.topology:
        from nxc.netem import Topology

        topology = Topology.from_dict(manifest.topology, source="manifest topology")
    if topology is not None:
        from nxc.netem.state import apply_topology, session_from_running

        with clock.phase("netem"):
            say("applying the network topology")
            netem_session = session_from_running(current)
            try:
                apply_topology(netem_session, topology)
            finally:
                netem_session.release()
            run.write_json("netem-topology.json", topology.to_dict())
    host = dict(run.load().get("host") or host_facts())
    host["accelerator"] = ctx.facts.get("accelerator")
    extra: dict[str, Any] = {}
    if isinstance(ctx.facts.get("grid5000"), dict):
        extra["grid5000"] = ctx.facts["grid5000"]
    run.mark(
        "running",
        facts=_jsonable(ctx.facts),
        nodes=[n.name for n in deployment.nodes],
        host=host,
        **extra,
    )


def retry_failed(
    project: Project, request: StartRequest | None = None, progress: Progress | None = None
) -> RunningDeployment:
    """Redeploy only the nodes the last ``start`` reported failed; the others stay as
    they are. On failure the deployment is kept (``nxc stop`` undoes it)."""
    request = request or StartRequest()
    say = progress or (lambda _msg: None)
    current = running(project)
    runtime = current.runtime
    state = RuntimeState(project.runtime_file, runtime.name)
    runtime_dir = state.load().get("runtime_dir") if state.exists() else None
    composition = current.manifest.flavour_options.get(runtime.name, {})
    options = resolve_options(
        runtime.name, runtime.options, request.options, composition, current.manifest.roles
    )
    topology = None
    if request.topology is not None:
        from nxc.netem import Topology

        topology = Topology.load(request.topology)
    host_keys = {n.name: project.keys_dir / "hosts" / n.name for n in current.deployment.nodes}
    clock = PhaseClock(current.run)
    ctx = RuntimeContext(
        project=project,
        manifest=current.manifest,
        options=options,
        ledger=project.ledger,
        runtime_dir=Path(runtime_dir) if runtime_dir else current.run_dir,
        run_dir=current.run_dir,
        host_keys=host_keys,
        client_key=current.client_key,
        state=state,
        ready_timeout=request.ready_timeout,
        progress=say,
        begin_phase=clock.begin,
    )
    # The redeployed nodes get the sync input start wrote for them (nxc/sync/deploy.py:
    # one file per node in the runtime directory); the service itself kept running.
    from nxc.sync.deploy import SYNC_INPUT

    sync_inputs = ctx.runtime_dir / "sync" / "nodes"
    for node in current.deployment.nodes:
        if (sync_inputs / node.name).is_file():
            ctx.node_inputs.setdefault(node.name, {})[SYNC_INPUT] = sync_inputs / node.name
    try:
        with clock.phase("relaunch"):
            runtime.relaunch(ctx, current.deployment)
    except PartialStart as exc:
        with contextlib.suppress(Exception):
            current.run.mark("partial", error=str(exc).splitlines()[0], failed=exc.failed)
        raise
    finally:
        with contextlib.suppress(NxcError):
            current.run.update(facts=_jsonable(ctx.facts))
    current = running(project)  # the runtime may have rewritten the deployment
    _after_launch(current, request, topology, ctx, clock, say)
    return current


def _flavours_in_play(project: Project, entries: list[Resource]) -> set[str]:
    found = {r.owner for r in entries if r.owner}
    for path in (project.run_file, project.runtime_file):
        with contextlib.suppress(StateError):
            document = read_json(path)
            if isinstance(document, dict) and isinstance(document.get("flavour"), str):
                found.add(document["flavour"])
    return found


def stop(
    project: Project,
    progress: Progress | None = None,
    *,
    mark_run: bool = True,
    keep: frozenset[str] = frozenset(),
) -> ReleaseReport:
    """Release everything the deployment created; a second call finds nothing to do.

    Each flavour involved gets its ``release`` hook, then the ledger releases every
    recorded resource with the kinds the flavours provide. If the ledger is damaged
    or missing while a deployment's state remains, the flavours' ``recover`` finds
    what they can from their own state. A resource that cannot be released is
    reported and kept in the ledger for the next ``nxc stop``. Resources of the kinds
    in ``keep`` (``nxc stop --keep-job``: OAR jobs) are left alone and forgotten.
    """
    say = progress or (lambda _msg: None)
    ledger = project.ledger
    with shielded():
        if mark_run:
            _record_stop(project, say)
        entries, bad = ledger.read()
        damaged = bool(bad) or (not ledger.exists() and project.current_dir.exists())
        flavours = _flavours_in_play(project, entries)
        if damaged and not flavours:
            flavours = set(registry.names())
        kinds: dict[str, Kind] = dict(BUILTIN_KINDS)
        extra: list[Resource] = []
        pre: list[str] = []
        for name in sorted(flavours):
            try:
                runtime = registry.load(name)
            except NxcError as exc:
                pre.append(f"cannot load flavour {name}: {exc}")
                continue
            kinds.update(runtime.resource_kinds())
            pre += runtime.release(project, say)
            if damaged:
                extra += runtime.recover(project)
        if damaged:
            from nxc.sync.deploy import state_file
            from nxc.sync.service import recover as recover_sync

            extra += recover_sync(state_file(project.current_dir))
        run_dir = None
        if mark_run:
            with contextlib.suppress(StateError, KeyError, TypeError):
                run_dir = Path(read_json(project.run_file)["run_dir"])
        context = project.release_context()
        if keep:
            context = replace(context, keep=keep)
        report = ledger.release(kinds, context, extra, say)
        report.done[:0] = pre
        if report.ok and project.current_dir.exists():
            shutil.rmtree(project.current_dir, ignore_errors=True)
            report.done.append("removed the deployment state")
        if run_dir is not None and report.ok:
            with contextlib.suppress(StateError, OSError):
                RunRecord(run_dir).mark("stopped")
    return report


def _record_stop(project: Project, say: Progress) -> None:
    """Before anything goes: note the stop and save the nodes' journals in the run
    record. Best effort with bounded waits: a record must never block a stop."""
    if not project.deployment_file.exists():
        return
    try:
        current = running(project)
    except NxcError:
        return
    with contextlib.suppress(NxcError):
        current.run.add_command("stop")
        say("saving the nodes' logs in the run record")
        record_node_logs(current)


def clean(project: Project, progress: Progress | None = None) -> list[str]:
    """Stop, then remove the project's whole state directory and result links."""
    report = stop(project, progress)
    if not report.ok:
        raise StateError(
            "not cleaning: some resources could not be released (see above; run nxc stop again)"
        )
    done = report.lines()
    if project.state_dir.exists():
        shutil.rmtree(project.state_dir)
        done.append(f"removed {project.state_dir}")
    for link in project.root.glob("result*"):
        if link.is_symlink():
            link.unlink()
            done.append(f"removed {link}")
    return done


def status(current: RunningDeployment) -> list[dict[str, Any]]:
    controls = current.nodes()
    rows = []
    for node in current.deployment.nodes:
        control = controls.get(node.name)
        up = control is not None and control.is_running()
        rows.append(
            {
                "name": node.name,
                "role": node.role,
                "ipv4": node.ipv4,
                "ssh": _ssh_column(node.ssh_host, node.ssh_port),
                "state": "running" if up else "stopped",
                "boot_id": (control.boot_id() if control and up else None) or "-",
            }
        )
    return rows


def _ssh_column(host: str | None, port: int | None) -> str:
    if not host:
        return "-"
    return f"{host}:{port}" if port else host
