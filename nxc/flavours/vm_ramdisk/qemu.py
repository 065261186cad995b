"""QEMU command lines (pure) and the accelerator probe."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from nxc.contracts import Node

BACKDOOR_PORT_NAME = "nxc.backdoor"
DEPLOYMENT_FWCFG = "opt/nxc/deployment"
HOSTKEY_FWCFG = "opt/nxc/hostkey"
EXPERIMENT_NETDEV = "exp"
DEFAULT_MEMORY_MB = 256
DEFAULT_CPUS = 1


@dataclass(frozen=True)
class VmFiles:
    """Per-node files of a running VM, all inside the run's runtime directory."""

    console_log: Path
    qemu_log: Path
    backdoor_socket: Path
    qmp_socket: Path
    pid_file: Path
    host_key: Path

    @classmethod
    def for_node(cls, run_dir: Path, name: str) -> VmFiles:
        return cls(
            console_log=run_dir / f"{name}.console.log",
            qemu_log=run_dir / f"{name}.qemu.log",
            backdoor_socket=run_dir / f"{name}.bd",
            qmp_socket=run_dir / f"{name}.qmp",
            pid_file=run_dir / f"{name}.pid",
            host_key=run_dir / f"{name}.hostkey",
        )


def kernel_command_line(role_params: str, node: Node) -> str:
    params = [
        role_params.strip(),
        "console=ttyS0",
        "panic=-1",
        f"nxc.node={node.name}",
        f"nxc.deployment=fwcfg:{DEPLOYMENT_FWCFG}",
        f"nxc.hostkey=fwcfg:{HOSTKEY_FWCFG}",
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
) -> list[str]:
    """The full QEMU argv for one node (no shell involved)."""
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
        "-serial", f"file:{files.console_log}",
        "-fw_cfg", f"name={DEPLOYMENT_FWCFG},file={deployment_file}",
        "-fw_cfg", f"name={HOSTKEY_FWCFG},file={files.host_key}",
        "-device", "virtio-serial-pci",
        "-chardev", f"socket,id=backdoor,path={files.backdoor_socket},server=on,wait=off",
        "-device", f"virtserialport,chardev=backdoor,name={BACKDOOR_PORT_NAME}",
        "-netdev", f"vde,id={EXPERIMENT_NETDEV},sock={switch_dir}",
        "-device", f"virtio-net-pci,netdev={EXPERIMENT_NETDEV},mac={node.mac}",
        # restrict=on: the management NIC reaches nothing but the forwarded port.
        "-netdev", f"user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=mgmt",
        "-qmp", f"unix:{files.qmp_socket},server=on,wait=off",
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


def kvm_boots(qemu: str, kernel: Path, timeout: float = 4.0) -> bool:
    """Boot ``kernel`` under KVM for a moment and see whether it prints anything.

    /dev/kvm may exist and still hang forever (nested paravirtual hypervisors), so
    its presence alone proves nothing: only a kernel that actually runs does.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with tempfile.TemporaryDirectory(prefix="nxc-kvm-probe-") as tmp:
        log = Path(tmp) / "console.log"
        process = subprocess.Popen(
            [
                qemu, "-nodefaults", "-display", "none", "-no-reboot", "-accel", "kvm",
                "-m", "128", "-kernel", str(kernel),
                "-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1 rdinit=/nonexistent",
                "-serial", f"file:{log}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if log.exists() and b"Linux version" in log.read_bytes():
                    return True
                if process.poll() is not None:
                    return False
                time.sleep(0.05)
            return False
        finally:
            process.kill()
            process.wait()


def choose_accel(requested: str, qemu: str, kernel: Path) -> str:
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
    accel = "kvm" if kvm_boots(qemu, kernel) else "tcg"
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"boot_id": boot_id, "accel": accel}))
    except OSError:
        pass
    return accel
