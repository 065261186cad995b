"""``docker exec`` through the SDK: the driver's transport to a container.

Each command is one exec on the daemon's persistent API client: ``/bin/sh`` runs the
command (stdin from /dev/null) with its output in files, then sends them on the
exec's stream, read here with a deadline. Files rather than the stream itself: a
daemon a command starts keeps its copy of them, and the exec ends when the command
does (as on the VMs' backdoor). Every exec carries ``NXC_EXEC=<token>`` in its
environment, inherited by everything it starts: on a timeout or a Ctrl-C, a second
exec stops every process holding that token (TERM, then KILL), since Docker itself
has no call to stop an exec.

Files travel through the archive API, staged on the container's root file system:
the daemon's archive calls do not see tmpfs mounts (``/tmp``, ``/run``), so a small
exec moves the staged file to (or from) its place, renaming it there atomically.
"""

from __future__ import annotations

import contextlib
import io
import secrets
import shlex
import socket as pysocket
import stat
import struct
import tarfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nxc.runtime.transport import CommandResult, TransportError
from nxc.wait import Attempt, PollExpired, poll

__all__ = ["DockerExecTransport", "kill_script", "start_exec"]

SHELL = "/bin/sh"
# How long killing a command may take on the node (TERM, grace, KILL, check).
KILL_TIMEOUT = 15.0
KILL_GRACE = 2.0
# How long the daemon may take to record an exec's status once its output ended.
STATUS_TIMEOUT = 30.0
_HEADER = struct.Struct(">BxxxL")
_TOKEN_BYTES = 12


def _short(command: str, limit: int = 60) -> str:
    one_line = " ".join(command.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


# Runs the command ($1) with its output in files named after the exec's token, then
# sends them (the token makes the names unique; /run is a tmpfs in nxc's containers).
WRAPPER = (
    "o=/run/.nxc-exec-$NXC_EXEC; [ -w /run ] || o=/tmp/.nxc-exec-$NXC_EXEC; "
    '( eval "$1" ) </dev/null >"$o.out" 2>"$o.err"; s=$?; '
    'cat "$o.out"; cat "$o.err" >&2; rm -f "$o.out" "$o.err"; exit $s'
)


def kill_script(token: str, grace: float = KILL_GRACE) -> str:
    """Shell text stopping every process whose environment holds ``NXC_EXEC=token``:
    TERM, KILL after ``grace`` seconds; exit status 0 once none is left (a zombie's
    environment is empty: it counts as gone). Removes the command's output files."""
    steps = max(1, int(grace * 10))
    return (
        f"t=NXC_EXEC={token}; rm -f /run/.nxc-exec-{token}.* /tmp/.nxc-exec-{token}.*; "
        'mine() { for d in /proc/[0-9]*; do grep -q "$t" "$d/environ" 2>/dev/null && '
        'echo "${d#/proc/}"; done; }; '
        'p=$(mine); [ -n "$p" ] || exit 0; kill -TERM $p 2>/dev/null; n=0; '
        f'while [ "$n" -lt {steps} ]; do sleep 0.1; p=$(mine); [ -n "$p" ] || exit 0; '
        "n=$((n + 1)); done; kill -KILL $p 2>/dev/null; sleep 0.1; p=$(mine); "
        '[ -z "$p" ]'
    )


def start_exec(api: Any, exec_id: str, tty: bool) -> tuple[Any, Any, Any]:
    """Start exec ``exec_id`` attached: its HTTP response, the buffered reader to read
    its output from, and the socket under it (timeouts, input).

    The SDK's ``exec_start(socket=True)`` hands out the socket alone, and bytes the
    response's reader took along with the HTTP headers would be lost: under load, the
    first output of a fast command can arrive that early. So the same request is made
    here and the output read through that reader.
    """
    response = api._post_json(
        api._url("/exec/{0}/start", exec_id),
        headers={"Connection": "Upgrade", "Upgrade": "tcp"},
        data={"Tty": tty, "Detach": False},
        stream=True,
    )
    api._raise_for_status(response)
    reader = response.raw._fp.fp
    return response, reader, reader.raw._sock


class _Stream:
    """The multiplexed output of one exec (8-byte frame headers: stream, length)."""

    def __init__(self, response: Any, reader: Any, socket: Any) -> None:
        self.response = response
        self.reader = reader
        self.socket = socket
        self.stdout = bytearray()
        self.stderr = bytearray()
        self._pending = bytearray()

    def read_all(self, deadline: float | None) -> None:
        """Until the exec's output ends; ``TimeoutError`` at ``deadline``."""
        while True:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                raise TimeoutError
            self.socket.settimeout(timeout)
            chunk = self.reader.read1(1 << 16)
            if not chunk:
                return
            self._pending += chunk
            while len(self._pending) >= _HEADER.size:
                kind, size = _HEADER.unpack_from(self._pending)
                if len(self._pending) < _HEADER.size + size:
                    break
                data = self._pending[_HEADER.size : _HEADER.size + size]
                del self._pending[: _HEADER.size + size]
                (self.stderr if kind == 2 else self.stdout).extend(data)

    def close(self) -> None:
        # shutdown() first: it wakes a thread blocked reading this socket (close does not)
        with contextlib.suppress(Exception):
            self.socket.shutdown(pysocket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            self.socket.close()
        with contextlib.suppress(Exception):
            self.response.close()


class DockerExecTransport:
    """Run commands in one container through ``docker exec`` (thread-safe: each
    command has its own exec and stream)."""

    def __init__(
        self, api: Any, container: str, name: str, environment: Mapping[str, str] | None = None
    ) -> None:
        self.api = api
        self.container = container
        self.name = name
        self.environment = dict(environment or {})
        self._lock = threading.Lock()
        self._streams: dict[_Stream, str] = {}  # in flight -> its token
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError(f"{self.name}: docker exec transport is closed")

    def _api_error(self, doing: str, exc: Exception) -> TransportError:
        from docker.errors import APIError

        if isinstance(exc, APIError):
            reason = exc.explanation or str(exc)
        else:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return TransportError(f"{self.name}: docker exec {doing}: {reason}")

    # -- commands -------------------------------------------------------------------

    def _start(self, argv: list[str], environment: Mapping[str, str]) -> tuple[str, _Stream]:
        from docker.errors import DockerException
        from requests.exceptions import RequestException

        try:
            created = self.api.exec_create(
                self.container,
                argv,
                stdout=True,
                stderr=True,
                stdin=False,
                tty=False,
                environment=dict(environment),
                workdir="/",
            )
            stream = _Stream(*start_exec(self.api, created["Id"], tty=False))
        except (DockerException, RequestException, OSError) as exc:
            raise self._api_error("failed to start", exc) from None
        return created["Id"], stream

    def _status(self, exec_id: str) -> int:
        from docker.errors import DockerException
        from requests.exceptions import RequestException

        # The stream ends as the process exits; the daemon records its status a moment
        # later.
        def exited(_remaining: float) -> Attempt[int]:
            try:
                state = self.api.exec_inspect(exec_id)
            except (DockerException, RequestException, OSError) as exc:
                raise self._api_error("status unknown", exc) from None
            if not state.get("Running") and state.get("ExitCode") is not None:
                return Attempt.ok(int(state["ExitCode"]))
            return Attempt.not_yet(f"running={state.get('Running')}")

        try:
            return poll("the exec's exit status", exited, STATUS_TIMEOUT, first=0.002, longest=0.1)
        except PollExpired as exc:
            raise TransportError(f"{self.name}: docker exec: {exc}") from None

    def _kill(self, token: str) -> bool:
        """Stop the processes of one command; whether that was confirmed."""
        try:
            _id, stream = self._start([SHELL, "-c", kill_script(token)], self.environment)
        except TransportError:
            return False
        try:
            stream.read_all(time.monotonic() + KILL_TIMEOUT)
            return self._status(_id) == 0
        except (TimeoutError, OSError, TransportError):
            return False
        finally:
            stream.close()

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run ``command`` with ``sh -c`` in the container; see :class:`Transport`."""
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._check_open()
        token = secrets.token_hex(_TOKEN_BYTES)
        environment = {**self.environment, "NXC_EXEC": token}
        exec_id, stream = self._start([SHELL, "-c", WRAPPER, "nxc-exec", command], environment)
        with self._lock:
            self._streams[stream] = token
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            stream.read_all(deadline)
            if self._closed:
                raise OSError("closed")
        except TimeoutError:
            stream.close()
            killed = self._kill(token)
            raise TimeoutError(
                f"{self.name}: `{_short(command)}` still running after {timeout:g}s: "
                + ("killed it" if killed else "could not confirm it was killed")
            ) from None
        except KeyboardInterrupt:
            stream.close()
            self._kill(token)
            raise
        except OSError as exc:
            stream.close()
            if self._closed:
                raise TransportError(f"{self.name}: transport closed while running") from None
            raise TransportError(
                f"{self.name}: docker exec stream broke while running `{_short(command)}`: "
                f"{exc.strerror or exc} (the container stopped?)"
            ) from None
        finally:
            with self._lock:
                self._streams.pop(stream, None)
        stream.close()
        return CommandResult(self._status(exec_id), bytes(stream.stdout), bytes(stream.stderr))

    def _checked(self, command: str, what: str) -> None:
        result = self.run(command, 120)
        if result.status != 0:
            detail = result.stderr.decode(errors="replace").strip().splitlines()
            raise TransportError(
                f"{self.name}: {what} failed (status {result.status})"
                + (f": {detail[-1]}" if detail else "")
            )

    # -- files ----------------------------------------------------------------------

    def put(self, source: Path, target: str) -> None:
        """Copy the host's regular file ``source`` to ``target`` (atomic, mode kept)."""
        from docker.errors import DockerException
        from requests.exceptions import RequestException

        self._check_open()
        try:
            info = source.stat()
            if not stat.S_ISREG(info.st_mode):
                raise TransportError(f"{self.name}: cannot copy {source}: not a regular file")
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as archive, source.open("rb") as data:
                member = tarfile.TarInfo(f".nxc-put-{secrets.token_hex(6)}")
                member.size = info.st_size
                member.mode = stat.S_IMODE(info.st_mode)
                member.mtime = int(info.st_mtime)
                archive.addfile(member, data)
        except OSError as exc:
            raise TransportError(
                f"{self.name}: cannot copy {source} to {target}: {exc.strerror}"
            ) from None
        stage = "/" + member.name
        try:
            if not self.api.put_archive(self.container, "/", buffer.getvalue()):
                raise TransportError(f"{self.name}: the daemon refused the copy of {source}")
        except (DockerException, RequestException) as exc:
            raise self._api_error(f"copy of {source} to {target}", exc) from None
        q_stage, q_target = shlex.quote(stage), shlex.quote(target)
        near = shlex.quote(f"{target}.nxc-put-{secrets.token_hex(4)}")
        # Next to the target first (a copy if it lies on another file system), then one
        # rename: the target is the old file or the whole new one.
        self._checked(
            f"mv -f {q_stage} {near} && mv -f {near} {q_target} "
            f"|| {{ s=$?; rm -f {q_stage} {near}; exit $s; }}",
            f"writing {target}",
        )

    def get(self, source: str, target: Path) -> None:
        """Copy the container's regular file ``source`` to ``target`` (atomic, mode kept)."""
        from docker.errors import DockerException
        from requests.exceptions import RequestException

        self._check_open()
        stage = f"/.nxc-get-{secrets.token_hex(6)}"
        q_source, q_stage = shlex.quote(source), shlex.quote(stage)
        self._checked(
            f"if [ ! -e {q_source} ]; then echo 'no such file' >&2; exit 2; fi; "
            f"if [ ! -f {q_source} ]; then echo 'not a regular file' >&2; exit 2; fi; "
            f"cp -p {q_source} {q_stage}",
            f"reading {source}",
        )
        partial = target.with_name(f".{target.name}.nxc-get-{secrets.token_hex(4)}")
        try:
            chunks, _stat = self.api.get_archive(self.container, stage)
            raw = io.BytesIO()
            for chunk in chunks:
                raw.write(chunk)
            raw.seek(0)
            with tarfile.open(fileobj=raw, mode="r") as archive:
                member = archive.next()
                data = archive.extractfile(member) if member is not None else None
                if member is None or data is None:
                    raise TransportError(f"{self.name}: copying {source}: empty archive")
                with partial.open("wb") as out:
                    while piece := data.read(1 << 20):
                        out.write(piece)
                partial.chmod(stat.S_IMODE(member.mode))
            partial.replace(target)
        except (DockerException, RequestException) as exc:
            raise self._api_error(f"copy of {source}", exc) from None
        except (OSError, tarfile.TarError) as exc:
            raise TransportError(f"{self.name}: cannot write {source} to {target}: {exc}") from None
        finally:
            partial.unlink(missing_ok=True)
            with contextlib.suppress(TransportError, TimeoutError):
                self.run(f"rm -f {q_stage}", 30)

    def close(self) -> None:
        """Close now: commands in flight fail with ``TransportError``, later calls too.

        Their processes are stopped in the background (best effort: close never waits).
        """
        self._closed = True
        with self._lock:
            in_flight = dict(self._streams)
        for stream in in_flight:
            stream.close()
        if in_flight:

            def kill_all() -> None:
                for token in in_flight.values():
                    self._kill(token)

            threading.Thread(target=kill_all, name=f"nxc-kill-{self.name}", daemon=True).start()

    def __repr__(self) -> str:
        return f"DockerExecTransport({self.container!r}, {self.name!r})"
