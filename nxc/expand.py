"""Expand a build manifest's roles into concrete nodes (pure, deterministic)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

from nxc.contracts.deployment import Deployment, Node
from nxc.contracts.manifest import Manifest
from nxc.errors import NxcError

# RFC 2544 benchmarking range: never routed, so experiment traffic cannot be
# mistaken for anything on a real network.
DEFAULT_IPV4_PREFIX = "198.18.0.0/16"
DEFAULT_IPV6_PREFIX = "fd00:6e78:63::/64"
DEFAULT_INTERFACE = "nxc0"

_OVERRIDE = re.compile(r"^([a-z][a-z0-9_-]*)=(\d+)$")


def parse_role_overrides(values: list[str] | tuple[str, ...]) -> dict[str, int]:
    """Parse ``-r ROLE=N`` options; a malformed one is a one-line error."""
    overrides: dict[str, int] = {}
    for value in values:
        match = _OVERRIDE.match(value.strip())
        if not match:
            raise NxcError(f"-r {value!r}: expected ROLE=N with N a whole number >= 0")
        overrides[match.group(1)] = int(match.group(2))
    return overrides


def role_quantities(manifest: Manifest, overrides: Mapping[str, int]) -> dict[str, int]:
    unknown = sorted(set(overrides) - set(manifest.roles))
    if unknown:
        known = ", ".join(sorted(manifest.roles))
        raise NxcError(f"-r {unknown[0]}: unknown role (the composition has: {known})")
    quantities = {name: overrides.get(name, role.quantity) for name, role in manifest.roles.items()}
    if sum(quantities.values()) == 0:
        raise NxcError("the deployment has no nodes: every role has quantity 0")
    return quantities


def host_name(role: str) -> str:
    """The host-name form of a role name, which its nodes' names start with: role
    names may hold ``_``, host names may not (``my_server`` → ``my-server1``...).
    Must agree with nix/lib/naming.nix ``hostName``."""
    return role.replace("_", "-")


def role_aliases(nodes: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``{alias: node name}`` for each role with a single node, given ``(name, role)``
    pairs: the role's host-name form (``server`` → ``server1``; ``my_server`` →
    ``my-server``), unless a node is already called so."""
    pairs = list(nodes)
    names = {name for name, _ in pairs}
    by_role: dict[str, list[str]] = {}
    for name, role in pairs:
        by_role.setdefault(role, []).append(name)
    aliases: dict[str, str] = {}
    for role, members in by_role.items():
        alias = host_name(role)
        if len(members) == 1 and alias not in names:
            aliases[alias] = members[0]
    return aliases


def node_mac(ordinal: int) -> str:
    """Locally administered, deterministic MAC for the experiment NIC of node ``ordinal``."""
    if not 0 <= ordinal < 1 << 24:
        raise ValueError(f"node ordinal {ordinal} out of range")
    return f"52:54:00:{(ordinal >> 16) & 0xFF:02x}:{(ordinal >> 8) & 0xFF:02x}:{ordinal & 0xFF:02x}"


def expand(
    manifest: Manifest,
    overrides: Mapping[str, int],
    deployment_id: str,
    authorized_keys: list[str],
    ipv4_prefix: str = DEFAULT_IPV4_PREFIX,
    ipv6_prefix: str = DEFAULT_IPV6_PREFIX,
    interface: str = DEFAULT_INTERFACE,
    created_at: str | None = None,
) -> Deployment:
    """Name nodes ``role1..roleN`` (roles in manifest order; ``_`` in a role name is
    ``-`` in its nodes' names) and give them addresses.

    Addresses are the ``ordinal``-th host of each prefix, MACs follow the ordinal:
    the same manifest and quantities always give the same deployment.
    """
    quantities = role_quantities(manifest, overrides)
    try:
        net4 = ipaddress.IPv4Network(ipv4_prefix)
        net6 = ipaddress.IPv6Network(ipv6_prefix)
    except ValueError as exc:
        raise NxcError(f"experiment network: {exc}") from None
    total = sum(quantities.values())
    if total > net4.num_addresses - 2:
        raise NxcError(f"experiment network {net4} is too small for {total} nodes")
    nodes: list[Node] = []
    ordinal = 0
    for role, quantity in quantities.items():
        for index in range(1, quantity + 1):
            ordinal += 1
            nodes.append(
                Node(
                    name=f"{host_name(role)}{index}",
                    role=role,
                    index=index,
                    ipv4=str(net4.network_address + ordinal),
                    ipv6=str(net6.network_address + ordinal),
                    mac=node_mac(ordinal),
                )
            )
    names = [n.name for n in nodes]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash:
        raise NxcError(f"two nodes would both be named '{clash}': rename one of the roles")
    return Deployment(
        id=deployment_id,
        composition=manifest.composition,
        flavour=manifest.flavour,
        ipv4_prefix=str(net4),
        ipv6_prefix=str(net6),
        interface=interface,
        authorized_keys=authorized_keys,
        roles=quantities,
        nodes=nodes,
        created_at=created_at,
    )
