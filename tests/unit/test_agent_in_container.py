"""The agent where a container manager bind-mounts /etc/hosts and /etc/hostname (as
Docker does): it rewrites them in place (a rename over a mount point fails with
"Device or resource busy"). Run in a private mount namespace (unshare -m)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from nxc.contracts.deployment import Deployment
from nxc.runtime import node_inputs

AGENT = Path(__file__).resolve().parents[2] / "nxc" / "agent" / "nxc-agent"


def _deployment() -> dict[str, object]:
    return {
        "nxc_deployment": 1,
        "id": "dep-mounts",
        "composition": "unit",
        "flavour": "docker",
        "network": {
            "ipv4_prefix": "198.18.0.0/16",
            "ipv6_prefix": "fd00:6e78:63::/64",
            "interface": "nxc0",
        },
        "ssh": {"authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUnitKeyxxxxxxxxxx"]},
        "roles": {"node": 2},
        "nodes": [
            {"name": f"node{i}", "role": "node", "index": i, "ipv4": f"198.18.0.{i}",
             "ipv6": f"fd00:6e78:63::{i}", "mac": f"52:54:00:00:00:0{i}"}
            for i in (1, 2)
        ],
    }  # fmt: skip


@pytest.mark.parametrize("shell", ["busybox sh", "dash"])
def test_bind_mounted_files_are_rewritten_in_place(tmp_path: Path, shell: str) -> None:
    for tool in ("unshare", "busybox", "dash"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    inputs = tmp_path / "inputs"
    node_inputs.write(node_inputs.render(Deployment.from_dict(_deployment()), "node2"), inputs)
    # What the container manager mounts over the node's files.
    outside = {name: tmp_path / f"docker-{name}" for name in ("hosts", "hostname")}
    for name, path in outside.items():
        path.write_text(f"docker's {name}\n")
        path.chmod(0o644)
        (root / "etc" / name).write_text("")
    mounts = "; ".join(f"mount --bind {outside[name]} {root / 'etc' / name}" for name in outside)
    agent = f"{shell} {AGENT} up --root {root} --cmdline - --inputs dir:{inputs}"
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", f"{mounts} && {agent}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("nxc-ready node=node2 role=node index=2 ")
    # Written through the mounts: the files behind them hold the agent's content.
    assert outside["hostname"].read_text() == "node2\n"
    hosts = outside["hosts"].read_text().splitlines()
    assert "198.18.0.1 node1" in hosts and "fd00:6e78:63::2 node2" in hosts
    assert outside["hosts"].stat().st_mode & 0o777 == 0o644
    # Nothing was left next to them.
    assert sorted(p.name for p in (root / "etc").iterdir() if "nxc-tmp" in p.name) == []
