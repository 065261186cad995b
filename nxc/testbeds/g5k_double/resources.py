"""OAR resource requests (``oarsub -l``) and the allocation of free resources to them.

``{cluster='paravance'}/nodes=2+{type='kavlan'}/vlan=1+slash_22=1,walltime=2:00`` is
three *groups* (nodes, a VLAN, a /22 subnet) and a walltime. Each group is an
optional property expression and a path of ``level=count`` steps; the double
understands the levels experiment tools use: ``cluster``, ``switch`` (ignored),
``nodes``/``host``/``network_address``, ``cpu``/``core`` (whole nodes here), ``vlan``
and ``slash_22``. ``BEST`` takes every matching free resource.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from nxc.testbeds.g5k_double.inventory import Node, Site, Vlan
from nxc.testbeds.g5k_double.oarsql import Predicate, PropertyError, Props, compile_properties

Kind = Literal["nodes", "vlan", "subnet"]
NODE_LEVELS = ("nodes", "host", "network_address")
IGNORED_LEVELS = ("switch", "cpu", "core", "gpu")
_WALLTIME = re.compile(r"\A(\d+)(?::(\d+))?(?::(\d+))?\Z")


class ResourceError(ValueError):
    """The request is malformed (the API answers 400 with this text)."""


def parse_walltime(text: str | int) -> int:
    """``"2"``, ``"1:30"``, ``"01:30:00"`` or seconds as an int → seconds."""
    if isinstance(text, int) and not isinstance(text, bool):
        seconds = text
    else:
        match = _WALLTIME.match(str(text).strip())
        if match is None:
            raise ResourceError(f"Bad walltime format: {text!r} (expected h[:m[:s]])")
        hours, minutes, secs = (int(g) if g else 0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        raise ResourceError(f"Bad walltime: {text!r} (must be positive)")
    return seconds


def format_duration(seconds: int) -> str:
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    return f"{sign}{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass(frozen=True)
class Group:
    kind: Kind
    expression: str
    count: int | None  # None = BEST
    clusters: int | None  # cluster=N level (node groups only)


@dataclass(frozen=True)
class Request:
    groups: tuple[Group, ...]
    walltime: int | None


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside braces and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if quote or depth:
        raise ResourceError(f"Bad resource request: unbalanced braces or quotes in {text!r}")
    parts.append(text[start:])
    return parts


def _parse_group(text: str) -> Group:
    text = text.strip()
    expression = ""
    if text.startswith("{"):
        close = _closing_brace(text)
        expression, text = text[1:close].strip(), text[close + 1 :]
    kind: Kind = "nodes"
    count: int | None = 1
    clusters: int | None = None
    steps = [s for s in text.split("/") if s.strip()]
    if not steps:
        raise ResourceError(f"Bad resource request: no resource level in {text!r}")
    saw_node_level = False
    for step in steps:
        level, _, value = step.partition("=")
        level, value = level.strip(), value.strip()
        if not value:
            raise ResourceError(f"Bad resource request: {step!r} (expected level=count)")
        number = None if value.upper() == "BEST" else _count(value, step)
        if level in NODE_LEVELS:
            count, saw_node_level = number, True
        elif level == "cluster":
            clusters = number
        elif level == "vlan":
            kind, count = "vlan", number
        elif level == "slash_22":
            kind, count = "subnet", number
        elif level in IGNORED_LEVELS:
            if not saw_node_level:
                count = 1
        else:
            raise ResourceError(f"Bad resource request: unknown resource level '{level}'")
    return Group(kind, expression, count, clusters)


def _closing_brace(text: str) -> int:
    depth, quote = 0, ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
    raise ResourceError(f"Bad resource request: unbalanced braces in {text!r}")


def _count(value: str, step: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ResourceError(f"Bad resource request: {step!r} (count must be >= 1 or BEST)")
    return int(value)


def parse_request(text: str) -> Request:
    """Parse an ``oarsub -l`` string (default ``nodes=1``)."""
    text = text.strip() or "nodes=1"
    pieces = _split_top(text, ",")
    walltime = None
    for option in pieces[1:]:
        key, _, value = option.partition("=")
        if key.strip() != "walltime":
            raise ResourceError(f"Bad resource request: unknown option {option.strip()!r}")
        walltime = parse_walltime(value)
    groups = tuple(_parse_group(g) for g in _split_top(pieces[0], "+") if g.strip())
    if not groups:
        raise ResourceError("Bad resource request: empty")
    return Request(groups, walltime)


def node_properties(node: Node) -> Props:
    return {
        "host": node.fqdn,
        "network_address": node.fqdn,
        "cluster": node.cluster,
        "type": "default",
        "deploy": "YES" if node.deploy else "NO",
        "core_count": node.cores,
        "cpucore": node.cores // node.procs,
        "memnode": node.memory_bytes // 1024**2,
        **node.properties,
    }


def vlan_properties(vlan: Vlan) -> Props:
    return {"type": vlan.type, "vlan": vlan.uid}


def subnet_properties(cidr: str) -> Props:
    address, _, prefix = cidr.partition("/")
    return {"type": "subnet", "subnet_address": address, "subnet_prefix": int(prefix)}


@dataclass(frozen=True)
class Allocation:
    nodes: tuple[Node, ...] = ()
    vlans: tuple[str, ...] = ()
    subnets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pool:
    """What an allocation may take from."""

    nodes: Sequence[Node]
    vlans: Sequence[Vlan]
    subnets: Sequence[str]


def _predicate(expression: str, extra: str, samples: Iterable[Props]) -> Predicate:
    known = frozenset(key for props in samples for key in props)
    text = " AND ".join(f"({e})" for e in (expression, extra) if e.strip())
    try:
        return compile_properties(text, known)
    except PropertyError as exc:
        raise ResourceError(f"Bad resource request: {exc}") from None


def allocate(request: Request, pool: Pool, site: Site, properties: str = "") -> Allocation | None:
    """Pick resources for every group from ``pool``; None when there are not enough.

    ``properties`` is the job-wide ``-p`` expression (applies to node groups).
    Raises ResourceError for a malformed expression.
    """
    all_node_props = [node_properties(n) for n in site.nodes()]
    nodes: list[Node] = []
    vlans: list[str] = []
    subnets: list[str] = []
    free_nodes = sorted(pool.nodes, key=lambda n: (n.cluster, n.index))
    for group in request.groups:
        if group.kind == "nodes":
            match = _predicate(group.expression, properties, all_node_props)
            candidates = [n for n in free_nodes if n not in nodes and match(node_properties(n))]
            picked = _pick_nodes(candidates, group)
            if picked is None:
                return None
            nodes.extend(picked)
        elif group.kind == "vlan":
            vlan_props = [vlan_properties(v) for v in site.vlans] or [{"type": "", "vlan": ""}]
            expression = group.expression or "type LIKE 'kavlan%'"
            match = _predicate(expression, "", vlan_props)
            free = [v.uid for v in pool.vlans if v.uid not in vlans and match(vlan_properties(v))]
            wanted = group.count if group.count is not None else max(len(free), 1)
            if len(free) < wanted:
                return None
            vlans.extend(free[:wanted])
        else:
            sample = [subnet_properties(s) for s in site.subnets] or [
                subnet_properties("0.0.0.0/22")
            ]
            match = _predicate(group.expression, "", sample)
            free_s = [s for s in pool.subnets if s not in subnets and match(subnet_properties(s))]
            wanted = group.count if group.count is not None else max(len(free_s), 1)
            if len(free_s) < wanted:
                return None
            subnets.extend(free_s[:wanted])
    return Allocation(tuple(nodes), tuple(vlans), tuple(subnets))


def _pick_nodes(candidates: list[Node], group: Group) -> list[Node] | None:
    if group.clusters is None:
        if group.count is None:
            return candidates or None
        return candidates[: group.count] if len(candidates) >= group.count else None
    by_cluster: dict[str, list[Node]] = {}
    for node in candidates:
        by_cluster.setdefault(node.cluster, []).append(node)
    fitting = [
        members[: group.count] if group.count is not None else members
        for _, members in sorted(by_cluster.items())
        if group.count is None or len(members) >= group.count
    ]
    wanted = group.clusters if group.clusters is not None else len(fitting)
    if len(fitting) < max(wanted, 1):
        return None
    return [node for members in fitting[:wanted] for node in members]
