"""Run a child (nix) so that Ctrl-C, SIGTERM and SIGHUP stop it the way a terminal would.

The child runs in its own process group. When nxc receives SIGINT, SIGTERM or SIGHUP
while the child runs, the same signal is forwarded to the child's group and nxc waits
for the child to exit (nix then stops its builders and removes their build
directories). If it has not exited after a grace period, or when a second signal
arrives, the child and every process it started are killed. Then
:class:`ChildInterrupted` is raised, which the CLI shows as one line and exits with
128 + the signal number (130, 143, 129).

Why not the default behaviour: Python turns SIGINT into ``KeyboardInterrupt`` and
``subprocess`` then SIGKILLs the child at once, so nix never gets to stop its builder,
which runs on as an orphan; SIGTERM and SIGHUP kill nxc without touching the child.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from nxc.errors import NxcError

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE_SECONDS = 30.0

LineHandler = Callable[[str], None]


class ChildInterrupted(NxcError):
    """nxc was interrupted by a signal while a child ran; the child has been stopped."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


@dataclass(frozen=True)
class ChildResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class _State:
    signals: list[int] = field(default_factory=list)
    deadline: float | None = None
    killed: bool = False


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children first found, then theirs)."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) comes after the command name, which may hold spaces and ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in parents.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child, its process group and every process below it.

    nix starts each builder in a session of its own, so killing nix's group alone
    would leave the builders running: they are found through the process tree first.
    A builder works in nix's build directory (``nix-build-*``), which nix can no
    longer remove once killed: those directories are removed here.
    """
    below = descendants(process.pid)
    build_dirs = {d for d in map(_cwd, below) if d is not None and d.name.startswith("nix-build-")}
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    for pid in below:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for directory in build_dirs:
        shutil.rmtree(directory, ignore_errors=True)


def _cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


@contextlib.contextmanager
def _forwarding(process: subprocess.Popen[bytes], state: _State, grace: float) -> Iterator[None]:
    """While the block runs, SIGINT/SIGTERM/SIGHUP go to the child's group."""

    def handler(signum: int, frame: FrameType | None) -> None:
        state.signals.append(signum)
        if len(state.signals) == 1:
            state.deadline = time.monotonic() + grace
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signum)
        else:
            # A second signal: the user does not want to wait any longer.
            state.killed = True
            kill_tree(process)

    if threading.current_thread() is not threading.main_thread():
        # Signals are only delivered to the main thread: nothing to install.
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in FORWARDED}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    on_stderr_line: LineHandler | None = None,
    what: str = "the child process",
    grace: float = GRACE_SECONDS,
) -> ChildResult:
    """Run ``argv`` to completion; stdout is collected, stderr is passed line by line.

    Raises :class:`ChildInterrupted` (after the child is gone) when nxc was signalled.
    """
    state = _State()
    lines: list[str] = []
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.PIPE,
            process_group=0,
        )
        assert process.stderr is not None
        try:
            with _forwarding(process, state, grace):
                _pump(process, state, lines, on_stderr_line)
                code = _wait(process, state, grace)
        except BaseException:
            # Not a forwarded signal (those never raise): an error in nxc itself.
            _stop(process, grace)
            raise
        finally:
            process.stderr.close()
        out.seek(0)
        stdout = out.read().decode(errors="replace")
    if state.signals:
        first = signal_name(state.signals[0])
        if state.killed:
            detail = f"{what} did not stop in time and was killed with every process it started"
        else:
            detail = f"{what} stopped and cleaned up"
        raise ChildInterrupted(f"interrupted ({first}): {detail}", state.signals[0])
    return ChildResult(code, stdout, "".join(lines))


def _pump(
    process: subprocess.Popen[bytes],
    state: _State,
    lines: list[str],
    on_line: LineHandler | None,
) -> None:
    """Read the child's stderr until it closes, enforcing the kill deadline meanwhile."""
    assert process.stderr is not None
    fd = process.stderr.fileno()
    pending = b""
    exited_at: float | None = None
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            overdue = state.deadline is not None and time.monotonic() > state.deadline
            if overdue and not state.killed:
                state.killed = True
                kill_tree(process)
            if selector.select(timeout=0.2):
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    _deliver(raw + b"\n", lines, on_line)
                continue
            if process.poll() is not None:
                # The child is gone but something it started still holds the pipe:
                # keep what is already there, then stop waiting for more.
                exited_at = exited_at or time.monotonic()
                if time.monotonic() - exited_at > 1.0:
                    break
    if pending:
        _deliver(pending, lines, on_line)


def _deliver(raw: bytes, lines: list[str], on_line: LineHandler | None) -> None:
    line = raw.decode(errors="replace")
    lines.append(line)
    if on_line is not None:
        on_line(line)


def _wait(process: subprocess.Popen[bytes], state: _State, grace: float) -> int:
    """The child's exit status once its stderr closed (it is exiting), killing it if not."""
    try:
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        state.killed = True
        kill_tree(process)
        return process.wait()


def _stop(process: subprocess.Popen[bytes], grace: float) -> None:
    """Stop the child as Ctrl-C would, then kill it if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        kill_tree(process)
        process.wait()
