"""``Machine``: one node of an experiment, with the NixOS-test scenario API.

A ``Machine`` wraps the :class:`~nxc.runtime.transport.NodeControl` a flavour's
runtime gives for one node. Its methods read like a scenario::

    server.wait_for_open_port(80)
    client.succeed("wget -O- http://server/")
    server.crash()
    client.wait_until_fails("wget -T 2 -O- http://server/", timeout=30)

Scenario commands run as on the NixOS test driver: in ``/tmp``, with bash and
``set -euo pipefail`` when the node has bash (else ``sh`` with ``set -eu`` and pipefail
where the shell has it; ``strict=False`` drops that prelude), and their answer waits
for every writer of their standard output (background jobs included). Durations are
``datetime.timedelta`` or seconds everywhere (:mod:`nxc.driver.duration`).

Failures raise :class:`~nxc.errors.MachineError` (a :class:`CommandFailed` carrying the
node, command, status and output, worded as NixOS: ``command `false` failed (exit code
1)``, ``unexpectedly succeeded``); waits that run out of time raise
:class:`~nxc.errors.WaitTimeout` (a :class:`WaitExpired`: ``action timed out after …``,
then what it waited for and what it saw last). Every command and its (truncated)
output is logged.
"""

from __future__ import annotations

import base64
import re
import shlex
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nxc.driver.duration import Duration, optional_seconds, seconds
from nxc.errors import MachineError, NxcError, WaitTimeout
from nxc.log import Logger, Span
from nxc.log import log as default_log
from nxc.runtime.node import Capability, CapabilityMissing, NodeControl, require
from nxc.runtime.transport import (
    CommandResult,
    FileTransferError,
    NodeUnreachable,
    OutputTruncated,
    Transport,
    TransportError,
)
from nxc.wait import Attempt, PollExpired, poll

__all__ = [
    "CommandFailed",
    "ConnectionLost",
    "Machine",
    "WaitExpired",
    "tail",
]

# Preamble of every command in strict mode: exit on the first failing command and on
# unset variables; fail pipelines on any failing stage where the shell supports it
# (``command`` keeps an unsupported option from exiting dash).
# One line, so that one-line commands keep the backdoor's cheap raw form.
STRICT_PRELUDE = "set -eu; command set -o pipefail 2>/dev/null || :; "

# Poll back-off of the wait_* methods: first pause, growth factor, longest pause.
BACKOFF_FIRST = 0.05
BACKOFF_FACTOR = 2.0
BACKOFF_MAX = 1.0

# Status a command gets when its time limit ran out (as coreutils ``timeout``).
TIMEOUT_STATUS = 124

# Probe a TCP port with whatever the node has: an ``nc`` with ``-z`` (OpenBSD,
# traditional, ncat), busybox ``nc -e true`` (connects, then runs ``true``), or bash's
# /dev/tcp. Exit 0 = something accepted the connection, 1 = nothing did, 3 = no tool.
_PORT_PROBE = r"""
nxc_port() {
  if command -v nc >/dev/null 2>&1; then
    h=$(nc -h 2>&1 || :)
    case $h in
      *[[:space:]]-z[[:space:],]*)
        nc -z -w 2 "$1" "$2" </dev/null >/dev/null 2>&1 && return 0; return 1;;
      *"-e PROG"*)
        nc -w 2 "$1" "$2" -e true </dev/null >/dev/null 2>&1 && return 0; return 1;;
    esac
  fi
  if command -v bash >/dev/null 2>&1; then
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" </dev/null >/dev/null 2>&1 \
      && return 0
    return 1
  fi
  echo "no TCP probe on this node: need nc (with -z or busybox -e) or bash" >&2
  return 3
}
"""
_NO_PROBE_STATUS = 3

# console_tail(lines) large enough for all a runtime shows of a console
_WHOLE_CONSOLE = 10_000_000
# how much of the console seen so far is looked for in the runtime's window to find
# where the new output starts
_CONSOLE_ANCHOR = 512

# Units that mean "the node is up" on an image without systemd: the first line of most
# NixOS tests waits for one of them.
BOOT_TARGETS = frozenset({"multi-user.target", "network.target", "network-online.target"})


def tail(text: str, lines: int = 10, chars: int = 2000) -> str:
    """The last ``lines`` lines (at most ``chars`` characters) of ``text``."""
    text = text.rstrip("\n")
    if not text:
        return ""
    kept = text.splitlines()
    dropped = max(0, len(kept) - lines)
    result = "\n".join(kept[-lines:])
    if len(result) > chars:
        result = "…" + result[-chars:]
    if dropped:
        result = f"[… {dropped} earlier lines]\n{result}"
    return result


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _short(command: str, chars: int = 200) -> str:
    one_line = " ⏎ ".join(part.strip() for part in command.strip().splitlines())
    return one_line if len(one_line) <= chars else one_line[: chars - 1] + "…"


class CommandFailed(MachineError):
    """A command's exit status was not the one the scenario required."""

    def __init__(
        self, node: str, command: str, status: int, stdout: str, stderr: str, message: str
    ) -> None:
        super().__init__(message)
        self.node = node
        self.command = command
        self.status = status
        self.stdout = stdout
        self.stderr = stderr


class ConnectionLost(MachineError):
    """The node could not be reached or the channel to it broke."""

    def __init__(self, node: str, message: str) -> None:
        super().__init__(message)
        self.node = node


class WaitExpired(WaitTimeout):
    """A wait ran out of time; ``last`` is what the last attempt saw."""

    def __init__(
        self, node: str, what: str, timeout: float, attempts: int, last: str, message: str
    ) -> None:
        super().__init__(message)
        self.node = node
        self.what = what
        self.timeout = timeout
        self.attempts = attempts
        self.last = last


@dataclass(frozen=True)
class _Outcome:
    status: int
    stdout: str
    stderr: str
    timed_out: bool


class Machine:
    """One node: ``name`` (e.g. ``node1``), its ``role`` and ``index`` (from 1).

    ``control`` is the runtime's handle on the node; ``logger`` defaults to
    :data:`nxc.log.log`; ``out_dir`` is where :meth:`copy_from_machine` puts files
    (default: the driver's ``out_dir``, or the current directory); ``strict`` adds
    the ``set -eu`` / ``pipefail`` prelude to every command (see module docs).

    A machine may be used from several threads: commands to one node run
    concurrently. Ctrl-C while a command runs kills it on the node (the
    ``KeyboardInterrupt`` propagates and says so); :meth:`crash` and :meth:`shutdown`
    never wait for commands in flight, which fail with :class:`ConnectionLost`.
    """

    def __init__(
        self,
        name: str,
        role: str,
        index: int,
        control: NodeControl,
        logger: Logger | None = None,
        *,
        out_dir: Path | None = None,
        strict: bool = True,
        ssh_argv: list[str] | None = None,
        callbacks: list[Callable[[], None]] | None = None,
    ) -> None:
        self._name = name
        self._role = role
        self._index = index
        self._control = control
        self.logger = logger if logger is not None else default_log
        self.out_dir = out_dir
        self.strict = strict
        # ssh command reaching the node (the deployment's endpoint), for forward_port
        self.ssh_argv = ssh_argv
        # called before every command (the driver's polling conditions), as in NixOS
        self.callbacks: list[Callable[[], None]] = list(callbacks or [])
        # Working directory of commands: /tmp as in the NixOS test driver, unless the
        # node is this host (a local node keeps its private directory).
        self.workdir: str | None = getattr(control, "command_workdir", "/tmp")
        # how long a command's answer waits for background jobs still writing to its
        # stdout once the command itself has ended (NixOS waits without limit)
        self.background_grace = 5.0
        self._transport: Transport | None = None
        self._lock = threading.RLock()
        self._has_systemd: bool | None = None
        self._has_bash: bool | None = None
        # the console as seen so far, and how much of it wait_for_console_text consumed
        self._console = ""
        self._console_lock = threading.Lock()
        self._console_seen = 0
        self._forwards: list[subprocess.Popen[bytes]] = []
        # the transport this machine closed last and why ("crashed", "shut down"…):
        # explains why the commands in flight on it lost their channel
        self._dropped: tuple[Transport, str] | None = None

    # -- identity ------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def role(self) -> str:
        return self._role

    @property
    def index(self) -> int:
        return self._index

    @property
    def control(self) -> NodeControl:
        return self._control

    def __repr__(self) -> str:
        return f"<Machine {self._name} role={self._role} index={self._index}>"

    # -- logging helpers -----------------------------------------------------------

    def log(self, message: str, **attrs: Any) -> None:
        """Log ``message`` prefixed with this node's name."""
        self.logger.info(message, node=self._name, **attrs)

    def nested(
        self, message: str, attrs: dict[str, Any] | None = None, **more: Any
    ) -> AbstractContextManager[Span]:
        """A nested log block prefixed with this node's name; ``attrs`` (a dict, as in
        NixOS) and keyword arguments land on its records."""
        merged = {**(attrs or {}), **more}
        merged.pop("node", None)
        merged.pop("machine", None)
        return self.logger.nested(message, node=self._name, **merged)

    def _log_output(self, outcome: _Outcome, *, failed: bool) -> None:
        if outcome.stdout.strip():
            self.logger.info(tail(outcome.stdout, 20, 4000), node=self._name, stream="stdout")
        if outcome.stderr.strip():
            level = "info" if failed else "debug"
            self.logger.log(level, tail(outcome.stderr, 20, 4000), node=self._name, stream="stderr")

    # -- running commands ----------------------------------------------------------

    def _connected(self) -> Transport:
        if self._transport is not None:
            return self._transport
        if not self._control.is_running():
            self.logger.info("node is not running; starting it", node=self._name)
            self.start()
        try:
            self._transport = self._control.transport()
        except (NxcError, TransportError, OSError) as err:
            raise ConnectionLost(
                self._name, f"{self._name}: cannot reach the node: {err}{self._console_hint()}"
            ) from err
        return self._transport

    def _console_hint(self) -> str:
        try:
            console = self._control.console_tail(10)
        except Exception:  # the console itself may be gone; the hint is best effort
            return ""
        return f"\n  console tail:\n{_indent(console)}" if console.strip() else ""

    def _send(self, text: str, timeout: float | None, command: str | None = None) -> CommandResult:
        """Run ``text`` (``command`` plus any prelude; messages show ``command``)."""
        # The lock covers finding the transport only: commands run concurrently (the
        # transport multiplexes them), and crash()/shutdown() never wait for them.
        with self._lock:
            transport = self._connected()
        try:
            return transport.run(text, timeout)
        except TimeoutError:
            return CommandResult(TIMEOUT_STATUS, b"", f"timed out after {timeout}s".encode())
        except OutputTruncated as err:
            # The channel is fine: only this command's output could not be kept.
            raise MachineError(str(err)) from err
        except TransportError as err:
            raise self._lost(transport, text if command is None else command, err) from err

    def _lost(self, transport: Transport, command: str, err: TransportError) -> ConnectionLost:
        with self._lock:
            if self._transport is transport:
                self._transport = None
            dropped = self._dropped
        if isinstance(err, NodeUnreachable):
            return ConnectionLost(
                self._name, f"{self._name}: cannot reach the node: {err}{self._console_hint()}"
            )
        if dropped is not None and dropped[0] is transport:
            return ConnectionLost(
                self._name,
                f"{self._name}: the node was {dropped[1]} while `{_short(command)}` ran",
            )
        return ConnectionLost(
            self._name,
            f"{self._name}: lost the connection running `{_short(command)}`: {err}"
            + self._console_hint(),
        )

    def _bash(self) -> bool:
        """Whether the node has bash (probed once per connection)."""
        if self._has_bash is None:
            probe = self._send("command -v bash >/dev/null 2>&1", 30)
            self._has_bash = probe.status == 0
        return self._has_bash

    def _wrap(self, command: str, strict: bool) -> str:
        """The text the node runs for a scenario's ``command``.

        As in the NixOS test driver: ``/tmp`` as working directory, bash with
        ``set -euo pipefail`` when the node has bash (``sh`` with ``set -eu`` and
        pipefail where supported otherwise), and the answer waits for the writers of
        the command's standard output, so that the output of background jobs it
        started is kept. Unlike NixOS, that wait lasts at most
        :attr:`background_grace` seconds after the command itself ended: a daemon
        left holding stdout does not hang the scenario (its later output is not
        collected; it keeps running, never cut off by a closed pipe).
        """
        bash = self._bash()
        prelude = ("set -euo pipefail; " if bash else STRICT_PRELUDE) if strict else ""
        run = f"{'bash' if bash else 'sh'} -c {shlex.quote(prelude + command)}"
        cd = f"cd {shlex.quote(self.workdir)} 2>/dev/null || :; " if self.workdir else ""
        tmpdir = getattr(self._control, "command_tmpdir", None)
        tmp = shlex.quote(tmpdir) if tmpdir else "${TMPDIR:-/tmp}"
        ticks = max(0, round(self.background_grace * 10))
        # The wrapper is plain sh (forks of a small shell are cheap under emulation).
        # stdout goes through a FIFO that a background `cat` copies into a private
        # file (umask 077 in its own subshell) until the FIFO's last writer closes
        # it. Once the command has ended, watch that `cat` in /proc/PID/stat until it
        # is gone or a zombie: a few reads at once (it normally ends within a
        # millisecond), then 100 ms ticks up to the grace (background jobs still
        # write). Then send the file. A `cat` still running after the grace (a
        # daemon holds the FIFO) keeps neither the answer nor the daemon waiting.
        # Names from the shell's pid (no mktemp process; a name left by a killed
        # command makes mkfifo fail: the command then runs directly), removed on
        # TERM/INT/HUP (timeouts, Ctrl-C) too.
        return (
            f"{cd}nxc_p={tmp}/.nxc-out.$$; nxc_o=$nxc_p.o; "
            f'mkfifo -m 600 "$nxc_p" 2>/dev/null || exec {run}; '
            f'trap \'rm -f "$nxc_p" "$nxc_o"; exit 143\' TERM INT HUP; '
            f'(umask 077; exec cat "$nxc_p" >"$nxc_o") & nxc_c=$!; {run} >"$nxc_p"; nxc_s=$?; '
            f"nxc_i=0; nxc_n=0; while read -r nxc_st 2>/dev/null </proc/$nxc_c/stat; do "
            f'set -- $nxc_st; [ "$3" = Z ] && break; '
            f"if [ $nxc_n -lt 50 ]; then nxc_n=$((nxc_n+1)); continue; fi; "
            f"[ $nxc_i -lt {ticks} ] || break; sleep 0.1; nxc_i=$((nxc_i+1)); done; "
            f'cat "$nxc_o"; rm -f "$nxc_p" "$nxc_o"; exit $nxc_s'
        )

    def _exec(
        self, command: str, timeout: Duration | None, *, strict: bool | None = None
    ) -> _Outcome:
        for callback in self.callbacks:
            callback()
        limit = optional_seconds(timeout)
        use_strict = self.strict if strict is None else strict
        text = self._wrap(command, use_strict)
        started = time.monotonic()
        result = self._send(text, limit, command)
        elapsed = time.monotonic() - started
        timed_out = (
            result.status == TIMEOUT_STATUS and limit is not None and elapsed >= limit * 0.95
        )
        return _Outcome(
            result.status,
            result.stdout.decode(errors="replace"),
            result.stderr.decode(errors="replace"),
            timed_out,
        )

    def run(
        self, command: str, timeout: Duration | None = 900, *, strict: bool = False
    ) -> CommandResult:
        """Run ``command`` as is with ``sh -c`` and return the raw result, without logging.

        For tools built on the driver (netem, event polling): no working directory
        change, no bash, no waiting for background jobs' output. A time limit running
        out gives status 124; a broken channel raises :class:`ConnectionLost`.
        """
        return self._send(
            STRICT_PRELUDE + command if strict else command, optional_seconds(timeout), command
        )

    def execute(
        self,
        command: str,
        check_return: bool = True,
        check_output: bool = True,
        timeout: Duration | None = 900,
    ) -> tuple[int, str]:
        """Run ``command``; return ``(status, stdout)`` whatever the status.

        ``timeout`` (a ``timedelta`` or seconds, ``None`` for none) bounds the command:
        on expiry it is killed and the status is 124. ``check_return=False`` (as in
        NixOS) does not report the status: the result is ``(-1, stdout)``, and a channel
        breaking (a command that powers the node off) gives ``(-1, "")`` instead of an
        error. ``check_output=False`` starts the command in the background on the node
        and returns ``(-2, "")`` at once.
        """
        if not check_output:
            for callback in self.callbacks:
                callback()
            with self.nested(f"execute in background: {_short(command)}"):
                wrapped = self._wrap(command, self.strict)
                quiet = "</dev/null >/dev/null 2>&1 &"
                inner = shlex.quote(wrapped)
                detached = (
                    f"if command -v setsid >/dev/null 2>&1; then setsid sh -c {inner} {quiet} "
                    f"else sh -c {inner} {quiet} fi"
                )
                try:
                    self._send(detached, 30, command)
                except ConnectionLost:
                    if check_return:
                        raise
            return (-2, "")
        with self.nested(f"execute: {_short(command)}") as span:
            try:
                outcome = self._exec(command, timeout)
            except ConnectionLost as err:
                if check_return:
                    raise
                self.logger.info(f"connection lost (tolerated): {err}", node=self._name)
                return (-1, "")
            span.set(status=outcome.status)
            if outcome.timed_out:
                self.logger.warning(
                    f"timed out after {optional_seconds(timeout):g}s", node=self._name
                )
            elif outcome.status != 0:
                self.logger.info(f"exit status {outcome.status}", node=self._name)
            self._log_output(outcome, failed=outcome.status != 0)
            if not check_return:
                return (-1, outcome.stdout)
            return (outcome.status, outcome.stdout)

    def succeed(self, *commands: str, timeout: Duration | None = None) -> str:
        """Run each command; raise :class:`CommandFailed` unless it exits 0
        (``command `…` failed (exit code N)``, as NixOS words it).

        Returns the concatenated standard output. ``timeout`` bounds each command.
        """
        output = ""
        for command in commands:
            with self.nested(f"must succeed: {_short(command)}"):
                outcome = self._exec(command, timeout)
                self._log_output(outcome, failed=outcome.status != 0)
                if outcome.status != 0:
                    raise self._failed(command, outcome, timeout, "failed")
                output += outcome.stdout
        return output

    def fail(self, *commands: str, timeout: Duration | None = None) -> str:
        """Run each command; raise :class:`CommandFailed` (``command `…` unexpectedly
        succeeded``) if it exits 0.

        Returns the concatenated standard output.
        """
        output = ""
        for command in commands:
            with self.nested(f"must fail: {_short(command)}"):
                outcome = self._exec(command, timeout)
                self._log_output(outcome, failed=False)
                if outcome.status == 0:
                    raise self._failed(command, outcome, timeout, "unexpectedly succeeded")
                output += outcome.stdout
        return output

    def _failed(
        self, command: str, outcome: _Outcome, timeout: Duration | None, how: str
    ) -> CommandFailed:
        summary = f"{self._name}: command `{_short(command)}` {how}"
        if how == "failed":
            summary += f" (exit code {outcome.status}"
            if outcome.timed_out:
                summary += f": timed out after {optional_seconds(timeout):g}s"
            summary += ")"
        details = []
        if outcome.stdout.strip():
            details.append(f"  stdout tail:\n{_indent(tail(outcome.stdout))}")
        if outcome.stderr.strip():
            details.append(f"  stderr tail:\n{_indent(tail(outcome.stderr))}")
        message = "\n".join([summary, *details])
        return CommandFailed(
            self._name, command, outcome.status, outcome.stdout, outcome.stderr, message
        )

    # -- waiting -------------------------------------------------------------------

    def wait_until(
        self,
        what: str,
        check: Callable[[float], tuple[bool, str]],
        timeout: Duration = 900,
    ) -> str:
        """Call ``check(remaining_seconds)`` until it returns ``(True, seen)``.

        ``check`` returns whether the condition holds and what it saw (reported if the
        wait expires). Attempts go through :func:`nxc.wait.poll`: the pause between
        them grows from 50 ms to 1 s, and at least one is made. On expiry raise
        :class:`WaitExpired` (``action timed out after …``, NixOS's wording, then what
        it waited for and saw last). A lost connection counts as a failed attempt
        (the node may be rebooting).
        """
        limit = seconds(timeout, "timeout")
        started = time.monotonic()
        lost = False

        def attempt(remaining: float) -> Attempt[str]:
            nonlocal lost
            try:
                done, seen = check(max(remaining, 1.0))
                lost = False
            except ConnectionLost as err:
                done, seen, lost = False, f"(connection lost: {err})", True
            return Attempt.ok(seen, seen) if done else Attempt.not_yet(seen)

        try:
            seen = poll(
                what,
                attempt,
                limit,
                first=BACKOFF_FIRST,
                factor=BACKOFF_FACTOR,
                longest=BACKOFF_MAX,
            )
        except PollExpired as expired:
            elapsed = time.monotonic() - started
            shown = tail(expired.last) or "(no output)"
            attempts = expired.attempts
            message = (
                f"{self._name}: action timed out after {elapsed:.2f} seconds "
                f"(timeout={limit:g}) waiting for {what} "
                f"({attempts} attempt{'s' if attempts != 1 else ''}); "
                f"last seen:\n{_indent(shown)}"
            )
            if lost:
                message += self._console_hint()
            raise WaitExpired(self._name, what, limit, attempts, expired.last, message) from None
        self.logger.debug("done waiting", node=self._name)
        return seen

    @staticmethod
    def _seen(outcome: _Outcome) -> str:
        parts = [f"status {outcome.status}" + (" (timed out)" if outcome.timed_out else "")]
        if outcome.stdout.strip():
            parts.append(outcome.stdout.rstrip())
        if outcome.stderr.strip():
            parts.append("stderr: " + outcome.stderr.rstrip())
        return "\n".join(parts)

    def _wait_status(self, command: str, want_success: bool, timeout: Duration) -> str:
        output = ""

        def check(remaining: float) -> tuple[bool, str]:
            nonlocal output
            outcome = self._exec(command, remaining)
            output = outcome.stdout
            return (outcome.status == 0) == want_success, self._seen(outcome)

        what = f"`{_short(command)}` to {'succeed' if want_success else 'fail'}"
        self.wait_until(what, check, timeout)
        if output.strip():
            self.logger.info(tail(output, 20, 4000), node=self._name, stream="stdout")
        return output

    def wait_until_succeeds(self, command: str, timeout: Duration = 900) -> str:
        """Repeat ``command`` until it exits 0; return its standard output."""
        with self.nested(f"waiting for success: {_short(command)}"):
            return self._wait_status(command, True, timeout)

    def wait_until_fails(self, command: str, timeout: Duration = 900) -> str:
        """Repeat ``command`` until it exits non-zero; return its standard output."""
        with self.nested(f"waiting for failure: {_short(command)}"):
            return self._wait_status(command, False, timeout)

    def wait_for_file(self, filename: str, timeout: Duration = 900) -> None:
        """Wait until ``filename`` exists on the node.

        ``filename`` goes to the node's shell unquoted, as in NixOS: globs and
        ``$HOME`` work (``wait_for_file("/tmp/out.*")``).
        """
        command = f"test -e {filename}"

        def check(remaining: float) -> tuple[bool, str]:
            outcome = self._exec(command, remaining, strict=False)
            return outcome.status == 0, f"{filename} does not exist yet"

        with self.nested(f"waiting for file {filename}"):
            self.wait_until(f"file {filename}", check, timeout)

    def _port_open(self, port: int, addr: str, timeout: float) -> bool:
        command = f"{_PORT_PROBE}nxc_port {shlex.quote(addr)} {int(port)}"
        outcome = self._exec(command, timeout, strict=False)
        if outcome.status == _NO_PROBE_STATUS:
            raise MachineError(f"{self._name}: cannot probe TCP ports: {outcome.stderr.strip()}")
        return outcome.status == 0

    def wait_for_open_port(
        self, port: int, addr: str = "localhost", timeout: Duration = 900
    ) -> None:
        """Wait until something accepts TCP connections on ``addr:port`` (from the node)."""

        def check(remaining: float) -> tuple[bool, str]:
            is_open = self._port_open(port, addr, min(remaining, 10))
            return is_open, f"nothing accepted a connection to {addr}:{port}"

        with self.nested(f"waiting for TCP port {port} on {addr}"):
            self.wait_until(f"TCP port {port} on {addr} to open", check, timeout)

    def wait_for_closed_port(
        self, port: int, addr: str = "localhost", timeout: Duration = 900
    ) -> None:
        """Wait until nothing accepts TCP connections on ``addr:port`` (from the node)."""

        def check(remaining: float) -> tuple[bool, str]:
            is_open = self._port_open(port, addr, min(remaining, 10))
            return not is_open, f"{addr}:{port} still accepts connections"

        with self.nested(f"waiting for TCP port {port} on {addr} to close"):
            self.wait_until(f"TCP port {port} on {addr} to close", check, timeout)

    def wait_for_open_unix_socket(
        self, addr: str, is_datagram: bool = False, timeout: Duration = 900
    ) -> None:
        """Wait until a process listens on the UNIX-domain socket ``addr`` (a stream
        socket in listening state, or a bound datagram socket with ``is_datagram``).

        Read from the kernel's socket table (``/proc/net/unix``), so it needs no
        ``nc -U`` on the node.
        """
        # /proc/net/unix: Num RefCount Protocol Flags Type St Inode Path; a listening
        # stream socket has the accept flag (0x10000) and type 0001; datagram is 0002.
        kind = "0002" if is_datagram else "0001"
        listening = "" if is_datagram else " && $4 ~ /10000$/"
        program = f'$5 == "{kind}"{listening} && $8 == p {{ found = 1 }} END {{ exit !found }}'
        command = f"awk -v p={shlex.quote(addr)} {shlex.quote(program)} /proc/net/unix"
        kind_name = "datagram" if is_datagram else "stream"

        def check(remaining: float) -> tuple[bool, str]:
            outcome = self._exec(command, min(remaining, 30), strict=False)
            return outcome.status == 0, f"no {kind_name} socket listening at {addr}"

        with self.nested(f"waiting for UNIX-domain {kind_name} socket {addr}"):
            self.wait_until(f"UNIX-domain {kind_name} socket {addr}", check, timeout)

    def get_console_log(self) -> str:
        """Everything the node printed on its console since this machine first looked
        (at most since it was started; the terminal's ``\\r`` are dropped).

        Runtimes only show the last part of a console (``console_tail``: 16 KiB for a
        VM), so the machine keeps what it has seen and appends what is new at each
        call, found after the end of what it already holds. Output of more than that
        window between two calls loses its middle (a ``[…]`` line marks the gap).
        """
        with self._console_lock:
            window = self._control.console_tail(_WHOLE_CONSOLE).replace("\r", "")
            if window.strip() in ("(no output)", ""):
                return self._console
            if not self._console:
                self._console = window
                return self._console
            anchor = self._console[-_CONSOLE_ANCHOR:]
            at = window.rfind(anchor)
            if at >= 0:
                self._console += window[at + len(anchor) :]
            elif not self._console.endswith(window):
                self._console += "\n[…]\n" + window
            return self._console

    def wait_for_console_text(self, regex: str, timeout: Duration | None = None) -> str:
        """Wait until ``regex`` matches the node's console output; return the match.

        The regular expression is searched in the console text not yet consumed by an
        earlier ``wait_for_console_text`` (since boot at first), so it can span lines
        (``"one\\ntwo"``); what a command writes to ``/dev/console`` is part of it.
        ``timeout=None`` (NixOS's default: forever) means 900 s here: nxc never waits
        without a limit.
        """
        pattern = re.compile(regex)
        limit = 900.0 if timeout is None else seconds(timeout, "timeout")

        def check(_remaining: float) -> tuple[bool, str]:
            console = self.get_console_log()
            if len(console) < self._console_seen:  # a new console (the node restarted)
                self._console_seen = 0
            match = pattern.search(console, self._console_seen)
            if match is None:
                return False, tail(console[self._console_seen :], 20)
            self._console_seen = match.end()
            return True, match.group(0)

        with self.nested(f"waiting for /{regex}/ on the console"):
            return self.wait_until(f"console text matching /{regex}/", check, limit)

    # -- systemd -------------------------------------------------------------------

    def has_systemd(self) -> bool:
        """Whether the node runs systemd (probed once per connection)."""
        if self._has_systemd is None:
            probe = "command -v systemctl >/dev/null 2>&1 && test -d /run/systemd/system"
            self._has_systemd = self.run(probe, 30).status == 0
        return self._has_systemd

    def _require_systemd(self, what: str) -> None:
        if not self.has_systemd():
            raise MachineError(
                f"{self._name}: {what} needs systemd, but this node does not run it "
                "(no systemctl or /run/systemd/system); wait on a command instead, "
                'e.g. wait_until_succeeds("pidof mydaemon")'
            )

    def systemctl(self, q: str, user: str | None = None) -> tuple[int, str]:
        """Run ``systemctl q`` (as ``user`` with ``--user`` if given); ``(status, stdout)``."""
        self._require_systemd(f"systemctl {q}")
        if user is None:
            return self.execute(f"systemctl {q}")
        inner = f"XDG_RUNTIME_DIR=/run/user/$(id -u) systemctl --user {q}"
        return self.execute(f"su -l {shlex.quote(user)} -s /bin/sh -c {shlex.quote(inner)}")

    def _show(self, unit: str, properties: list[str] | None, user: str | None) -> dict[str, str]:
        wanted = f" --property={','.join(properties)}" if properties else ""
        query = f"--no-pager show {shlex.quote(unit)}{wanted}"
        self._require_systemd(f"unit {unit}")
        if user is None:
            command = f"systemctl {query}"
        else:
            inner = f"XDG_RUNTIME_DIR=/run/user/$(id -u) systemctl --user {query}"
            command = f"su -l {shlex.quote(user)} -s /bin/sh -c {shlex.quote(inner)}"
        outcome = self._exec(command, 60, strict=False)
        if outcome.status != 0:
            raise self._failed(command, outcome, 60, "failed")
        info: dict[str, str] = {}
        for line in outcome.stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                info[key] = value
        return info

    def get_unit_info(self, unit: str, user: str | None = None) -> dict[str, str]:
        """Every property of ``unit`` as ``systemctl show`` gives them."""
        return self._show(unit, None, user)

    def get_unit_property(self, unit: str, property: str, user: str | None = None) -> str:
        """One property of ``unit`` (e.g. ``ActiveState``)."""
        return self._show(unit, [property], user).get(property, "")

    def require_unit_state(self, unit: str, require_state: str = "active") -> None:
        """Raise :class:`MachineError` unless ``unit`` is in ``require_state`` now."""
        with self.nested(f"checking that unit {unit} is {require_state}"):
            state = self.get_unit_property(unit, "ActiveState")
            if state != require_state:
                raise MachineError(
                    f"{self._name}: unit {unit} is {state!r}, expected {require_state!r}"
                )

    def start_job(self, jobname: str, user: str | None = None) -> tuple[int, str]:
        """``systemctl start jobname`` (as ``user`` with ``--user``); ``(status, stdout)``."""
        return self.systemctl(f"start {shlex.quote(jobname)}", user)

    def stop_job(self, jobname: str, user: str | None = None) -> tuple[int, str]:
        """``systemctl stop jobname`` (as ``user`` with ``--user``); ``(status, stdout)``."""
        return self.systemctl(f"stop {shlex.quote(jobname)}", user)

    def wait_for_unit(self, unit: str, user: str | None = None, timeout: Duration = 900) -> None:
        """Wait until the systemd ``unit`` is active.

        Fails at once if the unit does not exist, has failed, or is inactive with no
        job pending that could start it. Needs systemd on the node, except for
        ``multi-user.target``, ``network.target`` and ``network-online.target``
        (:data:`BOOT_TARGETS`): on a node without systemd they mean "the node is up",
        i.e. it answers commands.
        """
        if unit in BOOT_TARGETS and user is None:

            def up(remaining: float) -> tuple[bool, str]:
                if self.has_systemd():
                    return True, "systemd"
                return self.run("true", min(remaining, 30)).status == 0, "no answer yet"

            with self.nested(f"waiting for unit {unit}"):
                self.wait_until(f"node up ({unit})", up, timeout)
            if not self.has_systemd():
                self.logger.info(
                    f"no systemd on this node: {unit} means the node is up", node=self._name
                )
                return
        self._require_systemd(f"wait_for_unit({unit!r})")
        props = "LoadState,ActiveState,SubState"
        query = f"--no-pager show {shlex.quote(unit)} --property={props}"
        jobs = "systemctl list-jobs --no-pager --no-legend 2>/dev/null | wc -l"
        if user is None:
            command = f'systemctl {query}; echo "Jobs=$({jobs})"'
        else:
            inner = (
                f"export XDG_RUNTIME_DIR=/run/user/$(id -u); systemctl --user {query}; "
                f'echo "Jobs=$(systemctl --user list-jobs --no-pager --no-legend | wc -l)"'
            )
            command = f"su -l {shlex.quote(user)} -s /bin/sh -c {shlex.quote(inner)}"

        def check(remaining: float) -> tuple[bool, str]:
            outcome = self._exec(command, min(remaining, 60), strict=False)
            info = dict(
                line.partition("=")[::2] for line in outcome.stdout.splitlines() if "=" in line
            )
            load = info.get("LoadState", "?")
            state = info.get("ActiveState", "?")
            seen = f"LoadState={load} ActiveState={state} SubState={info.get('SubState', '?')}"
            if load == "not-found":
                raise MachineError(f"{self._name}: unit {unit} does not exist ({seen})")
            if state == "failed":
                raise MachineError(f"{self._name}: unit {unit} failed ({seen})")
            if state == "inactive" and info.get("Jobs", "").strip() == "0":
                raise MachineError(
                    f"{self._name}: unit {unit} is inactive and no job is pending ({seen})"
                )
            return state == "active", seen

        with self.nested(f"waiting for unit {unit}" + (f" of user {user}" if user else "")):
            self.wait_until(f"unit {unit} to be active", check, timeout)

    # -- files ---------------------------------------------------------------------

    def _resolve_out_dir(self) -> Path:
        return self.out_dir if self.out_dir is not None else Path.cwd()

    def copy_to_machine(self, source: str | Path, target: str) -> None:
        """Copy the host file or directory ``source`` to ``target`` on the node.

        A file is written at ``target`` (atomically, its mode bits kept); a directory's
        contents go into the directory ``target`` (created, merged if it exists; modes
        kept). A ``target`` ending in ``/`` means "into that directory", keeping the
        source's name. Files travel with the transport's ``put`` (a directory as one
        tar archive, unpacked with the node's ``tar``).
        """
        src = Path(source)
        if not src.exists():
            raise MachineError(f"{self._name}: copy_to_machine: {src} does not exist on the host")
        if target.endswith("/"):
            target = target + src.name
        dst = target.rstrip("/") or "/"
        q_dst = shlex.quote(dst)
        with self.nested(f"copying {src} to {dst}"):
            if src.is_dir():
                stage = f"{dst}.nxc-copy-{int(time.time() * 1e6):x}.tar"
                self._check(f"mkdir -p {q_dst}", f"create {dst}")
                with tempfile.TemporaryDirectory(prefix="nxc-copy-") as tmp:
                    archive = Path(tmp) / "copy.tar"
                    with archive.open("wb") as handle:
                        _write_tar(src, handle)
                    size = archive.stat().st_size
                    try:
                        self._put(archive, stage)
                        self._check(
                            f"tar -xf {shlex.quote(stage)} -C {q_dst}", f"unpack into {dst}"
                        )
                    finally:
                        self.run(f"rm -f {shlex.quote(stage)}", 60)
            else:
                size = src.stat().st_size
                self._check(f'mkdir -p "$(dirname {q_dst})"', f"create the directory of {dst}")
                self._put(src, dst)
            self.logger.debug(f"copied {size} bytes", node=self._name)

    def _put(self, source: Path, target: str) -> None:
        self._transfer(f"copy {source} to {target}", lambda t: t.put(source, target))

    def _get(self, source: str, target: Path) -> None:
        self._transfer(f"copy {source} from the node", lambda t: t.get(source, target))

    def _transfer(self, what: str, copy: Callable[[Transport], None]) -> None:
        """A file copy through the transport: refused by the node → MachineError; the
        channel broke → ConnectionLost (as for commands)."""
        with self._lock:
            transport = self._connected()
        try:
            copy(transport)
        except FileTransferError as err:
            raise MachineError(f"{self._name}: copy failed: {err}") from None
        except TransportError as err:
            raise self._lost(transport, what, err) from err

    def _check(self, command: str, what: str, timeout: float = 600) -> str:
        result = self.run(command, timeout)
        if result.status != 0:
            raise CommandFailed(
                self._name,
                command,
                result.status,
                result.output,
                result.stderr.decode(errors="replace"),
                f"{self._name}: copy failed at {what} (status {result.status})"
                + (
                    f":\n{_indent(tail(result.stderr.decode(errors='replace')))}"
                    if result.stderr.strip()
                    else ""
                ),
            )
        return result.output

    def copy_from_host(self, source: str | Path, target: str) -> None:
        """NixOS's name for :meth:`copy_to_machine`: the host file or directory
        ``source`` becomes ``target`` on the node (modes kept, owned by root), through
        the transport's file copy."""
        self.copy_to_machine(source, target)

    def copy_from_host_via_shell(self, source: str | Path, target: str) -> None:
        """Copy the host file ``source`` to ``target`` through a shell command (base64
        in the command text), as NixOS does where no file channel exists; prefer
        :meth:`copy_from_host`."""
        src = Path(source)
        if not src.is_file():
            raise MachineError(
                f"{self._name}: copy_from_host_via_shell: {src} is not a file on the host"
            )
        encoded = base64.b64encode(src.read_bytes()).decode()
        self.succeed(
            f'mkdir -p "$(dirname {target})"',
            f"printf %s {encoded} | base64 -d > {target}",
        )

    def copy_from_vm(self, source: str, target_dir: str | Path = "") -> Path:
        """NixOS's older name for :meth:`copy_from_machine`."""
        return self.copy_from_machine(source, target_dir)

    def copy_from_machine(self, source: str, target_dir: str | Path = "") -> Path:
        """Copy the node's file or directory ``source`` to the host.

        It lands in ``out_dir / target_dir / basename(source)`` (``target_dir`` may be
        absolute); the host path is returned. A file keeps its mode bits; a directory
        is packed with ``tar`` on the node and travels as one file.
        """
        name = Path(source.rstrip("/")).name or "root"
        destination = self._resolve_out_dir() / target_dir / name
        q_src = shlex.quote(source)
        with self.nested(f"copying {source} from the node to {destination}"):
            probe = (
                f"if [ -d {q_src} ]; then echo dir; "
                f"elif [ -f {q_src} ]; then echo file; else echo missing; fi"
            )
            kind = self._check(probe, f"look at {source}").strip()
            if kind not in ("file", "dir"):
                raise MachineError(f"{self._name}: copy_from_machine: {source} does not exist")
            destination.parent.mkdir(parents=True, exist_ok=True)
            if kind == "file":
                self._get(source, destination)
                size = destination.stat().st_size
            else:
                archive_path = self._check(
                    'mktemp "${TMPDIR:-/tmp}/nxc-copy.XXXXXX"', "make a temporary file"
                ).strip()
                q_archive = shlex.quote(archive_path)
                try:
                    self._check(f"tar -cf {q_archive} -C {q_src} .", f"pack {source}")
                    with tempfile.TemporaryDirectory(prefix="nxc-copy-") as tmp:
                        local_archive = Path(tmp) / "copy.tar"
                        self._get(archive_path, local_archive)
                        size = local_archive.stat().st_size
                        destination.mkdir(parents=True, exist_ok=True)
                        with tarfile.open(local_archive) as tar:
                            tar.extractall(destination, filter="tar")
                finally:
                    self.run(f"rm -f {q_archive}", 60)
            self.logger.debug(f"copied {size} bytes", node=self._name)
        return destination

    # -- lifecycle -----------------------------------------------------------------

    def is_up(self) -> bool:
        """Whether the node is running (as far as its runtime knows)."""
        return self._control.is_running()

    def start(self, allow_reboot: bool = False, timeout: Duration = 120.0) -> None:
        """Boot the node if it is not running and wait until it is ready.

        ``allow_reboot`` is NixOS's: with ``False`` a reboot inside the node powers it
        off. nxc nodes behave so whatever the value (VMs run with ``-no-reboot``):
        :meth:`reboot` restarts a node from the driver; ``True`` only logs that.
        """
        if isinstance(allow_reboot, int | float) and not isinstance(allow_reboot, bool):
            # an older nxc scenario calling start(120): the timeout, positionally
            timeout, allow_reboot = allow_reboot, False
        if allow_reboot:
            self.logger.info(
                "start(allow_reboot=True): a reboot inside the node still powers it off "
                "on nxc; use reboot() to restart it",
                node=self._name,
            )
        if self._control.is_running():
            return
        require(self._control, Capability.POWER, "start")
        with self._lock:
            if self._control.is_running():
                return
            with self.nested("starting"):
                self._drop_transport()
                self._control.start(seconds(timeout, "timeout"))

    def shutdown(self, timeout: Duration = 60.0) -> None:
        """Power the node off cleanly and wait until it has stopped.

        Commands in flight fail at once with :class:`ConnectionLost`.
        """
        require(self._control, Capability.POWER, "shutdown")
        with self.nested("shutting down"):
            self._drop_transport("shut down")
            self._control.shutdown(seconds(timeout, "timeout"))

    def crash(self) -> None:
        """Stop the node at once, as a power cut would.

        Does not wait for commands in flight on the node (they fail with
        :class:`ConnectionLost`, or give ``(-1, "")`` with ``check_return=False``).
        """
        require(self._control, Capability.CRASH, "crash")
        with self.nested("crashing"):
            self._drop_transport("crashed")
            self._control.crash()

    def wait_for_shutdown(self, timeout: Duration = 900) -> None:
        """Wait until the node has powered off (this does not power it off: a command
        such as ``poweroff`` does, or :meth:`shutdown`)."""

        def stopped(_remaining: float) -> tuple[bool, str]:
            return not self._control.is_running(), "the node is still running"

        with self.nested("waiting for the node to power off"):
            self.wait_until("the node to power off", stopped, timeout)
            self._drop_transport("powered off")

    def reboot(self, timeout: Duration = 180.0) -> None:
        """Shut the node down cleanly, then start it again."""
        half = seconds(timeout, "timeout") / 2
        with self.nested("rebooting"):
            self.shutdown(half)
            self.start(timeout=half)

    def block(self) -> None:
        """Cut the node's experiment NIC (the link goes down as seen by the node)."""
        require(self._control, Capability.BLOCK, "block")
        with self.nested("blocking the experiment network"):
            self._control.block()

    def unblock(self) -> None:
        """Restore the node's experiment NIC after :meth:`block`."""
        require(self._control, Capability.BLOCK, "unblock")
        with self.nested("unblocking the experiment network"):
            self._control.unblock()

    def console_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines the node printed on its console."""
        return self._control.console_tail(lines)

    def sleep(self, secs: Duration | None = None, *, duration: Duration | None = None) -> None:
        """Pause the scenario for ``secs`` (or ``duration=``; a ``timedelta`` or seconds),
        in the node's time as NixOS does: ``sleep`` runs on the node. Prefer a
        ``wait_*`` on the real condition."""
        if (secs is None) == (duration is None):
            raise MachineError(f"{self._name}: sleep() takes one duration: secs or duration")
        pause = seconds(secs if secs is not None else duration, "sleep duration")  # type: ignore[arg-type]
        with self.nested(f"sleeping {pause:g}s on the node"):
            outcome = self._exec(f"sleep {pause:.3f}", pause + 60, strict=False)
            if outcome.status != 0:
                raise self._failed(f"sleep {pause:g}", outcome, pause + 60, "failed")

    def forward_port(self, host_port: int = 8080, guest_port: int = 80) -> None:
        """Forward TCP ``host_port`` on this host (127.0.0.1) to ``guest_port`` on the node.

        Through the node's ssh endpoint (``ssh -N -L``), kept until :meth:`release`
        (the driver ends). A node without an ssh endpoint raises a one-line error.
        """
        if self.ssh_argv is None:
            raise CapabilityMissing(
                f"{self._name}: forward_port() needs an ssh endpoint to the node, and "
                f"flavour {self._control.flavour} gives this node none"
            )
        argv = [
            *self.ssh_argv[:-1],
            "-N",
            "-o", "ExitOnForwardFailure=yes",
            "-L", f"127.0.0.1:{int(host_port)}:localhost:{int(guest_port)}",
            self.ssh_argv[-1],
        ]  # fmt: skip
        with self.nested(f"forwarding host port {host_port} to port {guest_port}"):
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, start_new_session=True,
            )  # fmt: skip

            def listening(_remaining: float) -> tuple[bool, str]:
                if process.poll() is not None:
                    error = (process.stderr.read() if process.stderr else b"").decode()
                    raise MachineError(
                        f"{self._name}: forward_port({host_port}, {guest_port}): ssh exited "
                        f"with status {process.returncode}: {error.strip() or 'no message'}"
                    )
                import socket

                with socket.socket() as probe:
                    probe.settimeout(1)
                    return probe.connect_ex(("127.0.0.1", int(host_port))) == 0, "not yet"

            try:
                self.wait_until(f"host port {host_port} to listen", listening, 30)
            except BaseException:
                _stop_process(process)
                raise
            self._forwards.append(process)

    def _drop_transport(self, why: str | None = None) -> None:
        # Not under the lock: closing must not wait for anything (commands in flight
        # fail at once).
        transport, self._transport = self._transport, None
        self._has_systemd = None
        self._has_bash = None
        if transport is not None and why is not None:
            self._dropped = (transport, why)
        if transport is not None:
            with suppress(TransportError, OSError):
                transport.close()

    def release(self) -> None:
        """Close the channel to the node (the node keeps running; commands in flight
        are killed and fail with :class:`ConnectionLost`) and end port forwards."""
        forwards, self._forwards = self._forwards, []
        for process in forwards:
            _stop_process(process)
        self._drop_transport("released")


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    with suppress(OSError):
        process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stderr is not None:
        process.stderr.close()


def _write_tar(src: Path, archive: Any) -> None:
    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(fileobj=archive, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for child in sorted(src.iterdir()):
            tar.add(child, arcname=child.name, filter=as_root)


def machines_by_role(machines: list[Machine]) -> dict[str, list[Machine]]:
    """``{role: [machines of that role, by index]}``."""
    roles: dict[str, list[Machine]] = {}
    for machine in sorted(machines, key=lambda m: (m.role, m.index)):
        roles.setdefault(machine.role, []).append(machine)
    return roles
