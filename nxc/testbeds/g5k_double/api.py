"""The public API: routes from (method, path) to what the real API answers.

Paths here are already normalised and stripped of their ``/stable`` or ``/3.0``
prefix; handlers run under the backend's lock after ``tick()``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nxc.testbeds.g5k_double import reference as ref
from nxc.testbeds.g5k_double.backend import Backend
from nxc.testbeds.g5k_double.errors import ApiError, forbidden, not_found
from nxc.testbeds.g5k_double.inventory import Site
from nxc.testbeds.g5k_double.jobs import Job

JSON_TYPE = "application/json; charset=utf-8"
LIMIT, LIMIT_MAX = 50, 500


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # normalised, without prefix: "/sites/rennes/jobs"
    prefix: str  # "/stable" or "/3.0"
    query: dict[str, str]
    body: Any
    user: str | None  # None: anonymous
    origin: str  # "http://127.0.0.1:18085"


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, document: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(document, indent=2).encode() + b"\n"
    return Response(status, body, JSON_TYPE, headers or {})


Handler = Callable[[Backend, Request, float, tuple[str, ...]], Response]


class Router:
    """(method, path pattern) -> handler; ``{}`` in a pattern is one path segment."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        regex = re.compile("^" + pattern.replace("{}", "([^/]+)") + "$")

        def register(handler: Handler) -> Handler:
            self.routes.append((method, regex, handler))
            return handler

        return register

    def dispatch(self, backend: Backend, request: Request, now: float) -> Response:
        allowed = False
        for method, regex, handler in self.routes:
            match = regex.match(request.path)
            if match is None:
                continue
            allowed = True
            if method == request.method:
                return handler(backend, request, now, match.groups())
        if allowed:
            raise ApiError(405, "Method Not Allowed")
        raise not_found(f"Cannot find resource {request.path}")


API = Router()
route = API.route


def _site(backend: Backend, request: Request, uid: str) -> Site:
    site = backend.inventory.site(uid)
    if site is None:
        raise not_found(f"Cannot find resource /sites/{uid}")
    return site


def _versioned(backend: Backend, document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "version": ref.version(backend.inventory)}


# -- reference API ------------------------------------------------------------------


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
    site = _site(backend, req, args[0])
    return json_response(200, _versioned(backend, ref.site_doc(site, req.prefix)))


@route("GET", "/sites/{}/clusters")
def list_clusters(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = _site(backend, req, args[0])
    items = [ref.cluster_doc(c, req.prefix) for c in site.clusters]
    base = f"{req.prefix}/sites/{site.uid}"
    return json_response(200, _versioned(backend, ref.collection(items, f"{base}/clusters", base)))


def _cluster(backend: Backend, req: Request, site_uid: str, uid: str) -> Any:
    cluster = _site(backend, req, site_uid).cluster(uid)
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
    site = _site(backend, req, args[0])
    doc = backend.jobs.site_status(site, now)
    doc["links"] = ref.item_links(
        f"{req.prefix}/sites/{site.uid}/status", f"{req.prefix}/sites/{site.uid}"
    )
    return json_response(200, doc)


@route("GET", "/sites/{}/clusters/{}/status")
def cluster_status(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    cluster = _cluster(backend, req, *args)
    doc = backend.jobs.site_status(_site(backend, req, args[0]), now)
    members = {n.fqdn for n in cluster.nodes}
    doc["nodes"] = {k: v for k, v in doc["nodes"].items() if k in members}
    doc.pop("vlans")
    return json_response(200, doc)


@route("GET", "/sites/{}/environments")
def list_environments(
    backend: Backend, req: Request, now: float, args: tuple[str, ...]
) -> Response:
    site = _site(backend, req, args[0])
    items = [ref.environment_doc(e, site.uid, req.prefix) for e in site.environments]
    base = f"{req.prefix}/sites/{site.uid}"
    return json_response(200, ref.collection(items, f"{base}/environments", base))


@route("GET", "/sites/{}/environments/{}")
def get_environment(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = _site(backend, req, args[0])
    for env in site.environments:
        doc = ref.environment_doc(env, site.uid, req.prefix)
        if args[1] in (doc["uid"], env.name):
            return json_response(200, doc)
    raise not_found(f"Cannot find resource {req.path}")


@route("GET", "/sites/{}/vlans")
def list_vlans(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = _site(backend, req, args[0])
    items = [ref.vlan_doc(v, site.uid, req.prefix) for v in site.vlans]
    base = f"{req.prefix}/sites/{site.uid}"
    return json_response(200, ref.collection(items, f"{base}/vlans", base))


@route("GET", "/sites/{}/vlans/{}")
def get_vlan(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = _site(backend, req, args[0])
    vlan = next((v for v in site.vlans if v.uid == args[1]), None)
    if vlan is None:
        raise not_found(f"Cannot find resource {req.path}")
    return json_response(200, ref.vlan_doc(vlan, site.uid, req.prefix))


# -- OAR jobs -----------------------------------------------------------------------


def job_document(
    backend: Backend, req: Request, job: Job, now: float, full: bool
) -> dict[str, Any]:
    doc = job.to_json(backend.jobs.scheduled_at(job, now), backend.jobs.shown_allocation(job), full)
    doc["links"] = ref.item_links(
        f"{req.prefix}/sites/{job.site}/jobs/{job.uid}", f"{req.prefix}/sites/{job.site}"
    )
    return doc


def _paging(req: Request) -> tuple[int, int]:
    try:
        offset = max(int(req.query.get("offset", 0)), 0)
        limit = min(int(req.query.get("limit", LIMIT)), LIMIT_MAX)
    except ValueError:
        raise ApiError(400, "offset and limit must be integers") from None
    return offset, max(limit, 0)


@route("GET", "/sites/{}/jobs")
def list_jobs(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = _site(backend, req, args[0])
    offset, limit = _paging(req)
    jobs = backend.jobs.select(site.uid, req.query)
    full = req.query.get("resources") == "yes"
    items = [job_document(backend, req, j, now, full) for j in jobs[offset : offset + limit]]
    base = f"{req.prefix}/sites/{site.uid}"
    return json_response(
        200, ref.collection(items, f"{base}/jobs", base, offset=offset, total=len(jobs))
    )


def _writer(req: Request) -> str:
    if req.user is None:
        raise forbidden()
    return req.user


def _json_body(req: Request) -> dict[str, Any]:
    if not isinstance(req.body, dict):
        raise ApiError(400, "The request body must be a JSON object")
    return req.body


@route("POST", "/sites/{}/jobs")
def submit_job(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = _site(backend, req, args[0])
    user = _writer(req)
    job = backend.jobs.submit(site, user, _json_body(req), now)
    location = f"{req.origin}{req.prefix}/sites/{site.uid}/jobs/{job.uid}"
    return json_response(201, job_document(backend, req, job, now, True), {"Location": location})


@route("GET", "/sites/{}/jobs/{}")
def get_job(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = _site(backend, req, args[0])
    return json_response(
        200, job_document(backend, req, backend.jobs.get(site.uid, args[1]), now, True)
    )


@route("DELETE", "/sites/{}/jobs/{}")
def delete_job(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = _site(backend, req, args[0])
    backend.jobs.delete(site.uid, args[1], req.user, now)
    location = f"{req.origin}{req.prefix}/sites/{site.uid}/jobs/{args[1]}"
    return Response(202, headers={"Location": location})


@route("GET", "/sites/{}/jobs/{}/walltime")
def get_walltime(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = _site(backend, req, args[0])
    _writer(req)
    doc = backend.jobs.walltime_status(site.uid, args[1])
    base = f"{req.prefix}/sites/{site.uid}/jobs/{args[1]}"
    doc["links"] = ref.item_links(f"{base}/walltime", base)
    return json_response(200, doc)


@route("POST", "/sites/{}/jobs/{}/walltime")
def post_walltime(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = _site(backend, req, args[0])
    output = backend.jobs.change_walltime(site.uid, args[1], req.user, _json_body(req), now)
    location = f"{req.origin}{req.prefix}/sites/{site.uid}/jobs/{args[1]}/walltime"
    return json_response(202, output, {"Location": location})


# -- deployments --------------------------------------------------------------------


def _deployment_doc(req: Request, doc: dict[str, Any], site: str) -> dict[str, Any]:
    base = f"{req.prefix}/sites/{site}"
    doc["links"] = ref.item_links(f"{base}/deployments/{doc['uid']}", base)
    return doc


@route("GET", "/sites/{}/deployments")
def list_deployments(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = _site(backend, req, args[0])
    offset, limit = _paging(req)
    found = backend.deployments.select(site.uid, req.query)
    items = [_deployment_doc(req, d.to_json(), site.uid) for d in found[offset : offset + limit]]
    base = f"{req.prefix}/sites/{site.uid}"
    return json_response(
        200, ref.collection(items, f"{base}/deployments", base, offset=offset, total=len(found))
    )


@route("POST", "/sites/{}/deployments")
def create_deployment(
    backend: Backend, req: Request, now: float, args: tuple[str, ...]
) -> Response:
    site = _site(backend, req, args[0])
    user = _writer(req)
    deployment = backend.deployments.create(
        site,
        user,
        _json_body(req),
        now,
        deployable=backend.jobs.deployable_nodes(site.uid, user),
        bindings=backend.bindings,
        files_url=f"{req.origin}{req.prefix}/sites/{site.uid}/files",
    )
    location = f"{req.origin}{req.prefix}/sites/{site.uid}/deployments/{deployment.uid}"
    doc = _deployment_doc(req, deployment.to_json(), site.uid)
    return json_response(201, doc, {"Location": location})


@route("GET", "/sites/{}/deployments/{}")
def get_deployment(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = _site(backend, req, args[0])
    deployment = backend.deployments.get(site.uid, args[1])
    return json_response(200, _deployment_doc(req, deployment.to_json(), site.uid))


@route("DELETE", "/sites/{}/deployments/{}")
def cancel_deployment(
    backend: Backend, req: Request, now: float, args: tuple[str, ...]
) -> Response:
    site = _site(backend, req, args[0])
    backend.deployments.cancel(site.uid, args[1], req.user, now)
    location = f"{req.origin}{req.prefix}/sites/{site.uid}/deployments/{args[1]}"
    return Response(202, headers={"Location": location})
