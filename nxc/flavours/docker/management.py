"""The containers' management side: how they reach the deployment's host services.

Host services (the sync service, :mod:`nxc.sync`) listen on a unix socket in the
deployment's private runtime directory. Containers cannot reach the host's loopback
(a private dockerd and its bridges live in a network namespace of their own), and the
experiment network is the one netem shapes and ``block()`` disconnects. So each
deployment gets a second Docker network, ``nxc-<id>-mgmt``: internal (no default
route, no NAT), IPv4 only, addresses chosen by the daemon's IPAM. Every container is
connected to it besides the experiment network, and a ``socat`` relay listening on
that network's gateway address (the bridge's own address, in the daemon's network
namespace) forwards each connection to the service's unix socket. Unix sockets are
reached by path, whatever the network namespace, so the relay needs no port on the
host's own interfaces.

Netem is applied to the experiment interface only and ``block()`` disconnects the
experiment network only: the management network is never shaped nor cut.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nxc.errors import StartError
from nxc.ledger import Ledger
from nxc.tools import require_tool
from nxc.wait import Attempt, PollExpired, poll

__all__ = ["Management", "create_network", "relay_listening", "start_relay"]

# In the private daemon's own network namespace every port is free: a fixed one.
PRIVATE_PORT = 6379
RELAY_START_TIMEOUT = 15.0


@dataclass(frozen=True)
class Management:
    """The management network of a deployment, as the runtime state keeps it."""

    network: str
    subnet: str
    gateway: str
    # Where a relay can listen on the gateway: "netns:NAME" (a private daemon's
    # namespace), "host" (the bridge is in this namespace), or "" (not reachable from
    # here: a daemon whose bridges are elsewhere; why says what).
    relay: str
    why: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "network": self.network,
            "subnet": self.subnet,
            "gateway": self.gateway,
            "relay": self.relay,
            "why": self.why,
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Management:
        return cls(
            str(document["network"]),
            str(document["subnet"]),
            str(document["gateway"]),
            str(document.get("relay", "")),
            str(document.get("why", "")),
        )


def create_network(api: Any, name: str, labels: dict[str, str], netns: str | None) -> Management:
    """Create the internal management network (recorded by the caller first)."""
    from docker.errors import APIError

    try:
        created = api.create_network(
            name, driver="bridge", internal=True, check_duplicate=True, labels=labels
        )
        found = api.inspect_network(created["Id"])
    except APIError as exc:
        raise StartError(
            f"cannot create the management network {name}: {exc.explanation or exc}"
        ) from None
    configs = (found.get("IPAM") or {}).get("Config") or []
    ipv4 = [c for c in configs if ":" not in str(c.get("Subnet", ""))]
    if not ipv4 or not ipv4[0].get("Gateway"):
        raise StartError(f"the management network {name} has no IPv4 gateway: {configs!r}")
    subnet, gateway = str(ipv4[0]["Subnet"]), str(ipv4[0]["Gateway"]).split("/")[0]
    if netns:
        return Management(name, subnet, gateway, f"netns:{netns}")
    bridge = "br-" + str(found["Id"])[:12]
    if Path("/sys/class/net", bridge).exists():
        return Management(name, subnet, gateway, "host")
    return Management(
        name,
        subnet,
        gateway,
        "",
        f"the daemon's bridge {bridge} is not in this network namespace "
        "(a daemon in another namespace or VM, or rootless Docker)",
    )


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


def relay_listening(pid: int, port: int) -> bool:
    """Whether process ``pid`` has a TCP socket listening on ``port`` (read from its own
    network namespace's /proc/PID/net/tcp, so it works inside another namespace)."""
    wanted = f":{port:04X}"
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    # local_address is "HEXIP:HEXPORT"; state 0A is LISTEN.
    return any(
        parts[1].endswith(wanted) and parts[3] == "0A"
        for parts in (line.split() for line in lines)
        if len(parts) > 3
    )


def start_relay(
    management: Management, target: Path, ledger: Ledger, service: str, log: Path
) -> int:
    """Start a relay from ``gateway:PORT`` to the unix socket ``target``; return PORT.

    The process is in the ledger before we wait for it (``nxc stop`` ends it).
    """
    socat = require_tool("socat")
    argv: list[str] = []
    if management.relay.startswith("netns:"):
        argv = [require_tool("nsenter"), f"--net=/run/netns/{management.relay[6:]}"]
        port = PRIVATE_PORT
    elif management.relay == "host":
        port = _free_port(management.gateway)
    else:
        raise StartError(f"containers cannot reach the {service} service: {management.why}")
    # The target is an argument of socat's address syntax: quote what it treats specially.
    quoted = str(target).replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")
    argv += [
        socat,
        f"TCP-LISTEN:{port},bind={management.gateway},reuseaddr,fork,backlog=512",
        f"UNIX-CONNECT:{quoted}",
    ]
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    ledger.record_process(process.pid, f"{service} relay for containers (socat)")

    def listening(_remaining: float) -> Attempt[bool]:
        if process.poll() is not None:
            text = ""
            with contextlib.suppress(OSError):
                text = " | ".join(log.read_text(errors="replace").strip().splitlines()[-2:])
            raise StartError(f"the {service} relay (socat) exited at once: {text}")
        if relay_listening(process.pid, port):
            return Attempt.ok(True)
        return Attempt.not_yet(f"nothing listens on {management.gateway}:{port} yet")

    try:
        poll(f"the {service} relay to listen", listening, RELAY_START_TIMEOUT)
    except PollExpired as exc:
        raise StartError(str(exc)) from None
    return port
