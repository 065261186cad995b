"""The asynchronous core: one persistent ssh connection per node, commands as channels.

Everything here runs on the shared event loop (:mod:`nxc.transports.ssh.loop`).

How a command runs. Each command is one session channel on the node's connection, with
no pty. The command the node's sshd receives is::

    printf 'nxc-pgid-TOKEN %s\\n' "$$" >&2; exec sh -c 'COMMAND' </dev/null

sshd starts every session in a new session and process group (``setsid``), so ``$$``
(the login shell, replaced by ``sh`` through ``exec``) is the process group of the
command and of everything it starts. The first stderr line reports it and is removed
from the output. On a timeout, or when the caller is interrupted, a second channel runs
``kill -TERM -- -PGID``, waits up to ``kill_grace`` seconds, sends KILL, and checks that
the group is gone; only then does ``run`` return. Closing a pty-less channel does not
kill anything on the node, hence this.

Reconnection. A connection found closed (the node rebooted, sshd restarted) is replaced
by a new one on the next command; a channel that cannot be opened because the
connection just died is retried once on a new connection (the command had not
started). A command whose connection breaks while it runs fails with
:class:`~nxc.transports.ssh.errors.SshError`: it is never re-run behind the caller's back.

Jump hosts (``ProxyJump``) are connected once per :class:`SshHub` and shared by every
node behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shlex
import signal
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from nxc.runtime.transport import CommandResult
from nxc.transports.ssh.errors import (
    HostKeyRejected,
    SshConfigError,
    SshConnectError,
    SshError,
    SshFileError,
)
from nxc.transports.ssh.settings import SshEndpoint, SshSettings

# Marks the stderr line that reports the command's process group. Random per process so
# that a command printing a look-alike line cannot be mistaken for it.
_TOKEN = secrets.token_hex(4)
_PGID_LINE = re.compile(rb"nxc-pgid-" + _TOKEN.encode() + rb" (\d+)\n")
_PGID_WAIT = 5.0  # seconds to wait for the process-group line before giving up on it
_CLOSE_TIMEOUT = 5.0
_OPEN_RETRY = 5.0  # seconds a refused channel is retried on a live connection

# Errors meaning "nobody answered (yet)": worth retrying within retry_for.
_RETRYABLE = (OSError, TimeoutError, asyncssh.ConnectionLost)


def wrap(command: str) -> str:
    """The text sent to sshd for ``command`` (see the module documentation)."""
    return (
        f"printf 'nxc-pgid-{_TOKEN} %s\\n' \"$$\" >&2; exec sh -c {shlex.quote(command)} </dev/null"
    )


def kill_script(pgid: int, grace: float) -> str:
    """Shell text that stops process group ``pgid``: TERM, KILL after ``grace`` s, verify.

    Whether anything of the group is left is read from ``/proc`` (state and group of
    each process), never inferred from ``kill``'s status: a process counts as gone once
    it is a zombie (some init processes reap lazily), and shells disagree on ``kill``'s
    syntax (``kill -TERM -PGID`` is the form dash, bash and busybox all take; dash and
    busybox reject ``kill -TERM -- -PGID``). Exit status 0 when the group is gone, 1
    when something of it survived KILL.
    """
    steps = max(1, round(grace * 10))
    return (
        f"g={pgid}; "
        "alive() { for f in /proc/[0-9]*/stat; do "
        'read -r l 2>/dev/null < "$f" || continue; set -- ${l##*) }; '
        '[ "$3" = "$g" ] && [ "$1" != Z ] && return 0; done; return 1; }; '
        "alive || exit 0; kill -TERM -$g 2>/dev/null; n=0; "
        "while alive; do n=$((n+1)); "
        f'if [ "$n" -gt {steps} ]; then kill -KILL -$g 2>/dev/null; fi; '
        f'if [ "$n" -gt {steps + 30} ]; then exit 1; fi; sleep 0.1; done; exit 0'
    )


def short(command: str, limit: int = 80) -> str:
    one_line = " ".join(command.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def _reason(err: BaseException) -> str:
    if isinstance(err, asyncssh.Error):
        return err.reason or type(err).__name__
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, OSError):
        return err.strerror or str(err) or type(err).__name__
    return str(err) or type(err).__name__


class _Session(asyncssh.SSHClientSession[bytes]):
    """Collects one command's output and exit status; extracts the process-group line."""

    def __init__(self, loop: asyncio.AbstractEventLoop, marked: bool = True) -> None:
        self.stdout = bytearray()
        self.stderr = bytearray()
        self._head = bytearray()
        self.pgid: asyncio.Future[int | None] = loop.create_future()
        if not marked:  # a command sent without the wrapper: no process-group line
            self.pgid.set_result(None)
        self.finished: asyncio.Future[Exception | None] = loop.create_future()
        self.exit_status: int | None = None
        self.exit_signal: str | None = None

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype != asyncssh.EXTENDED_DATA_STDERR:
            self.stdout += data
        elif self.pgid.done():
            self.stderr += data
        else:
            self._head += data
            head = bytes(self._head)
            match = _PGID_LINE.search(head)
            if match:
                self.stderr += head[: match.start()] + head[match.end() :]
                self._head.clear()
                self.pgid.set_result(int(match.group(1)))

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.exit_signal = signal

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.pgid.done():
            self.stderr += self._head
            self.pgid.set_result(None)
        if not self.finished.done():
            self.finished.set_result(exc)

    def status(self) -> int | None:
        if self.exit_status is not None:
            return self.exit_status
        if self.exit_signal is not None:
            try:
                return 128 + signal.Signals[f"SIG{self.exit_signal}"].value
            except KeyError:
                return 255
        return None


@dataclass
class _Started:
    channel: asyncssh.SSHClientChannel[bytes]
    session: _Session


class SshHub:
    """What a group of nodes shares: settings and jump-host connections."""

    def __init__(self, settings: SshSettings) -> None:
        self.settings = settings
        self._jumps: dict[str, asyncssh.SSHClientConnection] = {}
        self._jump_locks: dict[str, asyncio.Lock] = {}

    def _jump_known_hosts(self) -> list[str]:
        known = [str(p) for p in self.settings.known_hosts]
        user_file = Path("~/.ssh/known_hosts").expanduser()
        if user_file.is_file():
            known.append(str(user_file))
        return known

    async def tunnel(self, spec: str) -> asyncssh.SSHClientConnection:
        """The connection to jump host(s) ``spec`` (``[user@]host[:port][,…]``), shared."""
        lock = self._jump_locks.setdefault(spec, asyncio.Lock())
        async with lock:
            conn = self._jumps.get(spec)
            if conn is not None and not conn.is_closed():
                return conn
            previous: asyncssh.SSHClientConnection | None = None
            for hop in spec.split(","):
                user, _, hostport = hop.strip().rpartition("@")
                host, port = hostport, None
                if hostport.startswith("[") and "]" in hostport:
                    host, _, rest = hostport[1:].partition("]")
                    port = int(rest[1:]) if rest.startswith(":") else None
                elif hostport.count(":") == 1:
                    host, _, port_text = hostport.partition(":")
                    port = int(port_text)
                kwargs: dict[str, Any] = {
                    "config": self.settings.config_arg(),
                    "known_hosts": self._jump_known_hosts(),
                    "connect_timeout": self.settings.connect_timeout,
                    "keepalive_interval": self.settings.keepalive_interval,
                    "keepalive_count_max": self.settings.keepalive_count,
                }
                if user:
                    kwargs["username"] = user
                if port is not None:
                    kwargs["port"] = port
                if previous is not None:
                    kwargs["tunnel"] = previous
                try:
                    previous = await asyncssh.connect(host, **kwargs)
                except asyncssh.HostKeyNotVerifiable:
                    raise HostKeyRejected(
                        f"jump host {host}: host key not accepted (not in "
                        f"{', '.join(self._jump_known_hosts())})"
                    ) from None
                except (TimeoutError, asyncssh.Error, OSError) as err:
                    raise SshConnectError(
                        f"jump host {host}: cannot connect: {_reason(err)}"
                    ) from None
            assert previous is not None
            self._jumps[spec] = previous
            return previous

    async def close(self) -> None:
        jumps, self._jumps = list(self._jumps.values()), {}
        for conn in jumps:
            conn.close()
        for conn in jumps:
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(conn.wait_closed(), _CLOSE_TIMEOUT)


class NodeLink:
    """One node's connection and what runs on it (use only from the loop thread)."""

    def __init__(self, endpoint: SshEndpoint, hub: SshHub) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self.hub = hub
        self.settings = hub.settings
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._sftp_conn: asyncssh.SSHClientConnection | None = None
        self._lock: asyncio.Lock | None = None
        self._sessions: asyncio.Semaphore | None = None
        self._options: asyncssh.SSHClientConnectionOptions | None = None
        self._where = endpoint.name
        self.closed = False
        self.connects = 0  # connections made (1 + reconnections), for tests and stats

    # -- connection -------------------------------------------------------------------

    def _primitives(self) -> tuple[asyncio.Lock, asyncio.Semaphore]:
        if self._lock is None or self._sessions is None:
            self._lock = asyncio.Lock()
            self._sessions = asyncio.Semaphore(self.settings.sessions_per_node)
        return self._lock, self._sessions

    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def connection(self) -> asyncssh.SSHClientConnection:
        """The live connection, made (or remade) if needed."""
        if self.closed:
            raise SshError(f"{self.name}: the ssh transport is closed")
        conn = self._conn
        if conn is not None and not conn.is_closed():
            return conn
        lock, _ = self._primitives()
        async with lock:
            conn = self._conn
            if conn is not None and not conn.is_closed():
                return conn
            self._conn = await self._connect()
            self.connects += 1
            return self._conn

    async def _resolve(self) -> asyncssh.SSHClientConnectionOptions:
        if self._options is None:
            kwargs = self.settings.connect_kwargs(self.endpoint)
            host = kwargs.pop("host", self.name)
            try:
                self._options = await asyncssh.SSHClientConnectionOptions.construct(
                    host=host, **kwargs
                )
            except (OSError, ValueError, asyncssh.Error) as err:
                raise SshConfigError(
                    f"{self.name}: cannot read the ssh settings: {_reason(err)}"
                ) from None
            options = self._options
            jump = options.tunnel if isinstance(options.tunnel, str) else None
            self._where = f"{options.host}:{options.port}" + (f" via {jump}" if jump else "")
        return self._options

    async def _connect(self) -> asyncssh.SSHClientConnection:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.retry_for
        delay = 0.1
        attempts = 0
        while True:
            attempts += 1
            try:
                return await self._connect_once()
            except SshError:
                raise
            except _RETRYABLE as err:
                if loop.time() + delay > deadline:
                    tried = (
                        f" ({attempts} attempts in {self.settings.retry_for:g}s)"
                        if attempts > 1
                        else ""
                    )
                    raise SshConnectError(
                        f"{self.name}: cannot connect to {self._where}: {self._explain(err)}{tried}"
                    ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _explain(self, err: BaseException) -> str:
        if isinstance(err, TimeoutError):
            return f"no answer within {self.settings.connect_timeout:g}s"
        if isinstance(err, ConnectionRefusedError):
            return "connection refused (is sshd running?)"
        if isinstance(err, asyncssh.ConnectionLost | ConnectionResetError):
            return f"connection closed during the handshake ({_reason(err)}; is sshd running?)"
        return _reason(err)

    async def _connect_once(self) -> asyncssh.SSHClientConnection:
        options = await self._resolve()
        kwargs: dict[str, Any] = {"options": options}
        if isinstance(options.tunnel, str) and options.tunnel.lower() != "none":
            kwargs["tunnel"] = await self.hub.tunnel(options.tunnel)
        try:
            return await asyncssh.connect(options.orig_host or self.name, **kwargs)
        except asyncssh.HostKeyNotVerifiable:
            raise HostKeyRejected(self._host_key_message(options)) from None
        except asyncssh.PermissionDenied as err:
            raise SshConnectError(
                f"{self.name}: {self._where} refused user {options.username}'s keys "
                f"({_reason(err)})"
            ) from None
        except (TimeoutError, asyncssh.ConnectionLost, OSError):
            raise
        except asyncssh.Error as err:
            raise SshConnectError(
                f"{self.name}: cannot connect to {self._where}: {_reason(err)}"
            ) from None

    def _host_key_message(self, options: asyncssh.SSHClientConnectionOptions) -> str:
        files = ", ".join(str(p) for p in self.settings.known_hosts)
        lookup = options.host_key_alias or options.host
        try:
            known = asyncssh.read_known_hosts([str(p) for p in self.settings.known_hosts])
            keys = known.match(lookup, "", options.port)[0]
        except (OSError, ValueError):
            keys = []
        if not keys:
            return (
                f"{self.name}: host key not accepted: {files} has no key for "
                f"{lookup} (port {options.port})"
            )
        return (
            f"{self.name}: host key mismatch: {self._where} presented a key that is not the "
            f"one {files} lists for {lookup} (node reinstalled, or not the node you think)"
        )

    # -- commands ---------------------------------------------------------------------

    async def _open(self, text: str, marked: bool = True) -> _Started:
        """Open a session channel running ``text``; the command has not run if this fails.

        A connection found dead is replaced once. A refused channel on a live connection
        is retried for a few seconds: sshd frees a session slot a moment after the
        channel closes, so a burst of commands can briefly exceed its ``MaxSessions``.
        """
        loop = asyncio.get_running_loop()
        reconnected = False
        deadline = loop.time() + _OPEN_RETRY
        delay = 0.02
        while True:
            conn = await self.connection()
            try:
                channel, session = await conn.create_session(
                    lambda: _Session(loop, marked), text, encoding=None
                )
            except (asyncssh.ChannelOpenError, asyncssh.ConnectionLost, OSError) as err:
                if conn.is_closed() and not reconnected:
                    # The connection died (rebooted node, restarted sshd) before the
                    # channel opened: the command did not start; reconnect and retry.
                    reconnected = True
                    continue
                if (
                    isinstance(err, asyncssh.ChannelOpenError)
                    and not conn.is_closed()
                    and loop.time() + delay < deadline
                ):
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.5)
                    continue
                raise SshError(
                    f"{self.name}: cannot start a command on {self._where}: {_reason(err)}"
                ) from None
            channel.write_eof()
            assert isinstance(session, _Session)
            return _Started(channel, session)

    async def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run ``command`` (``sh -c``); on timeout kill it and raise ``TimeoutError``."""
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        _, sessions = self._primitives()
        async with sessions:
            opening = asyncio.ensure_future(self._open(wrap(command)))
            try:
                started = await asyncio.shield(opening)
            except asyncio.CancelledError:
                # Interrupted while the channel opened: the command may start anyway.
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    started = await asyncio.wait_for(opening, self.settings.connect_timeout)
                    await self._stop(started)
                raise
            try:
                done, _ = await asyncio.wait({started.session.finished}, timeout=timeout)
            except asyncio.CancelledError:
                await self._stop(started)
                raise
            if not done:
                outcome = await self._stop(started)
                raise TimeoutError(
                    f"{self.name}: `{short(command)}` timed out after {timeout:g}s; {outcome}"
                )
            return self._result(started, command)

    def _result(self, started: _Started, command: str) -> CommandResult:
        session = started.session
        status = session.status()
        lost = session.finished.result()
        if status is None:
            why = f": {_reason(lost)}" if lost else ""
            raise SshError(
                f"{self.name}: connection lost while running `{short(command)}`{why} "
                "(node rebooted or sshd stopped?)"
            )
        return CommandResult(status, bytes(session.stdout), bytes(session.stderr))

    async def _stop(self, started: _Started) -> str:
        """Kill the command's process group on the node; say how it went."""
        session = started.session
        try:
            if session.finished.done():
                return "it had already ended"
            try:
                pgid = await asyncio.wait_for(asyncio.shield(session.pgid), _PGID_WAIT)
            except TimeoutError:
                pgid = None
            if pgid is None:
                return "its process group was never reported, so it may still run on the node"
            grace = self.settings.kill_grace
            try:
                result = await asyncio.wait_for(
                    self._plain(kill_script(pgid, grace)), grace + 3 + _PGID_WAIT
                )
            except (TimeoutError, SshError) as err:
                return f"killing its process group {pgid} failed: {_reason(err)}"
            if result.status != 0:
                return f"its process group {pgid} survived SIGKILL"
            return f"its process group {pgid} was killed on the node"
        finally:
            started.channel.close()

    async def _plain(self, text: str) -> CommandResult:
        """Run ``text`` as is (no wrapper, no session limit): used to kill commands."""
        started = await self._open(text, marked=False)
        session = started.session
        lost = await session.finished
        status = session.status()
        if status is None:
            raise SshError(f"{self.name}: connection lost: {_reason(lost) if lost else '?'}")
        return CommandResult(status, bytes(session.stdout), bytes(session.stderr))

    # -- files ------------------------------------------------------------------------

    async def sftp(self) -> asyncssh.SFTPClient:
        conn = await self.connection()
        if self._sftp is None or self._sftp_conn is not conn:
            try:
                self._sftp = await conn.start_sftp_client()
            except (asyncssh.Error, OSError) as err:
                raise SshError(f"{self.name}: cannot start sftp: {_reason(err)}") from None
            self._sftp_conn = conn
        return self._sftp

    async def put(self, source: Path, target: str) -> None:
        """Copy a host file to ``target`` on the node: written aside, renamed over it."""
        what = f"{source} to {self.name}:{target}"
        try:
            info = os.stat(source)
        except OSError as err:
            raise SshFileError(f"{self.name}: cannot copy {what}: {_reason(err)}") from None
        if not stat.S_ISREG(info.st_mode):
            raise SshFileError(f"{self.name}: cannot copy {what}: not a regular file")
        sftp = await self.sftp()
        stage = f"{target}.nxc-put-{secrets.token_hex(4)}"
        try:
            await sftp.put(str(source), stage, preserve=False)
            await sftp.chmod(stage, stat.S_IMODE(info.st_mode))
            try:
                await sftp.posix_rename(stage, target)
            except asyncssh.SFTPOpUnsupported:
                # Servers without the posix-rename extension: not atomic, but correct.
                with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                    await sftp.remove(target)
                await sftp.rename(stage, target)
        except (asyncssh.SFTPError, OSError) as err:
            with contextlib.suppress(Exception):
                await sftp.remove(stage)
            raise SshFileError(f"{self.name}: cannot copy {what}: {_reason(err)}") from None
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(sftp.remove(stage))
            raise

    async def get(self, source: str, target: Path) -> None:
        """Copy the node's regular file ``source`` to ``target`` on the host."""
        what = f"{self.name}:{source} to {target}"
        sftp = await self.sftp()
        try:
            attrs = await sftp.stat(source)
        except (asyncssh.SFTPError, OSError) as err:
            raise SshFileError(f"{self.name}: cannot copy {what}: {_reason(err)}") from None
        if attrs.type != asyncssh.FILEXFER_TYPE_REGULAR:
            raise SshFileError(f"{self.name}: cannot copy {what}: not a regular file")
        partial = target.with_name(f".{target.name}.nxc-get-{secrets.token_hex(4)}")
        try:
            await sftp.get(source, str(partial), preserve=False)
            os.chmod(partial, stat.S_IMODE(attrs.permissions or 0o644))
            os.replace(partial, target)
        except (asyncssh.SFTPError, OSError) as err:
            raise SshFileError(f"{self.name}: cannot copy {what}: {_reason(err)}") from None
        finally:
            partial.unlink(missing_ok=True)

    # -- closing ----------------------------------------------------------------------

    async def disconnect(self) -> None:
        """Close the connection (a later command reconnects unless :meth:`close`)."""
        conn, self._conn = self._conn, None
        self._sftp = self._sftp_conn = None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(conn.wait_closed(), _CLOSE_TIMEOUT)

    async def close(self) -> None:
        self.closed = True
        await self.disconnect()
