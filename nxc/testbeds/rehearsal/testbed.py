"""Bringing a rehearsal testbed up and down (what ``nxc g5k rehearsal`` runs).

``up`` builds the standard-environment image (nix, from the host's Debian packages,
like the selftest images), makes the keys, writes the settings and the configs a
user points nxc at (python-grid5000's client config, an OpenSSH config mapping each
node's FQDN to its forwarded port, the known host keys, a file of ``export`` lines),
then starts the daemon and waits until it serves. Everything it creates is recorded
in the testbed's ledger as it is created; ``down`` releases that ledger.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from nxc.flavours.g5k_common.settings import (
    ENV_CONSOLES,
    ENV_KNOWN_HOSTS,
    ENV_SITE,
    ENV_SSH_CONFIG,
)
from nxc.flavours.vm_ramdisk.qemu import choose_accel
from nxc.flavours.vm_ramdisk.runtime import free_tcp_port, tail
from nxc.fsutil import atomic_write, read_json
from nxc.g5k.config import ENV_CONFIG
from nxc.keys import generate_key, known_hosts_line
from nxc.ledger import BUILTIN_KINDS, Ledger, ReleaseContext, ReleaseReport, process_start_time
from nxc.nixbuild import run_nix
from nxc.paths import flake_root
from nxc.testbeds.g5k_double.inventory import default_inventory
from nxc.testbeds.g5k_double.reference import main_mac
from nxc.testbeds.rehearsal.layout import (
    CLUSTER,
    SITE,
    SITE_PREFIX,
    Layout,
    RehearsalError,
    Settings,
    VmSpec,
)
from nxc.tools import require_tool
from nxc.wait import Attempt, PollExpired, poll

Say = Callable[[str], None]
MAX_NODES = 8  # the default inventory's paravance cluster
DEFAULT_TIMINGS = {"schedule_s": 1.0, "launch_s": 1.0, "finish_s": 1.0, "deploy_s": 1.0}


@dataclass(frozen=True)
class UpRequest:
    nodes: int = 3
    memory_mb: int = 384
    user: str = "alice"
    accel: str = "auto"
    shared_dir: Path | None = None
    timeout: float = 300.0


def build_stdenv(say: Say) -> tuple[Path, Path, str]:
    """The standard-environment image: kernel, initrd, kernel parameters."""
    root = flake_root()
    expr = (
        f'import {root}/nix/selftest {{ name = "g5k-stdenv"; '
        f"agent = {root}/nxc/agent/nxc-agent; role = {{ g5k_stdenv = true; }}; }}"
    )
    say("building the standard environment image (nix, host packages)")
    run = run_nix(
        ["build", "--offline", "--impure", "--no-link", "--json", "--expr", expr],
        progress=lambda line: None,
    )
    if run.returncode != 0:
        detail = run.errors[0] if run.errors else (run.stderr.strip().splitlines() or ["?"])[-1]
        raise RehearsalError(f"building the standard environment failed: {detail}")
    out = Path(json.loads(run.stdout)[0]["outputs"]["out"])
    params = (out / "kernel-params").read_text().strip()
    return out / "kernel", out / "initrd", params


def _record_path(ledger: Ledger, path: Path, what: str) -> Path:
    ledger.record_path(path, what)
    return path


def up(config_dir: Path, request: UpRequest, say: Say) -> dict[str, object]:
    """Bring the testbed up (see the module documentation); returns ready.json."""
    if not 1 <= request.nodes <= MAX_NODES:
        raise RehearsalError(f"--nodes {request.nodes}: between 1 and {MAX_NODES}")
    if request.memory_mb < 192:
        raise RehearsalError(f"--memory {request.memory_mb}: at least 192 MiB per node")
    for tool in ("qemu-system-x86_64", "vde_switch", "nix", "ssh-keygen"):
        require_tool(tool)
    layout = Layout(config_dir)
    if layout.ledger.exists():
        raise RehearsalError(
            f"{layout.root} holds a rehearsal testbed already (nxc g5k rehearsal down "
            f"--config-dir {config_dir} first)"
        )
    ledger = Ledger(layout.ledger)
    created_root = not layout.root.exists()
    layout.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any(p for p in layout.root.iterdir() if p.name != layout.ledger.name):
        raise RehearsalError(f"{layout.root} is not empty: give a new or empty directory")
    try:
        if created_root:
            ledger.record_path(layout.root, "rehearsal config directory")
        else:
            for name in (
                "rehearsal.json",
                "ready.json",
                "daemon.log",
                "python-grid5000.yaml",
                "ssh_config",
                "known_hosts",
                "env",
                "keys",
                "consoles",
                "logs",
            ):
                ledger.record_path(layout.root / name, f"rehearsal {name}")
        ledger.record_path(layout.run, "rehearsal runtime directory")
        layout.run.mkdir(mode=0o700, parents=True, exist_ok=True)
        return _up(layout, ledger, request, say)
    except BaseException:
        down(config_dir, say)
        raise


def _up(layout: Layout, ledger: Ledger, request: UpRequest, say: Say) -> dict[str, object]:
    kernel, initrd, params = build_stdenv(say)
    for directory in (layout.keys, layout.consoles, layout.root / "logs"):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    say("making keys")
    generate_key(layout.user_key, f"{request.user}@rehearsal")
    generate_key(layout.admin_key, "kadeploy@rehearsal")
    atomic_write(layout.password_file, secrets.token_urlsafe(18) + "\n", 0o600)
    atomic_write(layout.token_file, secrets.token_urlsafe(18) + "\n", 0o600)

    inventory = default_inventory()
    cluster = next(c for c in inventory.site(SITE).clusters if c.uid == CLUSTER)  # type: ignore[union-attr]
    specs = []
    known = []
    ssh_lines = [
        "# Written by nxc g5k rehearsal up: the rehearsal nodes, as seen from here.",
        "# Usable as is: ssh -F THIS_FILE paravance-1.rennes.grid5000.fr",
    ]
    for index, node in enumerate(cluster.nodes[: request.nodes], start=1):
        port = free_tcp_port()
        spec = VmSpec(
            fqdn=node.fqdn,
            short=node.uid,
            ssh_port=port,
            site_mac=main_mac(node),
            site_addr=f"{node.ip}/{SITE_PREFIX}",
            mgmt_mac=f"52:54:00:fe:00:{index:02x}",
        )
        specs.append(spec)
        host_key = generate_key(layout.host_key(node.uid), f"{node.uid}-stdenv")
        known.append(known_hosts_line("127.0.0.1", port, host_key.public_text))
        ssh_lines += [
            f"Host {node.fqdn} {node.uid}",
            "  HostName 127.0.0.1",
            f"  Port {port}",
            f"  User {request.user}",
            f"  IdentityFile {layout.user_key}",
            "",
        ]
    atomic_write(layout.ssh_config, "\n".join(ssh_lines) + "\n", 0o600)
    atomic_write(layout.known_hosts, "\n".join(known) + "\n", 0o600)
    for spec in specs:
        console = layout.console(spec.fqdn)
        console.touch(mode=0o600)

    qemu = require_tool("qemu-system-x86_64")
    say("choosing the accelerator")
    accel = choose_accel(request.accel, qemu, kernel, layout.run, ledger)
    api_port = free_tcp_port()
    settings = Settings(
        nodes=specs,
        user=request.user,
        kernel=str(kernel),
        initrd=str(initrd),
        kernel_params=params,
        memory_mb=request.memory_mb,
        accel=accel,
        api_port=api_port,
        shared_dir=str(request.shared_dir.resolve()) if request.shared_dir else None,
        timings=DEFAULT_TIMINGS,
    )
    settings.save(layout.settings)
    password = layout.password_file.read_text().strip()
    client = {
        "uri": f"http://127.0.0.1:{api_port}/stable",
        "username": request.user,
        "password": password,
        "timeout": 30,
    }
    atomic_write(layout.client_config, yaml.safe_dump(client, sort_keys=False), 0o600)
    exports = {
        ENV_CONFIG: layout.client_config,
        ENV_SSH_CONFIG: layout.ssh_config,
        ENV_KNOWN_HOSTS: layout.known_hosts,
        ENV_SITE: SITE,
        ENV_CONSOLES: layout.consoles,
    }
    atomic_write(
        layout.env_file,
        "".join(f"export {k}='{v}'\n" for k, v in exports.items()),
        0o600,
    )

    say(f"starting {request.nodes} nodes ({accel}) and the API double")
    with open(layout.daemon_log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "nxc.testbeds.rehearsal.daemon", str(layout.root)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    ledger.record_process(process.pid, "rehearsal daemon")

    shown: list[str] = []

    def ready(_remaining: float) -> Attempt[dict[str, object]]:
        if layout.ready.exists():
            document = read_json(layout.ready)
            if isinstance(document, dict):
                return Attempt.ok(document)
        if process.poll() is not None:
            raise RehearsalError(f"the rehearsal daemon exited: {tail(layout.daemon_log, 5)}")
        last = tail(layout.daemon_log, 1)
        if last != "(no output)" and last not in shown:
            shown.append(last)
            say(last)
        return Attempt.not_yet(last)

    try:
        return poll("the rehearsal testbed to serve", ready, request.timeout, first=0.5, longest=2)
    except PollExpired as exc:
        raise RehearsalError(str(exc)) from None


def down(config_dir: Path, say: Say) -> ReleaseReport:
    """Release everything the testbed's ledger lists (idempotent)."""
    layout = Layout(config_dir)
    ledger = Ledger(layout.ledger)
    return ledger.release(BUILTIN_KINDS, ReleaseContext(owns=layout.owns), (), say)


def exports(config_dir: Path) -> str:
    layout = Layout(config_dir)
    if not layout.env_file.exists():
        raise RehearsalError(f"no rehearsal testbed in {layout.root} (nxc g5k rehearsal up)")
    text: str = layout.env_file.read_text()
    return text


def status(config_dir: Path) -> dict[str, object]:
    layout = Layout(config_dir)
    if not layout.ready.exists():
        raise RehearsalError(f"no running rehearsal testbed in {layout.root}")
    document = read_json(layout.ready)
    alive = [
        r for r in Ledger(layout.ledger).entries()
        if r.kind == "process" and process_start_time(int(r.ident)) == r.start_time
    ]  # fmt: skip
    return {**document, "processes": len(alive)}
