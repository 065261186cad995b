"""The node agent's `up` on this host, without a VM: its input sources and `up --root` from
inputs rendered by nxc/runtime/node_inputs.py. The backdoor loop:
tests/unit/test_agent_backdoor.py; real VMs: tests/e2e/test_selftest_image.py.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nxc.contracts import Deployment
from nxc.runtime import node_inputs

AGENT = Path(__file__).resolve().parents[2] / "nxc" / "agent" / "nxc-agent"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
SHELLS = {"busybox-ash": ["busybox", "sh"], "dash": ["dash"]}


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (apt-get install {package})")
    return path


def agent(
    *args: str, shell: str = "busybox-ash", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [_tool(SHELLS[shell][0], "busybox-static"), *SHELLS[shell][1:], str(AGENT), *args]
    return subprocess.run(
        argv, capture_output=True, text=True, env=env or ENV, timeout=60, check=False
    )


def test_help_documents_the_inputs() -> None:
    result = agent("--help")
    assert result.returncode == 0
    for word in ("--inputs", "nxc.inputs=", "--backdoor", "--mgmt", "fwcfg:", "dir:", "url:"):
        assert word in result.stdout
    for name in ("env", "hosts", "authorized_keys", "deployment.json", "hostkey"):
        assert name in result.stdout


# --- sources --------------------------------------------------------------------------------


@contextlib.contextmanager
def http_directory(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on 127.0.0.1 (a thread of this process)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_sources(tmp_path: Path, shell: str) -> None:
    payload = "line one\nline two with ünïcode\n"
    (tmp_path / "f").write_text(payload)
    assert agent("fetch", f"dir:{tmp_path}", "f", shell=shell).stdout == payload
    with http_directory(tmp_path) as url:
        assert agent("fetch", f"url:{url}", "f", shell=shell).stdout == payload
        assert agent("fetch", f"url:{url.rstrip('/')}", "f", shell=shell).stdout == payload


def test_url_source_with_busybox_wget(tmp_path: Path) -> None:
    """Where there is no curl (the selftest image), busybox wget downloads."""
    applets = tmp_path / "bin"
    applets.mkdir()
    for name in ("sh", "wget", "cat", "tr", "timeout", "printf"):
        (applets / name).symlink_to(_tool("busybox", "busybox-static"))
    (tmp_path / "f").write_text("via wget\n")
    env = {"PATH": str(applets), "LC_ALL": "C"}
    with http_directory(tmp_path) as url:
        assert agent("fetch", f"url:{url}", "f", env=env).stdout == "via wget\n"
        missing = agent("fetch", f"url:{url}", "absent", env=env)
    assert (missing.returncode, missing.stderr) == (3, f"no {url}absent\n")


@pytest.mark.parametrize(
    ("source", "status", "message"),
    [
        ("dir:/nonexistent", 3, "no /nonexistent/f"),
        ("fwcfg:opt/nxc", 1, "fw_cfg"),
        ("url:http://127.0.0.1:9/", 1, "cannot download http://127.0.0.1:9/f"),
        ("ftp:x", 1, "unknown source kind"),
    ],
)
def test_bad_sources_say_why(source: str, status: int, message: str) -> None:
    result = agent("fetch", source, "f")
    assert result.returncode == status
    assert message in result.stderr


# --- up --root ------------------------------------------------------------------------------


def _keypair(path: Path) -> str:
    subprocess.run(
        [
            _tool("ssh-keygen", "openssh-client"),
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            path.name,
            "-f",
            str(path),
        ],
        check=True,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    user = _keypair(tmp_path / "user")
    host1 = _keypair(tmp_path / "host1")
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKey" + "x" * 30

    def node(name: str, role: str, index: int, ordinal: int) -> dict[str, object]:
        return {
            "name": name,
            "role": role,
            "index": index,
            "ipv4": f"198.18.0.{ordinal}",
            "ipv6": f"fd00:6e78:63::{ordinal}",
            "mac": f"52:54:00:00:00:{ordinal:02x}",
        }

    return Deployment.from_dict(
        {
            "nxc_deployment": 1,
            "id": "dep-unit-1",
            "composition": "unit",
            "flavour": "vm-ramdisk",
            "network": {
                "ipv4_prefix": "198.18.0.0/16",
                "ipv6_prefix": "fd00:6e78:63::/64",
                "interface": "exp0",
            },
            "ssh": {"authorized_keys": [user, other]},
            "roles": {"server": 1, "client": 2},
            "nodes": [
                {**node("server1", "server", 1, 1), "host_key": host1},
                node("client1", "client", 1, 2),
                node("client2", "client", 2, 3),
            ],
        }
    )


def inputs_dir(tmp_path: Path, deployment: Deployment, name: str, key: Path | None) -> Path:
    directory = tmp_path / f"inputs-{name}"
    node_inputs.write(node_inputs.render(deployment, name), directory, key)
    return directory


def up(root: Path, *args: str, shell: str = "busybox-ash") -> subprocess.CompletedProcess[str]:
    root.mkdir(exist_ok=True)
    return agent("--root", str(root), "--cmdline", "-", *args, shell=shell)


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_up_from_a_directory(tmp_path: Path, deployment: Deployment, shell: str) -> None:
    source = inputs_dir(tmp_path, deployment, "server1", tmp_path / "host1")
    root = tmp_path / "root"
    result = up(root, "--inputs", f"dir:{source}", shell=shell)
    assert result.returncode == 0, result.stderr
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert result.stdout == f"nxc-ready node=server1 role=server index=1 boot_id={boot_id}\n"
    etc = root / "etc"
    assert (etc / "hostname").read_text() == "server1\n"
    # "address name [role alias]": the alias when the node is its role's only one
    hosts = [line.split()[:2] for line in (etc / "hosts").read_text().splitlines()]
    for node in deployment.nodes:
        assert [node.ipv4, node.name] in hosts
        assert [node.ipv6, node.name] in hosts
    nxc = etc / "nxc"
    files = {
        p.name: p.read_text() for p in nxc.iterdir() if p.name not in ("deployment.json", "env")
    }
    assert files == {
        "node": "server1\n",
        "role": "server\n",
        "index": "1\n",
        "replicas": "1\n",
        "interface": "exp0\n",
    }
    assert (nxc / "env").read_text() == (source / "env").read_text()
    assert "NXC_DEPLOYMENT_ID=dep-unit-1\n" in (nxc / "env").read_text()
    assert Deployment.load(nxc / "deployment.json") == deployment
    keys = (root / "root" / ".ssh" / "authorized_keys").read_text()
    for key in deployment.authorized_keys:
        assert key + "\n" in keys
    private = etc / "ssh" / "ssh_host_ed25519_key"
    assert private.read_bytes() == (tmp_path / "host1").read_bytes()
    assert private.stat().st_mode & 0o077 == 0
    assert (etc / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()[:2] == (
        tmp_path / "host1.pub"
    ).read_text().split()[:2]
    assert not list(etc.rglob("*.nxc-*")), "staging files left behind"


def test_up_from_a_url_and_the_kernel_command_line(tmp_path: Path, deployment: Deployment) -> None:
    source = inputs_dir(tmp_path, deployment, "client2", None)
    with http_directory(source) as url:
        cmdline = tmp_path / "cmdline"
        cmdline.write_text(f"quiet nxc.node=client2 nxc.inputs=url:{url} console=ttyS0\n")
        root = tmp_path / "root"
        root.mkdir()
        result = agent("--root", str(root), "--cmdline", str(cmdline))
    assert result.returncode == 0, result.stderr
    assert "node=client2 role=client index=2 " in result.stdout
    assert (root / "etc" / "nxc" / "replicas").read_text() == "2\n"
    assert not (root / "etc" / "ssh" / "ssh_host_ed25519_key").exists()  # none given


def test_the_agent_reads_no_json(tmp_path: Path, deployment: Deployment) -> None:
    """deployment.json is copied for programs on the node, never read by the agent."""
    source = inputs_dir(tmp_path, deployment, "client1", None)
    (source / "deployment.json").write_text("{ this is not JSON, and that is fine\n")
    result = up(tmp_path / "root", "--inputs", f"dir:{source}")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "root" / "etc" / "nxc" / "deployment.json").read_text().startswith("{ this")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"node": "client1"}, "inputs are for node server1, not client1 (nxc.node)"),
        ({"hostkey_of": "other"}, "does not match NXC_HOST_KEY"),
        ({"env": "NXC_INPUTS=2\n"}, "NXC_INPUTS=2 is not supported"),
        ({"env": "NXC_NODE=x\n"}, "env is not an nxc input file"),
        ({"env": "NXC_INPUTS=1\nNXC_NODE='unterminated\n"}, "env is not valid shell"),
        ({"env": "NXC_INPUTS=1\nNXC_NODE=n1\n"}, "env has no NXC_ROLE"),
        ({"authorized_keys": "\n"}, "authorized_keys is empty"),
        ({"hostkey": "not a key\n"}, "hostkey is not an OpenSSH private key"),
        ({"missing": "hosts"}, "inputs (dir:): hosts: no "),
    ],
)
def test_up_errors_are_one_console_line(
    tmp_path: Path, deployment: Deployment, change: dict[str, str], message: str
) -> None:
    key = tmp_path / "host1"
    if "hostkey_of" in change:
        _keypair(tmp_path / "other")
        key = tmp_path / "other"
    source = inputs_dir(tmp_path, deployment, "server1", key)
    for name in ("env", "authorized_keys", "hostkey"):
        if name in change:
            (source / name).write_text(change[name])
    if "missing" in change:
        (source / change["missing"]).unlink()
    args = ["--inputs", f"dir:{source}"]
    if "node" in change:
        args += ["--node", change["node"]]
    result = up(tmp_path / "root", *args)
    assert result.returncode == 1
    assert result.stdout.startswith("nxc-agent-error: "), result.stdout
    assert result.stdout.count("\n") == 1
    assert message in result.stdout
    assert not (tmp_path / "root" / "etc" / "ssh" / "ssh_host_ed25519_key.nxc-new").exists()


def test_missing_inputs_are_an_error(tmp_path: Path) -> None:
    result = up(tmp_path / "root")
    assert result.stdout.startswith("nxc-agent-error: no inputs: give nxc.inputs=SRC")
