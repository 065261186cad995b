"""Start, inspect and stop a deployment: the logic behind ``nxc start/status/stop``.

Importable from Python so that a researcher's own script can do what the CLI does.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nxc.contracts import Deployment, Manifest
from nxc.errors import NxcError, StateError
from nxc.expand import expand
from nxc.flavours import DEFAULT_FLAVOUR, StartOptions, get_runtime
from nxc.keys import generate_key, known_hosts_line
from nxc.project import Project, atomic_write, read_json, write_json
from nxc.runtime.transport import NodeControl

Progress = Callable[[str], None]


def manifest_for(project: Project, flavour: str | None, manifest_path: Path | None) -> Manifest:
    """The manifest to start: an explicit file, or the project's last build of ``flavour``."""
    if manifest_path is not None:
        return Manifest.load(manifest_path)
    builds = project.builds()
    if flavour is None:
        flavour = DEFAULT_FLAVOUR if DEFAULT_FLAVOUR in builds or not builds else next(iter(builds))
    record = builds.get(flavour)
    if record is None:
        built = ", ".join(builds) or "none"
        raise StateError(
            f"no build of flavour '{flavour}' in {project.root} (built: {built}); "
            f"run 'nxc build -f {flavour}' first"
        )
    return Manifest.load(Path(record["manifest"]))


def new_deployment_id(composition: str) -> str:
    stem = "".join(c if c.isalnum() else "-" for c in composition.lower())[:24].strip("-")
    return f"{stem or 'run'}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class RunningDeployment:
    project: Project
    deployment: Deployment
    manifest: Manifest
    run_dir: Path

    @property
    def client_key(self) -> Path:
        return self.project.keys_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.project.keys_dir / "known_hosts"

    def nodes(self) -> dict[str, NodeControl]:
        runtime = get_runtime(self.deployment.flavour)
        return dict(runtime.nodes(self.project))

    def ssh_argv(self, node_name: str) -> list[str]:
        node = self.deployment.node(node_name)
        if node.ssh_host is None:
            raise NxcError(f"{node_name}: the deployment has no ssh endpoint for it")
        return [
            "ssh",
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
    meta = read_json(project.state_dir / "run.json")
    manifest = Manifest.load(Path(meta["manifest"]))
    return RunningDeployment(project, deployment, manifest, Path(meta["run_dir"]))


def start(
    project: Project,
    manifest: Manifest,
    overrides: dict[str, int],
    options: StartOptions,
    progress: Progress | None = None,
) -> RunningDeployment:
    """Expand, key, launch and wait: returns once every node reports ready.

    On any failure or Ctrl-C, everything already created is undone before the
    error propagates.
    """
    say = progress or (lambda _msg: None)
    runtime = get_runtime(manifest.flavour)
    runtime.check_host()
    if project.deployment_file.exists() or project.ledger.live_processes():
        raise StateError(
            f"a deployment is already running in {project.root} (run 'nxc stop' first)"
        )
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    deployment_id = new_deployment_id(manifest.composition)
    try:
        project.ensure_state_dir()
        project.ledger.clear()
        project.ledger.record_path(project.keys_dir, "deployment keys")
        client = generate_key(project.keys_dir / "id_ed25519", f"nxc-{deployment_id}")
        deployment = expand(
            manifest, overrides, deployment_id, [client.public_text], created_at=now
        )
        deployment = runtime.prepare(deployment, options)
        host_keys: dict[str, Path] = {}
        nodes = []
        for node in deployment.nodes:
            pair = generate_key(project.keys_dir / "hosts" / node.name, f"{node.name}-host")
            host_keys[node.name] = pair.private
            nodes.append(replace(node, host_key=pair.public_text))
        deployment = replace(deployment, nodes=nodes)
        known = [
            known_hosts_line(n.ssh_host, n.ssh_port, n.host_key)
            for n in deployment.nodes
            if n.ssh_host and n.host_key
        ]
        atomic_write(project.keys_dir / "known_hosts", "\n".join(known) + "\n", 0o600)

        run_dir = project.runs_dir / deployment_id
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "deployment.json").write_text(deployment.to_json())
        (run_dir / "manifest.json").write_text(json.dumps(manifest.raw, indent=2) + "\n")
        manifest_file = manifest.source or (run_dir / "manifest.json")
        write_json(
            project.state_dir / "run.json",
            {"manifest": str(manifest_file), "run_dir": str(run_dir), "started_at": now},
        )
        project.ledger.record_path(project.state_dir / "run.json", "run pointer")
        project.ledger.record_path(project.runtime_file, "runtime state")
        atomic_write(project.deployment_file, deployment.to_json())
        project.ledger.record_path(project.deployment_file, "deployment")
        runtime.start(project, manifest, deployment, host_keys, options, progress=say)
    except BaseException:
        stop(project)
        raise
    return RunningDeployment(project, deployment, manifest, run_dir)


def stop(project: Project) -> list[str]:
    """Undo everything the ledger recorded; a second call finds nothing to do."""
    ledger = project.ledger
    done = ledger.undo()
    ledger.clear()
    return done


def clean(project: Project) -> list[str]:
    """Stop, then remove the project's whole state directory and result links."""
    done = stop(project)
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
        rows.append(
            {
                "name": node.name,
                "role": node.role,
                "ipv4": node.ipv4,
                "ssh": f"{node.ssh_host}:{node.ssh_port}" if node.ssh_host else "-",
                "state": "running" if control and control.is_running() else "stopped",
            }
        )
    return rows
