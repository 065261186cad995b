"""How nodes are reached over ssh: per-node endpoints and settings shared by all of them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from nxc.transports.ssh.errors import SshConfigError

if TYPE_CHECKING:
    from nxc.session import RunningDeployment


def _paths(value: Path | str | Iterable[Path | str] | None) -> tuple[Path, ...]:
    if value is None:
        return ()
    if isinstance(value, str | Path):
        return (Path(value),)
    return tuple(Path(v) for v in value)


@dataclass(frozen=True)
class SshEndpoint:
    """One node: ``name`` (in every message, and the ``Host`` looked up in the ssh config).

    ``host``, ``port``, ``user`` and ``keyfile`` override what the config says for that
    name; leave them out to let the config (``HostName``, ``Port``, ``User``,
    ``IdentityFile``, ``ProxyJump``…) decide.
    """

    name: str
    host: str | None = None
    port: int | None = None
    user: str | None = None
    keyfile: Path | None = None

    @classmethod
    def of(cls, node: SshEndpoint | str) -> SshEndpoint:
        return node if isinstance(node, SshEndpoint) else cls(node)


@dataclass(frozen=True, init=False)
class SshSettings:
    """What every node's connection shares.

    ``known_hosts``: the file(s) the nodes' host keys are checked against (required:
    checking is never off; for jump hosts the user's ``~/.ssh/known_hosts`` is
    consulted too). ``config``: OpenSSH client config files (``None``: ``~/.ssh/config``
    if it exists, as ``ssh`` does; ``()``: none). ``user`` / ``identity`` override the
    config for every node. ``connect_timeout`` bounds each connection attempt;
    connections refused or timing out are retried for ``retry_for`` seconds (0: one
    attempt). Dead connections are noticed after ``keepalive_interval`` *
    ``keepalive_count`` seconds of silence. ``sessions_per_node`` bounds the commands
    running at once on one node (sshd's ``MaxSessions`` is 10 by default; one channel
    stays free for sftp and one for killing). ``kill_grace``: seconds between TERM
    and KILL when a command is stopped. ``extra``: more ``asyncssh.connect`` keyword
    arguments (algorithms, ``agent_path``…), applied last.
    """

    known_hosts: tuple[Path, ...]
    config: tuple[Path, ...] | None = None
    user: str | None = None
    identity: tuple[Path, ...] = ()
    connect_timeout: float = 15.0
    retry_for: float = 0.0
    keepalive_interval: float = 15.0
    keepalive_count: int = 3
    sessions_per_node: int = 8
    kill_grace: float = 2.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __init__(
        self,
        known_hosts: Path | str | Iterable[Path | str],
        config: Path | str | Iterable[Path | str] | None = None,
        *,
        user: str | None = None,
        identity: Path | str | Iterable[Path | str] | None = None,
        connect_timeout: float = 15.0,
        retry_for: float = 0.0,
        keepalive_interval: float = 15.0,
        keepalive_count: int = 3,
        sessions_per_node: int = 8,
        kill_grace: float = 2.0,
        extra: dict[str, Any] | None = None,
    ) -> None:
        known = _paths(known_hosts)
        if not known:
            raise SshConfigError(
                "ssh: a known_hosts file is required (host keys are always checked)"
            )
        for path in known:
            if not path.is_file():
                raise SshConfigError(f"ssh: known_hosts file {path} does not exist")
        configs = None if config is None else _paths(config)
        for path in configs or ():
            if not path.is_file():
                raise SshConfigError(f"ssh: config file {path} does not exist")
        if sessions_per_node < 1:
            raise SshConfigError(f"ssh: sessions_per_node must be >= 1, got {sessions_per_node}")
        values = {
            "known_hosts": known,
            "config": configs,
            "user": user,
            "identity": _paths(identity),
            "connect_timeout": connect_timeout,
            "retry_for": retry_for,
            "keepalive_interval": keepalive_interval,
            "keepalive_count": keepalive_count,
            "sessions_per_node": sessions_per_node,
            "kill_grace": kill_grace,
            "extra": dict(extra or {}),
        }
        for key, value in values.items():
            object.__setattr__(self, key, value)

    def config_arg(self) -> Sequence[str] | tuple[()] | None:
        """``config`` as asyncssh takes it: ``()`` = its default (~/.ssh/config)."""
        if self.config is None:
            return ()
        return [str(p) for p in self.config] if self.config else None

    def connect_kwargs(self, endpoint: SshEndpoint) -> dict[str, Any]:
        """Keyword arguments of ``asyncssh.connect`` for ``endpoint`` (no tunnel)."""
        kwargs: dict[str, Any] = {
            "config": self.config_arg(),
            "known_hosts": [str(p) for p in self.known_hosts],
            "connect_timeout": self.connect_timeout,
            "keepalive_interval": self.keepalive_interval,
            "keepalive_count_max": self.keepalive_count,
        }
        if endpoint.host is not None:
            kwargs["host"] = endpoint.host
        if endpoint.port is not None:
            kwargs["port"] = endpoint.port
        user = endpoint.user or self.user
        if user is not None:
            kwargs["username"] = user
        keys = (endpoint.keyfile,) if endpoint.keyfile else self.identity
        if keys:
            kwargs["client_keys"] = [str(k) for k in keys]
            kwargs["agent_path"] = None  # only the keys named are offered (IdentitiesOnly)
        kwargs.update(self.extra)
        return kwargs


@dataclass(frozen=True)
class ResolvedEndpoint:
    """Where ``name`` really goes once the ssh config is applied."""

    name: str
    host: str
    port: int
    user: str
    keyfiles: tuple[Path, ...]
    jump: str | None
    host_key_alias: str | None


def resolve(endpoint: SshEndpoint | str, settings: SshSettings) -> ResolvedEndpoint:
    """Apply the ssh config (and the overrides) to ``endpoint``, without connecting."""
    endpoint = SshEndpoint.of(endpoint)
    kwargs = settings.connect_kwargs(endpoint)
    host = kwargs.pop("host", endpoint.name)
    kwargs.pop("client_keys", None)  # resolving must not need to read the private keys
    try:
        options = asyncssh.SSHClientConnectionOptions(host=host, **kwargs)
    except (OSError, ValueError, asyncssh.Error) as err:
        raise SshConfigError(f"{endpoint.name}: cannot read the ssh settings: {err}") from None
    config = options.config
    if endpoint.keyfile:
        keyfiles: tuple[Path, ...] = (endpoint.keyfile,)
    elif settings.identity:
        keyfiles = settings.identity
    else:
        named = config.get("IdentityFile", ()) or ()
        keyfiles = tuple(Path(str(p)).expanduser() for p in named)  # type: ignore[attr-defined]
    tunnel = options.tunnel
    jump = tunnel if isinstance(tunnel, str) and tunnel.lower() != "none" else None
    return ResolvedEndpoint(
        name=endpoint.name,
        host=options.host,
        port=int(options.port),
        user=str(options.username),
        keyfiles=keyfiles,
        jump=jump,
        host_key_alias=options.host_key_alias,
    )


def deployment_endpoints(running: RunningDeployment) -> tuple[list[SshEndpoint], SshSettings]:
    """The ssh endpoints of a running deployment's nodes, with the deployment's key files."""
    endpoints = []
    for node in running.deployment.nodes:
        if node.ssh_host is None:
            raise SshConfigError(f"{node.name}: the deployment has no ssh endpoint for it")
        endpoints.append(
            SshEndpoint(node.name, node.ssh_host, node.ssh_port or 22, "root", running.client_key)
        )
    return endpoints, SshSettings(running.known_hosts, config=())
