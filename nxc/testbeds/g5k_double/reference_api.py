"""The reference API: root, sites, clusters, nodes, status, environments, VLANs."""

from __future__ import annotations

from typing import Any

from nxc.testbeds.g5k_double import reference as ref
from nxc.testbeds.g5k_double.backend import Backend
from nxc.testbeds.g5k_double.errors import not_found
from nxc.testbeds.g5k_double.inventory import Site
from nxc.testbeds.g5k_double.routing import Request, Response, Router, json_response

REFERENCE = Router()
route = REFERENCE.route


def find_site(backend: Backend, request: Request, uid: str) -> Site:
    site = backend.inventory.site(uid)
    if site is None:
        raise not_found(f"Cannot find resource /sites/{uid}")
    return site


def _versioned(backend: Backend, document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "version": ref.version(backend.inventory)}


@route("GET", "/")
def get_root(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    return json_response(200, ref.root(backend.inventory, req.prefix))


@route("GET", "/sites")
def list_sites(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    items = [ref.site_doc(s, req.prefix) for s in backend.inventory.sites]
    doc = ref.collection(items, f"{req.prefix}/sites", f"{req.prefix}/")
    return json_response(200, _versioned(backend, doc))


@route("GET", "/sites/{}")
def get_site(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = find_site(backend, req, args[0])
    return json_response(200, _versioned(backend, ref.site_doc(site, req.prefix)))


@route("GET", "/sites/{}/clusters")
def list_clusters(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = find_site(backend, req, args[0])
    items = [ref.cluster_doc(c, req.prefix) for c in site.clusters]
    base = f"{req.prefix}/sites/{site.uid}"
    return json_response(200, _versioned(backend, ref.collection(items, f"{base}/clusters", base)))


def _cluster(backend: Backend, req: Request, site_uid: str, uid: str) -> Any:
    cluster = find_site(backend, req, site_uid).cluster(uid)
    if cluster is None:
        raise not_found(f"Cannot find resource /sites/{site_uid}/clusters/{uid}")
    return cluster


@route("GET", "/sites/{}/clusters/{}")
def get_cluster(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    cluster = _cluster(backend, req, *args)
    return json_response(200, _versioned(backend, ref.cluster_doc(cluster, req.prefix)))


@route("GET", "/sites/{}/clusters/{}/nodes")
def list_nodes(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    cluster = _cluster(backend, req, *args)
    items = [ref.node_doc(n, req.prefix) for n in cluster.nodes]
    base = f"{req.prefix}/sites/{args[0]}/clusters/{args[1]}"
    return json_response(200, _versioned(backend, ref.collection(items, f"{base}/nodes", base)))


@route("GET", "/sites/{}/clusters/{}/nodes/{}")
def get_node(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    cluster = _cluster(backend, req, args[0], args[1])
    node = next((n for n in cluster.nodes if n.uid == args[2]), None)
    if node is None:
        raise not_found(f"Cannot find resource {req.path}")
    return json_response(200, _versioned(backend, ref.node_doc(node, req.prefix)))


@route("GET", "/sites/{}/status")
def site_status(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = find_site(backend, req, args[0])
    doc = backend.jobs.site_status(site, now)
    doc["links"] = ref.item_links(
        f"{req.prefix}/sites/{site.uid}/status", f"{req.prefix}/sites/{site.uid}"
    )
    return json_response(200, doc)


@route("GET", "/sites/{}/clusters/{}/status")
def cluster_status(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    cluster = _cluster(backend, req, *args)
    doc = backend.jobs.site_status(find_site(backend, req, args[0]), now)
    members = {n.fqdn for n in cluster.nodes}
    doc["nodes"] = {k: v for k, v in doc["nodes"].items() if k in members}
    doc.pop("vlans")
    return json_response(200, doc)


@route("GET", "/sites/{}/environments")
def list_environments(
    backend: Backend, req: Request, now: float, args: tuple[str, ...]
) -> Response:
    site = find_site(backend, req, args[0])
    items = [ref.environment_doc(e, site.uid, req.prefix) for e in site.environments]
    base = f"{req.prefix}/sites/{site.uid}"
    return json_response(200, ref.collection(items, f"{base}/environments", base))


@route("GET", "/sites/{}/environments/{}")
def get_environment(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = find_site(backend, req, args[0])
    for env in site.environments:
        doc = ref.environment_doc(env, site.uid, req.prefix)
        if args[1] in (doc["uid"], env.name):
            return json_response(200, doc)
    raise not_found(f"Cannot find resource {req.path}")


@route("GET", "/sites/{}/vlans")
def list_vlans(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = find_site(backend, req, args[0])
    items = [ref.vlan_doc(v, site.uid, req.prefix) for v in site.vlans]
    base = f"{req.prefix}/sites/{site.uid}"
    return json_response(200, ref.collection(items, f"{base}/vlans", base))


@route("GET", "/sites/{}/vlans/{}")
def get_vlan(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = find_site(backend, req, args[0])
    vlan = next((v for v in site.vlans if v.uid == args[1]), None)
    if vlan is None:
        raise not_found(f"Cannot find resource {req.path}")
    return json_response(200, ref.vlan_doc(vlan, site.uid, req.prefix))
