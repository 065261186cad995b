"""The selftest image for real: `nix build` of nix/selftest, two QEMU VMs on a private
VDE switch, driven through the virtio-serial backdoor and ssh.

Each node reads its input files (rendered by nxc/runtime/node_inputs.py) from QEMU
fw_cfg: node1 under the prefix the vm-ramdisk runtime uses, node2 under another one.
Everything started here is stopped by PID, even when a test fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nxc.contracts import Deployment, Manifest
from nxc.expand import expand
from nxc.flavours.vm_ramdisk.backdoor import BackdoorTransport
from nxc.runtime import node_inputs
from nxc.runtime.transport import CommandResult, TransportError

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
NIX = ["nix", "--extra-experimental-features", "nix-command flakes", "--offline"]
READY = re.compile(
    rb"^nxc-ready node=(?P<node>\S+) role=(?P<role>\S+) index=(?P<index>\d+) "
    rb"boot_id=(?P<boot_id>[0-9a-f-]{36})\r?$",
    re.MULTILINE,
)
# The role: a web page served by busybox httpd, started once the agent is ready.
STARTUP = (
    "mkdir -p /srv/www\n"
    'echo "page of $NXC_NODE" > /srv/www/index.html\n'
    "busybox httpd -p 80 -h /srv/www\n"
    "echo ran > /run/startup-ran\n"
)
EXTRA_PACKAGE = "/usr/bin/socat"


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"these tests need {', '.join(missing)} (run scripts/setup)")


def wait_until(
    check: Callable[[], bool], what: str, timeout: float, seen: Callable[[], str]
) -> None:
    """Poll ``check`` until true; on timeout say what was awaited and what was seen last."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what}; last seen:\n{seen()}"
            )
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def keygen(path: Path, comment: str) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


# --- the image --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> Path:
    """The role's kernel + initrd, built with real nix from nix/selftest."""
    require("nix", "busybox", "cpio")
    assert "${" not in STARTUP  # it goes into a Nix string below
    expression = (
        f"import {REPO}/nix/selftest {{"
        f' name = "e2e"; agent = {REPO}/nxc/agent/nxc-agent;'
        f" role = {{ startup = {json.dumps(STARTUP)};"
        f" packages = [ {json.dumps(EXTRA_PACKAGE)} ]; }};"
        " }"
    )
    started = time.monotonic()
    result = subprocess.run(
        [*NIX, "build", "--impure", "--no-link", "--json", "--expr", expression],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"nix build failed:\n{result.stderr[-3000:]}"
    out = Path(json.loads(result.stdout)[0]["outputs"]["out"])
    info = json.loads((out / "info.json").read_text())
    print(
        f"\nimage {out}: built in {time.monotonic() - started:.1f}s,"
        f" kernel {info['kernel_version']},"
        f" initrd {info['initrd_bytes'] / 1e6:.1f} MB"
        f" ({info['initrd_uncompressed_bytes'] / 1e6:.1f} MB unpacked)"
    )
    return out


def test_image_artifacts(image: Path) -> None:
    params = (image / "kernel-params").read_text().split()
    assert "rdinit=/init" in params
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    assert any(k.read_bytes() == (image / "kernel").read_bytes() for k in kernels)
    listing = subprocess.run(
        f"gzip -dc {image}/initrd | cpio -t --quiet", shell=True, capture_output=True, check=True
    ).stdout.decode()
    files = set(listing.split())
    for path in (
        "init",
        "usr/bin/busybox",
        "usr/bin/nxc-agent",
        "usr/sbin/ip",
        "usr/sbin/tc",
        "usr/sbin/sshd",
        "usr/sbin/kexec",
        "usr/bin/iperf3",
        "usr/bin/fping",
        "usr/bin/scp",
        "usr/lib/openssh/sftp-server",
        "usr/lib64/ld-linux-x86-64.so.2",
        EXTRA_PACKAGE.lstrip("/"),
        "etc/passwd",
        "etc/nxc/startup",
    ):
        assert path in files or f"./{path}" in files, f"{path} is not in the initrd"
    for module in ("virtio_net", "sch_netem", "sch_htb", "cls_u32", "ifb", "act_mirred"):
        assert any(f.endswith(f"/{module}.ko") for f in files), module


# --- the VMs ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Vm:
    name: str
    dir: Path
    port: int
    mac: str
    ipv4: str
    ipv6: str
    host_key: str
    proc: subprocess.Popen[bytes]
    launched: float
    transport: BackdoorTransport
    ready_after: float = 0.0

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    def console_text(self) -> bytes:
        return self.console.read_bytes() if self.console.exists() else b""

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.console_text().decode(errors="replace").splitlines()[-lines:])

    def run(self, command: str, timeout: float = 60) -> CommandResult:
        return self.transport.run(command, timeout=timeout)

    def succeed(self, command: str, timeout: float = 60) -> str:
        result = self.run(command, timeout)
        assert result.status == 0, (
            f"{self.name}: `{command}` exited {result.status}\n"
            f"stdout: {result.output}\nstderr: {result.stderr.decode(errors='replace')}"
        )
        return result.output

    def ready_lines(self) -> list[re.Match[bytes]]:
        return list(READY.finditer(self.console_text()))


@dataclasses.dataclass
class Cluster:
    dir: Path
    image: Path
    deployment: Deployment
    user_key: Path
    known_hosts: Path
    vms: dict[str, Vm]

    def ssh(self, vm: Vm, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", *self.ssh_options(), "-p", str(vm.port), "root@127.0.0.1", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ssh_options(self) -> list[str]:
        return [
            "-F", "/dev/null",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "ConnectTimeout=20",
            "-i", str(self.user_key),
        ]  # fmt: skip


def qemu_argv(
    image: Path, vm_dir: Path, switch: Path, mac: str, port: int, append: str
) -> list[str]:
    return [
        "qemu-system-x86_64", "-nodefaults", "-display", "none", "-no-reboot",
        "-accel", "tcg,tb-size=32", "-m", "256", "-smp", "1",
        "-kernel", str(image / "kernel"), "-initrd", str(image / "initrd"),
        "-append", append,
        "-serial", f"file:{vm_dir / 'console.log'}",
        "-device", "virtio-serial-pci",
        "-chardev", f"socket,id=backdoor,path={vm_dir / 'backdoor.sock'},server=on,wait=off",
        "-device", "virtserialport,chardev=backdoor,name=nxc.backdoor",
        "-netdev", f"vde,id=exp,sock={switch}",
        "-device", f"virtio-net-pci,netdev=exp,mac={mac}",
        "-netdev", f"user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=mgmt",
        "-qmp", f"unix:{vm_dir / 'qmp.sock'},server=on,wait=off",
    ]  # fmt: skip


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop a process this test started, by its PID: TERM, then KILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)


@pytest.fixture(scope="module")
def cluster(image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require("qemu-system-x86_64", "vde_switch", "ssh", "ssh-keygen", "ssh-keyscan", "scp")
    base = tmp_path_factory.mktemp("selftest-vms")
    with contextlib.ExitStack() as cleanup:
        # keys made for this run only
        user_pub = keygen(base / "id_ed25519", "e2e user")
        names = ["node1", "node2"]
        host_pubs = {name: keygen(base / f"{name}.key", name) for name in names}
        ports = {name: free_port() for name in names}
        manifest = Manifest.from_dict(
            {
                "nxc_manifest": 1,
                "composition": "e2e",
                "flavour": "vm-ramdisk",
                "image_kind": "selftest",
                "roles": {"node": {"quantity": 2}},
            }
        )
        expanded = expand(manifest, {}, f"e2e-{secrets.token_hex(4)}", [user_pub])
        nodes = [
            dataclasses.replace(
                n, host_key=host_pubs[n.name], ssh_host="127.0.0.1", ssh_port=ports[n.name]
            )
            for n in expanded.nodes
        ]
        text = dataclasses.replace(expanded, nodes=nodes).to_json()
        deployment = Deployment.from_dict(json.loads(text), "e2e deployment")  # schema-checked
        (base / "deployment.json").write_text(text)
        known_hosts = base / "known_hosts"
        known_hosts.write_text(
            "".join(f"[127.0.0.1]:{ports[n]} {' '.join(host_pubs[n].split()[:2])}\n" for n in names)
        )

        # the experiment network: a VDE switch of our own, stopped by PID
        switch = base / "switch"
        switch_log = cleanup.enter_context((base / "vde_switch.log").open("wb"))
        vde = subprocess.Popen(
            ["vde_switch", "-s", str(switch)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=switch_log,
        )
        cleanup.callback(stop_process, vde)
        wait_until(
            lambda: (switch / "ctl").exists(),
            "the VDE switch's control socket",
            10,
            lambda: (base / "vde_switch.log").read_text(),
        )

        # each node's inputs as fw_cfg files: node1 under opt/nxc, node2 under opt/e2e/in
        common = f"{(image / 'kernel-params').read_text().strip()} console=ttyS0"
        vms: dict[str, Vm] = {}
        for node in deployment.nodes:
            vm_dir = base / node.name
            vm_dir.mkdir()
            prefix = "opt/nxc" if node.name == "node1" else "opt/e2e/in"
            paths = node_inputs.write(
                node_inputs.render(deployment, node.name),
                vm_dir / "inputs",
                base / f"{node.name}.key",
            )
            fw_cfg = []
            for name, path in paths.items():
                fw_cfg += ["-fw_cfg", f"name={prefix}/{name},file={path}"]
            append = (
                f"{common} nxc.node={node.name} nxc.inputs=fwcfg:{prefix} "
                "nxc.backdoor=nxc.backdoor nxc.mgmt=dhcp"
            )
            assert len(append) < 2048, f"kernel command line too long ({len(append)})"
            argv = qemu_argv(image, vm_dir, switch, node.mac, ports[node.name], append)
            argv[argv.index("-device") : argv.index("-device")] = fw_cfg
            log = cleanup.enter_context((vm_dir / "qemu.log").open("wb"))
            launched = time.monotonic()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            cleanup.callback(stop_process, proc)
            transport = BackdoorTransport(vm_dir / "backdoor.sock", node.name, connect_timeout=30)
            cleanup.callback(transport.close)
            vms[node.name] = Vm(
                name=node.name,
                dir=vm_dir,
                port=ports[node.name],
                mac=node.mac,
                ipv4=node.ipv4,
                ipv6=node.ipv6,
                host_key=host_pubs[node.name],
                proc=proc,
                launched=launched,
                transport=transport,
            )

        def all_up() -> bool:
            for vm in vms.values():
                if vm.proc.poll() is not None:
                    raise AssertionError(
                        f"{vm.name}: QEMU exited with {vm.proc.returncode}:\n"
                        f"{(vm.dir / 'qemu.log').read_text()}\n{vm.tail()}"
                    )
                if b"nxc-agent-error:" in vm.console_text():
                    raise AssertionError(f"{vm.name}: the agent failed:\n{vm.tail()}")
                if vm.ready_after == 0.0 and vm.ready_lines():
                    vm.ready_after = time.monotonic() - vm.launched
            return all(vm.ready_after for vm in vms.values())

        wait_until(
            all_up,
            "both nodes' ready lines",
            180,
            lambda: "\n".join(f"--- {vm.name}\n{vm.tail(8)}" for vm in vms.values()),
        )
        print("\nboot->ready: " + ", ".join(f"{v.name} {v.ready_after:.1f}s" for v in vms.values()))
        yield Cluster(base, image, deployment, base / "id_ed25519", known_hosts, vms)


# --- what the agent did -------------------------------------------------------------------------


def test_ready_line_has_the_boot_id(cluster: Cluster) -> None:
    for vm in cluster.vms.values():
        lines = vm.ready_lines()
        assert len(lines) == 1, vm.tail()
        ready = lines[0]
        node = cluster.deployment.node(vm.name)
        assert ready["node"].decode() == vm.name
        assert ready["role"].decode() == node.role
        assert int(ready["index"]) == node.index
        assert (
            vm.succeed("cat /proc/sys/kernel/random/boot_id").strip() == ready["boot_id"].decode()
        )


def test_identity_files_and_environment(cluster: Cluster) -> None:
    deployment = cluster.deployment
    for vm in cluster.vms.values():
        node = deployment.node(vm.name)
        assert vm.succeed("hostname").strip() == vm.name
        hosts = vm.succeed("cat /etc/hosts").splitlines()
        for other in deployment.nodes:
            assert f"{other.ipv4} {other.name}" in hosts
            assert f"{other.ipv6} {other.name}" in hosts
        files = vm.succeed(
            "cd /etc/nxc && for f in node role index replicas interface; do echo $f=$(cat $f); done"
        ).split()
        assert files == [
            f"node={vm.name}",
            f"role={node.role}",
            f"index={node.index}",
            "replicas=2",
            f"interface={deployment.interface}",
        ]
        document = json.loads(vm.succeed("cat /etc/nxc/deployment.json"))
        assert Deployment.from_dict(document) == deployment
        expected_env = {
            "NXC_NODE": vm.name,
            "NXC_ROLE": node.role,
            "NXC_INDEX": str(node.index),
            "NXC_REPLICAS": "2",
            "NXC_DEPLOYMENT_ID": deployment.id,
        }
        # in the backdoor's environment, and for login shells
        env = dict(
            line.split("=", 1) for line in vm.succeed("env").splitlines() if line.startswith("NXC_")
        )
        assert {k: env.get(k) for k in expected_env} == expected_env
        login = vm.succeed("env -i sh -l -c 'echo $NXC_NODE $NXC_ROLE $NXC_INDEX'").split()
        assert login == [vm.name, node.role, str(node.index)]


def test_experiment_nic_and_names(cluster: Cluster) -> None:
    interface = cluster.deployment.interface
    for vm in cluster.vms.values():
        link = vm.succeed(f"cat /sys/class/net/{interface}/address").strip()
        assert link == vm.mac
        addresses = vm.succeed(f"ip -o addr show dev {interface}")
        assert f"inet {vm.ipv4}/16 " in addresses
        assert f"inet6 {vm.ipv6}/64 " in addresses
        # the experiment MAC is on no other NIC, and the mgmt NIC got DHCP
        assert vm.succeed(f"grep -l {vm.mac} /sys/class/net/*/address").split() == [
            f"/sys/class/net/{interface}/address"
        ]
        assert "10.0.2.15/24" in vm.succeed("ip -o -4 addr")
    node1, node2 = cluster.vms["node1"], cluster.vms["node2"]
    for here, there in ((node1, node2), (node2, node1)):
        out = here.succeed(f"ping -c 2 -W 5 {there.name}", timeout=30)
        assert f"from {there.ipv4}" in out
        out = here.succeed(f"ping -6 -c 2 -W 5 {there.name}", timeout=30)
        assert f"from {there.ipv6}" in out
        assert "alive" in here.succeed(f"fping -t 2000 {there.name}", timeout=30)


# --- the backdoor -------------------------------------------------------------------------------


def test_backdoor_status_streams_and_binary_output(cluster: Cluster) -> None:
    vm = cluster.vms["node1"]
    assert vm.run("echo out; echo err >&2; exit 7") == CommandResult(7, b"out\n", b"err\n")
    assert vm.run("true") == CommandResult(0, b"", b"")
    assert vm.run("printf '\\000\\001\\377'").stdout == b"\x00\x01\xff"
    busybox = Path(shutil.which("busybox") or "/bin/busybox").resolve().read_bytes()
    assert vm.run("cat /usr/bin/busybox", timeout=120).stdout == busybox
    assert vm.run("exit 42").status == 42


def test_backdoor_timeout_is_status_124(cluster: Cluster) -> None:
    vm = cluster.vms["node1"]
    started = time.monotonic()
    result = vm.run("echo $$ > /tmp/timed-out.pid; exec sleep 300", timeout=2)
    took = time.monotonic() - started
    assert result.status == 124
    assert took < 10, f"the timeout took {took:.1f}s"
    pid = vm.succeed("cat /tmp/timed-out.pid").strip()
    assert vm.run(f"test -e /proc/{pid}").status != 0, "the timed-out command is still running"
    assert vm.succeed("echo alive") == "alive\n"


def test_backdoor_runs_commands_concurrently(cluster: Cluster) -> None:
    vm = cluster.vms["node1"]
    slow: list[CommandResult] = []
    thread = threading.Thread(target=lambda: slow.append(vm.run("sleep 5; echo slow", 30)))
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    for i in range(5):
        assert vm.succeed(f"echo {i}") == f"{i}\n"
    assert time.monotonic() - started < 4, "quick commands waited for the long one"
    thread.join(30)
    assert slow == [CommandResult(0, b"slow\n", b"")]


def test_backdoor_ctrl_c_kills_the_command_and_the_next_one_works(cluster: Cluster) -> None:
    """Ctrl-C (SIGINT to this process) while the node runs a command that never ends."""
    vm = cluster.vms["node1"]
    vm.succeed("rm -f /tmp/long.pid")
    sent: list[float] = []

    def interrupt_once_started() -> None:
        deadline = time.monotonic() + 60
        while vm.run("test -s /tmp/long.pid", 10).status != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        sent.append(time.monotonic())
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    helper = threading.Thread(target=interrupt_once_started)
    helper.start()
    try:
        with pytest.raises(KeyboardInterrupt, match="interrupted; the command was killed on node1"):
            vm.transport.run("echo $$ > /tmp/long.pid; exec sleep 100000")
    finally:
        helper.join(70)
    assert vm.succeed("echo next") == "next\n"
    took = time.monotonic() - sent[0]
    print(f"\nCtrl-C -> next command answered: {took:.2f}s")
    assert took < 2
    pid = vm.succeed("cat /tmp/long.pid").strip()
    assert vm.run(f"test -e /proc/{pid}").status != 0, "the interrupted command still runs"


def test_backdoor_long_commands_cost_linear_time(cluster: Cluster) -> None:
    """Under emulation the guest took 6/23/51 s for 100/200/300 KB and >135 s for 1 MB."""
    vm = cluster.vms["node1"]

    def took(size: int) -> float:
        started = time.monotonic()
        assert vm.succeed(f": {'z' * size}; echo ok", timeout=300) == "ok\n"
        return time.monotonic() - started

    small = took(256 * 1024)
    large = took(1024 * 1024)
    print(f"\n256 KB command: {small:.2f}s, 1 MB command: {large:.2f}s")
    assert large < 8 * small + 2, (small, large)


def test_backdoor_survives_daemons_and_many_commands(cluster: Cluster) -> None:
    vm = cluster.vms["node2"]
    started = time.monotonic()
    daemon = vm.succeed("sleep 600 & echo $!").strip()  # its stdout is the command's
    assert time.monotonic() - started < 10
    vm.succeed("iperf3 -s -D >/dev/null")

    def processes() -> list[str]:
        # user space ones (kernel threads come and go); without a timeout, so that
        # the command's own watchdog is not in the list. The agent's processes (loop,
        # writer, ticker, supervisor, the job running this very command) are counted
        # apart: a job may still be exiting after its answer went out.
        listing = vm.transport.run("ps -o pid,args | grep -v '\\[' | grep -v ' ps -o\\| grep '")
        assert listing.status == 0, listing
        return sorted(line.strip() for line in listing.output.splitlines()[1:])

    def others() -> list[str]:
        # (the shell running this very command shows as `/bin/sh <its command file>`)
        mine = ("nxc-agent backdoor", "/run/nxc/backdoor/cmd.")
        return [p for p in processes() if not any(m in p for m in mine)]

    def agents() -> int:
        return sum("nxc-agent backdoor" in p for p in processes())

    before, agents_before = others(), agents()
    count = 300
    started = time.monotonic()
    for i in range(count):
        assert vm.run(f"echo {i}", timeout=30).stdout == f"{i}\n".encode()
    per_command = (time.monotonic() - started) / count
    print(f"\nbackdoor round trip on {vm.name}: {per_command * 1000:.1f} ms")
    assert others() == before
    seen = [0]

    def settled() -> bool:
        seen[0] = agents()
        return seen[0] == agents_before

    wait_until(settled, "the agent's jobs to end", 10, lambda: f"{seen[0]} agent processes")
    # init reaps orphans (killed watchdogs…) within a second or so: none may pile up
    last = [""]

    def no_zombies() -> bool:
        last[0] = vm.succeed("awk '$3 == \"Z\" { print }' /proc/[0-9]*/stat 2>/dev/null")
        return last[0].strip() == ""

    wait_until(no_zombies, "no zombie processes", 10, lambda: last[0])
    assert vm.run(f"test -e /proc/{daemon}").status == 0, "the daemon died"
    vm.succeed(f"kill {daemon}")


# --- ssh -----------------------------------------------------------------------------------------


def test_ssh_with_the_deployment_keys(cluster: Cluster) -> None:
    for vm in cluster.vms.values():
        scan = subprocess.run(
            ["ssh-keyscan", "-T", "20", "-t", "ed25519", "-p", str(vm.port), "127.0.0.1"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        presented = [line.split()[1:3] for line in scan.stdout.splitlines() if line.strip()]
        assert presented == [vm.host_key.split()[:2]], scan.stderr
        # StrictHostKeyChecking against the deployment's host key, our fresh user key
        result = cluster.ssh(vm, "echo $NXC_NODE $(id -u) $(hostname)")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [vm.name, "0", vm.name]
        payload = cluster.dir / f"payload-{vm.name}"
        payload.write_bytes(secrets.token_bytes(100000))
        copy = subprocess.run(
            [
                "scp",
                *cluster.ssh_options(),
                "-P",
                str(vm.port),
                str(payload),
                "root@127.0.0.1:/tmp/p",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert copy.returncode == 0, copy.stderr
        assert vm.run("cat /tmp/p", timeout=60).stdout == payload.read_bytes()


def test_ssh_transport_in_a_busybox_vm(cluster: Cluster, tmp_path: Path) -> None:
    """nxc's ssh transport against the image's sshd: busybox shell, a real init."""
    from nxc.transports.ssh import SshEndpoint, SshSettings, SshTransport

    vm = cluster.vms["node2"]
    endpoint = SshEndpoint(vm.name, "127.0.0.1", vm.port, "root", cluster.user_key)
    with SshTransport(endpoint, SshSettings(cluster.known_hosts, config=())) as node:
        assert node.run("hostname; exit 3") == CommandResult(3, f"{vm.name}\n".encode(), b"")
        whole, fraction = 4000 + secrets.randbelow(10**6), secrets.randbelow(10**6)
        with pytest.raises(TimeoutError, match="was killed on the node"):
            node.run(f"sleep {whole}.{fraction} & sleep {whole}.{fraction}; echo x", timeout=2)
        # What the kill script checks: nothing of the command is left but zombies. (The
        # token is put together on the node, so that this command does not match itself.)
        alive = vm.succeed(
            f"t={whole}.; t=${{t}}{fraction}; for f in /proc/[0-9]*; do "
            "grep -qF \"$t\" $f/cmdline 2>/dev/null && awk '{print $3}' $f/stat; done; true"
        )
        assert set(alive.split()) <= {"Z"}, alive
        source = tmp_path / "tool"
        source.write_bytes(secrets.token_bytes(300_000))
        source.chmod(0o751)
        node.put(source, "/tmp/tool")
        assert vm.succeed("stat -c '%a %s' /tmp/tool").split() == ["751", "300000"]
        node.get("/tmp/tool", tmp_path / "back")
        assert (tmp_path / "back").read_bytes() == source.read_bytes()
        assert stat.S_IMODE((tmp_path / "back").stat().st_mode) == 0o751


def test_backdoor_put_and_get(cluster: Cluster, tmp_path: Path) -> None:
    """put/get of the transport protocol through the backdoor (base64 over commands)."""
    vm = cluster.vms["node1"]
    source = tmp_path / "data"
    source.write_bytes(secrets.token_bytes(100_000))
    source.chmod(0o640)
    vm.transport.put(source, "/tmp/data")
    assert vm.succeed("stat -c '%a %s' /tmp/data").split() == ["640", "100000"]
    vm.transport.get("/tmp/data", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == source.read_bytes()
    assert stat.S_IMODE((tmp_path / "back").stat().st_mode) == 0o640


def test_ssh_refuses_other_keys(cluster: Cluster) -> None:
    vm = cluster.vms["node1"]
    stranger = cluster.dir / "stranger"
    keygen(stranger, "stranger")
    result = subprocess.run(
        [
            "ssh", "-F", "/dev/null", "-o", f"UserKnownHostsFile={cluster.known_hosts}",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(stranger),
            "-p", str(vm.port), "root@127.0.0.1", "true",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 255
    assert "Permission denied" in result.stderr


# --- the role -------------------------------------------------------------------------------------


def test_role_startup_and_packages(cluster: Cluster) -> None:
    node1, node2 = cluster.vms["node1"], cluster.vms["node2"]
    for vm in (node1, node2):
        assert vm.succeed("cat /run/startup-ran") == "ran\n"
        assert "socat version" in vm.succeed(f"{EXTRA_PACKAGE} -V")
    page = node2.succeed("wget -q -O - http://node1/index.html", timeout=30)
    assert page == "page of node1\n"
    # -T crashes Debian's busybox wget; the image works around it
    page = node1.succeed("wget -q -T 10 -O - http://node2/index.html", timeout=30)
    assert page == "page of node2\n"


def test_inputs_from_fw_cfg_and_nothing_secret_on_the_command_line(cluster: Cluster) -> None:
    for vm, prefix in ((cluster.vms["node1"], "opt/nxc"), (cluster.vms["node2"], "opt/e2e/in")):
        cmdline = vm.succeed("cat /proc/cmdline")
        assert f"nxc.inputs=fwcfg:{prefix} " in cmdline
        assert "PRIVATE" not in cmdline and "b64:" not in cmdline
        listing = vm.succeed(f"ls /sys/firmware/qemu_fw_cfg/by_name/{prefix}").split()
        assert sorted(listing) == ["authorized_keys", "deployment.json", "env", "hostkey", "hosts"]
        public = vm.succeed("ssh-keygen -y -f /etc/ssh/ssh_host_ed25519_key")
        assert public.split()[:2] == vm.host_key.split()[:2]
        assert vm.succeed("stat -c %a /etc/ssh/ssh_host_ed25519_key").strip() == "600"
        expected = node_inputs.render(cluster.deployment, vm.name).files
        assert vm.succeed("cat /etc/nxc/env") == expected["env"]
        assert vm.succeed("cat /etc/hosts") == expected["hosts"]


# --- kexec, poweroff, reboot (these end the VMs: keep them last) -------------------------


def test_kexec_into_the_same_image(cluster: Cluster) -> None:
    vm = cluster.vms["node2"]
    old_boot_id = vm.succeed("cat /proc/sys/kernel/random/boot_id").strip()
    copy = subprocess.run(
        [
            "scp", *cluster.ssh_options(), "-P", str(vm.port),
            str(cluster.image / "kernel"), str(cluster.image / "initrd"), "root@127.0.0.1:/tmp/",
        ],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert copy.returncode == 0, copy.stderr
    vm.succeed("kexec -l /tmp/kernel --initrd=/tmp/initrd --reuse-cmdline", timeout=120)
    started = time.monotonic()
    # detached, so that the answer gets out before the kernel is replaced
    vm.succeed("setsid sh -c 'sleep 0.5; kexec -e' </dev/null >/dev/null 2>&1 &")
    wait_until(
        lambda: len(vm.ready_lines()) >= 2,
        f"{vm.name}'s second ready line after kexec",
        120,
        vm.tail,
    )
    print(f"\nkexec -e -> ready: {time.monotonic() - started:.1f}s")
    new_boot_id = vm.ready_lines()[-1]["boot_id"].decode()
    assert new_boot_id != old_boot_id
    assert vm.succeed("cat /proc/sys/kernel/random/boot_id").strip() == new_boot_id
    assert vm.proc.poll() is None, "QEMU exited instead of kexec'ing"
    result = cluster.ssh(vm, "hostname")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == vm.name


@pytest.mark.parametrize(("name", "command"), [("node1", "poweroff"), ("node2", "reboot")])
def test_poweroff_and_reboot_end_qemu(cluster: Cluster, name: str, command: str) -> None:
    vm = cluster.vms[name]
    started = time.monotonic()
    # The answer may or may not get out before the guest goes down.
    with contextlib.suppress(TransportError):
        assert vm.run(command, timeout=30).status == 0
    wait_until(lambda: vm.proc.poll() is not None, f"QEMU of {vm.name} to exit", 60, vm.tail)
    print(f"\n{command} -> QEMU exited: {time.monotonic() - started:.1f}s")
    assert vm.proc.returncode == 0
    assert b"reboot: " in vm.console_text()
