"""The reference API's documents (root, sites, clusters, nodes, environments, VLANs).

Links carry the prefix the client used (``/stable`` or ``/3.0``) so a client that
follows them stays on the same API version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from nxc.testbeds.g5k_double.inventory import Cluster, Environment, Inventory, Node, Site, Vlan

ITEM = "application/vnd.grid5000.item+json"
COLLECTION = "application/vnd.grid5000.collection+json"


def link(rel: str, href: str, kind: str = ITEM) -> dict[str, str]:
    return {"rel": rel, "href": href, "type": kind}


def item_links(href: str, parent: str, subresources: Sequence[str] = ()) -> list[dict[str, str]]:
    links = [link(name, f"{href}/{name}", COLLECTION) for name in subresources]
    return [*links, link("self", href), link("parent", parent)]


def collection(
    items: list[dict[str, Any]],
    href: str,
    parent: str,
    *,
    offset: int = 0,
    total: int | None = None,
) -> dict[str, Any]:
    return {
        "total": len(items) if total is None else total,
        "offset": offset,
        "items": items,
        "links": [link("self", href, COLLECTION), link("parent", parent)],
    }


def version(inventory: Inventory) -> str:
    """A stable stand-in for the reference repository's commit id."""
    text = repr(sorted(node.fqdn for node in inventory.all_nodes()))
    return hashlib.sha1(text.encode()).hexdigest()


def root(inventory: Inventory, prefix: str) -> dict[str, Any]:
    return {
        "type": "grid",
        "uid": "grid5000",
        "version": version(inventory),
        "release": "3.11-double",
        "links": [
            link("sites", f"{prefix}/sites", COLLECTION),
            link("self", f"{prefix}/"),
        ],
    }


def site_doc(site: Site, prefix: str) -> dict[str, Any]:
    href = f"{prefix}/sites/{site.uid}"
    return {
        "uid": site.uid,
        "type": "site",
        "name": site.uid.capitalize(),
        "description": f"Grid'5000 {site.uid.capitalize()} site (test double)",
        "email_contact": f"{site.uid}-staff@lists.grid5000.fr",
        "frontend_ip": f"172.16.{site.clusters[0].nodes[0].ip.split('.')[2]}.254",
        "kavlan_ip_range": site.subnets[0] if site.subnets else None,
        "links": item_links(
            href,
            f"{prefix}/sites",
            ("clusters", "jobs", "deployments", "environments", "status", "vlans"),
        ),
    }


def cluster_doc(cluster: Cluster, prefix: str) -> dict[str, Any]:
    href = f"{prefix}/sites/{cluster.site}/clusters/{cluster.uid}"
    return {
        "uid": cluster.uid,
        "type": "cluster",
        "model": cluster.model,
        "queues": list(cluster.queues),
        "exotic": cluster.exotic,
        "kavlan": cluster.kavlan,
        "created_at": "Wed, 01 Jan 2014 00:00:00 GMT",
        "links": item_links(href, f"{prefix}/sites/{cluster.site}/clusters", ("nodes", "status")),
    }


def main_mac(node: Node) -> str:
    """The MAC of the node's main (mounted) NIC, as the reference API lists it; the
    rehearsal testbed gives its VMs these MACs."""
    return f"00:1e:67:{node.index >> 8 & 0xFF:02x}:{node.index & 0xFF:02x}:{len(node.cluster):02x}"


def node_doc(node: Node, prefix: str) -> dict[str, Any]:
    href = f"{prefix}/sites/{node.site}/clusters/{node.cluster}/nodes/{node.uid}"
    mac = main_mac(node)
    return {
        "uid": node.uid,
        "type": "node",
        "architecture": {
            "nb_cores": node.cores,
            "nb_threads": node.threads,
            "nb_procs": node.procs,
            "platform_type": "x86_64",
        },
        "main_memory": {"ram_size": node.memory_bytes},
        "network_adapters": [
            {
                "device": "eth0",
                "interface": "Ethernet",
                "mountable": True,
                "mounted": True,
                "management": False,
                "enabled": True,
                "kavlan": True,
                "network_address": node.fqdn,
                "ip": node.ip,
                "mac": mac,
                "rate": 10_000_000_000,
            },
            {
                "device": "eth1",
                "interface": "Ethernet",
                "mountable": False,
                "mounted": False,
                "management": False,
                "enabled": False,
                "kavlan": True,
            },
        ],
        "supported_job_types": {
            "deploy": node.deploy,
            "besteffort": True,
            "virtual": "ivt",
            "queues": ["admin", "default"],
        },
        "processor": {"model": "Intel Xeon", "clock_speed": 2_400_000_000},
        "storage_devices": [{"device": "sda", "interface": "SATA", "size": 598_000_000_000}],
        "links": item_links(href, f"{prefix}/sites/{node.site}/clusters/{node.cluster}/nodes"),
    }


def environment_doc(env: Environment, site: str, prefix: str) -> dict[str, Any]:
    uid = f"{env.name}_{env.version}"
    href = f"{prefix}/sites/{site}/environments/{uid}"
    return {
        "uid": uid,
        "type": "environment",
        **env.description,
        "links": item_links(href, f"{prefix}/sites/{site}/environments"),
    }


def vlan_doc(vlan: Vlan, site: str, prefix: str) -> dict[str, Any]:
    href = f"{prefix}/sites/{site}/vlans/{vlan.uid}"
    return {
        "uid": vlan.uid,
        "type": vlan.type,
        "links": item_links(href, f"{prefix}/sites/{site}/vlans"),
    }
