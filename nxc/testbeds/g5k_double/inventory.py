"""What the double's Grid'5000 is made of: sites, clusters, nodes, VLANs, subnets, images.

The default inventory is small on purpose (two sites, three clusters, 20 nodes); a
YAML or JSON file replaces it (``--inventory``), in this shape::

    sites:
      rennes:
        clusters:
          paravance: {nodes: 8, cores: 16, memory_gib: 128}
          parasilo: {nodes: 4, properties: {disktype: SAS}}
        vlans: {"1": kavlan-local, "4": kavlan, "16": kavlan-global}
        subnets: 10.156.0.0/20        # cut into /22 blocks
        environments: [debian12-min, debian12-nfs]
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nxc.errors import NxcError

DOMAIN = "grid5000.fr"
VLAN_TYPES = ("kavlan-local", "kavlan", "kavlan-global")


class InventoryError(NxcError):
    """The double's inventory file is malformed."""


@dataclass(frozen=True)
class Node:
    uid: str  # paravance-3
    cluster: str
    site: str
    index: int  # 3
    cores: int
    threads: int
    procs: int
    memory_bytes: int
    ip: str
    deploy: bool
    properties: Mapping[str, str] = field(compare=False)  # extra OAR properties

    @property
    def fqdn(self) -> str:
        return f"{self.uid}.{self.site}.{DOMAIN}"


@dataclass(frozen=True)
class Cluster:
    uid: str
    site: str
    model: str
    queues: tuple[str, ...]
    exotic: bool
    kavlan: bool
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class Vlan:
    uid: str
    type: str


@dataclass(frozen=True)
class Environment:
    """A registered Kadeploy environment; ``description`` is its kaenv document."""

    name: str
    version: int
    description: Mapping[str, Any] = field(compare=False)


@dataclass(frozen=True)
class Site:
    uid: str
    clusters: tuple[Cluster, ...]
    vlans: tuple[Vlan, ...]
    subnets: tuple[str, ...]  # /22 blocks
    environments: tuple[Environment, ...]

    def nodes(self) -> tuple[Node, ...]:
        return tuple(node for cluster in self.clusters for node in cluster.nodes)

    def cluster(self, uid: str) -> Cluster | None:
        return next((c for c in self.clusters if c.uid == uid), None)

    def environment(self, name: str) -> Environment | None:
        return next((e for e in self.environments if e.name == name), None)


@dataclass(frozen=True)
class Inventory:
    sites: tuple[Site, ...]
    _by_fqdn: dict[str, Node] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for site in self.sites:
            for node in site.nodes():
                self._by_fqdn[node.fqdn] = node

    def site(self, uid: str) -> Site | None:
        return next((s for s in self.sites if s.uid == uid), None)

    def node(self, fqdn: str) -> Node | None:
        return self._by_fqdn.get(fqdn)

    def all_nodes(self) -> tuple[Node, ...]:
        return tuple(self._by_fqdn.values())


def registered_environment(name: str, version: int = 2024071518) -> Environment:
    """A plausible kaenv description of a Grid'5000 reference image."""
    variant = name.rsplit("-", 1)[-1]
    return Environment(
        name=name,
        version=version,
        description={
            "name": name,
            "version": version,
            "arch": "x86_64",
            "alias": name,
            "description": f"debian 12 (bookworm) {variant} for x64",
            "author": "support-staff@lists.grid5000.fr",
            "visibility": "public",
            "destructive": False,
            "os": "linux",
            "image": {
                "file": f"server:///grid5000/images/{name}-{version}.tar.zst",
                "kind": "tar",
                "compression": "zstd",
            },
            "boot": {"kernel": "/vmlinuz", "initrd": "/initrd.img", "kernel_params": ""},
            "filesystem": "ext4",
            "partition_type": 131,
            "multipart": False,
        },
    )


_DEFAULT: dict[str, Any] = {
    "sites": {
        "rennes": {
            "clusters": {
                "paravance": {"nodes": 8, "cores": 16, "memory_gib": 128},
                "parasilo": {"nodes": 4, "cores": 16, "memory_gib": 128},
            },
            "vlans": {"1": "kavlan-local", "2": "kavlan-local", "3": "kavlan-local",
                      "4": "kavlan", "5": "kavlan", "6": "kavlan", "16": "kavlan-global"},
            "subnets": "10.156.0.0/20",
        },
        "nancy": {
            "clusters": {"grisou": {"nodes": 8, "cores": 16, "memory_gib": 128}},
            "vlans": {"1": "kavlan-local", "2": "kavlan-local", "3": "kavlan-local",
                      "4": "kavlan", "5": "kavlan", "6": "kavlan", "15": "kavlan-global"},
            "subnets": "10.144.0.0/20",
        },
    }
}  # fmt: skip

DEFAULT_ENVIRONMENTS = ("debian12-min", "debian12-nfs")


def default_inventory() -> Inventory:
    return build_inventory(_DEFAULT, "default inventory")


def load_inventory(path: Path) -> Inventory:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read the inventory ({exc.strerror})") from None
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        problem = str(exc).splitlines()[0]
        raise InventoryError(f"{path}: not valid YAML/JSON ({problem})") from None
    return build_inventory(document, str(path))


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InventoryError(f"{where}: expected a mapping")
    return value


def _int(value: Any, where: str, maximum: int = 4096) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        raise InventoryError(f"{where}: expected an integer from 1 to {maximum}, got {value!r}")
    return value


def build_inventory(document: Any, origin: str) -> Inventory:
    sites_doc = _mapping(_mapping(document, origin).get("sites"), f"{origin}: sites")
    if not sites_doc:
        raise InventoryError(f"{origin}: sites: at least one site is needed")
    sites = []
    for site_index, (site_uid, site_doc) in enumerate(sites_doc.items()):
        sites.append(
            _build_site(str(site_uid), site_doc, site_index, f"{origin}: sites.{site_uid}")
        )
    return Inventory(tuple(sites))


def _build_site(uid: str, doc: Any, site_index: int, where: str) -> Site:
    doc = _mapping(doc, where)
    clusters_doc = _mapping(doc.get("clusters"), f"{where}.clusters")
    if not clusters_doc:
        raise InventoryError(f"{where}.clusters: at least one cluster is needed")
    clusters = tuple(
        _build_cluster(
            str(c_uid), uid, c_doc, site_index * 16 + c_index, f"{where}.clusters.{c_uid}"
        )
        for c_index, (c_uid, c_doc) in enumerate(clusters_doc.items())
    )
    vlans = []
    for vlan_id, vlan_type in _mapping(doc.get("vlans", {}), f"{where}.vlans").items():
        if vlan_type not in VLAN_TYPES:
            raise InventoryError(f"{where}.vlans.{vlan_id}: type must be one of {VLAN_TYPES}")
        vlans.append(Vlan(str(vlan_id), str(vlan_type)))
    subnets: tuple[str, ...] = ()
    if "subnets" in doc:
        try:
            block = ipaddress.ip_network(str(doc["subnets"]))
            subnets = tuple(str(net) for net in block.subnets(new_prefix=22))
        except ValueError as exc:
            raise InventoryError(f"{where}.subnets: {exc}") from None
    env_names = doc.get("environments", list(DEFAULT_ENVIRONMENTS))
    if not isinstance(env_names, list) or not all(isinstance(n, str) for n in env_names):
        raise InventoryError(f"{where}.environments: expected a list of names")
    environments = tuple(registered_environment(name) for name in env_names)
    return Site(uid, clusters, tuple(vlans), subnets, environments)


def _build_cluster(uid: str, site: str, doc: Any, ip_block: int, where: str) -> Cluster:
    doc = _mapping(doc, where)
    count = _int(doc.get("nodes"), f"{where}.nodes", maximum=250)
    cores = _int(doc.get("cores", 16), f"{where}.cores")
    memory_gib = _int(doc.get("memory_gib", 128), f"{where}.memory_gib")
    queues = doc.get("queues", ["admin", "default"])
    if not isinstance(queues, list) or not all(isinstance(q, str) for q in queues):
        raise InventoryError(f"{where}.queues: expected a list of queue names")
    properties = {str(k): str(v) for k, v in _mapping(doc.get("properties", {}), where).items()}
    deploy = bool(doc.get("deploy", True))
    nodes = tuple(
        Node(
            uid=f"{uid}-{i}",
            cluster=uid,
            site=site,
            index=i,
            cores=cores,
            threads=cores * 2,
            procs=2,
            memory_bytes=memory_gib * 1024**3,
            ip=f"172.16.{(96 + ip_block) % 256}.{i}",
            deploy=deploy,
            properties=properties,
        )
        for i in range(1, count + 1)
    )
    return Cluster(
        uid=uid,
        site=site,
        model=str(doc.get("model", "Dell PowerEdge C6220")),
        queues=tuple(queues),
        exotic=bool(doc.get("exotic", False)),
        kavlan=bool(doc.get("kavlan", True)),
        nodes=nodes,
    )
