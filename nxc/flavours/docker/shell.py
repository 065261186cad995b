"""An interactive shell in a container through the SDK (``nxc connect`` without ssh).

    python -m nxc.flavours.docker.shell DAEMON_URL CONTAINER [NODE]

On a terminal: an exec with a TTY running the node's login shell (bash where NixOS
has it, else ``sh -l``), this terminal in raw mode, both ways relayed, the window size
following the terminal's. Otherwise (input from a pipe or a file), an exec without a
TTY reading that input, its output and errors kept apart, as ``docker exec -i``.
Exits with the shell's status.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import struct
import sys
import threading
from types import FrameType
from typing import Any

from nxc.errors import NxcError

LOGIN = (
    "[ -r /etc/nxc/env ] && { set -a; . /etc/nxc/env; set +a; }; "
    "for s in /run/current-system/sw/bin/bash /bin/bash; do "
    '[ -x "$s" ] && exec "$s" -l; done; exec /bin/sh -l'
)
_HEADER = struct.Struct(">BxxxL")


def _size() -> tuple[int, int] | None:
    with contextlib.suppress(OSError):
        size = os.get_terminal_size(sys.stdin.fileno())
        return size.lines, size.columns
    return None


def _relay_output(reader: Any, tty: bool, done: threading.Event) -> None:
    """The exec's output to ours: raw with a TTY, else demultiplexed (frame headers)."""
    pending = bytearray()
    try:
        while chunk := reader.read1(1 << 16):
            if tty:
                os.write(sys.stdout.fileno(), chunk)
                continue
            pending += chunk
            while len(pending) >= _HEADER.size:
                kind, size = _HEADER.unpack_from(pending)
                if len(pending) < _HEADER.size + size:
                    break
                data = bytes(pending[_HEADER.size : _HEADER.size + size])
                del pending[: _HEADER.size + size]
                os.write((sys.stderr if kind == 2 else sys.stdout).fileno(), data)
    except OSError:
        pass
    finally:
        done.set()


def open_shell(api: Any, container: str, node: str) -> int:
    """Relay this process's input and output to a login shell in ``container``;
    returns the shell's exit status."""
    from docker.errors import APIError

    from nxc.flavours.docker.node import EXEC_PATH
    from nxc.flavours.docker.transport import start_exec
    from nxc.wait import Attempt, PollExpired, poll

    tty = sys.stdin.isatty()
    environment = {"PATH": EXEC_PATH, "HOME": "/root", "TERM": os.environ.get("TERM", "xterm")}
    try:
        created = api.exec_create(
            container, ["/bin/sh", "-c", LOGIN], stdin=True, tty=tty,
            environment=environment, workdir="/root",
        )  # fmt: skip
        exec_id = created["Id"]
        response, reader, sock = start_exec(api, exec_id, tty=tty)
    except APIError as exc:
        raise NxcError(f"{node}: cannot open a shell: {exc.explanation or exc}") from None

    def resize(_signum: int = 0, _frame: FrameType | None = None) -> None:
        size = _size()
        if size is not None:
            with contextlib.suppress(Exception):
                api.exec_resize(exec_id, height=size[0], width=size[1])

    done = threading.Event()
    saved = None
    if tty:
        import termios
        import tty as ttys

        saved = termios.tcgetattr(sys.stdin.fileno())
        ttys.setraw(sys.stdin.fileno())
        signal.signal(signal.SIGWINCH, resize)
        resize()
    try:
        threading.Thread(target=_relay_output, args=(reader, tty, done), daemon=True).start()
        while not done.is_set():
            # (a timeout: see the shell's end even while nothing is typed)
            ready, _, _ = select.select([sys.stdin], [], [], 0.2)
            if not ready:
                continue
            data = os.read(sys.stdin.fileno(), 1 << 12)
            if not data:
                with contextlib.suppress(OSError):
                    sock.shutdown(1)  # end of input: the shell reads EOF
                done.wait()
                break
            sock.sendall(data)
    except OSError:
        pass
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
        with contextlib.suppress(Exception):
            response.close()

    def exited(_remaining: float) -> Attempt[int]:
        state = api.exec_inspect(exec_id)
        if state.get("Running") or state.get("ExitCode") is None:
            return Attempt.not_yet("running")
        return Attempt.ok(int(state["ExitCode"]))

    try:
        return poll(f"the shell on {node} to exit", exited, 10, first=0.005)
    except (PollExpired, APIError):
        return 0


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        usage = "usage: python -m nxc.flavours.docker.shell DAEMON_URL CONTAINER [NODE]"
        print(usage, file=sys.stderr)
        return 2
    from nxc.flavours.docker.daemon import client

    url, container = argv[0], argv[1]
    node = argv[2] if len(argv) == 3 else container
    try:
        return open_shell(client(url).api, container, node)
    except NxcError as exc:
        print(f"nxc: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
