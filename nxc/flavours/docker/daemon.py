"""The Docker daemon a deployment uses: the user's own, or a private, isolated one.

* ``user``: the daemon ``DOCKER_HOST`` names, else the default socket. It must run on
  this machine (a ``unix://`` socket): nodes' inputs are bind-mounted from here.
* ``private``: nxc starts its own ``dockerd`` inside a network namespace it creates,
  with iptables, the default bridge and IP forwarding off, its own data and exec roots
  and socket. Nothing it does reaches the host's firewall, routes or interfaces; every
  piece (namespace, directories, process) is in the ledger, and ``nxc stop`` removes
  them.

One SDK client per daemon URL per process, shared by every thread (the SDK's
connection pool is sized for nxc's fan-outs).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nxc.errors import NxcError, StartError, StateError
from nxc.ledger import Ledger, Resource, process_start_time
from nxc.tools import require_tool
from nxc.wait import Attempt, PollExpired, poll

__all__ = [
    "DEFAULT_URL",
    "Daemon",
    "DaemonUnreachable",
    "check_private_host",
    "client",
    "start_private",
    "user_daemon",
]

DEFAULT_URL = "unix:///var/run/docker.sock"
FLAVOUR = "docker"
# Seconds an API call may take (image loads stream for longer: they pass their own).
API_TIMEOUT = 120.0
# Connections kept per daemon: one per node in a fan-out, plus exec streams.
POOL_SIZE = 128
DAEMON_START_TIMEOUT = 60.0


class DaemonUnreachable(NxcError):
    """No Docker daemon answers where nxc was told to find one."""


@dataclass(frozen=True)
class Daemon:
    """Where the deployment's daemon is, and (private) what nxc started for it."""

    mode: str  # "user" | "private"
    url: str
    source: str  # why this URL: "DOCKER_HOST", "default socket" or "private"
    pid: int | None = None
    start_time: int | None = None
    root: str | None = None  # private: the directory holding data, exec root, socket
    netns: str | None = None

    @property
    def private(self) -> bool:
        return self.mode == "private"

    def describe(self) -> str:
        if self.private:
            return f"private dockerd (pid {self.pid}, network namespace {self.netns})"
        return f"{self.url} ({self.source})"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, document: Any, where: str) -> Daemon:
        try:
            daemon = cls(**document)
        except TypeError:
            raise StateError(f"{where}: corrupt docker daemon entry") from None
        if daemon.mode not in ("user", "private") or not daemon.url.startswith("unix://"):
            raise StateError(f"{where}: corrupt docker daemon entry")
        return daemon


# -- clients ---------------------------------------------------------------------------

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def _reason(exc: BaseException) -> str:
    """What went wrong talking to a daemon, in words (the SDK nests the cause)."""
    text = str(exc)
    for needle, words in (
        ("FileNotFoundError", "no such socket"),
        ("ConnectionRefusedError", "connection refused"),
        ("PermissionError", "permission denied (is this user in the 'docker' group?)"),
    ):
        if needle in text:
            return words
    return text.splitlines()[0] if text else type(exc).__name__


def client(url: str) -> Any:
    """The SDK client of the daemon at ``url`` (``docker.DockerClient``), made once."""
    with _clients_lock:
        found = _clients.get(url)
        if found is not None:
            return found
        import docker
        from docker.errors import DockerException

        try:
            made = docker.DockerClient(
                base_url=url, version="auto", timeout=API_TIMEOUT, max_pool_size=POOL_SIZE
            )
        except DockerException as exc:
            raise DaemonUnreachable(f"no Docker daemon answers at {url}: {_reason(exc)}") from None
        _clients[url] = made
        return made


def forget_client(url: str) -> None:
    """Drop the cached client of ``url`` (its daemon stopped)."""
    with _clients_lock:
        gone = _clients.pop(url, None)
    if gone is not None:
        with contextlib.suppress(Exception):
            gone.close()


# -- the user's daemon ------------------------------------------------------------------


def user_daemon() -> Daemon:
    """The daemon the user points at (``DOCKER_HOST``, else the default socket)."""
    given = os.environ.get("DOCKER_HOST", "").strip()
    url, source = (given, "DOCKER_HOST") if given else (DEFAULT_URL, "default socket")
    if not url.startswith("unix://"):
        raise NxcError(
            f"DOCKER_HOST={url}: nxc bind-mounts each node's inputs from this machine, so the "
            "Docker daemon must run here (a unix:// socket); or use --dockerd private"
        )
    socket_path = url.removeprefix("unix://")
    if not Path(socket_path).exists():
        hint = "DOCKER_HOST names" if given else "the default socket is"
        raise DaemonUnreachable(
            f"no Docker daemon: {hint} {socket_path}, which does not exist "
            "(start dockerd, set DOCKER_HOST, or use --dockerd private)"
        )
    return Daemon("user", url, source)


# -- a private daemon -------------------------------------------------------------------


def check_private_host() -> None:
    """A private dockerd needs root (network namespaces) and dockerd itself."""
    require_tool("dockerd")
    require_tool("nsenter")
    require_tool("ip")
    if os.geteuid() != 0:
        raise NxcError(
            "--dockerd private needs root (it creates a network namespace for its own dockerd); "
            "use your own Docker daemon instead (DOCKER_HOST or the default socket)"
        )


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_bytes()[-8192:].decode(errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def start_private(runtime_dir: Path, log_dir: Path, name: str, ledger: Ledger) -> Daemon:
    """Start an isolated dockerd for deployment ``name``; every piece goes in the ledger
    as it is made (directories, then the namespace, then the process)."""
    dockerd = require_tool("dockerd")
    nsenter = require_tool("nsenter")
    ip = require_tool("ip")
    root = runtime_dir / "docker"
    root.mkdir(mode=0o700)
    ledger.record_path(root, "private dockerd's directories")
    netns = f"nxc-{name}"
    ledger.record("netns", netns, "network namespace of the private dockerd")
    made = subprocess.run([ip, "netns", "add", netns], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        raise StartError(f"ip netns add {netns}: {made.stderr.strip() or 'failed'}")
    # An empty configuration file: /etc/docker/daemon.json (the host's daemon's) must not
    # apply, nor clash with these flags.
    config = root / "daemon.json"
    config.write_text("{}\n")
    socket_path = root / "docker.sock"
    log = log_dir / "dockerd.log"
    argv = [
        nsenter, f"--net=/run/netns/{netns}",
        dockerd,
        "--config-file", str(config),
        "--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none",
        "--storage-driver", "vfs",
        "--data-root", str(root / "data"),
        "--exec-root", str(root / "exec"),
        "--pidfile", str(root / "docker.pid"),
        "-H", f"unix://{socket_path}",
    ]  # fmt: skip
    with open(log, "ab") as log_file:
        # Own session: a Ctrl-C in the terminal is ours to handle (from the ledger).
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            start_new_session=True,
        )  # fmt: skip
    start_time = process_start_time(process.pid)
    ledger.add(
        Resource(
            "dockerd",
            str(process.pid),
            "private dockerd",
            start_time if start_time is not None else -1,
            {"root": str(root), "netns": netns},
            FLAVOUR,
        )
    )
    url = f"unix://{socket_path}"

    def answering(_remaining: float) -> Attempt[bool]:
        if process.poll() is not None:
            raise StartError(f"the private dockerd exited at once: {_tail(log)} (log: {log})")
        if not socket_path.exists():
            return Attempt.not_yet("no socket yet")
        try:
            client(url).ping()
        except NxcError as exc:
            return Attempt.not_yet(str(exc))
        return Attempt.ok(True)

    try:
        poll("the private dockerd to answer", answering, DAEMON_START_TIMEOUT)
    except PollExpired as exc:
        raise StartError(f"the private dockerd did not start: {exc} (log: {log})") from None
    return Daemon("private", url, "private", process.pid, start_time, str(root), netns)
