"""The rehearsal's nodes: one QEMU VM per Grid'5000 node, booted from the
standard-environment image, with two NICs: the *site* NIC on a VDE switch shared by
all nodes (the MAC and address the reference API lists for the node: the experiment
runs there) and a user-mode NIC that forwards the node's ssh port on 127.0.0.1 and
lets the node reach this machine at 10.0.2.2 (QEMU's address for the host's loopback):
the frontend's route to the node and back, which nxc's services (the sync service)
use as they would on Grid'5000. Without ``-no-reboot``: a node
that panics or reboots comes back in its standard environment, as a real node would.

The QEMU pieces (accelerator, option quoting, VDE switch, QMP, console tail) are the
vm-ramdisk flavour's; only the command line differs.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from nxc.flavours.vm_ramdisk.qemu import accel_args, opt
from nxc.flavours.vm_ramdisk.qmp import qmp_command
from nxc.flavours.vm_ramdisk.runtime import tail
from nxc.ledger import Ledger, process_start_time
from nxc.testbeds.rehearsal.layout import MGMT_ADDRESS, SITE_GATEWAY, Layout, Settings, VmSpec
from nxc.wait import Attempt, PollExpired, poll

READY_MARK = b"g5k-stdenv: ready boot_id="
ERROR_MARK = b"g5k-stdenv: error:"


def vm_argv(
    qemu: str, layout: Layout, settings: Settings, spec: VmSpec, user_keys: str
) -> list[str]:
    """QEMU's command line for one rehearsal node (no shell involved)."""

    def fw(name: str, value: str) -> list[str]:
        return ["-fw_cfg", f"name=opt/g5k/{name},string={opt(value)}"]

    argv = [
        qemu,
        "-name", spec.short,
        "-nodefaults", "-display", "none",
        *accel_args(settings.accel),
        "-m", str(settings.memory_mb),
        "-smp", "1",
        "-kernel", settings.kernel,
        "-initrd", settings.initrd,
        "-append", f"{settings.kernel_params} console=ttyS0",
        "-chardev", f"file,id=console,path={opt(layout.console(spec.fqdn))},append=on",
        "-serial", "chardev:console",
        *fw("hostname", spec.short),
        *fw("user", settings.user),
        *fw("user_keys", user_keys),
        "-fw_cfg", f"name=opt/g5k/admin_keys,file={opt(layout.admin_key.with_suffix('.pub'))}",
        "-fw_cfg", f"name=opt/g5k/hostkey,file={opt(layout.host_key(spec.short))}",
        *fw("site_mac", spec.site_mac),
        *fw("site_addr", spec.site_addr),
        *fw("site_gw", SITE_GATEWAY),
        *fw("mgmt_addr", MGMT_ADDRESS),
        "-netdev", f"vde,id=site,sock={opt(layout.switch)}",
        "-device", f"virtio-net-pci,netdev=site,mac={spec.site_mac}",
        # Not restrict=on: the node must reach nxc on the host (10.0.2.2 is its loopback).
        "-netdev", f"user,id=mgmt,hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22",
        "-device", f"virtio-net-pci,netdev=mgmt,mac={spec.mgmt_mac}",
        "-qmp", f"unix:{opt(layout.qmp(spec.short))},server=on,wait=off",
    ]  # fmt: skip
    if settings.shared_dir:
        argv += fw("shared_dir", settings.shared_dir)
        argv += [
            "-virtfs",
            f"local,path={opt(settings.shared_dir)},mount_tag=g5khome,security_model=none,"
            "readonly=on",
        ]
    return argv


@dataclass
class RehearsalVm:
    """One node's VM: started once, reset (rebooted into its standard environment)
    whenever Grid'5000 would reboot the node."""

    spec: VmSpec
    argv: list[str]
    layout: Layout
    pid: int | None = None
    start_time: int | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _offset: int = 0
    boot_id: str | None = None

    @property
    def console(self) -> Path:
        return self.layout.console(self.spec.fqdn)

    def running(self) -> bool:
        return self.pid is not None and process_start_time(self.pid) == self.start_time

    def launch(self, ledger: Ledger) -> None:
        self._mark()
        log = self.layout.qemu_log(self.spec.short)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        self.pid = self._process.pid
        self.start_time = ledger.record_process(
            self.pid, f"rehearsal VM {self.spec.short}"
        ).start_time

    def _mark(self) -> None:
        """Read the console from here on (a reboot's ready line must be a new one)."""
        try:
            self._offset = self.console.stat().st_size
        except OSError:
            self._offset = 0
        self.boot_id = None

    def reset(self) -> None:
        """Reboot into the standard environment (QEMU reloads -kernel/-initrd)."""
        self._mark()
        qmp_command(self.layout.qmp(self.spec.short), "system_reset")

    def poll_ready(self) -> Attempt[str]:
        try:
            with open(self.console, "rb") as console:
                console.seek(self._offset)
                chunk = console.read()
        except OSError:
            chunk = b""
        for line in chunk.splitlines():
            if ERROR_MARK in line:
                raise RuntimeError(line[line.index(ERROR_MARK) :].decode(errors="replace"))
            if READY_MARK in line:
                self.boot_id = line.split(READY_MARK, 1)[1].split()[0].decode()
                return Attempt.ok(self.boot_id)
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"QEMU exited ({tail(self.layout.qemu_log(self.spec.short), 3)})")
        return Attempt.not_yet(tail(self.console, 3))

    def wait_ready(self, timeout: float) -> str:
        try:
            return poll(
                f"{self.spec.short} to boot its standard environment",
                lambda _r: self.poll_ready(),
                timeout,
                first=0.2,
                longest=1.0,
            )
        except PollExpired as exc:
            raise RuntimeError(f"{self.spec.short}: {exc}") from None
