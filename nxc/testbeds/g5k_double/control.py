"""The test-only control path (``/_control/...``), guarded by a token header.

Lets a test or a rehearsal drive what the real platform decides on its own:
reset, timings, the clock, forced job/deployment states, injected 5xx answers and
nodes whose deployment fails. The real API has nothing under ``/_control``.
"""

from __future__ import annotations

from typing import Any

from nxc.testbeds.g5k_double.backend import FAULT_TEXTS, Backend, Fault
from nxc.testbeds.g5k_double.errors import ApiError, bad_request
from nxc.testbeds.g5k_double.routing import Request, Response, Router, json_response

TOKEN_HEADER = "X-G5k-Double-Token"
CONTROL = Router()


def _body(req: Request) -> dict[str, Any]:
    if req.body is None:
        return {}
    if not isinstance(req.body, dict):
        raise bad_request("control requests take a JSON object")
    return req.body


def _state(backend: Backend, now: float) -> dict[str, Any]:
    return {
        "now": now,
        "frozen": backend.clock.frozen,
        "timings": backend.timings.as_dict(),
        "jobs": [
            {
                "site": j.site,
                "uid": j.uid,
                "user": j.user,
                "name": j.name,
                "state": j.state,
                "types": list(j.types),
                "walltime": j.walltime,
                "nodes": [n.fqdn for n in j.allocation.nodes],
            }
            for j in backend.jobs.jobs.values()
        ],
        "deployments": [
            {
                "site": d.site,
                "uid": d.uid,
                "user": d.user,
                "status": d.status,
                "nodes": d.nodes,
                "environment": d.environment,
                "result": d.result,
            }
            for d in backend.deployments.items.values()
        ],
        "faults": [vars(f) for f in backend.faults],
        "ko_nodes": sorted(backend.deployments.ko_nodes),
        "bindings": {fqdn: e.to_json() for fqdn, e in backend.bindings.items()},
    }


@CONTROL.route("GET", "/state")
def get_state(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    return json_response(200, _state(backend, now))


@CONTROL.route("POST", "/reset")
def reset(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    backend.reset()
    return json_response(200, _state(backend, backend.clock.now()))


@CONTROL.route("GET", "/timings")
def get_timings(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    return json_response(200, backend.timings.as_dict())


@CONTROL.route("POST", "/timings")
def set_timings(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    try:
        backend.timings.update(_body(req))
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    return json_response(200, backend.timings.as_dict())


@CONTROL.route("GET", "/clock")
def get_clock(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    return json_response(200, {"now": now, "frozen": backend.clock.frozen})


@CONTROL.route("POST", "/clock")
def set_clock(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    body = _body(req)
    if "freeze" in body:
        backend.clock.freeze() if body["freeze"] else backend.clock.unfreeze()
    advance = body.get("advance", 0)
    if not isinstance(advance, int | float) or isinstance(advance, bool) or advance < 0:
        raise bad_request(f"advance must be a number of seconds >= 0, got {advance!r}")
    backend.clock.advance(float(advance))
    now = backend.tick()
    return json_response(200, {"now": now, "frozen": backend.clock.frozen})


@CONTROL.route("POST", "/jobs/{}/{}")
def force_job(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    state = _body(req).get("state")
    if not isinstance(state, str):
        raise bad_request('give the job\'s new state as {"state": ...}')
    job = backend.jobs.force(args[0], args[1], state, now)
    return json_response(200, {"site": job.site, "uid": job.uid, "state": job.state})


@CONTROL.route("POST", "/deployments/{}/{}")
def force_deployment(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    status = _body(req).get("status")
    if not isinstance(status, str):
        raise bad_request('give the deployment\'s new status as {"status": ...}')
    d = backend.deployments.force(args[0], args[1], status, now)
    return json_response(200, {"site": d.site, "uid": d.uid, "status": d.status})


def parse_fault(body: dict[str, Any]) -> Fault:
    status, count = body.get("status", 503), body.get("count", 1)
    retry_after = body.get("retry_after")
    if status not in FAULT_TEXTS:
        raise bad_request(f"status must be one of {sorted(FAULT_TEXTS)}, got {status!r}")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise bad_request(f"count must be an integer >= 1, got {count!r}")
    if retry_after is not None and (not isinstance(retry_after, int) or retry_after < 0):
        raise bad_request(f"retry_after must be an integer >= 0, got {retry_after!r}")
    return Fault(status, count, retry_after)


@CONTROL.route("POST", "/faults")
def add_fault(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    backend.faults.append(parse_fault(_body(req)))
    return json_response(200, [vars(f) for f in backend.faults])


@CONTROL.route("DELETE", "/faults")
def clear_faults(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    backend.faults.clear()
    return json_response(200, [])


@CONTROL.route("POST", "/ko")
def add_ko(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    nodes = _body(req).get("nodes")
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise bad_request('give the nodes as {"nodes": [fqdn, ...]}')
    unknown = [n for n in nodes if backend.inventory.node(n) is None]
    if unknown:
        raise bad_request(f"not nodes of the inventory: {', '.join(unknown)}")
    backend.deployments.ko_nodes.update(nodes)
    return json_response(200, sorted(backend.deployments.ko_nodes))


@CONTROL.route("DELETE", "/ko")
def clear_ko(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    backend.deployments.ko_nodes.clear()
    return json_response(200, [])


@CONTROL.route("GET", "/requests")
def served(backend: Backend, req: Request, now: float, args: tuple[str, ...]) -> Response:
    return json_response(200, [vars(s) for s in backend.served])


def join_deployers(backend: Backend, body: Any) -> Response:
    """Wait for running deployers; runs *outside* the lock (deployers may call the API)."""
    timeout = body.get("timeout", 30) if isinstance(body, dict) else 30
    if not isinstance(timeout, int | float) or timeout < 0:
        raise ApiError(400, f"timeout must be a number >= 0, got {timeout!r}")
    done = backend.deployments.join(float(timeout))
    return json_response(200 if done else 504, {"done": done})
