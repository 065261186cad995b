"""QEMU command lines (pure) and the accelerator probe."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nxc.contracts import Deployment, Node
from nxc.ledger import Ledger
from nxc.runtime import node_inputs
from nxc.wait import Attempt, PollExpired, poll

BACKDOOR_PORT_NAME = "nxc.backdoor"
# The node's input files (Contract 3) are fw_cfg files <prefix>/<name>: the agent reads
# /sys/firmware/qemu_fw_cfg/by_name/<prefix>/<name>/raw (nxc.inputs=fwcfg:<prefix>).
# Nothing secret goes on the kernel command line.
INPUTS_FWCFG = "opt/nxc"
EXPERIMENT_NETDEV = "exp"
# Host services (the sync service) as the guest sees them: an address on the
# user-mode (management) network whose connections QEMU hands to a command that
# joins the service's unix socket. The experiment NIC never carries them.
GUEST_SERVICE_ADDRESS = "10.0.2.100"
GUEST_SERVICE_FIRST_PORT = 6379
DEFAULT_MEMORY_MB = 256
DEFAULT_CPUS = 1
# Executable names of the QEMU system emulators nxc starts (for recovering them).
QEMU_EXECUTABLES = frozenset({"qemu-system-x86_64", "qemu-system-aarch64"})


@dataclass(frozen=True)
class VmFiles:
    """Per-node files of a running VM, all inside the run's runtime directory."""

    console_log: Path
    qemu_log: Path
    backdoor_socket: Path
    qmp_socket: Path
    pid_file: Path
    host_key: Path
    inputs: Path | None = None  # the node's rendered input files (env, hosts…)

    @classmethod
    def for_node(cls, runtime_dir: Path, log_dir: Path, name: str) -> VmFiles:
        """Sockets, pid and key in the short private ``runtime_dir``; the console and
        QEMU's own log in ``log_dir`` (the run record: they outlive the run)."""
        return cls(
            console_log=log_dir / f"{name}.console.log",
            qemu_log=log_dir / f"{name}.qemu.log",
            backdoor_socket=runtime_dir / f"{name}.bd",
            qmp_socket=runtime_dir / f"{name}.qmp",
            pid_file=runtime_dir / f"{name}.pid",
            host_key=runtime_dir / f"{name}.hostkey",
            inputs=runtime_dir / f"{name}.inputs",
        )


def opt(value: object) -> str:
    """A value inside QEMU's ``key=value,…`` option syntax: commas are doubled."""
    return str(value).replace(",", ",,")


def write_inputs(files: VmFiles, deployment: Deployment, name: str) -> None:
    """Render node ``name``'s input files into ``files.inputs``.

    The host key (``files.host_key``) and the deployment file are written by the
    runtime and handed to QEMU where they are.
    """
    assert files.inputs is not None
    rendered = node_inputs.render(deployment, name)
    shared = {node_inputs.DEPLOYMENT}
    own = {k: v for k, v in rendered.files.items() if k not in shared}
    node_inputs.write(node_inputs.NodeInputs(name, own), files.inputs)


def inputs_args(
    files: VmFiles, deployment_file: Path, private: Mapping[str, Path] | None = None
) -> list[str]:
    """``-fw_cfg`` options handing the node its input files; ``private``: more input
    files (name → file, e.g. ``sync``) that, like the host key, exist only on the host
    and in the guest's fw_cfg."""
    assert files.inputs is not None
    paths = {
        **(private or {}),
        node_inputs.ENV: files.inputs / node_inputs.ENV,
        node_inputs.HOSTS: files.inputs / node_inputs.HOSTS,
        node_inputs.AUTHORIZED_KEYS: files.inputs / node_inputs.AUTHORIZED_KEYS,
        node_inputs.DEPLOYMENT: deployment_file,
        node_inputs.HOST_KEY: files.host_key,
    }
    args: list[str] = []
    for name, path in paths.items():
        args += ["-fw_cfg", f"name={INPUTS_FWCFG}/{name},file={opt(path)}"]
    return args


def kernel_command_line(role_params: str, node: Node) -> str:
    params = [
        role_params.strip(),
        "console=ttyS0",
        "panic=-1",
        f"nxc.node={node.name}",
        f"nxc.inputs=fwcfg:{INPUTS_FWCFG}",
        f"nxc.backdoor={BACKDOOR_PORT_NAME}",
        "nxc.mgmt=dhcp",
    ]
    return " ".join(p for p in params if p)


def accel_args(accel: str) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    # A small translation cache keeps each TCG VM near 170 MiB of host memory.
    return ["-accel", "tcg,tb-size=32"]


def qemu_command(
    qemu: str,
    node: Node,
    kernel: Path,
    initrd: Path,
    role_params: str,
    files: VmFiles,
    deployment_file: Path,
    switch_dir: Path,
    ssh_port: int,
    accel: str,
    memory_mb: int,
    cpus: int,
    inputs: Mapping[str, Path] | None = None,
    services: Sequence[tuple[int, Path]] = (),
    socat: str = "socat",
) -> list[str]:
    """The full QEMU argv for one node (no shell involved).

    ``inputs``: more private input files of the node (name → file, e.g. ``sync``),
    handed over among its input files, like the host key (never on the command line).
    ``services``: (guest port, host unix socket) pairs reached from the guest at
    ``GUEST_SERVICE_ADDRESS``:port.
    """
    forwards = "".join(
        f",guestfwd=tcp:{GUEST_SERVICE_ADDRESS}:{port}-cmd:"
        + opt(f"{socat} STDIO UNIX-CONNECT:{shlex.quote(str(path))}")
        for port, path in services
    )
    return [
        qemu,
        "-name", node.name,
        "-nodefaults",
        "-display", "none",
        "-no-reboot",
        *accel_args(accel),
        "-m", str(memory_mb),
        "-smp", str(cpus),
        "-kernel", str(kernel),
        "-initrd", str(initrd),
        "-append", kernel_command_line(role_params, node),
        # A chardev, not "-serial file:PATH": that legacy form cannot carry every path.
        "-chardev", f"file,id=console,path={opt(files.console_log)}",
        "-serial", "chardev:console",
        *inputs_args(files, deployment_file, inputs),
        "-device", "virtio-serial-pci",
        "-chardev", f"socket,id=backdoor,path={opt(files.backdoor_socket)},server=on,wait=off",
        "-device", f"virtserialport,chardev=backdoor,name={BACKDOOR_PORT_NAME}",
        "-netdev", f"vde,id={EXPERIMENT_NETDEV},sock={opt(switch_dir)}",
        "-device", f"virtio-net-pci,netdev={EXPERIMENT_NETDEV},mac={node.mac}",
        # restrict=on: the management NIC reaches nothing but the forwarded ports
        # (explicit forwards are not affected by restrict).
        "-netdev", f"user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22{forwards}",
        "-device", "virtio-net-pci,netdev=mgmt",
        "-qmp", f"unix:{opt(files.qmp_socket)},server=on,wait=off",
        "-pidfile", str(files.pid_file),
    ]  # fmt: skip


def _probe_cache_file() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "nxc" / "accel-probe.json"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def kvm_boots(
    qemu: str, kernel: Path, work_dir: Path, ledger: Ledger, timeout: float = 4.0
) -> bool:
    """Boot ``kernel`` under KVM for a moment and see whether it prints anything.

    /dev/kvm may exist and still hang forever (nested paravirtual hypervisors), so
    its presence alone proves nothing: only a kernel that actually runs does. The
    probe VM is a resource like any other: recorded in the ledger before anything
    can interrupt us, in a directory of the run (``work_dir``).
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    log = work_dir / "kvm-probe.console.log"
    process = subprocess.Popen(
        [
            qemu, "-nodefaults", "-display", "none", "-no-reboot", "-accel", "kvm",
            "-m", "128", "-kernel", str(kernel),
            "-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1 rdinit=/nonexistent",
            "-chardev", f"file,id=console,path={opt(log)}", "-serial", "chardev:console",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    ledger.record_process(process.pid, "KVM probe VM")

    def printed(_remaining: float) -> Attempt[bool]:
        if log.exists() and b"Linux version" in log.read_bytes():
            return Attempt.ok(True)
        if process.poll() is not None:
            return Attempt.ok(False)
        return Attempt.not_yet("no kernel output yet")

    try:
        return poll("the KVM probe VM to print", printed, timeout)
    except PollExpired:
        return False
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        log.unlink(missing_ok=True)


def choose_accel(requested: str, qemu: str, kernel: Path, work_dir: Path, ledger: Ledger) -> str:
    """Resolve ``auto`` to kvm or tcg, probing once per host boot (cached)."""
    if requested in ("kvm", "tcg"):
        return requested
    cache = _probe_cache_file()
    boot_id = _boot_id()
    try:
        cached = json.loads(cache.read_text())
        if cached.get("boot_id") == boot_id and cached.get("accel") in ("kvm", "tcg"):
            return str(cached["accel"])
    except (OSError, json.JSONDecodeError):
        pass
    accel = "kvm" if kvm_boots(qemu, kernel, work_dir, ledger) else "tcg"
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"boot_id": boot_id, "accel": accel}))
    except OSError:
        pass
    return accel
