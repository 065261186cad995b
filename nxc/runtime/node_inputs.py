"""What a node's agent reads (Contract 3 of docs/architecture.md), rendered on the host.

The agent parses no JSON: nxc renders, per node, the few files it needs, and each
flavour hands them over through a source the agent knows (QEMU fw_cfg for VMs, a mounted
or pushed directory, a URL). ``render(deployment, name)`` is pure; ``write`` puts the
files in a directory with the right modes.

Files (names are part of the contract):

* ``env`` — shell assignments, one per line, values single-quoted: ``NXC_INPUTS`` (this
  format's version), ``NXC_NODE``, ``NXC_ROLE``, ``NXC_INDEX``, ``NXC_REPLICAS``,
  ``NXC_DEPLOYMENT_ID``, ``NXC_NODES`` (every node name, space-separated),
  ``NXC_INTERFACE``, ``NXC_MAC`` (lower case), ``NXC_IPV4`` and ``NXC_IPV6`` (with their
  prefix length; ``NXC_IPV6`` may be empty), ``NXC_HOST_KEY`` (the public host key the
  node must present, may be empty). The agent copies it to ``/etc/nxc/env``.
* ``hosts`` — the node's ``/etc/hosts``, verbatim.
* ``authorized_keys`` — root's keys for this deployment, one per line.
* ``deployment.json`` — the deployment, copied to ``/etc/nxc/deployment.json`` for
  programs on the node (the agent never reads it).
* ``hostkey`` — the node's private ssh host key; not rendered here (it is not in the
  deployment): the runtime adds it, mode 0600, and never on a kernel command line.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from nxc.contracts.deployment import Deployment
from nxc.expand import role_aliases

INPUTS_VERSION = 1
ENV, HOSTS, AUTHORIZED_KEYS, DEPLOYMENT, HOST_KEY = (
    "env",
    "hosts",
    "authorized_keys",
    "deployment.json",
    "hostkey",
)


@dataclass(frozen=True)
class NodeInputs:
    """The rendered files of one node: file name → text."""

    node: str
    files: dict[str, str]


def _with_length(address: str, prefix: str, default: int) -> str:
    if not address or "/" in address:
        return address
    try:
        length = ipaddress.ip_network(prefix, strict=False).prefixlen
    except ValueError:
        length = default
    return f"{address}/{length}"


def _one_line(value: str) -> str:
    # The agent writes some values to one-line files (/etc/nxc/role…): no newlines.
    return " ".join(value.splitlines())


def render_env(deployment: Deployment, name: str) -> str:
    node = deployment.node(name)
    replicas = deployment.roles.get(node.role) or len(deployment.nodes_of(node.role))
    values = {
        "NXC_INPUTS": str(INPUTS_VERSION),
        "NXC_NODE": node.name,
        "NXC_ROLE": node.role,
        "NXC_INDEX": str(node.index),
        "NXC_REPLICAS": str(replicas),
        "NXC_DEPLOYMENT_ID": deployment.id,
        "NXC_NODES": " ".join(n.name for n in deployment.nodes),
        "NXC_INTERFACE": deployment.interface,
        "NXC_MAC": node.mac.lower(),
        "NXC_IPV4": _with_length(node.ipv4, deployment.ipv4_prefix, 32),
        "NXC_IPV6": _with_length(node.ipv6, deployment.ipv6_prefix, 128),
        "NXC_HOST_KEY": node.host_key or "",
    }
    return "".join(f"{key}={shlex.quote(_one_line(value))}\n" for key, value in values.items())


def render_hosts(deployment: Deployment) -> str:
    lines = [
        f"# written by nxc for deployment {deployment.id}",
        "127.0.0.1 localhost",
        "::1 localhost ip6-localhost ip6-loopback",
    ]
    # A role with a single node is also reachable by its name (NixOS tests written for
    # `server`/`client` machines run unchanged): "10.0.0.1 server1 server".
    aliases: dict[str, list[str]] = {}
    for alias, name in role_aliases((n.name, n.role) for n in deployment.nodes).items():
        aliases.setdefault(name, []).append(alias)
    for node in deployment.nodes:
        names = " ".join([node.name, *aliases.get(node.name, [])])
        for address in (node.ipv4, node.ipv6):
            if address:
                lines.append(f"{address.split('/')[0]} {names}")
    return "\n".join(lines) + "\n"


def render(deployment: Deployment, name: str) -> NodeInputs:
    """The input files of node ``name`` (``KeyError`` naming the nodes if it is unknown)."""
    return NodeInputs(
        node=name,
        files={
            ENV: render_env(deployment, name),
            HOSTS: render_hosts(deployment),
            AUTHORIZED_KEYS: "".join(f"{_one_line(k)}\n" for k in deployment.authorized_keys),
            DEPLOYMENT: deployment.to_json(),
        },
    )


def write(inputs: NodeInputs, directory: Path, host_key: Path | None = None) -> dict[str, Path]:
    """Write the files into ``directory`` (created 0700): readable files 0644, the
    private ``host_key`` (copied if given) 0600. Returns file name → path."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, text in inputs.files.items():
        path = directory / name
        path.write_text(text)
        path.chmod(0o644)
        paths[name] = path
    if host_key is not None:
        path = directory / HOST_KEY
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(host_key.read_bytes())
        path.chmod(0o600)
        paths[HOST_KEY] = path
    return paths
