"""vm-ramdisk: one local QEMU VM per node, booted straight from the role's kernel+initrd.

Nodes share an experiment network on a VDE switch (user space, never touches the
host's network) and each has a user-mode NIC whose only use is a forwarded ssh
port on 127.0.0.1. The driver talks to a VM through its virtio-serial backdoor.

Phases (see :mod:`nxc.runtime.contract`): ``acquire`` starts the switch, picks the
accelerator and gives every node an ssh endpoint; ``launch`` starts every QEMU in
parallel and waits for each agent's ready line on the serial console.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from nxc.contracts import Deployment, Manifest
from nxc.errors import NxcError, StartError, StateError
from nxc.flavours.vm_ramdisk.qemu import (
    DEFAULT_CPUS,
    DEFAULT_MEMORY_MB,
    EXPERIMENT_NETDEV,
    GUEST_SERVICE_ADDRESS,
    GUEST_SERVICE_FIRST_PORT,
    QEMU_EXECUTABLES,
    VmFiles,
    choose_accel,
    qemu_command,
    write_inputs,
)
from nxc.flavours.vm_ramdisk.qmp import qmp_command
from nxc.ledger import Ledger, Resource, process_start_time
from nxc.parallel import each
from nxc.project import Project
from nxc.runtime import ready
from nxc.runtime.contract import (
    HostService,
    Progress,
    RuntimeBase,
    RuntimeContext,
    RuntimeState,
)
from nxc.runtime.memory import boot_memory_mb, check_memory, least_memory_mb
from nxc.runtime.node import Capability
from nxc.runtime.options import FlavourOptions, Option
from nxc.runtime.transport import Transport
from nxc.tools import require_tool
from nxc.wait import Attempt, PollExpired, poll

READY_MARK = b"nxc-ready node="
ERROR_MARK = b"nxc-agent-error:"
# The kernel's own words for why it stopped: shown first when a VM dies at boot.
_PANIC = re.compile(r"Kernel panic - not syncing:.*|Out of memory.*|Initramfs unpacking failed.*")
VM_CAPABILITIES = frozenset(
    {Capability.POWER, Capability.CRASH, Capability.BLOCK, Capability.CONSOLE, Capability.PAUSE}
)


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


def boot_failure(console: Path, qemu_log: Path, argv: list[str], status: int | None) -> str:
    """Why a VM stopped during boot: the kernel's own words (the first panic or OOM
    line, which sits far above the stack trace the console ends with), what QEMU
    said, or — when neither said anything — the likeliest cause."""
    try:
        text = console.read_bytes()[-262144:].decode(errors="replace").replace("\r", "")
    except OSError:
        text = ""
    causes = _PANIC.findall(text)
    parts = []
    if causes:
        parts.append(f"the kernel said: {causes[0].strip()}")
    qemu_said = tail(qemu_log, 3)
    if qemu_said != "(no output)":
        parts.append(f"QEMU said: {qemu_said}")
    if parts:
        return "; ".join(parts)
    memory = _argv_value(argv, "-m")
    initrd = _argv_value(argv, "-initrd")
    try:
        initrd_mb = f"{Path(initrd).stat().st_size / 2**20:.0f} MiB" if initrd else "?"
    except OSError:
        initrd_mb = "?"
    exited = f"QEMU exited (status {status})" if status is not None else "QEMU exited"
    if not text.strip():
        return (
            f"{exited} before the kernel printed anything: with {memory} MiB of memory for a "
            f"{initrd_mb} initrd the kernel cannot even unpack it (give the role more memory: "
            "--memory)"
        )
    return f"{exited}; see the console log"


def _argv_value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


@dataclass
class VmNode:
    """NodeControl for one VM, rebuilt from runtime.json in any nxc process."""

    name: str
    argv: list[str]
    files: VmFiles
    ledger: Ledger
    state: RuntimeState
    pid: int | None = None
    start_time: int | None = None
    last_boot_id: str | None = None
    flavour: str = "vm-ramdisk"
    capabilities: frozenset[Capability] = VM_CAPABILITIES
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

    def boot_id(self) -> str | None:
        return self.last_boot_id

    def launch(self) -> None:
        """Start QEMU (not waiting for the guest) and record the process at once."""
        if self.is_running():
            return
        if not self.state.exists():
            # nxc stop ran meanwhile: starting a VM now would leak it.
            raise StateError(f"{self.name}: the deployment was stopped (run 'nxc start' again)")
        with contextlib.suppress(FileNotFoundError):
            # Keep the previous boot's console for post-mortems, start a fresh one.
            self.files.console_log.replace(self.files.console_log.with_suffix(".log.prev"))
        self._console_offset = 0
        self.last_boot_id = None
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
        resource = self.ledger.record_process(self.pid, f"qemu for {self.name}", node=self.name)
        self.start_time = resource.start_time
        self._save()

    def _save(self) -> None:
        def change(state: dict[str, Any]) -> None:
            entry = state["nodes"][self.name]
            entry.update(pid=self.pid, start_time=self.start_time, boot_id=self.last_boot_id)

        self.state.update(change)

    def poll_ready(self) -> Attempt[str]:
        """Done once the agent announced readiness; raise StartError if the boot failed."""
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
                message = line[line.index(ERROR_MARK) :].decode(errors="replace").strip()
                raise StartError(f"{self.name}: {message}")
            if READY_MARK in line:
                fields = dict(part.split(b"=", 1) for part in line.split() if b"=" in part)
                if fields.get(b"node", b"").decode() == self.name:
                    self.last_boot_id = fields.get(b"boot_id", b"").decode() or None
                    self._save()
                    return Attempt.ok(self.last_boot_id or "")
        if not self.is_running():
            status = self._process.returncode if self._process is not None else None
            raise StartError(
                f"{self.name}: the VM stopped during boot: "
                f"{boot_failure(self.files.console_log, self.files.qemu_log, self.argv, status)}"
            )
        return Attempt.not_yet(self.console_tail(3))

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
        def exited(_remaining: float) -> Attempt[bool]:
            if self._process is not None:
                self._process.poll()
            return Attempt.ok(True) if not self.is_running() else Attempt.not_yet("running")

        try:
            return poll(f"{self.name} to stop", exited, timeout)
        except PollExpired:
            return False

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

    def _qmp(self, command: str, arguments: dict[str, Any] | None = None) -> None:
        if not self.is_running():
            raise NxcError(f"{self.name}: the VM is not running")
        qmp_command(self.files.qmp_socket, command, arguments)

    def block(self) -> None:
        self._qmp("set_link", {"name": EXPERIMENT_NETDEV, "up": False})

    def unblock(self) -> None:
        self._qmp("set_link", {"name": EXPERIMENT_NETDEV, "up": True})

    def pause(self) -> None:
        self._qmp("stop")

    def resume(self) -> None:
        self._qmp("cont")

    def console_tail(self, lines: int = 20) -> str:
        return tail(self.files.console_log, lines)


def start_vde_switch(vde_switch: str, switch_dir: Path, log_dir: Path, ledger: Ledger) -> Resource:
    """Start a VDE switch in the foreground (so its pid is known and recorded at once).

    In the foreground vde_switch exits at EOF on stdin; its stdin is a FIFO it holds
    open for reading and writing itself, which never reaches EOF.
    """
    console = switch_dir.with_name("switch.console")
    os.mkfifo(console, 0o600)
    holder = os.open(console, os.O_RDWR)
    log = log_dir / "switch.log"
    try:
        with open(log, "ab") as log_file:
            process = subprocess.Popen(
                [vde_switch, "-s", str(switch_dir)],
                stdin=holder,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
    finally:
        os.close(holder)
    resource = ledger.record_process(process.pid, "vde_switch")

    def listening(_remaining: float) -> Attempt[bool]:
        if (switch_dir / "ctl").exists():
            return Attempt.ok(True)
        if process.poll() is not None:
            raise StartError(f"vde_switch exited at once: {tail(log, 3)}")
        return Attempt.not_yet(tail(log, 3))

    try:
        poll("the VDE switch to listen", listening, 10)
    except PollExpired as exc:
        raise StartError(f"vde_switch did not start: {exc}") from None
    return resource


def wait_all_ready(nodes: list[VmNode], timeout: float, progress: Progress | None = None) -> None:
    """Wait until every node's agent reports ready, or fail naming each late node."""
    logs = f"console logs in {nodes[0].files.console_log.parent}" if nodes else ""
    ready.wait_all_ready(nodes, timeout, progress, logs=logs)


class VmRamdiskRuntime(RuntimeBase):
    name: ClassVar[str] = "vm-ramdisk"
    summary: ClassVar[str] = "local QEMU VMs booted from each role's kernel + initrd"
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "accel",
            "VM accelerator (auto probes KVM with a short boot, else TCG).",
            type="choice",
            choices=("auto", "kvm", "tcg"),
            default="auto",
        ),
        Option(
            "memory",
            "VM memory in MiB, for every role or one (default: the role's resources).",
            type="int",
            per_role=True,
            minimum=1,
            metavar="[ROLE=]MiB",
        ),
        Option(
            "cpus",
            "VM CPU count, for every role or one (default: the role's resources).",
            type="int",
            per_role=True,
            minimum=1,
        ),
    )

    def check_host(self, manifest: Manifest, options: FlavourOptions) -> None:
        require_tool("qemu-system-x86_64")
        require_tool("vde_switch")
        require_tool("socat")  # joins guests to the sync service's socket
        manifest.require_boot_artifacts()

    def service_address(self, ctx: RuntimeContext, deployment: Deployment) -> str | None:
        # No TCP listener on the host: QEMU forwards a guest address to the socket.
        return None

    def node_endpoint(
        self, ctx: RuntimeContext, deployment: Deployment, node: str, service: HostService
    ) -> tuple[str, int]:
        return GUEST_SERVICE_ADDRESS, _guest_ports(ctx)[service.name]

    def acquire(self, ctx: RuntimeContext, deployment: Deployment) -> Deployment:
        qemu = require_tool("qemu-system-x86_64")
        vde_switch = require_tool("vde_switch")
        first_role = next(r for r in ctx.manifest.roles.values() if deployment.roles.get(r.name))
        assert first_role.kernel is not None
        ctx.say("choosing accelerator")
        accel = choose_accel(
            ctx.options.get("accel", default="auto"),
            qemu,
            first_role.kernel,
            ctx.runtime_dir,
            ctx.ledger,
        )
        ctx.facts["accelerator"] = accel
        switch_dir = ctx.runtime_dir / "switch"
        ctx.say("starting the experiment network (VDE switch)")
        switch = start_vde_switch(vde_switch, switch_dir, ctx.run_dir, ctx.ledger)
        ctx.state.save(
            {
                "accel": accel,
                "runtime_dir": str(ctx.runtime_dir),
                "switch": {
                    "dir": str(switch_dir),
                    "pid": int(switch.ident),
                    "start_time": switch.start_time,
                },
                "nodes": {},
            }
        )
        nodes = [
            replace(n, ssh_host="127.0.0.1", ssh_port=free_tcp_port()) for n in deployment.nodes
        ]
        return replace(deployment, nodes=nodes)

    def launch(self, ctx: RuntimeContext, deployment: Deployment) -> None:
        qemu = require_tool("qemu-system-x86_64")
        socat = require_tool("socat") if ctx.services else "socat"
        ports = _guest_ports(ctx)
        services = [(ports[name], svc.unix_socket) for name, svc in sorted(ctx.services.items())]
        state = ctx.state.load()
        deployment_file = ctx.runtime_dir / "deployment.json"
        deployment_file.write_text(deployment.to_json())
        node_dir = ctx.run_dir / "nodes"
        node_dir.mkdir(parents=True, exist_ok=True)
        vms: list[VmNode] = []
        for node in deployment.nodes:
            role = ctx.manifest.roles[node.role]
            assert role.kernel is not None and role.initrd is not None
            files = VmFiles.for_node(ctx.runtime_dir, node_dir, node.name)
            files.host_key.write_bytes(ctx.host_keys[node.name].read_bytes())
            files.host_key.chmod(0o600)
            write_inputs(files, deployment, node.name)
            # The default is sized from the image; an explicit size is checked against it.
            needed = boot_memory_mb(role.kernel, role.initrd, ctx.manifest.image_kind)
            memory = ctx.options.get(
                "memory", node.role, role.memory_mb or max(DEFAULT_MEMORY_MB, needed)
            )
            check_memory(
                node.role,
                memory,
                needed,
                least_memory_mb(role.kernel, role.initrd),
                "the VM's memory",
                f"give --memory {node.role}={needed}",
                ctx.say,
            )
            cpus = ctx.options.get("cpus", node.role, role.cpus or DEFAULT_CPUS)
            assert node.ssh_port is not None
            argv = qemu_command(
                qemu, node, role.kernel, role.initrd, role.kernel_params, files,
                deployment_file, Path(state["switch"]["dir"]), node.ssh_port,
                state["accel"], memory, cpus,
                ctx.node_inputs.get(node.name, {}), services, socat,
            )  # fmt: skip
            state["nodes"][node.name] = {
                "argv": argv,
                "files": {k: str(v) for k, v in files.__dict__.items()},
                "ssh_port": node.ssh_port,
                "memory_mb": memory,
                "cpus": cpus,
            }
            vms.append(VmNode(node.name, argv, files, ctx.ledger, ctx.state))
        ctx.state.save(state)
        ctx.say(f"booting {len(vms)} VMs ({state['accel']})")
        each(VmNode.launch, vms, "starting QEMU", label=lambda vm: vm.name, workers=16)
        ctx.begin_phase("ready")
        wait_all_ready(vms, ctx.ready_timeout, ctx.progress)

    def nodes(self, project: Project, deployment: Deployment) -> dict[str, VmNode]:
        runtime = self.state(project)
        if not runtime.exists():
            raise StateError("no running deployment (run 'nxc start' first)")
        state = runtime.load()
        ledger = project.ledger
        nodes = {}
        try:
            for name, entry in state["nodes"].items():
                files = VmFiles(**{k: Path(v) for k, v in entry["files"].items()})
                nodes[name] = VmNode(
                    name=name,
                    argv=list(entry["argv"]),
                    files=files,
                    ledger=ledger,
                    state=runtime,
                    pid=entry.get("pid"),
                    start_time=entry.get("start_time"),
                    last_boot_id=entry.get("boot_id"),
                )
        except (KeyError, TypeError, AttributeError) as exc:
            raise StateError(f"{runtime.path}: corrupt state file ({exc!r})") from None
        return nodes

    def recover(self, project: Project) -> list[Resource]:
        """Find this project's VMs and switches without the ledger.

        From runtime.json if it is readable; and in any case from the runtime
        directories nxc marked as this project's: their QEMU and vde_switch
        processes (recognised by executable and by naming that directory) and the
        directories themselves.
        """
        found: list[Resource] = []
        with contextlib.suppress(StateError, KeyError, TypeError, AttributeError):
            state = self.state(project).load()
            switch = state["switch"]
            found.append(
                Resource("process", str(switch["pid"]), "vde_switch", switch.get("start_time"))
            )
            for name, entry in state["nodes"].items():
                if entry.get("pid"):
                    found.append(
                        Resource(
                            "process",
                            str(entry["pid"]),
                            f"qemu for {name}",
                            entry.get("start_time"),
                        )
                    )
        for directory in project.marked_runtime_dirs():
            for pid, start in _processes_naming(directory, {*QEMU_EXECUTABLES, "vde_switch"}):
                found.append(Resource("process", str(pid), f"process using {directory}", start))
            found.append(Resource("path", str(directory), "runtime directory"))
        return found

    def health(self, project: Project, deployment: Deployment) -> list[str]:
        try:
            switch = self.state(project).load()["switch"]
        except (StateError, KeyError, TypeError):
            return ["the VM runtime state is unreadable (nxc stop, then start again)"]
        if process_start_time(int(switch["pid"])) != switch.get("start_time"):
            return [
                f"the experiment network switch (vde_switch, pid {switch['pid']}) is not running: "
                "nodes cannot reach each other (nxc stop, then start again)"
            ]
        return []

    def status(self, project: Project, deployment: Deployment) -> dict[str, str]:
        with contextlib.suppress(StateError, KeyError, TypeError):
            return {"accelerator": str(self.state(project).load()["accel"])}
        return {}


def _guest_ports(ctx: RuntimeContext) -> dict[str, int]:
    return {
        name: GUEST_SERVICE_FIRST_PORT + number for number, name in enumerate(sorted(ctx.services))
    }


def _processes_naming(directory: Path, executables: set[str]) -> list[tuple[int, int | None]]:
    """Processes of ours whose executable is one of ``executables`` and whose argv names
    ``directory`` (only nxc starts such processes: the directory is nxc's own)."""
    found = []
    needle = str(directory).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or Path(argv[0].decode(errors="replace")).name not in executables:
            continue
        if any(needle in arg for arg in argv[1:]):
            pid = int(entry.name)
            found.append((pid, process_start_time(pid)))
    return found
