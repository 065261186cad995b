"""The network topology model (``nxc_topology: 1``): groups, defaults, constraints, partitions.

A topology is read from a YAML file (:meth:`Topology.load`), from a dict such as the
manifest's ``topology`` field (:meth:`Topology.from_dict`), or built in Python::

    topo = (Topology()
            .group("site_a", roles=["server"])
            .group("site_b", nodes=["client1", "client2"])
            .constrain("site_a", "site_b", delay="25ms", loss="1%", rate="100mbit"))

Objects are immutable: every builder method returns a new topology.

Semantics (see docs/netem.md):

* a name in ``from``/``to`` is a group of the topology, else a role of the deployment,
  else a node name; ``"*"`` is every node;
* ``defaults`` applies to every ordered pair of distinct nodes of the deployment;
* constraints are applied in order on top of the defaults, each overriding only the fields
  it sets (``null`` clears an inherited field); ``symmetric`` (default true) also applies
  the constraint from ``to`` to ``from``;
* partitions come last: a partitioned pair loses every packet (100 % loss), whatever else
  was asked; ``heal`` removes the partitions.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from nxc.contracts.deployment import Deployment
from nxc.contracts.validate import read_document_text, validate_document
from nxc.errors import ContractError
from nxc.netem import units

VERSION = 1
Distribution = Literal["normal", "pareto", "paretonormal", "uniform"]
Side = Literal["source", "destination"]
DISTRIBUTIONS: tuple[str, ...] = ("normal", "pareto", "paretonormal", "uniform")
SIDES: tuple[str, ...] = ("source", "destination")
ALL = "*"

# Shaping fields, in the order they are written out.
SHAPING_FIELDS: tuple[str, ...] = (
    "delay",
    "jitter",
    "distribution",
    "loss",
    "rate",
    "corrupt",
    "duplicate",
    "reorder",
    "limit",
    "side",
)
_TOP_KEYS = ("nxc_topology", "description", "groups", "defaults", "constraints", "partitions")
_CONSTRAINT_KEYS = ("from", "to", "symmetric", "description", *SHAPING_FIELDS)
_PARTITION_KEYS = ("from", "to", "symmetric")
_GROUP_KEYS = ("roles", "nodes")


@dataclass(frozen=True)
class Shaping:
    """Shaping fields as written: ``None`` means "not set here" (inherit).

    ``cleared`` names fields explicitly set to null, which removes an inherited value.
    Durations are microseconds, rates bits per second, percentages 0-100.
    """

    delay: int | None = None
    jitter: int | None = None
    distribution: Distribution | None = None
    loss: float | None = None
    rate: int | None = None
    corrupt: float | None = None
    duplicate: float | None = None
    reorder: float | None = None
    limit: int | None = None
    side: Side | None = None
    cleared: frozenset[str] = frozenset()

    def is_empty(self) -> bool:
        return not self.cleared and all(getattr(self, f) is None for f in SHAPING_FIELDS)

    def over(self, base: Shaping) -> Shaping:
        """This shaping applied on top of ``base`` (fields set here win)."""
        merged: dict[str, Any] = {}
        for name in SHAPING_FIELDS:
            mine = getattr(self, name)
            if mine is not None:
                merged[name] = mine
            elif name in self.cleared:
                merged[name] = None
            else:
                merged[name] = getattr(base, name)
        return Shaping(**merged)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in SHAPING_FIELDS:
            value = getattr(self, name)
            if value is None:
                if name in self.cleared:
                    out[name] = None
                continue
            out[name] = _format_field(name, value)
        return out


@dataclass(frozen=True)
class Group:
    name: str
    roles: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    # Entries of the short list form: each is a role or a node name.
    members: tuple[str, ...] = ()

    def to_dict(self) -> list[str] | dict[str, list[str]]:
        if self.members and not self.roles and not self.nodes:
            return list(self.members)
        out: dict[str, list[str]] = {}
        if self.roles:
            out["roles"] = list(self.roles)
        if self.nodes:
            out["nodes"] = list(self.nodes)
        return out


@dataclass(frozen=True)
class Constraint:
    src: tuple[str, ...]
    dst: tuple[str, ...]
    shaping: Shaping
    symmetric: bool = True
    description: str | None = None
    where: str = "constraint"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"from": _names_out(self.src), "to": _names_out(self.dst)}
        if not self.symmetric:
            out["symmetric"] = False
        if self.description:
            out["description"] = self.description
        out.update(self.shaping.to_dict())
        return out


@dataclass(frozen=True)
class Partition:
    src: tuple[str, ...]
    dst: tuple[str, ...]
    symmetric: bool = True
    where: str = "partition"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"from": _names_out(self.src), "to": _names_out(self.dst)}
        if not self.symmetric:
            out["symmetric"] = False
        return out


@dataclass(frozen=True)
class PairShaping:
    """What one ordered pair (source node → destination node) gets, all inheritance done."""

    delay: int = 0
    jitter: int = 0
    distribution: Distribution | None = None
    loss: float = 0.0
    rate: int | None = None
    corrupt: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    limit: int | None = None
    side: Side = "source"
    partitioned: bool = False
    origin: tuple[str, ...] = ()

    @property
    def effective_loss(self) -> float:
        """Percent of packets lost in this direction (partition = 100)."""
        return 100.0 if self.partitioned else self.loss

    def is_noop(self) -> bool:
        return not self.partitioned and (
            self.delay == 0
            and self.jitter == 0
            and self.loss == 0
            and self.rate is None
            and self.corrupt == 0
            and self.duplicate == 0
            and self.reorder == 0
        )

    def needs_netem(self) -> bool:
        """True when a netem leaf is needed (anything but a pure rate limit)."""
        return self.partitioned or bool(
            self.delay or self.jitter or self.loss or self.corrupt or self.duplicate or self.reorder
        )

    def describe(self) -> str:
        if self.partitioned:
            return "partitioned (100% loss)"
        parts: list[str] = []
        if self.delay or self.jitter:
            text = f"delay {units.format_duration(self.delay)}"
            if self.jitter:
                text += f" ±{units.format_duration(self.jitter)}"
                if self.distribution and self.distribution != "uniform":
                    text += f" {self.distribution}"
            parts.append(text)
        for name in ("loss", "corrupt", "duplicate", "reorder"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name} {units.format_percent(value)}")
        if self.rate is not None:
            parts.append(f"rate {units.format_rate(self.rate)}")
        if self.side == "destination":
            parts.append("(ingress)")
        return ", ".join(parts) or "unconstrained"


@dataclass(frozen=True)
class Topology:
    groups: Mapping[str, Group] = field(default_factory=dict)
    defaults: Shaping = field(default_factory=Shaping)
    constraints: tuple[Constraint, ...] = ()
    partitions: tuple[Partition, ...] = ()
    description: str | None = None
    source: str = "topology"

    # ---------------------------------------------------------------- reading

    @classmethod
    def load(cls, path: Path | str) -> Topology:
        """Read a YAML (or JSON) topology file."""
        path = Path(path)
        text = read_document_text(path, "topology")
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "syntax error"
            raise ContractError(f"{path}: malformed YAML{at}: {problem}") from None
        return cls.from_dict(document, source=str(path))

    @classmethod
    def from_dict(cls, document: Any, source: str = "topology") -> Topology:
        """Build from a parsed document; errors are one line naming ``source`` and the field."""
        if not isinstance(document, dict):
            raise ContractError(f"{source}: a topology must be a mapping (with nxc_topology: 1)")
        if "nxc_topology" not in document:
            raise ContractError(
                f"{source}: not an nxc topology: field 'nxc_topology' is missing "
                "(add nxc_topology: 1)"
            )
        if document["nxc_topology"] != VERSION:
            raise ContractError(
                f"{source}: nxc_topology {document['nxc_topology']!r} is not supported "
                f"(this nxc reads {VERSION})"
            )
        _check_keys(document, _TOP_KEYS, source, "")
        description = document.get("description")
        if description is not None and not isinstance(description, str):
            raise ContractError(f"{source}: description: must be a string")
        groups = _parse_groups(document.get("groups"), source)
        defaults = _parse_shaping(
            document.get("defaults"), source, "defaults", allow=SHAPING_FIELDS
        )
        raw_constraints = _expect_list(document.get("constraints"), source, "constraints")
        constraints = tuple(
            _parse_constraint(entry, source, f"constraints[{i}]")
            for i, entry in enumerate(raw_constraints)
        )
        raw_partitions = _expect_list(document.get("partitions"), source, "partitions")
        partitions = tuple(
            _parse_partition(entry, source, f"partitions[{i}]")
            for i, entry in enumerate(raw_partitions)
        )
        # Safety net: the schema shipped for other readers must agree with this parser.
        validate_document(document, "topology", source)
        return cls(
            groups=groups,
            defaults=defaults,
            constraints=constraints,
            partitions=partitions,
            description=description,
            source=source,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"nxc_topology": VERSION}
        if self.description:
            out["description"] = self.description
        if self.groups:
            out["groups"] = {name: g.to_dict() for name, g in self.groups.items()}
        if not self.defaults.is_empty():
            out["defaults"] = self.defaults.to_dict()
        if self.constraints:
            out["constraints"] = [c.to_dict() for c in self.constraints]
        if self.partitions:
            out["partitions"] = [p.to_dict() for p in self.partitions]
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # ---------------------------------------------------------------- building

    def group(
        self,
        name: str,
        members: Sequence[str] = (),
        *,
        roles: Sequence[str] = (),
        nodes: Sequence[str] = (),
    ) -> Topology:
        """Add (or replace) a group: ``members`` are role or node names."""
        where = f"group({name!r})"
        _check_group_name(name, self.source, where)
        for label, names in (("members", members), ("roles", roles), ("nodes", nodes)):
            _check_names(names, self.source, f"{where}.{label}")
        groups = dict(self.groups)
        groups[name] = Group(name, tuple(roles), tuple(nodes), tuple(members))
        return replace(self, groups=groups)

    def with_defaults(self, **values: Any) -> Topology:
        """Set default shaping (strings with units, e.g. ``delay="1ms"``) for every pair."""
        shaping = _parse_shaping(values, self.source, "defaults", allow=SHAPING_FIELDS)
        return replace(self, defaults=shaping.over(self.defaults))

    def constrain(
        self,
        src: str | Sequence[str],
        dst: str | Sequence[str],
        *,
        symmetric: bool = True,
        description: str | None = None,
        **values: Any,
    ) -> Topology:
        """Append a constraint from ``src`` to ``dst`` (names of groups, roles or nodes).

        ``values`` are shaping fields written as in YAML (``delay="50ms"``, ``loss="1%"``,
        ``rate="100mbit"``); ``None`` clears a field inherited from earlier entries.
        """
        index = len(self.constraints)
        where = f"constraints[{index}]"
        entry: dict[str, Any] = {"from": _names_in(src), "to": _names_in(dst)}
        entry["symmetric"] = symmetric
        if description is not None:
            entry["description"] = description
        entry.update(values)
        constraint = _parse_constraint(entry, self.source, where)
        return replace(self, constraints=(*self.constraints, constraint))

    def partition(
        self, src: str | Sequence[str], dst: str | Sequence[str], *, symmetric: bool = True
    ) -> Topology:
        """Append a partition: every packet from ``src`` to ``dst`` (and back) is lost."""
        where = f"partitions[{len(self.partitions)}]"
        entry = {"from": _names_in(src), "to": _names_in(dst), "symmetric": symmetric}
        return replace(
            self, partitions=(*self.partitions, _parse_partition(entry, self.source, where))
        )

    def healed(self) -> Topology:
        """The same topology without any partition."""
        return replace(self, partitions=())

    def without_constraints(self) -> Topology:
        return replace(self, constraints=(), partitions=(), defaults=Shaping())

    # ---------------------------------------------------------------- resolving

    def members(self, name: str, deployment: Deployment, where: str = "") -> list[str]:
        """Node names a group/role/node name stands for, in deployment order."""
        order = [n.name for n in deployment.nodes]
        found = self._resolve(name, deployment, where or self.source, set())
        return [n for n in order if n in found]

    def _resolve(self, name: str, deployment: Deployment, where: str, seen: set[str]) -> set[str]:
        if name == ALL:
            return {n.name for n in deployment.nodes}
        group = self.groups.get(name)
        if group is not None:
            if name in seen:
                raise ContractError(f"{self.source}: groups.{name}: refers to itself")
            seen = seen | {name}
            found: set[str] = set()
            for role in group.roles:
                if role not in deployment.roles:
                    raise ContractError(
                        f"{self.source}: groups.{name}.roles: '{role}' is not a role of the "
                        f"deployment (roles: {', '.join(deployment.roles) or 'none'})"
                    )
                found.update(n.name for n in deployment.nodes_of(role))
            node_names = {n.name for n in deployment.nodes}
            for node in group.nodes:
                if node not in node_names:
                    raise ContractError(
                        f"{self.source}: groups.{name}.nodes: '{node}' is not a node of the "
                        f"deployment"
                    )
                found.add(node)
            for member in group.members:
                found |= self._resolve_plain(member, deployment, f"groups.{name}", seen)
            return found
        return self._resolve_plain(name, deployment, where, seen)

    def _resolve_plain(
        self, name: str, deployment: Deployment, where: str, seen: set[str]
    ) -> set[str]:
        if name == ALL:
            return {n.name for n in deployment.nodes}
        if name in self.groups:
            return self._resolve(name, deployment, where, seen)
        node_names = {n.name for n in deployment.nodes}
        is_role = name in deployment.roles
        is_node = name in node_names
        if is_role and is_node:
            raise ContractError(
                f"{self.source}: {where}: '{name}' is both a role and a node: define a group "
                "with roles: or nodes: to say which"
            )
        if is_role:
            return {n.name for n in deployment.nodes_of(name)}
        if is_node:
            return {name}
        known = sorted(set(self.groups) | set(deployment.roles))
        hint = _suggest(name, [*known, *node_names])
        raise ContractError(
            f"{self.source}: {where}: '{name}' is not a group, role or node of the deployment"
            f"{hint} (groups and roles: {', '.join(known) or 'none'})"
        )

    def _endpoints(self, names: Iterable[str], deployment: Deployment, where: str) -> list[str]:
        found: set[str] = set()
        for name in names:
            found |= self._resolve(name, deployment, where, set())
        return [n.name for n in deployment.nodes if n.name in found]

    def resolve(self, deployment: Deployment) -> dict[tuple[str, str], PairShaping]:
        """Every ordered pair (src, dst) that gets shaping, with what it gets.

        Pairs whose shaping is a no-op (nothing set, or zeros) are left out.
        """
        for group in self.groups.values():  # report bad groups even if unused
            self._resolve(group.name, deployment, f"groups.{group.name}", set())
        names = [n.name for n in deployment.nodes]
        layers: dict[tuple[str, str], tuple[Shaping, list[str]]] = {}
        if not self.defaults.is_empty():
            for a in names:
                for b in names:
                    if a != b:
                        layers[(a, b)] = (self.defaults, ["defaults"])
        for constraint in self.constraints:
            srcs = self._endpoints(constraint.src, deployment, f"{constraint.where}.from")
            dsts = self._endpoints(constraint.dst, deployment, f"{constraint.where}.to")
            for pair in _pairs(srcs, dsts, constraint.symmetric):
                base, origin = layers.get(pair, (Shaping(), []))
                layers[pair] = (constraint.shaping.over(base), [*origin, constraint.where])
        partitioned: dict[tuple[str, str], str] = {}
        for part in self.partitions:
            srcs = self._endpoints(part.src, deployment, f"{part.where}.from")
            dsts = self._endpoints(part.dst, deployment, f"{part.where}.to")
            for pair in _pairs(srcs, dsts, part.symmetric):
                partitioned[pair] = part.where
        result: dict[tuple[str, str], PairShaping] = {}
        for a in names:
            for b in names:
                pair = (a, b)
                if pair in partitioned:
                    origin = [*layers.get(pair, (Shaping(), []))[1], partitioned[pair]]
                    result[pair] = PairShaping(partitioned=True, origin=tuple(origin))
                    continue
                if pair not in layers:
                    continue
                shaping, origin_list = layers[pair]
                effective = _effective(shaping, tuple(origin_list), self.source, pair)
                if not effective.is_noop():
                    result[pair] = effective
        return result


# -------------------------------------------------------------------- helpers


def _pairs(srcs: list[str], dsts: list[str], symmetric: bool) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for a in srcs:
        for b in dsts:
            if a != b:
                pairs.append((a, b))
                if symmetric:
                    pairs.append((b, a))
    return pairs


def _effective(
    shaping: Shaping, origin: tuple[str, ...], source: str, pair: tuple[str, str]
) -> PairShaping:
    effective = PairShaping(
        delay=shaping.delay or 0,
        jitter=shaping.jitter or 0,
        distribution=shaping.distribution,
        loss=shaping.loss or 0.0,
        rate=shaping.rate,
        corrupt=shaping.corrupt or 0.0,
        duplicate=shaping.duplicate or 0.0,
        reorder=shaping.reorder or 0.0,
        limit=shaping.limit,
        side=shaping.side or "source",
        origin=origin,
    )
    if effective.reorder and not effective.delay:
        raise ContractError(
            f"{source}: {origin[-1]}: reorder needs a delay (netem reorders by sending some "
            f"packets without the delay), for {pair[0]} -> {pair[1]}"
        )
    return effective


def _format_field(name: str, value: Any) -> Any:
    if name in ("delay", "jitter"):
        return units.format_duration(value)
    if name == "rate":
        return units.format_rate(value)
    if name in ("loss", "corrupt", "duplicate", "reorder"):
        return units.format_percent(value)
    return value


def _names_in(value: str | Sequence[str]) -> str | list[str]:
    return value if isinstance(value, str) else list(value)


def _names_out(names: tuple[str, ...]) -> str | list[str]:
    return names[0] if len(names) == 1 else list(names)


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _check_keys(entry: Mapping[str, Any], allowed: Sequence[str], source: str, where: str) -> None:
    for key in entry:
        if key not in allowed:
            label = f"{where}: " if where else ""
            raise ContractError(
                f"{source}: {label}unknown key {key!r}{_suggest(str(key), allowed)} "
                f"(allowed: {', '.join(allowed)})"
            )


def _expect_list(value: Any, source: str, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ContractError(f"{source}: {where}: must be a list")
    return value


def _check_group_name(name: Any, source: str, where: str) -> None:
    if not isinstance(name, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]*$", name):
        raise ContractError(
            f"{source}: {where}: {name!r} is not a valid group name "
            "(letters, digits, '_', '.', '-'; starting with a letter or '_')"
        )


def _check_names(value: Any, source: str, where: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ContractError(f"{source}: {where}: must be a list of names")
    for item in value:
        if not isinstance(item, str) or not item:
            raise ContractError(f"{source}: {where}: {item!r} is not a name")
    return list(value)


def _parse_groups(value: Any, source: str) -> dict[str, Group]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ContractError(f"{source}: groups: must be a mapping from group name to members")
    groups: dict[str, Group] = {}
    for name, spec in value.items():
        where = f"groups.{name}"
        _check_group_name(name, source, "groups")
        if isinstance(spec, list):
            groups[name] = Group(name, members=tuple(_check_names(spec, source, where)))
        elif isinstance(spec, dict):
            _check_keys(spec, _GROUP_KEYS, source, where)
            roles = _check_names(spec.get("roles", []), source, f"{where}.roles")
            nodes = _check_names(spec.get("nodes", []), source, f"{where}.nodes")
            groups[name] = Group(name, roles=tuple(roles), nodes=tuple(nodes))
        else:
            raise ContractError(
                f"{source}: {where}: must be a list of role/node names or "
                "{roles: [...], nodes: [...]}"
            )
    return groups


def _parse_names(value: Any, source: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, (list, tuple)) and value:
        return tuple(_check_names(value, source, where))
    raise ContractError(f"{source}: {where}: must be a group, role or node name, or a list of them")


def _parse_shaping(value: Any, source: str, where: str, allow: Sequence[str]) -> Shaping:
    if value is None:
        return Shaping()
    if not isinstance(value, Mapping):
        raise ContractError(f"{source}: {where}: must be a mapping of shaping fields")
    _check_keys(value, allow, source, where)
    parsed: dict[str, Any] = {}
    cleared: set[str] = set()
    for name in SHAPING_FIELDS:
        if name not in value:
            continue
        raw = value[name]
        if raw is None:
            cleared.add(name)
            continue
        parsed[name] = _parse_field(name, raw, source, _at(where, name))
    return Shaping(**parsed, cleared=frozenset(cleared))


def _parse_field(name: str, raw: Any, source: str, where: str) -> Any:
    try:
        if name in ("delay", "jitter"):
            return units.parse_duration(raw)
        if name == "rate":
            return units.parse_rate(raw)
        if name in ("loss", "corrupt", "duplicate", "reorder"):
            return units.parse_percent(raw)
    except units.UnitError as exc:
        raise ContractError(f"{source}: {where}: {exc}") from None
    if name == "distribution":
        if raw not in DISTRIBUTIONS:
            raise ContractError(
                f"{source}: {where}: {raw!r} is not a distribution "
                f"(one of: {', '.join(DISTRIBUTIONS)})"
            )
        return raw
    if name == "side":
        if raw not in SIDES:
            raise ContractError(f"{source}: {where}: {raw!r} is not 'source' or 'destination'")
        return raw
    if name == "limit":
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise ContractError(f"{source}: {where}: {raw!r} is not a packet count (e.g. 10000)")
        return raw
    raise AssertionError(name)  # pragma: no cover


def _parse_endpoints(
    entry: Mapping[str, Any], source: str, where: str
) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """The ``from``/``to`` names and ``symmetric`` flag shared by constraints and partitions."""
    for key in ("from", "to"):
        if key not in entry:
            raise ContractError(f"{source}: {where}: '{key}' is missing")
    symmetric = entry.get("symmetric", True)
    if not isinstance(symmetric, bool):
        raise ContractError(f"{source}: {where}.symmetric: must be true or false")
    return (
        _parse_names(entry["from"], source, f"{where}.from"),
        _parse_names(entry["to"], source, f"{where}.to"),
        symmetric,
    )


def _parse_constraint(entry: Any, source: str, where: str) -> Constraint:
    if not isinstance(entry, Mapping):
        raise ContractError(
            f"{source}: {where}: must be a mapping with from, to and shaping fields"
        )
    _check_keys(entry, _CONSTRAINT_KEYS, source, where)
    src, dst, symmetric = _parse_endpoints(entry, source, where)
    description = entry.get("description")
    if description is not None and not isinstance(description, str):
        raise ContractError(f"{source}: {where}.description: must be a string")
    shaping_values = {k: v for k, v in entry.items() if k in SHAPING_FIELDS}
    shaping = _parse_shaping(shaping_values, source, where, allow=SHAPING_FIELDS)
    if shaping.is_empty():
        raise ContractError(
            f"{source}: {where}: sets nothing (give at least one of: {', '.join(SHAPING_FIELDS)})"
        )
    return Constraint(
        src=src,
        dst=dst,
        shaping=shaping,
        symmetric=symmetric,
        description=description,
        where=where,
    )


def _parse_partition(entry: Any, source: str, where: str) -> Partition:
    if not isinstance(entry, Mapping):
        raise ContractError(f"{source}: {where}: must be a mapping with from and to")
    _check_keys(entry, _PARTITION_KEYS, source, where)
    src, dst, symmetric = _parse_endpoints(entry, source, where)
    return Partition(
        src=src,
        dst=dst,
        symmetric=symmetric,
        where=where,
    )
