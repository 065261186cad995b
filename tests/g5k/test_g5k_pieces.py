"""The g5k flavours' pure pieces: the per-node archive, kernel parameters, the standard
environment's facts, the reservation spec, Kadeploy's environment description, memory
sizing; and the agent's bootstrap mode (g5k-image) on this host with --root."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nxc.contracts import Deployment, Manifest
from nxc.errors import StartError
from nxc.expand import expand
from nxc.flavours.g5k_common.cpio import Entry, newc_archive
from nxc.flavours.g5k_common.handoff import Target, kernel_params, node_archive
from nxc.flavours.g5k_common.reservation import reservation_spec
from nxc.flavours.g5k_common.stdenv import parse_probe
from nxc.flavours.g5k_image.publish import description
from nxc.g5k.errors import PlanError
from nxc.g5k.plan import plan
from nxc.runtime.memory import boot_memory_mb
from nxc.runtime.options import FlavourOptions
from tests.conftest import sample_manifest

AGENT = Path(__file__).resolve().parents[2] / "nxc" / "agent" / "nxc-agent"
PROBE_OUTPUT = """\
uid 1000
boot 0a9d7c1e-1111-2222-3333-444455556666
arch x86_64
cmdline BOOT_IMAGE=/vmlinuz root=UUID=x ro console=tty0 console=ttyS1,115200n8 quiet
mem 65536000
client 172.16.111.106
route default via 172.16.111.254 dev eno1 proto dhcp src 172.16.96.7 metric 100
nic eno1 0C:C4:7A:11:22:33 172.16.96.7/20
nic eno2 0c:c4:7a:11:22:34
kexec /usr/sbin/kexec
sudo /usr/bin/sudo-g5k
"""


def extract(archive: bytes, into: Path) -> None:
    subprocess.run(
        ["cpio", "-id", "--no-absolute-filenames", "--quiet"], input=archive, cwd=into, check=True
    )


def deployment(tmp_path: Path) -> tuple[Deployment, Manifest]:
    import json

    document = sample_manifest(tmp_path)
    document["flavour"] = "g5k-ramdisk"
    (tmp_path / "manifest.json").write_text(json.dumps(document))
    manifest = Manifest.load(tmp_path / "manifest.json")
    return expand(
        manifest, {"server": 1, "client": 2}, "demo-abc123", ["ssh-ed25519 AAAAC3 k"]
    ), manifest


def test_newc_archive_is_read_back_with_its_modes(tmp_path: Path) -> None:
    archive = newc_archive(
        [Entry("d", 0o700), Entry("d/public", 0o644, b"hello\n"), Entry("d/key", 0o600, b"k")]
    )
    assert len(archive) % 512 == 0
    extract(archive, tmp_path)
    assert (tmp_path / "d" / "public").read_text() == "hello\n"
    assert stat.S_IMODE((tmp_path / "d" / "key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700
    with pytest.raises(ValueError, match="relative path"):
        newc_archive([Entry("/etc/passwd", 0o644, b"")])


def test_node_archive_holds_the_inputs_aligned_after_the_initrd(tmp_path: Path) -> None:
    plan_, _ = deployment(tmp_path)
    facts = parse_probe("paravance-1.rennes.grid5000.fr", PROBE_OUTPUT)
    node = plan_.node("client2")
    target = Target(node, "paravance-1.rennes.grid5000.fr", facts, tmp_path, tmp_path, "")
    sync = tmp_path / "sync-client2"
    sync.write_text("NXC_SYNC_HOST=172.16.111.106\nNXC_SYNC_TOKEN=SECRET\n")
    archive = node_archive(
        plan_, target, b"PRIVATE KEY\n", facts.site_net(), 1001, private={"sync": sync}
    )
    pad = (512 - 1001 % 512) % 512
    assert archive[:pad] == b"\0" * pad and archive[pad : pad + 6] == b"070701"
    out = tmp_path / "out"
    out.mkdir()
    extract(archive[pad:], out)
    files = {p.name: p for p in (out / "nxc-input").iterdir()}
    assert set(files) == {
        "env",
        "hosts",
        "authorized_keys",
        "deployment.json",
        "site-net",
        "sync",
        "hostkey",
    }
    assert files["sync"].read_text() == sync.read_text()
    assert stat.S_IMODE(files["sync"].stat().st_mode) == 0o600
    assert "NXC_NODE=client2" in files["env"].read_text().splitlines()
    assert files["hostkey"].read_bytes() == b"PRIVATE KEY\n"
    assert stat.S_IMODE(files["hostkey"].stat().st_mode) == 0o600
    assert files["site-net"].read_text().splitlines() == [
        "addr 0c:c4:7a:11:22:33 172.16.96.7/20",
        "route 0c:c4:7a:11:22:33 172.16.111.254",
    ]


def test_kernel_params_keep_the_nodes_consoles_and_name_the_inputs(tmp_path: Path) -> None:
    plan_, _ = deployment(tmp_path)
    facts = parse_probe("n", PROBE_OUTPUT)
    params = kernel_params("rdinit=/init panic=-1", plan_.node("server1"), facts.cmdline)
    assert params == (
        "rdinit=/init panic=-1 console=tty0 console=ttyS1,115200n8 nxc.node=server1 "
        "nxc.inputs=dir:/nxc-input"
    )


def test_standard_environment_facts() -> None:
    facts = parse_probe("paravance-1.rennes.grid5000.fr", PROBE_OUTPUT)
    assert facts.uid == 1000 and facts.root_prefix == "/usr/bin/sudo-g5k "
    assert facts.experiment_nic(None).device == "eno1"
    assert facts.experiment_nic("eno2").mac == "0c:c4:7a:11:22:34"
    assert facts.mem_kb == 65536000 and facts.kexec == "/usr/sbin/kexec"
    assert facts.client == "172.16.111.106"  # where the node sees nxc's ssh come from
    assert parse_probe("x", PROBE_OUTPUT.replace("client 172.16.111.106", "client ")).client == ""
    with pytest.raises(StartError, match=r"no NIC named eth9 \(NICs: eno1, eno2"):
        facts.experiment_nic("eth9")
    no_root = parse_probe("x", PROBE_OUTPUT.replace("sudo /usr/bin/sudo-g5k\n", ""))
    with pytest.raises(StartError, match="not root and no sudo-g5k"):
        no_root.root_prefix  # noqa: B018
    with pytest.raises(StartError, match="unexpected answer"):
        parse_probe("x", "garbage")


def test_reservation_spec_per_role_and_job_types(tmp_path: Path) -> None:
    plan_, _ = deployment(tmp_path)
    options = FlavourOptions(
        "g5k-image",
        {
            "site": {"server": "nancy", "": "rennes"},
            "cluster": {"client": "paravance"},
            "walltime": {"": "2:00"},
            "job-type": {"": ["exotic"]},
        },
    )
    spec = reservation_spec(plan_, options, "nxc-demo", None, ("deploy",))
    assert spec.types == ("deploy", "exotic")
    jobs = {j.site: j for j in plan(spec)}
    assert jobs["nancy"].resources == "nodes=1,walltime=2:00:00"
    assert jobs["rennes"].resources == "{cluster='paravance'}/nodes=2,walltime=2:00:00"
    with pytest.raises(PlanError, match="role server: no Grid'5000 site given"):
        reservation_spec(plan_, FlavourOptions("g5k-ramdisk", {}), "n", None)


def test_kadeploy_description_of_a_role(tmp_path: Path) -> None:
    _, manifest = deployment(tmp_path)
    image = {"file": "x.tar.gz", "kernel": "/boot/bzImage", "initrd": "/boot/initrd",
             "kernel_params": "init=/nix/store/abc/init", "compression": "gzip"}  # fmt: skip
    role = manifest.roles["server"]
    manifest.roles["server"] = type(role)(**{**role.__dict__, "image": image})
    doc = description(manifest, "server", "http://h/server.tar.gz", "console=ttyS0")
    assert doc["image"] == {"file": "http://h/server.tar.gz", "kind": "tar", "compression": "gzip"}
    assert doc["boot"] == {
        "kernel": "/boot/bzImage",
        "initrd": "/boot/initrd",
        "kernel_params": "init=/nix/store/abc/init console=ttyS0 nxc.bootstrap=kadeploy",
    }


def test_boot_memory_is_sized_from_the_image(tmp_path: Path) -> None:
    kernel, initrd = tmp_path / "k", tmp_path / "i"
    kernel.write_bytes(b"\0" * 10 * 2**20)
    initrd.write_bytes(b"\0" * 600 * 2**20)
    assert boot_memory_mb(kernel, initrd, "nixos") == 10 + 3 * 600 + 128
    assert boot_memory_mb(kernel, tmp_path / "missing", "selftest") == 256


def test_agent_bootstrap_takes_what_kadeploy_deployed(tmp_path: Path) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail("busybox is not installed (apt-get install busybox-static)")
    root = tmp_path / "root"
    tree = root / "kadeploy"
    (tree / "etc" / "ssh").mkdir(parents=True)
    (tree / "root" / ".ssh").mkdir(parents=True)
    (tree / "etc" / "ssh" / "ssh_host_ed25519_key").write_text("the node's own key\n")
    (tree / "root" / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAA deploy-key\n")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("rdinit=/init nxc.bootstrap=kadeploy\n")
    done = subprocess.run(
        [busybox, "sh", str(AGENT), "up", "--root", str(root), "--cmdline", str(cmdline)],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("nxc-bootstrap ready boot_id=")
    key = root / "etc" / "ssh" / "ssh_host_ed25519_key"
    assert key.read_text() == "the node's own key\n"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    keys = (root / "root" / ".ssh" / "authorized_keys").read_text()
    assert "deploy-key" in keys
    # Without the tree nor a root= partition: one line saying so.
    shutil.rmtree(tree)
    failed = subprocess.run(
        [busybox, "sh", str(AGENT), "up", "--root", str(root), "--cmdline", str(cmdline)],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip
    assert failed.returncode != 0
    assert "bootstrap: no /kadeploy tree and no root= partition" in failed.stdout + failed.stderr


def test_how_nodes_reach_the_host_services() -> None:
    from nxc.flavours.g5k_common.runtime import _note_reach

    facts = parse_probe("n", PROBE_OUTPUT)
    reach: dict[str, Any] = {"listen": [], "nodes": {}, "jump": None}
    # nxc reaches the node at 127.0.0.1 (a forwarded port): it listens there, and the
    # node connects to where it saw nxc's ssh come from
    _note_reach(reach, "node1", "127.0.0.1", None, facts)
    assert reach == {"listen": ["127.0.0.1"], "nodes": {"node1": "172.16.111.106"}, "jump": None}
    # through a jump host the node cannot reach this machine: no listener is guessed
    _note_reach(reach, "node2", "127.0.0.1", "access.grid5000.fr", facts)
    assert reach["jump"] == "access.grid5000.fr" and "node2" not in reach["nodes"]


def _context(tmp_path: Path, manifest: Manifest) -> Any:
    from nxc.flavours.g5k_ramdisk.runtime import G5kRamdiskRuntime
    from nxc.ledger import Ledger
    from nxc.project import Project
    from nxc.runtime.contract import RuntimeContext, RuntimeState

    said: list[str] = []
    ctx = RuntimeContext(
        project=Project(tmp_path),
        manifest=manifest,
        options=FlavourOptions("g5k-ramdisk", {}),
        ledger=Ledger(tmp_path / "ledger.jsonl"),
        runtime_dir=tmp_path,
        run_dir=tmp_path,
        host_keys={},
        client_key=tmp_path / "id",
        state=RuntimeState(tmp_path / "runtime.json", "g5k-ramdisk"),
        progress=said.append,
    )
    return G5kRamdiskRuntime(), ctx, said


def test_sync_service_address_and_endpoints(tmp_path: Path) -> None:
    from dataclasses import replace

    from nxc.runtime.contract import HostService

    plan_, manifest = deployment(tmp_path)
    runtime, ctx, said = _context(tmp_path, manifest)
    service = HostService("sync", tmp_path / "sock", ("127.0.0.1", 4242))
    ctx.node_inputs = {"server1": {"sync": tmp_path / "s1"}}
    seen = {"server1": "10.0.2.2", "client1": "10.0.2.2"}
    ctx.state.save({"reach": {"listen": ["127.0.0.1"], "nodes": seen, "jump": None}})
    assert runtime.service_address(ctx, plan_) == "127.0.0.1"
    assert runtime.node_endpoint(ctx, plan_, "server1", service) == ("10.0.2.2", 4242)
    # a node that failed before its probe: where the others see this machine
    assert runtime.node_endpoint(ctx, plan_, "client2", service) == ("10.0.2.2", 4242)
    assert runtime._private_inputs(ctx, ctx.state.load()) == ctx.node_inputs

    # through a jump host: the service only on loopback, no sync input for the nodes
    ctx.state.save({"reach": {"listen": [], "nodes": {}, "jump": "access.grid5000.fr"}})
    assert runtime.service_address(ctx, plan_) == "127.0.0.1"
    assert "cannot reach the sync service" in said[-1]
    assert runtime._private_inputs(ctx, ctx.state.load()) == {}
    # ... and a role that waits on the service is refused in one line
    client = replace(manifest.roles["client"], start_after=[{"state": "up", "count": 1}])
    ctx.manifest = replace(manifest, roles={**manifest.roles, "client": client})
    with pytest.raises(StartError, match=r"role\(s\) client have start_after.*frontend"):
        runtime.service_address(ctx, plan_)
