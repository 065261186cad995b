"""A throw-away lab of network namespaces on this host, for tests and benchmarks.

:func:`lab` gives every node of a deployment its own network namespace, with the
deployment's experiment interface (a veth) plugged into a bridge that lives in one more
namespace, and the node's IPv4/IPv6 addresses. :class:`NetnsMachine` runs commands in a
namespace with the same ``execute`` as the driver's ``Machine``. Nothing touches the host's
own network: names are unique to the call (``nxl<pid><token>-…``) and everything is deleted
on exit, even after a failure. Needs root.
"""

from __future__ import annotations

import ipaddress
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from nxc.contracts.deployment import Deployment
from nxc.contracts.manifest import Manifest
from nxc.expand import DEFAULT_INTERFACE, expand


def make_deployment(
    roles: dict[str, int], interface: str = DEFAULT_INTERFACE, deployment_id: str = "netem-lab"
) -> Deployment:
    """A deployment as ``nxc start`` would expand it, for roles given as name -> count."""
    manifest = Manifest.from_dict(
        {
            "nxc_manifest": 1,
            "composition": "netem-lab",
            "flavour": "vm-ramdisk",
            "roles": {name: {"quantity": count} for name, count in roles.items()},
        }
    )
    return expand(manifest, {}, deployment_id, ["ssh-ed25519 AAAAnetemlab"], interface=interface)


# The driver's Machine runs commands under this prelude by default (strict mode); so do we,
# so that commands written for nodes are tested the way nodes will run them.
STRICT_PRELUDE = "set -eu\ncommand set -o pipefail 2>/dev/null || :\n"


class NetnsMachine:
    """Machine-like access to one network namespace (``ip netns exec NAME sh -c …``)."""

    def __init__(self, name: str, netns: str, strict: bool = True) -> None:
        self.name = name
        self.netns = netns
        self.strict = strict

    def execute(self, command: str, *, timeout: int | None = None) -> tuple[int, str]:
        try:
            done = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.netns,
                    "sh",
                    "-c",
                    (STRICT_PRELUDE + command) if self.strict else command,
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return 124, ""
        return done.returncode, done.stdout.decode(errors="replace")

    def succeed(self, command: str, timeout: int | None = None) -> str:
        status, output = self.execute(command, timeout=timeout)
        if status != 0:
            raise RuntimeError(f"{self.name}: command failed with status {status}: {command}")
        return output


def _run(*args: str) -> None:
    subprocess.run(list(args), check=True, stdin=subprocess.DEVNULL, capture_output=True)


@contextmanager
def lab(deployment: Deployment) -> Iterator[dict[str, NetnsMachine]]:
    """One namespace per node, all on one bridge; yields node name → NetnsMachine."""
    token = f"nxl{secrets.token_hex(3)}"
    hub = f"{token}-hub"
    created: list[str] = []
    v4_len = ipaddress.ip_network(deployment.ipv4_prefix).prefixlen
    v6_len = ipaddress.ip_network(deployment.ipv6_prefix).prefixlen
    try:
        _run("ip", "netns", "add", hub)
        created.append(hub)
        _run("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", hub, "link", "set", "br0", "up")
        machines: dict[str, NetnsMachine] = {}
        for i, node in enumerate(deployment.nodes):
            ns = f"{token}-{i}"
            _run("ip", "netns", "add", ns)
            created.append(ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            port = f"p{i}"
            _run(
                "ip",
                "-n",
                hub,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                deployment.interface,
                "netns",
                ns,
            )
            _run("ip", "-n", hub, "link", "set", port, "master", "br0", "up")
            dev = deployment.interface
            _run("ip", "-n", ns, "link", "set", dev, "address", node.mac, "up")
            _run("ip", "-n", ns, "addr", "add", f"{node.ipv4}/{v4_len}", "dev", dev)
            _run("ip", "-n", ns, "addr", "add", f"{node.ipv6}/{v6_len}", "dev", dev, "nodad")
            machines[node.name] = NetnsMachine(node.name, ns)
        yield machines
    finally:
        for ns in reversed(created):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
