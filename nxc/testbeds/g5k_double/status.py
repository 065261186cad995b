"""``GET /sites/{site}/status``: what each node and VLAN is doing right now."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nxc.testbeds.g5k_double.inventory import Node, Site
from nxc.testbeds.g5k_double.jobs import Job


def _reservation(job: Job) -> dict[str, Any]:
    return {
        "uid": job.uid,
        "user": job.user,
        "queue": job.queue,
        "state": job.state,
        "walltime": job.walltime,
        "types": list(job.types),
        "started_at": int(job.started_at),
    }


def status_document(
    site: Site,
    holders: Mapping[str, Job],
    busy_vlans: set[str],
    alive: Callable[[Node], bool],
    now: float,
) -> dict[str, Any]:
    nodes = {}
    for node in site.nodes():
        job = holders.get(node.fqdn)
        nodes[node.fqdn] = {
            "hard": "alive" if alive(node) else "dead",
            "soft": "busy" if job else "free",
            "free_slots": 0 if job else node.cores,
            "busy_slots": node.cores if job else 0,
            "freeable_slots": 0,
            "comment": "",
            "reservations": [] if job is None else [_reservation(job)],
        }
    vlans = {
        v.uid: {"type": v.type, "hard": "alive", "soft": "busy" if v.uid in busy_vlans else "free"}
        for v in site.vlans
    }
    return {"uid": int(now), "nodes": nodes, "vlans": vlans, "disks": {}}
