"""Parts of the docker flavour that need no daemon: the exec wrapper and kill script
under the host's real shells, image references, manifest entries, ports, addresses."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from nxc.errors import NxcError
from nxc.flavours.docker.images import ImageSpec, image_ref
from nxc.flavours.docker.runtime import _gateway, _port_bindings, _with_length
from nxc.flavours.docker.transport import WRAPPER, kill_script

SHELLS = [s for s in ("dash", "busybox") if shutil.which(s)]


def _shell(name: str) -> list[str]:
    return ["busybox", "sh"] if name == "busybox" else [name]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("shell", SHELLS)
def test_wrapper_keeps_streams_status_and_does_not_wait_for_daemons(shell: str) -> None:
    token = secrets.token_hex(12)
    env = {"PATH": os.environ["PATH"], "NXC_EXEC": token}
    command = "echo out; printf 'e\\0r' >&2; sleep 300 & echo $! > /tmp/nxc-wrapper-pid; exit 4"
    done = subprocess.run(
        [*_shell(shell), "-c", WRAPPER, "nxc-exec", command],
        env=env, capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (4, b"out\n", b"e\0r")
    pid = int(Path("/tmp/nxc-wrapper-pid").read_text())
    try:
        assert _alive(pid)
        # the command's output files are gone
        assert not list(Path("/run").glob(f".nxc-exec-{token}*"))
        # and the kill script finds the daemon by the token in its environment
        killed = subprocess.run(
            [*_shell(shell), "-c", kill_script(token)], capture_output=True, timeout=30
        )
        assert killed.returncode == 0, killed.stderr
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(pid)
    finally:
        if _alive(pid):
            os.kill(pid, 9)
        Path("/tmp/nxc-wrapper-pid").unlink(missing_ok=True)


@pytest.mark.parametrize("shell", SHELLS)
def test_kill_script_spares_other_tokens_and_escalates(shell: str) -> None:
    mine, other = secrets.token_hex(12), secrets.token_hex(12)
    # One that ignores TERM: only KILL stops it.
    stubborn = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"],
        env={"PATH": os.environ["PATH"], "NXC_EXEC": mine},
    )
    bystander = subprocess.Popen(["sleep", "300"], env={"NXC_EXEC": other})
    try:
        done = subprocess.run(
            [*_shell(shell), "-c", kill_script(mine, grace=0.3)], capture_output=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        assert stubborn.wait(10) == -9
        assert bystander.poll() is None
    finally:
        for process in (stubborn, bystander):
            if process.poll() is None:
                process.kill()
                process.wait()


def test_image_reference_follows_the_store_path(tmp_path: Path) -> None:
    one = ImageSpec(Path("/nix/store/aaaa-x/rootfs.tar"), "rootfs", "/init")
    same = ImageSpec(Path("/nix/store/aaaa-x/rootfs.tar"), "rootfs", "/sbin/init")
    other = ImageSpec(Path("/nix/store/bbbb-x/rootfs.tar"), "rootfs", "/init")
    assert image_ref(one) == image_ref(same) != image_ref(other)
    assert image_ref(one).startswith("nxc-image:")


def test_manifest_entries_are_checked(tmp_path: Path) -> None:
    image = tmp_path / "image.tar.gz"
    image.write_bytes(b"")
    spec = ImageSpec.from_manifest("web", {"image": "image.tar.gz", "tag": "a:b"}, tmp_path)
    assert (spec.path, spec.format, spec.tag) == (image, "docker-archive", "a:b")
    with pytest.raises(NxcError, match="role web: the manifest has no container image"):
        ImageSpec.from_manifest("web", None, tmp_path)
    with pytest.raises(NxcError, match="role web: a rootfs container image needs `init`"):
        ImageSpec.from_manifest("web", {"image": str(image), "format": "rootfs"}, None)
    with pytest.raises(NxcError, match="does not exist"):
        ImageSpec.from_manifest("web", {"image": "/nonexistent.tar"}, None)


def test_ports_and_addresses() -> None:
    exposed, bindings = _port_bindings(["8080:80", "127.0.0.1:5353:53/udp", "9000"], "web")
    assert exposed == [(80, "tcp"), (53, "udp"), (9000, "tcp")]
    assert bindings == {"80/tcp": "8080", "53/udp": ("127.0.0.1", "5353"), "9000/tcp": None}
    with pytest.raises(NxcError, match="role web: port 'x:y'"):
        _port_bindings(["x:y"], "web")
    assert _gateway("198.18.0.0/16") == "198.18.255.254"
    assert _gateway("fd00:6e78:63::/64") == "fd00:6e78:63:0:ffff:ffff:ffff:fffe"
    assert _with_length("198.18.0.7", "198.18.0.0/16") == "198.18.0.7/16"
    assert _with_length("fd00::7/64", "fd00::/48") == "fd00::7/64"
