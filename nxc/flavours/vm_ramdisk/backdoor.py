"""Host side of the virtio-serial backdoor (Contract 4, protocol 2, of docs/architecture.md).

QEMU exposes the guest's ``nxc.backdoor`` virtio-serial port as a unix socket
(``-chardev socket,server=on,wait=off``). Requests go one per line; several may be in
flight at once and answers come back in the order commands finish:

    <id> <timeout> =<command text>        one-line printable command (no decoding at all)
    <id> <timeout> :<n>[:<m>]\\n<bytes>    n bytes of command text, then m bytes of stdin
    <id> cancel                           kill the command of request <id> (its session)

and the guest answers ``<id> <status> <base64 stdout or -> <base64 stderr or ->``.

One reader thread per connection dispatches answers to the waiting callers by id; one
writer thread sends whole frames, so a caller interrupted mid-request (Ctrl-C) never
leaves half a request on the wire. On ``KeyboardInterrupt`` or a host-side timeout the
caller sends ``cancel`` and says whether the guest confirmed the kill; ``close()``
shuts the socket down at once and every call in flight fails with ``TransportError``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import math
import os
import queue
import secrets
import shlex
import socket
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from nxc.runtime.transport import (
    CommandResult,
    FileTransferError,
    NodeUnreachable,
    OutputTruncated,
    TransportError,
)

# How long the host waits beyond the guest-side timeout before it gives up: the guest
# needs time to kill the command (TERM, then KILL 2 s later) and to send the output,
# on a slow emulated CPU.
DEFAULT_MARGIN = 15.0
# How long a caller waits for the guest to confirm a cancel (TERM, KILL a second later).
CANCEL_GRACE = 5.0
# Longest command sent in the raw form (the guest's `read` takes it byte by byte).
RAW_LIMIT = 4096
_RECV_SIZE = 1 << 16
_MAX_LINE = 1 << 31
# Status the guest gives a request it could not run (malformed, unknown form).
REJECTED = 125


def sendable_raw(command: str) -> bool:
    """Whether ``command`` can travel as-is (raw form) instead of as a payload.

    The guest splits the line on single spaces and joins the words back with one
    space, so the text must be one line of printable ASCII without runs of spaces
    or spaces at either end.
    """
    return (
        0 < len(command) <= RAW_LIMIT
        and all(32 <= ord(c) < 127 for c in command)
        and "  " not in command
        and command[0] != " "
        and command[-1] != " "
    )


def request_header(request_id: int, timeout: int, command: str, stdin_size: int = 0) -> bytes:
    """The request for ``command``: the raw form, or a payload header plus the text.

    The command text follows the header line (for a payload) and ``stdin_size`` bytes
    of standard input must follow it on the wire.
    """
    if stdin_size == 0 and sendable_raw(command):
        return b"%d %d =%s\n" % (request_id, timeout, command.encode())
    text = command.encode()
    if b"\0" in text:
        raise ValueError("a shell command cannot contain a NUL byte")
    sizes = b"%d:%d" % (len(text), stdin_size) if stdin_size else b"%d" % len(text)
    return b"%d %d :%s\n%s" % (request_id, timeout, sizes, text)


def _short(command: str, limit: int = 60) -> str:
    one_line = " ".join(command.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def _decode_field(field: bytes) -> bytes:
    if field == b"-":
        return b""
    return base64.b64decode(field, validate=True)


@dataclass
class _Frame:
    """Bytes to send whole: a header, then optionally ``size`` bytes of ``source``."""

    data: bytes
    source: Path | None = None
    size: int = 0


@dataclass
class _Pending:
    request_id: int
    command: str
    done: threading.Event = field(default_factory=threading.Event)
    result: CommandResult | None = None
    error: TransportError | None = None


class _Connection:
    """One connected socket, its reader and writer threads and the requests in flight."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._outbox: queue.SimpleQueue[_Frame | None] = queue.SimpleQueue()
        self._dead: str | None = None
        self._closing = False
        self._sending = threading.Lock()  # held while a frame is on its way
        self._reader = threading.Thread(
            target=self._read_loop, name=f"nxc-backdoor-{name}-reader", daemon=True
        )
        self._writer = threading.Thread(
            target=self._write_loop, name=f"nxc-backdoor-{name}-writer", daemon=True
        )
        self._reader.start()
        self._writer.start()

    @property
    def alive(self) -> bool:
        return self._dead is None

    def submit(self, pending: _Pending, frame: _Frame) -> None:
        with self._lock:
            if self._dead is not None:
                raise TransportError(f"{self.name}: {self._dead}")
            self._pending[pending.request_id] = pending
        self._outbox.put(frame)

    def send_control(self, line: bytes) -> None:
        with self._lock:
            if self._dead is not None:
                raise TransportError(f"{self.name}: {self._dead}")
        self._outbox.put(_Frame(line))

    def forget(self, request_id: int) -> None:
        with self._lock:
            self._pending.pop(request_id, None)

    def close(self) -> None:
        """Shut the socket down now: calls in flight fail, the threads end by themselves.

        Commands in flight are asked to stop first when the wire is free (best effort,
        never waiting): a released node should not keep running what nobody awaits.
        """
        with self._lock:
            self._closing = True
            ids = list(self._pending)
        if ids and self._sending.acquire(blocking=False):
            try:
                cancels = b"".join(b"%d cancel\n" % i for i in ids)
                with contextlib.suppress(OSError):
                    self.sock.send(cancels, socket.MSG_DONTWAIT)
            finally:
                self._sending.release()
        self._fail("the connection was closed")
        self._outbox.put(None)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def _fail(self, reason: str) -> None:
        with self._lock:
            if self._dead is None:
                self._dead = reason
            waiting = list(self._pending.values())
            self._pending.clear()
            closing = self._closing
        for pending in waiting:
            if closing:
                message = (
                    f"{self.name}: the connection was closed while `{_short(pending.command)}` "
                    "ran (the node was crashed, stopped or released)"
                )
            else:
                message = (
                    f"{self.name}: backdoor connection {reason} while running "
                    f"`{_short(pending.command)}` (the VM stopped or QEMU exited?)"
                )
            pending.error = TransportError(message)
            pending.done.set()

    # -- threads ------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            frame = self._outbox.get()
            if frame is None or self._dead is not None:
                return
            with self._sending:
                try:
                    self.sock.sendall(frame.data)
                    if frame.source is not None:
                        self._send_file(frame.source, frame.size)
                except OSError as exc:
                    self._fail(f"broke while sending ({exc.strerror or exc})")
                    with contextlib.suppress(OSError):
                        self.sock.shutdown(socket.SHUT_RDWR)
                    return

    def _send_file(self, source: Path, size: int) -> None:
        with source.open("rb") as handle:
            sent = self.sock.sendfile(handle, 0, size) if size else 0
        if sent != size:
            # The stream promised `size` bytes: it cannot go on after fewer.
            raise OSError(f"{source} changed while being sent ({sent} of {size} bytes)")

    def _read_loop(self) -> None:
        buffer = bytearray()
        scanned = 0
        reason = "closed"
        try:
            while True:
                try:
                    chunk = self.sock.recv(_RECV_SIZE)
                except OSError as exc:
                    reason = f"broke ({exc.strerror or exc})"
                    return
                if not chunk:
                    return
                buffer += chunk
                # Look for the end of a line in the new bytes only: a long answer
                # arrives in thousands of chunks and must cost linear time.
                newline = buffer.find(b"\n", scanned)
                while newline >= 0:
                    self._dispatch(bytes(buffer[:newline]).rstrip(b"\r"))
                    del buffer[: newline + 1]
                    newline = buffer.find(b"\n")
                scanned = len(buffer)
                if scanned > _MAX_LINE:
                    reason = f"sent an answer larger than {_MAX_LINE} bytes"
                    return
        finally:
            self._fail(reason)
            with contextlib.suppress(OSError):
                self.sock.close()
            self._outbox.put(None)

    def _dispatch(self, line: bytes) -> None:
        fields = line.split(b" ")
        full = len(fields) == 5 and fields[4] == b"full"
        if not (len(fields) == 4 or full) or not fields[0].isdigit():
            return  # not an answer (noise on the port): ignore it
        with self._lock:
            pending = self._pending.pop(int(fields[0]), None)
        if pending is None:
            return  # an answer to a request nobody awaits any more
        if full:
            pending.error = OutputTruncated(
                f"{self.name}: the node's state directory (/run/nxc, a tmpfs) was full when "
                f"`{_short(pending.command)}` ended: its output may have been cut short "
                "(write large output to a file elsewhere and copy it with copy_from_vm)"
            )
            pending.done.set()
            return
        try:
            pending.result = CommandResult(
                status=int(fields[1]),
                stdout=_decode_field(fields[2]),
                stderr=_decode_field(fields[3]),
            )
        except (ValueError, binascii.Error) as exc:
            pending.error = TransportError(
                f"{self.name}: malformed backdoor answer to `{_short(pending.command)}`: {exc}"
            )
        pending.done.set()


class BackdoorTransport:
    """Run commands on a VM through its virtio-serial backdoor (thread-safe, concurrent).

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
        cancel_grace: float = CANCEL_GRACE,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.name = name
        self.connect_timeout = connect_timeout
        self.margin = margin
        self.handshake_timeout = handshake_timeout
        self.cancel_grace = cancel_grace
        self._connect_lock = threading.Lock()
        self._connection: _Connection | None = None
        # Start the counter somewhere random: answers still queued from an earlier
        # connection (another driver process, say) must not match our ids.
        self._ids = itertools.count(secrets.randbelow(1 << 40))
        self._closed = False

    # -- connection -----------------------------------------------------------------

    def connect(self) -> None:
        """Connect now (otherwise the first command does)."""
        self._connected()

    def _connected(self) -> _Connection:
        with self._connect_lock:
            if self._closed:
                raise TransportError(f"{self.name}: backdoor transport is closed")
            if self._connection is not None and self._connection.alive:
                return self._connection
            connection = _Connection(self._open_socket(), self.name)
            try:
                self._handshake(connection)
            except BaseException:
                connection.close()
                raise
            if self._closed:  # closed while we connected
                connection.close()
                raise TransportError(f"{self.name}: backdoor transport is closed")
            self._connection = connection
            return connection

    def _open_socket(self) -> socket.socket:
        deadline = time.monotonic() + self.connect_timeout
        last_error = "no attempt"
        delay = 0.02
        while True:
            if self._closed:
                raise TransportError(f"{self.name}: backdoor transport is closed")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            # connect() blocks while QEMU's listen backlog is full (it serves one client
            # at a time): bounded like every other wait.
            sock.settimeout(max(deadline - time.monotonic(), 0.5))
            try:
                sock.connect(str(self.socket_path))
                # End whatever partial request an earlier connection may have left in
                # the guest's input: the agent ignores the empty line this makes.
                sock.sendall(b"\n")
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                last_error = exc.strerror or type(exc).__name__
            except OSError as exc:
                sock.close()
                raise NodeUnreachable(
                    f"{self.name}: cannot connect to backdoor socket {self.socket_path}: "
                    f"{exc.strerror or exc}"
                ) from None
            else:
                sock.settimeout(None)  # the connection's threads block on it
                return sock
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NodeUnreachable(
                    f"{self.name}: backdoor socket {self.socket_path} not connectable within "
                    f"{self.connect_timeout:g}s (last error: {last_error}; is QEMU running?)"
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.25)

    def _handshake(self, connection: _Connection) -> None:
        """Check that the agent answers on this connection before trusting it.

        QEMU serves one client per chardev socket: a second driver's connection is
        accepted by the kernel but never read, and would otherwise hang silently. The
        payload form tells an agent of protocol 1 (which rejects it) from a current one.
        """
        pending = _Pending(next(self._ids), "true")
        connection.submit(pending, _Frame(request_header(pending.request_id, 0, "\ttrue")))
        if not pending.done.wait(self.handshake_timeout):
            connection.forget(pending.request_id)
            raise NodeUnreachable(
                f"{self.name}: the backdoor at {self.socket_path} accepted the connection but "
                f"the agent did not answer within {self.handshake_timeout:g}s (another nxc "
                "driver or shell may be attached to this node: QEMU serves one at a time)"
            )
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        if pending.result.status != 0:
            raise NodeUnreachable(
                f"{self.name}: the node's agent does not speak backdoor protocol 2 "
                f"(status {pending.result.status}: {pending.result.stderr.decode().strip()}); "
                "rebuild the image with this version of nxc"
            )

    # -- commands -------------------------------------------------------------------

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run ``command`` on the node; see :class:`nxc.runtime.transport.Transport`.

        With a ``timeout`` the guest kills the command after ``ceil(timeout)`` seconds
        (status 124); the host raises ``TimeoutError`` (after telling the guest to kill
        it) when no answer came ``margin`` seconds after that. Without one, the host
        waits as long as the connection lives. ``KeyboardInterrupt`` kills the command
        on the node, then propagates with a message saying so.
        """
        return self._request(command, timeout)

    def _request(
        self,
        command: str,
        timeout: float | None,
        stdin: Path | None = None,
        stdin_size: int = 0,
    ) -> CommandResult:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        guest_timeout = 0 if timeout is None else max(1, math.ceil(timeout))
        connection = self._connected()
        pending = _Pending(next(self._ids), command)
        header = request_header(pending.request_id, guest_timeout, command, stdin_size)
        deadline = None if timeout is None else time.monotonic() + guest_timeout + self.margin
        connection.submit(pending, _Frame(header, stdin, stdin_size))
        try:
            if deadline is None:
                finished = pending.done.wait()
            else:
                finished = pending.done.wait(max(0.0, deadline - time.monotonic()))
        except KeyboardInterrupt:
            outcome = self._cancel(connection, pending)
            raise KeyboardInterrupt(f"{self.name}: interrupted; {outcome}") from None
        if not finished:
            outcome = self._cancel(connection, pending)
            raise TimeoutError(
                f"{self.name}: no answer to `{_short(command)}` within "
                f"{guest_timeout + self.margin:g}s (the guest should have killed it after "
                f"{guest_timeout}s: is the node hung?); {outcome}"
            )
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def _cancel(self, connection: _Connection, pending: _Pending) -> str:
        """Ask the guest to kill ``pending``'s command; say how that went (the caller's
        message names the command where it helps)."""
        if pending.done.is_set():
            return "the command had already finished"
        try:
            connection.send_control(b"%d cancel\n" % pending.request_id)
        except TransportError:
            return f"the connection was lost: the command may still run on {self.name}"
        if pending.done.wait(self.cancel_grace) and pending.error is None:
            return f"the command was killed on {self.name}"
        connection.forget(pending.request_id)
        return (
            f"asked {self.name} to kill the command, but no confirmation came within "
            f"{self.cancel_grace:g}s"
        )

    # -- files ----------------------------------------------------------------------

    def put(self, source: Path, target: str) -> None:
        """Copy the host's regular file ``source`` to ``target`` on the node.

        The bytes stream as the input of one command (no encoding); the file appears
        at ``target`` atomically (written next to it, then renamed) with the mode bits
        of ``source``. The directory of ``target`` must exist.
        """
        source = Path(source)
        info = source.stat()
        if not stat.S_ISREG(info.st_mode):
            raise FileTransferError(f"{self.name}: put: {source} is not a regular file")
        q_target = shlex.quote(target)
        command = (
            f"umask 077; t={q_target}.nxc-put.$$; "
            f'if cat >"$t" && chmod {stat.S_IMODE(info.st_mode):o} "$t" '
            f'&& mv -f "$t" {q_target}; then exit 0; fi; rm -f "$t"; exit 1'
        )
        result = self._request(command, None, source, info.st_size)
        if result.status != 0:
            raise FileTransferError(
                f"{self.name}: cannot write {target}: "
                f"{_stderr(result) or f'status {result.status}'}"
            )

    def get(self, source: str, target: Path) -> None:
        """Copy the node's regular file ``source`` to ``target`` on the host.

        ``target`` is replaced atomically and gets the mode bits ``source`` has.
        """
        q_source = shlex.quote(source)
        command = (
            f"if [ ! -f {q_source} ]; then "
            f"if [ -e {q_source} ]; then echo 'not a regular file' >&2; "
            "else echo 'no such file' >&2; fi; exit 1; fi; "
            f"stat -c %a {q_source} >&2 && exec cat {q_source}"
        )
        result = self._request(command, None)
        mode_line, _, errors = result.stderr.decode(errors="replace").partition("\n")
        if result.status != 0 or not mode_line.isdigit():
            detail = (errors or mode_line).strip() or f"status {result.status}"
            raise FileTransferError(f"{self.name}: cannot read {source}: {detail}")
        target = Path(target)
        partial = target.with_name(f".{target.name}.nxc-get-{os.getpid()}")
        try:
            with partial.open("wb") as out:
                out.write(result.stdout)
            partial.chmod(int(mode_line, 8) & 0o7777)
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    # -- life cycle -----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the connection at once (idempotent); calls in flight and later calls
        raise TransportError. Never waits for the commands running on the node."""
        self._closed = True
        connection = self._connection
        if connection is not None:
            connection.close()

    def __repr__(self) -> str:
        return f"BackdoorTransport({str(self.socket_path)!r}, {self.name!r})"


def _stderr(result: CommandResult) -> str:
    return result.stderr.decode(errors="replace").strip()
