"""A minimal QMP client: one command per connection (QEMU serves one client at a time)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from nxc.errors import NxcError


def qmp_command(
    socket_path: Path, command: str, arguments: dict[str, Any] | None = None, timeout: float = 10
) -> Any:
    """Run one QMP command and return its ``return`` value."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(socket_path))
        except OSError as exc:
            raise NxcError(f"QMP socket {socket_path}: {exc.strerror or exc}") from None
        reader = sock.makefile("rb")

        def receive() -> dict[str, Any]:
            while True:
                line = reader.readline()
                if not line:
                    raise NxcError(f"QMP socket {socket_path}: closed by QEMU")
                message: dict[str, Any] = json.loads(line)
                if "event" not in message:
                    return message

        def send(name: str, args: dict[str, Any] | None) -> Any:
            request: dict[str, Any] = {"execute": name}
            if args:
                request["arguments"] = args
            sock.sendall(json.dumps(request).encode() + b"\n")
            reply = receive()
            if "error" in reply:
                raise NxcError(f"QMP {name}: {reply['error'].get('desc', reply['error'])}")
            return reply.get("return")

        receive()  # greeting
        send("qmp_capabilities", None)
        return send(command, arguments)
