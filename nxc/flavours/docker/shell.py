"""An interactive shell in a container through the SDK (``nxc connect`` without ssh).

    python -m nxc.flavours.docker.shell DAEMON_URL CONTAINER [NODE]

Opens an exec with a TTY running the node's login shell (bash where NixOS has it,
else ``sh -l``), puts this terminal in raw mode, and relays both ways; the window
size follows the terminal's. Exits with the shell's status.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
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


def _size() -> tuple[int, int] | None:
    with contextlib.suppress(OSError):
        size = os.get_terminal_size(sys.stdin.fileno())
        return size.lines, size.columns
    return None


def open_shell(api: Any, container: str, node: str) -> int:
    """Relay this terminal to a login shell in ``container``; the shell's exit status."""
    from docker.errors import APIError

    from nxc.flavours.docker.node import EXEC_PATH
    from nxc.flavours.docker.transport import start_exec

    environment = {"PATH": EXEC_PATH, "HOME": "/root", "TERM": os.environ.get("TERM", "xterm")}
    try:
        created = api.exec_create(
            container, ["/bin/sh", "-c", LOGIN], stdin=True, tty=True,
            environment=environment, workdir="/root",
        )  # fmt: skip
        exec_id = created["Id"]
        response, reader, sock = start_exec(api, exec_id, tty=True)
    except APIError as exc:
        raise NxcError(f"{node}: cannot open a shell: {exc.explanation or exc}") from None

    def resize(_signum: int = 0, _frame: FrameType | None = None) -> None:
        size = _size()
        if size is not None:
            with contextlib.suppress(Exception):
                api.exec_resize(exec_id, height=size[0], width=size[1])

    done = threading.Event()

    def to_terminal() -> None:
        try:
            while chunk := reader.read1(1 << 16):
                os.write(sys.stdout.fileno(), chunk)
        except OSError:
            pass
        finally:
            done.set()

    terminal = sys.stdin.isatty()
    saved = None
    if terminal:
        import termios
        import tty

        saved = termios.tcgetattr(sys.stdin.fileno())
        tty.setraw(sys.stdin.fileno())
        signal.signal(signal.SIGWINCH, resize)
    try:
        resize()
        threading.Thread(target=to_terminal, daemon=True).start()
        while not done.is_set():
            # (a timeout: see the shell's end even while the user types nothing)
            ready, _, _ = select.select([sys.stdin], [], [], 0.2)
            if not ready:
                continue
            data = os.read(sys.stdin.fileno(), 1 << 12)
            if not data:
                with contextlib.suppress(OSError):
                    sock.shutdown(1)  # end of input: the shell sees EOF
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
    with contextlib.suppress(Exception):
        code = api.exec_inspect(exec_id).get("ExitCode")
        return int(code) if code is not None else 0
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
