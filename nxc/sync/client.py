"""Python client of the nxc sync service, for the driver and for programs on nodes.

This module needs only the standard library and ``redis`` (redis-py): copy it onto a
node (or install nxc there) and::

    from client import SyncClient          # or: from nxc.sync.client import SyncClient

    sync = SyncClient.from_config()        # /etc/nxc/sync, written by the node's agent
    sync.signal_and_wait("loaded", 3)      # every node meets here
    sync.publish("leader", "node2")
    for value in sync.subscribe("leader"): # every message, from the first, in order
        ...
    peers = sync.discover("server", 2)     # [{"name": "server1", "ipv4": ...}, ...]

The operations, their keys and the server functions they call are the wire protocol
of docs/sync.md; ``nxc-sync`` (the node-side shell command) speaks the same.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

__all__ = [
    "CONFIG_PATH",
    "SyncClient",
    "SyncConfig",
    "SyncError",
    "SyncTimeout",
    "check_name",
    "log_keys",
    "parse_start_after",
]

CONFIG_PATH = Path("/etc/nxc/sync")
DEFAULT_TIMEOUT = 600.0
# States, topics and tags: what a shell word and a key segment can both carry.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Log kinds (key segment): states, topics, discovery tags.
STATE, TOPIC, TAG = "s", "t", "d"


class SyncError(Exception):
    """The sync service refused a request, or cannot be reached."""


class SyncTimeout(SyncError):
    """A wait on the sync service ran out of time (the message says what was seen)."""


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise SyncError(
            f"bad {what} {name!r}: letters, digits, '.', '_', '-' (not first), at most 128"
        )
    return name


def log_keys(scope: str, kind: str, name: str) -> tuple[str, str, str]:
    """Keys of one log: its values, their server times (µs), its waiters."""
    base = f"nxc:{scope}:{kind}:{name}"
    return f"{base}:l", f"{base}:t", f"{base}:w"


def parse_start_after(text: str) -> list[tuple[str, int]]:
    """``"state=3 other=1"`` → ``[("state", 3), ("other", 1)]``."""
    found = []
    for word in text.split():
        state, sep, count = word.partition("=")
        if not sep or not count.isdigit():
            raise SyncError(f"bad start_after condition {word!r} (expected STATE=COUNT)")
        found.append((check_name(state, "state"), int(count)))
    return found


@dataclass(frozen=True)
class SyncConfig:
    """Where the service is and how to log in (one node's ``/etc/nxc/sync``)."""

    token: str
    scope: str
    host: str | None = None
    port: int | None = None
    unix_socket: str | None = None
    user: str = "nxc"
    node: str = ""
    start_after: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, source: str = "sync config") -> SyncConfig:
        """Shell assignments ``NXC_SYNC_HOST='…'`` (the format nxc-sync sources)."""
        values: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, raw = line.partition("=")
            words = shlex.split(raw) if sep else []
            if not sep or len(words) > 1 or not key.isidentifier():
                raise SyncError(f"{source}:{number}: expected NAME='value'")
            values[key] = words[0] if words else ""
        try:
            port = values.get("NXC_SYNC_PORT")
            return cls(
                token=values["NXC_SYNC_TOKEN"],
                scope=values["NXC_SYNC_SCOPE"],
                host=values.get("NXC_SYNC_HOST") or None,
                port=int(port) if port else None,
                unix_socket=values.get("NXC_SYNC_SOCKET") or None,
                user=values.get("NXC_SYNC_USER", "nxc"),
                node=values.get("NXC_NODE", ""),
                start_after=values.get("NXC_START_AFTER", ""),
                extra=values,
            )
        except KeyError as exc:
            raise SyncError(f"{source}: {exc.args[0]} is missing") from None
        except ValueError:
            raise SyncError(f"{source}: NXC_SYNC_PORT is not a number") from None

    @classmethod
    def load(cls, path: Path = CONFIG_PATH) -> SyncConfig:
        try:
            return cls.parse(path.read_text(), str(path))
        except OSError as exc:
            raise SyncError(f"{path}: cannot read the sync configuration: {exc.strerror}") from None

    def render(self) -> str:
        values = {
            "NXC_SYNC_HOST": self.host or "",
            "NXC_SYNC_PORT": str(self.port or ""),
            "NXC_SYNC_SOCKET": self.unix_socket or "",
            "NXC_SYNC_USER": self.user,
            "NXC_SYNC_TOKEN": self.token,
            "NXC_SYNC_SCOPE": self.scope,
            "NXC_NODE": self.node,
            "NXC_START_AFTER": self.start_after,
        }
        return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items() if v)


class SyncClient:
    """One connection to a deployment's sync service (thread-safe: redis-py pools)."""

    def __init__(self, config: SyncConfig, name: str | None = None) -> None:
        self.config = config
        self.name = name or config.node or "client"
        where: dict[str, Any]
        if config.unix_socket:
            where = {"unix_socket_path": config.unix_socket}
        elif config.host and config.port:
            where = {"host": config.host, "port": config.port}
        else:
            raise SyncError("the sync configuration has neither a socket nor a host and port")
        self._redis = redis.Redis(
            **where,
            username=config.user,
            password=config.token,
            socket_connect_timeout=10,
            # Blocking waits (BLPOP) last as long as they were asked to.
            socket_timeout=None,
            health_check_interval=30,
        )
        self.where = config.unix_socket or f"{config.host}:{config.port}"

    @classmethod
    def from_config(cls, path: Path = CONFIG_PATH, name: str | None = None) -> SyncClient:
        return cls(SyncConfig.load(path), name)

    def close(self) -> None:
        self._redis.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- low level ---------------------------------------------------------------

    def _call(self, *args: Any) -> Any:
        try:
            return self._redis.execute_command(*args)  # type: ignore[no-untyped-call]
        except redis.AuthenticationError as exc:
            raise SyncError(f"the sync service at {self.where} refused the token: {exc}") from None
        except redis.ConnectionError as exc:
            raise SyncError(f"cannot reach the sync service at {self.where}: {exc}") from None
        except redis.ResponseError as exc:
            raise SyncError(f"the sync service at {self.where} refused {args[0]}: {exc}") from None

    def _append(self, kind: str, name: str, value: str | bytes) -> int:
        keys = log_keys(self.config.scope, kind, name)
        return int(self._call("FCALL", "nxc_append", 3, *keys, value))

    def _queue(self) -> str:
        return f"nxc:{self.config.scope}:q:{self.name}-{secrets.token_hex(8)}"

    def _wait(
        self, kind: str, name: str, position: int, timeout: float | None, want: int = 0
    ) -> tuple[int, list[bytes]]:
        """Wait until log ``name`` has ``position`` values; return its length and up
        to ``want`` values from ``position`` on (at least one when ``want`` > 0)."""
        values_key, _times, waiters = log_keys(self.config.scope, kind, name)
        queue = self._queue()
        reply = self._call("FCALL", "nxc_wait", 3, values_key, waiters, queue, position, want)
        length = int(reply[0])
        if length >= position:
            return length, list(reply[1:])
        block = 0 if timeout is None else max(timeout, 0.001)
        popped = self._call("BLPOP", queue, block)
        if popped is None:
            self._call("ZREM", waiters, queue)
            have = int(self._call("LLEN", values_key))
            raise SyncTimeout(f"{have} of {position} after {timeout:g}s")
        return position, [popped[1]]

    # -- states ------------------------------------------------------------------

    def signal(self, state: str) -> int:
        """Record one arrival at ``state``; return its sequence number (1 for the first)."""
        return self._append(STATE, check_name(state, "state"), self.name)

    def barrier(self, state: str, count: int, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Wait until ``state`` was signalled ``count`` times (by anyone, ever)."""
        check_name(state, "state")
        if count < 1:
            return
        try:
            self._wait(STATE, state, count, timeout)
        except SyncTimeout as exc:
            raise SyncTimeout(f"barrier {state}: {exc}") from None

    def signal_and_wait(
        self, state: str, count: int, timeout: float | None = DEFAULT_TIMEOUT
    ) -> int:
        """Signal ``state``, then wait for ``count`` signals; return our sequence number."""
        seq = self.signal(state)
        self.barrier(state, count, timeout)
        return seq

    def count(self, state: str) -> int:
        """How many times ``state`` was signalled so far."""
        values, _times, _waiters = log_keys(self.config.scope, STATE, check_name(state, "state"))
        return int(self._call("LLEN", values))

    def arrivals(self, state: str) -> list[tuple[str, float]]:
        """Who signalled ``state``, and when (service clock, epoch seconds), in order."""
        values, times, _waiters = log_keys(self.config.scope, STATE, check_name(state, "state"))
        who = self._call("LRANGE", values, 0, -1)
        when = self._call("LRANGE", times, 0, -1)
        return [(w.decode(errors="replace"), int(t) / 1e6) for w, t in zip(who, when, strict=False)]

    # -- topics ------------------------------------------------------------------

    def publish(self, topic: str, value: str | bytes) -> int:
        """Append ``value`` to ``topic``; return its sequence number (1 for the first)."""
        return self._append(TOPIC, check_name(topic, "topic"), value)

    def subscribe(
        self, topic: str, start: int = 1, timeout: float | None = DEFAULT_TIMEOUT
    ) -> Iterator[bytes]:
        """Every message of ``topic`` from number ``start`` on, in order, as they come.

        A subscriber that comes late still gets the earlier messages first. Each
        wait for the next message is bounded by ``timeout`` (None: forever), after
        which :class:`SyncTimeout` is raised.
        """
        check_name(topic, "topic")
        position = max(start, 1)
        while True:
            try:
                _length, values = self._wait(TOPIC, topic, position, timeout, want=256)
            except SyncTimeout as exc:
                raise SyncTimeout(f"topic {topic}: message {exc}") from None
            for value in values:
                yield value
                position += 1

    def messages(
        self, topic: str, count: int, timeout: float | None = DEFAULT_TIMEOUT
    ) -> list[bytes]:
        """The first ``count`` messages of ``topic`` (waiting for them)."""
        found: list[bytes] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        stream = self.subscribe(topic, 1, timeout)
        while len(found) < count:
            if deadline is not None and time.monotonic() > deadline:
                raise SyncTimeout(f"topic {topic}: {len(found)} of {count} messages")
            found.append(next(stream))
        return found

    # -- discovery ---------------------------------------------------------------

    def announce(self, record: Mapping[str, Any], tags: list[str]) -> None:
        """Register ``record`` (a JSON object) under each of ``tags``."""
        text = json.dumps(dict(record), sort_keys=True, separators=(",", ":"))
        for tag in tags:
            self._append(TAG, check_name(tag, "tag"), text)

    def discover(
        self, tag: str, count: int, timeout: float | None = DEFAULT_TIMEOUT
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` records are registered under ``tag`` (a role or a tag
        given to ``nxc-sync announce``); return the first ``count``, in order."""
        check_name(tag, "tag")
        if count < 1:
            return []
        try:
            self._wait(TAG, tag, count, timeout)
        except SyncTimeout as exc:
            raise SyncTimeout(f"discover {tag}: {exc} records") from None
        values, _times, _waiters = log_keys(self.config.scope, TAG, tag)
        records = []
        for raw in self._call("LRANGE", values, 0, count - 1):
            try:
                records.append(json.loads(raw))
            except ValueError:
                records.append({"raw": raw.decode(errors="replace")})
        return records

    def ping(self) -> None:
        self._call("PING")
