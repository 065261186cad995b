"""The sync service of one deployment: a private redis-server that nxc starts and stops.

``nxc start`` calls :func:`start_service` after the runtime's ``acquire``: it writes a
0600 configuration (passwords included: never on a command line) in the deployment's
private runtime directory, starts ``redis-server`` on it, records the process in the
ledger (``nxc stop`` ends it), loads the server functions of ``library.lua`` and
returns a :class:`SyncService`. Two users exist: ``nxc`` (nodes, the driver: only the
commands of the wire protocol, only keys under ``nxc:``) with the deployment's token,
and an administrator whose password is used once, to load the functions, and kept
nowhere else.

The service always listens on a unix socket in the runtime directory (mode 0700 in a
0700 directory: other users of the machine cannot even connect); when the flavour
asks for it, also on TCP at an address its nodes reach (the management side of the
nodes, never the experiment network).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import redis

from nxc.errors import StartError, StateError
from nxc.fsutil import atomic_write, private_dir, read_json, write_json
from nxc.ledger import Ledger, Resource, process_start_time
from nxc.sync.client import SyncClient, SyncConfig
from nxc.tools import require_tool
from nxc.wait import Attempt, PollExpired, poll

__all__ = [
    "NODE_USER",
    "SyncService",
    "library_code",
    "load_service",
    "start_service",
]

NODE_USER = "nxc"
_ADMIN_USER = "nxc-admin"
STATE_VERSION = 1
# What the node user may run: the protocol's commands, nothing that reads the
# configuration or touches other keys. Scripts run with the caller's rights, so
# the commands the functions call are listed too.
_NODE_COMMANDS = (
    "fcall", "blpop", "lrange", "llen", "zrem", "ping", "quit", "hello", "auth",
    "rpush", "lindex", "zadd", "zrangebyscore", "zremrangebyscore", "expire", "time",
)  # fmt: skip


def library_code() -> str:
    return resources.files("nxc.sync").joinpath("library.lua").read_text()


@dataclass(frozen=True)
class SyncService:
    """A running sync service, as the host sees it (``current/sync.json``, 0600)."""

    scope: str
    token: str
    unix_socket: Path
    pid: int
    start_time: int | None
    tcp: tuple[str, int] | None = None

    def config(self, node: str = "driver") -> SyncConfig:
        """The host side's way in: the unix socket."""
        return SyncConfig(
            token=self.token, scope=self.scope, unix_socket=str(self.unix_socket), node=node
        )

    def client(self, name: str = "driver") -> SyncClient:
        return SyncClient(self.config(name), name)

    def node_config(self, node: str, host: str, port: int, start_after: str = "") -> SyncConfig:
        """What one node gets (``/etc/nxc/sync``): where it reaches the service."""
        return SyncConfig(
            token=self.token,
            scope=self.scope,
            host=host,
            port=port,
            node=node,
            start_after=start_after,
        )

    def is_running(self) -> bool:
        return process_start_time(self.pid) == self.start_time

    def public(self) -> dict[str, Any]:
        """What the run record may hold (no token)."""
        return {
            "server": "redis",
            "scope": self.scope,
            "tcp": f"{self.tcp[0]}:{self.tcp[1]}" if self.tcp else None,
        }

    def save(self, path: Path) -> None:
        write_json(
            path,
            {
                "nxc_sync": STATE_VERSION,
                "scope": self.scope,
                "token": self.token,
                "unix_socket": str(self.unix_socket),
                "pid": self.pid,
                "start_time": self.start_time,
                "tcp": list(self.tcp) if self.tcp else None,
            },
        )


def load_service(path: Path) -> SyncService:
    """The service saved at ``path`` (a one-line error when there is none)."""
    if not path.exists():
        raise StateError("this deployment has no sync service (it was started without one)")
    document = read_json(path)
    try:
        if document["nxc_sync"] != STATE_VERSION:
            raise StateError(f"{path}: sync state version {document['nxc_sync']} is not supported")
        tcp = document.get("tcp")
        return SyncService(
            scope=document["scope"],
            token=document["token"],
            unix_socket=Path(document["unix_socket"]),
            pid=int(document["pid"]),
            start_time=document.get("start_time"),
            tcp=(str(tcp[0]), int(tcp[1])) if tcp else None,
        )
    except (KeyError, TypeError, ValueError, IndexError):
        raise StateError(f"{path}: corrupt sync state") from None


def _free_port(address: str) -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


def _quoted(path: Path) -> str:
    """A path as a redis.conf argument (double-quoted: spaces are separators there)."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def server_config(directory: Path, token: str, admin: str, tcp: tuple[str, int] | None) -> str:
    """redis.conf for one deployment (pure; holds the passwords: write it 0600)."""
    lines = [
        "# nxc sync service (written by nxc start; private to this deployment)",
        "daemonize no",
        f"dir {_quoted(directory)}",
        f"unixsocket {_quoted(directory / 'sync.sock')}",
        "unixsocketperm 700",
        f"port {tcp[1] if tcp else 0}",
        'save ""',
        "appendonly no",
        "databases 1",
        "timeout 0",
        "tcp-keepalive 30",
        "maxclients 4064",
        'logfile ""',
        "loglevel notice",
        "user default off resetpass -@all",
        f"user {NODE_USER} on >{token} resetkeys ~nxc:* resetchannels -@all "
        + " ".join(f"+{c}" for c in _NODE_COMMANDS),
        f"user {_ADMIN_USER} on >{admin} ~* &* +@all",
    ]
    if tcp:
        lines.append(f"bind {tcp[0]}")
    return "\n".join(lines) + "\n"


def start_service(
    runtime_dir: Path,
    log: Path,
    ledger: Ledger,
    scope: str,
    tcp_address: str | None = None,
    timeout: float = 15.0,
) -> SyncService:
    """Start the deployment's redis-server; return once it answers and has the functions.

    ``tcp_address``: also listen on TCP there (a free port is chosen); None: unix
    socket only. The process is in the ledger before anything can interrupt us.
    """
    server = require_tool("redis-server")
    directory = private_dir(runtime_dir / "sync")
    socket_path = directory / "sync.sock"
    token = secrets.token_hex(24)
    admin = secrets.token_hex(24)
    tcp = (tcp_address, _free_port(tcp_address)) if tcp_address else None
    config = directory / "redis.conf"
    atomic_write(config, server_config(directory, token, admin, tcp), 0o600)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [server, str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    resource = ledger.record_process(process.pid, "sync service (redis-server)")
    admin_client = redis.Redis(
        unix_socket_path=str(socket_path), username=_ADMIN_USER, password=admin
    )

    def answers(_remaining: float) -> Attempt[bool]:
        if process.poll() is not None:
            raise StartError(f"the sync service (redis-server) exited at once: {_tail(log)}")
        try:
            admin_client.ping()
        except (redis.ConnectionError, FileNotFoundError) as exc:
            return Attempt.not_yet(str(exc))
        return Attempt.ok(True)

    try:
        poll("the sync service to answer", answers, timeout)
        admin_client.function_load(library_code(), replace=True)
    except PollExpired as exc:
        raise StartError(f"the sync service did not start: {exc}") from None
    except redis.RedisError as exc:
        raise StartError(f"the sync service refused its functions: {exc}") from None
    finally:
        admin_client.close()
    return SyncService(scope, token, socket_path, process.pid, resource.start_time, tcp)


def _tail(path: Path, lines: int = 3) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(no output)"
    return "(no output)"


def recover(path: Path) -> list[Resource]:
    """The service process from its saved state (when the ledger is damaged)."""
    with contextlib.suppress(StateError):
        service = load_service(path)
        return [Resource("process", str(service.pid), "sync service", service.start_time)]
    return []


def wait_stopped(service: SyncService, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while service.is_running() and time.monotonic() < deadline:
        time.sleep(0.02)
    return not service.is_running()


def stop_service(service: SyncService) -> None:
    """End the process (tests; ``nxc stop`` does it through the ledger)."""
    if service.is_running():
        with contextlib.suppress(ProcessLookupError):
            os.kill(service.pid, 15)
        wait_stopped(service)
