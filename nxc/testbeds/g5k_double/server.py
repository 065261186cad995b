"""HTTP on 127.0.0.1: normalises paths, authenticates, injects faults, dispatches.

python-grid5000 builds URLs as ``uri + "/sites/..."`` (so a ``uri`` ending in ``/``
gives ``//sites``), sends ``Accept: application/json`` and parses only bodies whose
Content-Type contains ``application/json``; errors are ``text/plain``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

from nxc.errors import NxcError
from nxc.testbeds.g5k_double.api import API
from nxc.testbeds.g5k_double.backend import FAULT_TEXTS, Backend, Served
from nxc.testbeds.g5k_double.control import CONTROL, TOKEN_HEADER, join_deployers
from nxc.testbeds.g5k_double.errors import ApiError
from nxc.testbeds.g5k_double.routing import Request, Response

log = logging.getLogger("nxc.g5k_double")
PREFIX = re.compile(r"^/(stable|3\.0)(/.*)?$")
CONTROL_PREFIX = "/_control"
MAX_BODY = 4 * 1024 * 1024


class BindError(NxcError):
    """The double was asked to listen somewhere else than the loopback interface."""


def loopback(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    try:
        if ipaddress.ip_address(host).is_loopback and ipaddress.ip_address(host).version == 4:
            return host
    except ValueError:
        pass
    raise BindError(f"the Grid'5000 double serves on 127.0.0.1 only (refusing to bind {host!r})")


def text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, (message + "\n").encode(), headers=headers or {})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not hold stop() up

    def __init__(self, address: tuple[str, int], backend: Backend, token: str) -> None:
        self.backend = backend
        self.token = token
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)

    def close_connections(self) -> None:
        """End keep-alive connections too: a stopped double answers nothing."""
        with self._open_lock:
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "g5k-double"
    timeout = 60  # idle keep-alive connections are closed after this
    disable_nagle_algorithm = True  # headers and body go out in two writes
    server: _Server

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ApiError(413, "Request Entity Too Large")
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self, method: str) -> None:
        try:
            raw = self._read_body()
            response = self._respond(method, raw)
        except ApiError as exc:
            response = text(exc.status, exc.text, exc.headers)
        except Exception:  # a bug of the double: answer 500 and say where
            log.error("g5k-double: internal error\n%s", traceback.format_exc())
            response = text(500, "Internal Server Error")
        self._send(response)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(response.body)

    def _user(self) -> str | None:
        header = self.headers.get("Authorization")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        try:
            user, _, password = (
                base64.b64decode(value.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            user, password = "", ""
        if scheme.lower() != "basic" or not self.server.backend.authenticate(user, password):
            raise ApiError(
                401, "Authorization Required", {"WWW-Authenticate": 'Basic realm="Grid5000 API"'}
            )
        return user

    @staticmethod
    def _body(raw: bytes) -> Any:
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"Bad Request: the body is not valid JSON ({exc})") from None

    def _respond(self, method: str, raw: bytes) -> Response:
        target, _, query_string = self.path.partition("?")
        path = unquote(re.sub(r"/{2,}", "/", target))
        query = {k: v[-1] for k, v in parse_qs(query_string, keep_blank_values=True).items()}
        host, port = self.server.server_address[:2]
        origin = f"http://{host!s}:{port}"
        if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            return self._control(method, path[len(CONTROL_PREFIX) :] or "/", query, raw, origin)
        match = PREFIX.match(path)
        if match is None:
            raise ApiError(404, f"Cannot find resource {path}")
        rest = (match.group(2) or "/").rstrip("/") or "/"
        backend = self.server.backend
        with backend.lock:
            fault = backend.take_fault()
            if fault is not None:
                backend.served.append(Served(method, rest, fault.status, None))
                headers = (
                    {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
                )
                return text(fault.status, FAULT_TEXTS[fault.status], headers)
            user = None
            try:
                user = self._user()
                request = Request(
                    method, rest, "/" + match.group(1), query, self._body(raw), user, origin
                )
                response = API.dispatch(backend, request, backend.tick())
            except ApiError as exc:
                backend.served.append(Served(method, rest, exc.status, user))
                raise
            backend.served.append(Served(method, rest, response.status, user))
            return response

    def _control(
        self, method: str, path: str, query: dict[str, str], raw: bytes, origin: str
    ) -> Response:
        given = self.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.server.token.encode()):
            raise ApiError(403, f"control path: missing or wrong {TOKEN_HEADER} header")
        backend = self.server.backend
        body = self._body(raw)
        if (method, path.rstrip("/")) == ("POST", "/join"):
            return join_deployers(backend, body)
        with backend.lock:
            request = Request(method, path.rstrip("/") or "/", "", query, body, None, origin)
            return CONTROL.dispatch(backend, request, backend.tick())


class HttpService:
    """The listening socket and its serving thread."""

    def __init__(self, backend: Backend, host: str, port: int, token: str) -> None:
        self._server = _Server((loopback(host), port), backend, token)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.05)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="g5k-double", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.close_connections()
        self._server.server_close()
