"""A node that is this host: commands run with ``sh -c`` in a private working directory.

:class:`LocalNodeControl` implements :class:`~nxc.runtime.transport.NodeControl` and
:class:`LocalTransport` implements :class:`~nxc.runtime.transport.Transport`, for real:
commands are real processes on this machine. It is what the unit tests of
:class:`~nxc.driver.machine.Machine` run against, and lets a user try a scenario's
logic (``nxc driver --local``-style) without booting anything.

What a local node is, and is not:

* its working directory is a temporary directory (or the ``root`` given), so relative
  paths in commands stay private to the node; absolute paths are this host's;
* ``start()`` marks the node running and ``shutdown()`` / ``crash()`` mark it stopped:
  there is nothing to boot or power off, but the running state is honoured (a stopped
  node refuses commands, like a powered-off VM), so lifecycle logic can be tested;
  ``crash()`` also kills commands still running on the node;
* ``block()`` / ``unblock()`` raise :class:`LocalNodeUnsupported`: a local node has no
  experiment NIC to cut;
* ``console_tail()`` returns the last commands run and their output, which is the
  closest thing a local node has to a console.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import weakref
from collections import deque
from collections.abc import Mapping
from pathlib import Path

from nxc.errors import NxcError
from nxc.runtime.node import Capability
from nxc.runtime.transport import CommandResult, FileTransferError, TransportError

__all__ = ["LocalNodeControl", "LocalNodeUnsupported", "LocalTransport"]


class LocalNodeUnsupported(NxcError):
    """The operation needs a real node (a VM, container or remote host)."""


class LocalTransport:
    """Runs commands with ``sh -c`` on this host, in ``cwd``, stdin from /dev/null.

    On timeout the command's whole process group is killed and ``TimeoutError`` is
    raised. Like every transport, ``run`` returns when the command has exited *and*
    closed its standard output (a command that leaves a background process holding
    stdout open makes ``run`` wait for it).
    """

    def __init__(
        self,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        *,
        shell: str = "/bin/sh",
        on_output: _Recorder | None = None,
        name: str = "local",
    ) -> None:
        self.name = name
        self.cwd = cwd
        self.env = dict(os.environ if env is None else env)
        self.shell = shell
        self._recorder = on_output
        self._closed = False
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        if self._closed:
            raise TransportError("local transport is closed (the node was stopped)")
        try:
            proc = subprocess.Popen(
                [self.shell, "-c", command],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as err:
            raise TransportError(f"cannot run {self.shell} in {self.cwd}: {err}") from err
        with self._lock:
            self._procs.add(proc)
        try:
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.communicate()
                if self._recorder is not None:
                    self._recorder.note(command, f"(killed after {timeout}s)")
                raise TimeoutError(f"command timed out after {timeout}s") from None
            except KeyboardInterrupt:
                _kill_group(proc)
                proc.communicate()
                raise KeyboardInterrupt(
                    f"{self.name}: interrupted; the command was killed on {self.name}"
                ) from None
        finally:
            with self._lock:
                self._procs.discard(proc)
        if self._closed and proc.returncode < 0:
            raise TransportError("the node stopped while the command was running")
        if self._recorder is not None:
            self._recorder.note(command, (stdout + stderr).decode(errors="replace"))
        return CommandResult(proc.returncode, stdout, stderr)

    def put(self, source: Path, target: str) -> None:
        """Copy ``source`` to ``target`` (relative to the node's directory), atomically."""
        self._copy(Path(source), self.cwd / target, f"{source} to {target}")

    def get(self, source: str, target: Path) -> None:
        """Copy the node's ``source`` (relative to its directory) to ``target``."""
        self._copy(self.cwd / source, Path(target), f"{source} to {target}")

    def _copy(self, source: Path, target: Path, what: str) -> None:
        if self._closed:
            raise TransportError("local transport is closed (the node was stopped)")
        partial = target.with_name(f".{target.name}.nxc-copy-{os.getpid()}-{threading.get_ident()}")
        try:
            if not source.is_file():
                raise FileTransferError(f"{self.name}: cannot copy {what}: not a regular file")
            shutil.copyfile(source, partial)
            shutil.copymode(source, partial)
            os.replace(partial, target)
        except OSError as err:
            raise FileTransferError(f"{self.name}: cannot copy {what}: {err}") from None
        finally:
            partial.unlink(missing_ok=True)

    def kill_all(self) -> None:
        """Kill every command still running through this transport."""
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            _kill_group(proc)

    def close(self) -> None:
        """Refuse further commands and kill those in flight (they fail with TransportError)."""
        self._closed = True
        self.kill_all()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


class _Recorder:
    """Keeps the last lines of commands and output, as a stand-in for a console."""

    def __init__(self, lines: int = 200) -> None:
        self._lines: deque[str] = deque(maxlen=lines)
        self._lock = threading.Lock()

    def note(self, command: str, output: str) -> None:
        with self._lock:
            self._lines.append(f"$ {command}")
            self._lines.extend(output.splitlines())

    def line(self, text: str) -> None:
        with self._lock:
            self._lines.append(text)

    def tail(self, lines: int) -> str:
        with self._lock:
            return "\n".join(list(self._lines)[-lines:]) if lines > 0 else ""


class LocalNodeControl:
    """NodeControl for a node that is this host (see the module documentation).

    ``root``: the node's working directory (default: a new temporary directory,
    removed by :meth:`close`); ``env``: the commands' environment (default: this
    process's, plus ``NXC_NODE``); ``running``: whether the node starts out running.
    """

    flavour = "local"
    capabilities = frozenset({Capability.POWER, Capability.CRASH, Capability.CONSOLE})
    # Machine runs commands in /tmp on real nodes; a local node keeps its own directory
    command_workdir: str | None = None

    def __init__(
        self,
        name: str = "local",
        root: Path | None = None,
        env: Mapping[str, str] | None = None,
        *,
        running: bool = True,
        shell: str = "/bin/sh",
    ) -> None:
        self.name = name
        self._owns_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix=f"nxc-local-{name}-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        # where Machine keeps a command's output while its background jobs finish
        # (on real nodes: $TMPDIR or /tmp); private, removed by close()
        self.command_tmpdir = tempfile.mkdtemp(prefix=f"nxc-local-{name}-out-")
        weakref.finalize(self, shutil.rmtree, self.command_tmpdir, True)  # if never closed
        base = dict(os.environ if env is None else env)
        base.setdefault("NXC_NODE", name)
        self.env = base
        self.shell = shell
        self._console = _Recorder()
        self._running = running
        self._transport: LocalTransport | None = None
        self._lock = threading.Lock()

    def transport(self) -> LocalTransport:
        with self._lock:
            if not self._running:
                raise TransportError(f"{self.name} is not running")
            if self._transport is None:
                self._transport = LocalTransport(
                    self.root, self.env, shell=self.shell, on_output=self._console, name=self.name
                )
            return self._transport

    def is_running(self) -> bool:
        return self._running

    def boot_id(self) -> str | None:
        return f"local-{id(self):x}" if self._running else None

    def start(self, timeout: float = 120.0) -> None:
        with self._lock:
            if not self._running:
                self._console.line(f"nxc-local: {self.name} started")
            self._running = True

    def shutdown(self, timeout: float = 60.0) -> None:
        self._stop("shut down")

    def crash(self) -> None:
        self._stop("crashed")

    def _stop(self, how: str) -> None:
        with self._lock:
            transport, self._transport = self._transport, None
            was_running, self._running = self._running, False
        if transport is not None:
            transport.close()
            transport.kill_all()
        if was_running:
            self._console.line(f"nxc-local: {self.name} {how}")

    def block(self) -> None:
        raise LocalNodeUnsupported(
            f"{self.name}: block() needs a real node; a local node has no experiment NIC"
        )

    def unblock(self) -> None:
        raise LocalNodeUnsupported(
            f"{self.name}: unblock() needs a real node; a local node has no experiment NIC"
        )

    def pause(self) -> None:
        raise LocalNodeUnsupported(f"{self.name}: pause() needs a real node")

    def resume(self) -> None:
        raise LocalNodeUnsupported(f"{self.name}: resume() needs a real node")

    def console_tail(self, lines: int = 20) -> str:
        return self._console.tail(lines)

    def close(self) -> None:
        """Stop the node and remove its working directory if this object created it."""
        self._stop("closed")
        shutil.rmtree(self.command_tmpdir, ignore_errors=True)
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)
