"""vm-ramdisk: one local QEMU VM per node, booted straight from the role's kernel+initrd.

Nodes share an experiment network on a VDE switch (user space, never touches the
host's network) and each has a user-mode NIC whose only use is a forwarded ssh
port on 127.0.0.1. The driver talks to a VM through its virtio-serial backdoor.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nxc.contracts import Deployment, Manifest
from nxc.errors import NxcError, StartError, StateError
from nxc.flavours.base import StartOptions
from nxc.flavours.vm_ramdisk.qemu import (
    DEFAULT_CPUS,
    DEFAULT_MEMORY_MB,
    EXPERIMENT_NETDEV,
    VmFiles,
    choose_accel,
    qemu_command,
)
from nxc.flavours.vm_ramdisk.qmp import qmp_command
from nxc.project import Ledger, Project, process_start_time, read_json, runtime_base_dir, write_json
from nxc.runtime.transport import Transport
from nxc.tools import require_tool

READY_MARK = b"nxc-ready node="
ERROR_MARK = b"nxc-agent-error:"
Progress = Callable[[str], None]
_RUNTIME_FILE_LOCK = threading.Lock()


def free_tcp_port() -> int:
    """A port on 127.0.0.1 nobody listens on right now (QEMU binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 20) -> str:
    try:
        data = path.read_bytes()[-16384:]
    except OSError:
        return "(no output)"
    text = data.decode(errors="replace").replace("\r", "")
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


@dataclass
class VmNode:
    """NodeControl for one VM, rebuilt from runtime.json in any nxc process."""

    name: str
    argv: list[str]
    files: VmFiles
    ledger: Ledger
    runtime_file: Path
    pid: int | None = None
    start_time: int | None = None
    boot_id: str | None = None
    _transport: Transport | None = field(default=None, repr=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _console_offset: int = 0

    # -- process management -------------------------------------------------
    def is_running(self) -> bool:
        if self.pid is None:
            return False
        if self._process is not None and self._process.poll() is not None:
            return False
        return process_start_time(self.pid) == self.start_time

    def launch(self) -> None:
        """Start QEMU (not waiting for the guest) and record the process at once."""
        if self.is_running():
            return
        with contextlib.suppress(FileNotFoundError):
            # Keep the previous boot's console for post-mortems, start a fresh one.
            self.files.console_log.replace(self.files.console_log.with_suffix(".log.prev"))
        self._console_offset = 0
        self.boot_id = None
        for stale in (self.files.backdoor_socket, self.files.qmp_socket, self.files.pid_file):
            stale.unlink(missing_ok=True)
        with open(self.files.qemu_log, "ab") as qemu_log:
            # Own session: a Ctrl-C in the terminal must not kill VMs behind our back;
            # cleanup is ours to do, from the ledger.
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=qemu_log,
                stderr=qemu_log,
                start_new_session=True,
            )
        self.pid = self._process.pid
        resource = self.ledger.record_process(self.pid, f"qemu for {self.name}")
        self.start_time = resource.start_time
        self._save()

    def _save(self) -> None:
        with _RUNTIME_FILE_LOCK:  # nodes launch in parallel threads
            if not self.runtime_file.exists():
                return
            state = read_json(self.runtime_file)
            entry = state["nodes"][self.name]
            entry["pid"] = self.pid
            entry["start_time"] = self.start_time
            entry["boot_id"] = self.boot_id
            write_json(self.runtime_file, state)

    def poll_ready(self) -> bool | str:
        """True once the agent announced readiness; a message if the boot failed."""
        try:
            with open(self.files.console_log, "rb") as console:
                console.seek(self._console_offset)
                chunk = console.read()
        except FileNotFoundError:
            chunk = b""
        # Only scan complete lines, so a line being written is read again whole.
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._console_offset += len(complete)
        for line in complete.splitlines():
            if ERROR_MARK in line:
                return line[line.index(ERROR_MARK) :].decode(errors="replace").strip()
            if READY_MARK in line:
                fields = dict(part.split(b"=", 1) for part in line.split() if b"=" in part)
                if fields.get(b"node", b"").decode() == self.name:
                    self.boot_id = fields.get(b"boot_id", b"").decode() or None
                    self._save()
                    return True
        if not self.is_running():
            return f"QEMU exited: {tail(self.files.qemu_log, 3)}"
        return False

    def wait_ready(self, timeout: float) -> None:
        wait_all_ready([self], timeout)

    # -- NodeControl --------------------------------------------------------
    def transport(self) -> Transport:
        if not self.is_running():
            raise NxcError(f"{self.name}: the VM is not running (start it first)")
        if self._transport is None or getattr(self._transport, "closed", False):
            # A released (closed) transport is replaced: the node is still there.
            from nxc.flavours.vm_ramdisk.backdoor import BackdoorTransport

            self._transport = BackdoorTransport(self.files.backdoor_socket, self.name)
        return self._transport

    def _drop_transport(self) -> None:
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.close()
            self._transport = None

    def start(self, timeout: float = 180.0) -> None:
        if self.is_running():
            return
        self._drop_transport()
        self.launch()
        self.wait_ready(timeout)

    def _wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(timeout=0.05)
            if not self.is_running():
                return True
            time.sleep(0.05)
        return not self.is_running()

    def shutdown(self, timeout: float = 60.0) -> None:
        if not self.is_running():
            return
        with contextlib.suppress(Exception):
            # The connection drops as the guest powers off: that is success.
            self.transport().run("poweroff", timeout=10)
        self._drop_transport()
        if not self._wait_exit(timeout):
            raise NxcError(
                f"{self.name}: still running {timeout:.0f}s after poweroff; "
                f"console:\n{self.console_tail()}"
            )

    def crash(self) -> None:
        if not self.is_running():
            return
        self._drop_transport()
        assert self.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self._wait_exit(10)

    def _set_link(self, up: bool) -> None:
        if not self.is_running():
            raise NxcError(f"{self.name}: the VM is not running")
        qmp_command(self.files.qmp_socket, "set_link", {"name": EXPERIMENT_NETDEV, "up": up})

    def block(self) -> None:
        self._set_link(False)

    def unblock(self) -> None:
        self._set_link(True)

    def console_tail(self, lines: int = 20) -> str:
        return tail(self.files.console_log, lines)


def start_vde_switch(vde_switch: str, switch_dir: Path, run_dir: Path, ledger: Ledger) -> int:
    """Start a VDE switch in the foreground (so its pid is known and recorded at once).

    In the foreground vde_switch exits at EOF on stdin; its stdin is a FIFO it holds
    open for reading and writing itself, which never reaches EOF.
    """
    console = run_dir / "switch.console"
    os.mkfifo(console, 0o600)
    holder = os.open(console, os.O_RDWR)
    try:
        with open(run_dir / "switch.log", "ab") as log_file:
            process = subprocess.Popen(
                [vde_switch, "-s", str(switch_dir)],
                stdin=holder,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
    finally:
        os.close(holder)
    ledger.record_process(process.pid, "vde_switch")
    deadline = time.monotonic() + 10
    while not (switch_dir / "ctl").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise StartError(f"vde_switch did not start: {tail(run_dir / 'switch.log', 3)}")
        time.sleep(0.01)
    return process.pid


def wait_all_ready(nodes: list[VmNode], timeout: float, progress: Progress | None = None) -> None:
    """Wait until every node's agent reports ready, or fail naming each late node."""
    pending = {n.name: n for n in nodes}
    failed: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    total = len(nodes)
    while pending and time.monotonic() < deadline:
        for name, node in list(pending.items()):
            state = node.poll_ready()
            if state is True:
                del pending[name]
                if progress:
                    progress(f"{total - len(pending) - len(failed)}/{total} nodes ready")
            elif isinstance(state, str):
                failed[name] = state
                del pending[name]
        if failed:
            break
        if pending:
            time.sleep(0.02)
    if not pending and not failed:
        return
    parts = []
    for name, reason in failed.items():
        node = next(n for n in nodes if n.name == name)
        parts.append(f"{name}: {reason}\n--- console of {name} ---\n{node.console_tail(15)}")
    for name, node in pending.items():
        parts.append(
            f"{name}: not ready after {timeout:.0f}s\n"
            f"--- console of {name} ---\n{node.console_tail(15)}"
        )
    late = ", ".join([*failed, *pending])
    raise StartError(f"nodes not ready: {late}\n" + "\n".join(parts))


class VmRamdiskRuntime:
    flavour = "vm-ramdisk"

    def check_host(self) -> None:
        require_tool("qemu-system-x86_64")
        require_tool("vde_switch")

    def prepare(self, deployment: Deployment, options: StartOptions) -> Deployment:
        nodes = [
            replace(n, ssh_host="127.0.0.1", ssh_port=free_tcp_port()) for n in deployment.nodes
        ]
        return replace(deployment, nodes=nodes)

    def start(
        self,
        project: Project,
        manifest: Manifest,
        deployment: Deployment,
        host_keys: dict[str, Path],
        options: StartOptions,
        progress: Progress | None = None,
    ) -> None:
        self.check_host()
        manifest.require_boot_artifacts()
        qemu = require_tool("qemu-system-x86_64")
        vde_switch = require_tool("vde_switch")
        ledger = project.ledger
        say = progress or (lambda _msg: None)

        run_dir = runtime_base_dir() / f"nxc-{deployment.id}"
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=False)
        ledger.record_path(run_dir, "runtime directory")

        deployment_file = run_dir / "deployment.json"
        deployment_file.write_text(deployment.to_json())

        first_role = next(r for r in manifest.roles.values() if deployment.roles.get(r.name))
        assert first_role.kernel is not None
        say("choosing accelerator")
        accel = choose_accel(options.accel, qemu, first_role.kernel)

        switch_dir = run_dir / "switch"
        say("starting the experiment network (VDE switch)")
        switch_pid = start_vde_switch(vde_switch, switch_dir, run_dir, ledger)

        state: dict[str, Any] = {
            "flavour": self.flavour,
            "deployment": deployment.id,
            "run_dir": str(run_dir),
            "accel": accel,
            "switch": {"dir": str(switch_dir), "pid": switch_pid},
            "nodes": {},
        }
        vms: list[VmNode] = []
        for node in deployment.nodes:
            role = manifest.roles[node.role]
            assert role.kernel is not None and role.initrd is not None
            files = VmFiles.for_node(run_dir, node.name)
            files.host_key.write_bytes(host_keys[node.name].read_bytes())
            files.host_key.chmod(0o600)
            memory = options.memory_mb.get(
                node.role, options.memory_mb.get("", role.memory_mb or DEFAULT_MEMORY_MB)
            )
            cpus = options.cpus.get(node.role, options.cpus.get("", role.cpus or DEFAULT_CPUS))
            assert node.ssh_port is not None
            argv = qemu_command(
                qemu, node, role.kernel, role.initrd, role.kernel_params, files,
                deployment_file, switch_dir, node.ssh_port, accel, memory, cpus,
            )  # fmt: skip
            state["nodes"][node.name] = {
                "argv": argv,
                "files": {k: str(v) for k, v in files.__dict__.items()},
                "ssh_port": node.ssh_port,
                "memory_mb": memory,
                "cpus": cpus,
            }
            vms.append(VmNode(node.name, argv, files, ledger, project.runtime_file))
        write_json(project.runtime_file, state)

        say(f"booting {len(vms)} VMs ({accel})")
        with ThreadPoolExecutor(max_workers=min(16, len(vms))) as pool:
            list(pool.map(VmNode.launch, vms))
        wait_all_ready(vms, options.ready_timeout, say)

    def nodes(self, project: Project) -> dict[str, VmNode]:
        if not project.runtime_file.exists():
            raise StateError("no running deployment (run 'nxc start' first)")
        state = read_json(project.runtime_file)
        ledger = project.ledger
        nodes = {}
        for name, entry in state["nodes"].items():
            files = VmFiles(**{k: Path(v) for k, v in entry["files"].items()})
            nodes[name] = VmNode(
                name=name,
                argv=entry["argv"],
                files=files,
                ledger=ledger,
                runtime_file=project.runtime_file,
                pid=entry.get("pid"),
                start_time=entry.get("start_time"),
                boot_id=entry.get("boot_id"),
            )
        return nodes
