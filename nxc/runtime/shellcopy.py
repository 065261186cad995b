"""File copies for transports that only have a shell (the VM backdoor).

:func:`put_over_shell` and :func:`get_over_shell` implement
:meth:`~nxc.runtime.transport.Transport.put` / ``get`` with nothing but ``run``: the data
travels as base64 pieces small enough for one command line and is decoded on the node
with ``base64 -d`` (coreutils or busybox). Transports with a real file channel (ssh's
sftp) do not use this.
"""

from __future__ import annotations

import base64
import os
import secrets
import shlex
import stat
from collections.abc import Callable
from pathlib import Path

from nxc.runtime.transport import CommandResult, TransportError

Run = Callable[[str, float | None], CommandResult]

# Raw bytes per upload command: 60 000 base64 characters, well below the kernel's
# 128 KiB limit on one argument.
UPLOAD_CHUNK = 45_000
# Bytes read from the node per download command.
DOWNLOAD_CHUNK = 512 * 1024
STEP_TIMEOUT = 600.0


def _check(run: Run, node: str, command: str, what: str) -> str:
    result = run(command, STEP_TIMEOUT)
    if result.status != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        raise TransportError(
            f"{node}: {what} failed (status {result.status})"
            + (f": {detail[-1]}" if detail else "")
        )
    return result.output


def put_over_shell(run: Run, node: str, source: Path, target: str) -> None:
    """Copy host file ``source`` to ``target`` on ``node`` through ``run`` (atomic, mode kept)."""
    try:
        info = source.stat()
    except OSError as err:
        raise TransportError(f"{node}: cannot copy {source} to {target}: {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise TransportError(f"{node}: cannot copy {source} to {target}: not a regular file")
    stage = f"{target}.nxc-put-{secrets.token_hex(4)}"
    q_stage, q_b64, q_target = shlex.quote(stage), shlex.quote(stage + ".b64"), shlex.quote(target)
    try:
        _check(run, node, f": > {q_b64}", f"creating {stage}.b64 next to {target}")
        with source.open("rb") as handle:
            while piece := handle.read(UPLOAD_CHUNK):
                text = base64.b64encode(piece).decode("ascii")
                _check(run, node, f"printf '%s\\n' {text} >> {q_b64}", f"writing {target}")
        got = _check(
            run,
            node,
            f"base64 -d < {q_b64} > {q_stage} && chmod {stat.S_IMODE(info.st_mode):o} {q_stage}"
            f" && mv -f {q_stage} {q_target} && wc -c < {q_target}",
            f"writing {target}",
        )
    finally:
        run(f"rm -f {q_b64} {q_stage}", 60)
    if got.strip() != str(info.st_size):
        raise TransportError(
            f"{node}: copy of {source} to {target} wrote {got.strip()} bytes of {info.st_size}"
        )


def get_over_shell(run: Run, node: str, source: str, target: Path) -> None:
    """Copy ``node``'s regular file ``source`` to host ``target`` through ``run``."""
    q_source = shlex.quote(source)
    probe = _check(
        run,
        node,
        f"if [ -f {q_source} ]; then stat -L -c '%a %s' {q_source}; "
        f"elif [ -e {q_source} ]; then echo other; else echo missing; fi",
        f"looking at {source}",
    ).split()
    if probe[:1] == ["missing"]:
        raise TransportError(f"{node}: cannot copy {source}: no such file on the node")
    if len(probe) != 2:
        raise TransportError(f"{node}: cannot copy {source}: not a regular file")
    mode, size = int(probe[0], 8), int(probe[1])
    partial = target.with_name(f".{target.name}.nxc-get-{secrets.token_hex(4)}")
    try:
        with partial.open("wb") as out:
            offset = 0
            block = 0
            while offset < size:
                result = run(
                    f"dd if={q_source} bs={DOWNLOAD_CHUNK} skip={block} count=1 2>/dev/null",
                    STEP_TIMEOUT,
                )
                if result.status != 0 or not result.stdout:
                    raise TransportError(
                        f"{node}: reading {source} at byte {offset} of {size} failed "
                        f"(status {result.status})"
                    )
                out.write(result.stdout)
                offset += len(result.stdout)
                block += 1
        if offset != size:
            raise TransportError(f"{node}: read {offset} bytes of {source}, expected {size}")
        os.chmod(partial, mode)
        os.replace(partial, target)
    except OSError as err:
        raise TransportError(f"{node}: cannot write {source} to {target}: {err}") from None
    finally:
        partial.unlink(missing_ok=True)
