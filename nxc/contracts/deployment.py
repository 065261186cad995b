"""The deployment (``nxc_deployment: 1``): every node of one run, as the agents see it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nxc.contracts.validate import load_document, validate_document


@dataclass(frozen=True)
class Node:
    name: str
    role: str
    index: int
    ipv4: str
    ipv6: str
    mac: str
    host_key: str | None = None
    ssh_host: str | None = None
    ssh_port: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Deployment:
    id: str
    composition: str
    flavour: str
    ipv4_prefix: str
    ipv6_prefix: str
    interface: str
    authorized_keys: list[str]
    roles: dict[str, int]
    nodes: list[Node]
    created_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes) or "none"
        raise KeyError(f"no node named '{name}' in deployment {self.id} (nodes: {known})")

    def nodes_of(self, role: str) -> list[Node]:
        return [n for n in self.nodes if n.role == role]

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "nxc_deployment": 1,
            "id": self.id,
            "composition": self.composition,
            "flavour": self.flavour,
            "network": {
                "ipv4_prefix": self.ipv4_prefix,
                "ipv6_prefix": self.ipv6_prefix,
                "interface": self.interface,
            },
            "ssh": {"authorized_keys": list(self.authorized_keys)},
            "roles": dict(self.roles),
            "nodes": [n.to_dict() for n in self.nodes],
        }
        if self.created_at:
            document["created_at"] = self.created_at
        return document

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, document: dict[str, Any], source: str = "deployment") -> Deployment:
        validate_document(document, "deployment", source)
        network = document["network"]
        return cls(
            id=document["id"],
            composition=document["composition"],
            flavour=document["flavour"],
            ipv4_prefix=network["ipv4_prefix"],
            ipv6_prefix=network["ipv6_prefix"],
            interface=network["interface"],
            authorized_keys=list(document["ssh"]["authorized_keys"]),
            roles=dict(document["roles"]),
            nodes=[Node(**n) for n in document["nodes"]],
            created_at=document.get("created_at"),
        )

    @classmethod
    def load(cls, path: Path) -> Deployment:
        return cls.from_dict(load_document(path, "deployment"), str(path))
