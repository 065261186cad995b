"""The OAR and Kadeploy parts of the API: jobs, walltime changes, deployments."""

from __future__ import annotations

from typing import Any

from nxc.testbeds.g5k_double import reference as ref
from nxc.testbeds.g5k_double.backend import Backend
from nxc.testbeds.g5k_double.errors import ApiError, forbidden
from nxc.testbeds.g5k_double.jobs import Job
from nxc.testbeds.g5k_double.reference_api import find_site
from nxc.testbeds.g5k_double.routing import Request, Response, Router, json_response

OAR = Router()
route = OAR.route
LIMIT, LIMIT_MAX = 50, 500


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
    site = find_site(backend, req, args[0])
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
    site = find_site(backend, req, args[0])
    user = _writer(req)
    job = backend.jobs.submit(site, user, _json_body(req), now)
    location = f"{req.origin}{req.prefix}/sites/{site.uid}/jobs/{job.uid}"
    return json_response(201, job_document(backend, req, job, now, True), {"Location": location})


@route("GET", "/sites/{}/jobs/{}")
def get_job(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = find_site(backend, req, args[0])
    return json_response(
        200, job_document(backend, req, backend.jobs.get(site.uid, args[1]), now, True)
    )


@route("DELETE", "/sites/{}/jobs/{}")
def delete_job(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = find_site(backend, req, args[0])
    backend.jobs.delete(site.uid, args[1], req.user, now)
    location = f"{req.origin}{req.prefix}/sites/{site.uid}/jobs/{args[1]}"
    return Response(202, headers={"Location": location})


@route("GET", "/sites/{}/jobs/{}/walltime")
def get_walltime(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = find_site(backend, req, args[0])
    _writer(req)
    doc = backend.jobs.walltime_status(site.uid, args[1])
    base = f"{req.prefix}/sites/{site.uid}/jobs/{args[1]}"
    doc["links"] = ref.item_links(f"{base}/walltime", base)
    return json_response(200, doc)


@route("POST", "/sites/{}/jobs/{}/walltime")
def post_walltime(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    site = find_site(backend, req, args[0])
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
    site = find_site(backend, req, args[0])
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
    site = find_site(backend, req, args[0])
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
    site = find_site(backend, req, args[0])
    deployment = backend.deployments.get(site.uid, args[1])
    return json_response(200, _deployment_doc(req, deployment.to_json(), site.uid))


@route("DELETE", "/sites/{}/deployments/{}")
def cancel_deployment(
    backend: Backend, req: Request, now: float, args: tuple[str, ...]
) -> Response:
    site = find_site(backend, req, args[0])
    backend.deployments.cancel(site.uid, args[1], req.user, now)
    location = f"{req.origin}{req.prefix}/sites/{site.uid}/deployments/{args[1]}"
    return Response(202, headers={"Location": location})
