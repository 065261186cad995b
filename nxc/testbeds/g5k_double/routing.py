"""Requests, responses and a small router shared by the API and the control path.

Paths here are already normalised and stripped of their ``/stable`` or ``/3.0``
prefix; handlers run under the backend's lock after ``tick()``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nxc.testbeds.g5k_double.backend import Backend
from nxc.testbeds.g5k_double.errors import ApiError, not_found

JSON_TYPE = "application/json; charset=utf-8"


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

    def __init__(self, *parts: Router) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        for part in parts:
            self.routes.extend(part.routes)

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
