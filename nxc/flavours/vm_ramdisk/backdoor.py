"""Host side of the virtio-serial backdoor (Contract 4 of docs/architecture.md).

QEMU exposes the guest's ``nxc.backdoor`` virtio-serial port as a unix socket
(``-chardev socket,server=on,wait=off``). The node agent reads one request per line,

    <id> <timeout-seconds, 0 = none> <base64 of the command text>

runs ``sh -c COMMAND </dev/null`` (killed after the timeout, status 124) and answers

    <id> <exit status> <base64 of stdout or -> <base64 of stderr or ->

Requests are serialised per node (a lock); answers whose id is not the one awaited
(late answers to a request the host gave up on) are dropped.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
import secrets
import socket
import threading
import time
from pathlib import Path

from nxc.runtime.shellcopy import get_over_shell, put_over_shell
from nxc.runtime.transport import CommandResult, TransportError

# How long the host waits beyond the guest-side timeout before it gives up: the guest
# needs time to kill the command (TERM, then KILL 2 s later) and to send the output,
# on a slow emulated CPU.
DEFAULT_MARGIN = 15.0
_RECV_SIZE = 1 << 16
_MAX_LINE = 1 << 30


def sendable_raw(command: str) -> bool:
    """Whether ``command`` can travel as-is (raw form) instead of base64.

    The guest splits the line on single spaces and joins the words back with one
    space, so the text must be one line of printable ASCII without runs of spaces
    or spaces at either end. Decoding costs the guest milliseconds under emulation.
    """
    return (
        0 < len(command) <= 4096
        and all(32 <= ord(c) < 127 for c in command)
        and "  " not in command
        and command[0] != " "
        and command[-1] != " "
    )


def encode_command(command: str) -> bytes:
    """The command field of a request: ``=TEXT`` (raw form) or base64."""
    if sendable_raw(command):
        return b"=" + command.encode()
    return base64.b64encode(command.encode())


def _short(command: str, limit: int = 60) -> str:
    one_line = " ".join(command.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def _decode_field(field: bytes) -> bytes:
    if field == b"-":
        return b""
    return base64.b64decode(field, validate=True)


class BackdoorTransport:
    """Run commands on a VM through its virtio-serial backdoor (thread-safe).

    ``socket_path`` is QEMU's chardev socket, ``name`` the node name used in messages.
    The socket is connected on first use, retrying for up to ``connect_timeout``
    seconds while QEMU starts; after the connection breaks, the next command
    reconnects the same way.
    """

    def __init__(
        self,
        socket_path: Path,
        name: str,
        *,
        connect_timeout: float = 30.0,
        margin: float = DEFAULT_MARGIN,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.name = name
        self.connect_timeout = connect_timeout
        self.margin = margin
        self.handshake_timeout = handshake_timeout
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        # Start the counter somewhere random: answers still queued from an earlier
        # connection (another driver process, say) must not match our ids.
        self._next_id = secrets.randbelow(1 << 40)
        self._closed = False

    # -- connection -----------------------------------------------------------------

    def connect(self) -> None:
        """Connect now (otherwise the first command does)."""
        with self._lock:
            self._ensure_connected()

    def _ensure_connected(self) -> socket.socket:
        if self._closed:
            raise TransportError(f"{self.name}: backdoor transport is closed")
        if self._sock is not None:
            return self._sock
        deadline = time.monotonic() + self.connect_timeout
        last_error = "no attempt"
        delay = 0.02
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.socket_path))
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                last_error = exc.strerror or type(exc).__name__
            except OSError as exc:
                sock.close()
                raise TransportError(
                    f"{self.name}: cannot connect to backdoor socket {self.socket_path}: "
                    f"{exc.strerror or exc}"
                ) from None
            else:
                self._sock = sock
                self._buffer.clear()
                # End whatever partial request an earlier connection may have left in
                # the guest's input: the agent ignores the empty line this makes.
                try:
                    sock.sendall(b"\n")
                except OSError as exc:
                    self._drop_connection()
                    raise TransportError(
                        f"{self.name}: backdoor socket {self.socket_path} broke at once: "
                        f"{exc.strerror or exc}"
                    ) from None
                self._handshake(sock)
                return sock
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportError(
                    f"{self.name}: backdoor socket {self.socket_path} not connectable within "
                    f"{self.connect_timeout:g}s (last error: {last_error}; is QEMU running?)"
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.25)

    def _handshake(self, sock: socket.socket) -> None:
        """Check that the agent answers on this connection before trusting it.

        QEMU serves one client per chardev socket: a second driver's connection is
        accepted by the kernel but never read, and would otherwise hang silently.
        """
        self._next_id += 1
        request_id = self._next_id
        deadline = time.monotonic() + self.handshake_timeout
        try:
            sock.settimeout(self.handshake_timeout)
            sock.sendall(b"%d 0 %s\n" % (request_id, base64.b64encode(b"true")))
            self._await_answer(sock, request_id, deadline, "true", 0)
        except (TimeoutError, OSError, TransportError):
            self._drop_connection()
            raise TransportError(
                f"{self.name}: the backdoor at {self.socket_path} accepted the connection but "
                f"the agent did not answer within {self.handshake_timeout:g}s (another nxc "
                "driver or shell may be attached to this node: QEMU serves one at a time)"
            ) from None

    def _drop_connection(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        self._buffer.clear()

    # -- protocol -------------------------------------------------------------------

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run ``command`` on the node; see :class:`nxc.runtime.transport.Transport`.

        With a ``timeout`` the guest kills the command after ``ceil(timeout)`` seconds
        (status 124); the host raises ``TimeoutError`` when no answer came
        ``margin`` seconds after that. Without one, the host waits as long as the
        connection lives.
        """
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        guest_timeout = 0 if timeout is None else max(1, math.ceil(timeout))
        with self._lock:
            sock = self._ensure_connected()
            self._next_id += 1
            request_id = self._next_id
            line = b"%d %d %s\n" % (request_id, guest_timeout, encode_command(command))
            deadline = None if timeout is None else time.monotonic() + guest_timeout + self.margin
            try:
                self._send(sock, line, deadline, command)
            except (TimeoutError, TransportError):
                # A request may be half sent: start afresh next time.
                self._drop_connection()
                raise
            try:
                return self._await_answer(sock, request_id, deadline, command, guest_timeout)
            except TransportError:
                self._drop_connection()
                raise

    def _send(self, sock: socket.socket, data: bytes, deadline: float | None, command: str) -> None:
        view = memoryview(data)
        while view:
            sock.settimeout(self._remaining(deadline, command))
            try:
                sent = sock.send(view)
            except TimeoutError:
                raise TimeoutError(
                    f"{self.name}: the guest did not take `{_short(command)}` in time "
                    "(backdoor not read: is the node up?)"
                ) from None
            except OSError as exc:
                raise TransportError(
                    f"{self.name}: backdoor connection broke while sending `{_short(command)}`: "
                    f"{exc.strerror or exc} (the VM stopped or QEMU exited?)"
                ) from None
            view = view[sent:]

    def _remaining(self, deadline: float | None, command: str) -> float | None:
        if deadline is None:
            return None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{self.name}: no answer to `{_short(command)}` in time")
        return remaining

    def _await_answer(
        self,
        sock: socket.socket,
        request_id: int,
        deadline: float | None,
        command: str,
        guest_timeout: int,
    ) -> CommandResult:
        while True:
            line = self._read_line(sock, deadline, command, guest_timeout)
            fields = line.split(b" ")
            if len(fields) != 4 or not fields[0].isdigit():
                continue  # not an answer (noise on the port): ignore it
            if int(fields[0]) != request_id:
                continue  # a late answer to an earlier request
            try:
                status = int(fields[1])
                stdout = _decode_field(fields[2])
                stderr = _decode_field(fields[3])
            except (ValueError, binascii.Error) as exc:
                raise TransportError(
                    f"{self.name}: malformed backdoor answer to `{_short(command)}`: {exc}"
                ) from None
            return CommandResult(status=status, stdout=stdout, stderr=stderr)

    def _read_line(
        self, sock: socket.socket, deadline: float | None, command: str, guest_timeout: int
    ) -> bytes:
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                return line.rstrip(b"\r")
            if len(self._buffer) > _MAX_LINE:
                raise TransportError(f"{self.name}: backdoor answer larger than {_MAX_LINE} bytes")
            if deadline is None:
                sock.settimeout(None)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timeout(command, guest_timeout)
                sock.settimeout(remaining)
            try:
                chunk = sock.recv(_RECV_SIZE)
            except TimeoutError:
                raise self._timeout(command, guest_timeout) from None
            except OSError as exc:
                raise TransportError(
                    f"{self.name}: backdoor connection broke while running `{_short(command)}`: "
                    f"{exc.strerror or exc} (the VM stopped or QEMU exited?)"
                ) from None
            if not chunk:
                raise TransportError(
                    f"{self.name}: backdoor connection closed while running `{_short(command)}` "
                    "(the VM stopped or QEMU exited)"
                )
            self._buffer += chunk

    def _timeout(self, command: str, guest_timeout: int) -> TimeoutError:
        return TimeoutError(
            f"{self.name}: no answer to `{_short(command)}` within "
            f"{guest_timeout + self.margin:g}s (the guest should have killed it after "
            f"{guest_timeout}s: is the node hung?)"
        )

    def put(self, source: Path, target: str) -> None:
        """Copy a host file to the node (base64 pieces over commands; atomic, mode kept)."""
        put_over_shell(self.run, self.name, Path(source), target)

    def get(self, source: str, target: Path) -> None:
        """Copy a node file to the host (read in pieces over commands, mode kept)."""
        get_over_shell(self.run, self.name, source, Path(target))

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the connection (idempotent); later commands raise TransportError."""
        with self._lock:
            self._closed = True
            self._drop_connection()

    def __repr__(self) -> str:
        return f"BackdoorTransport({str(self.socket_path)!r}, {self.name!r})"
