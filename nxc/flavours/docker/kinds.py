"""Ledger kinds of the docker flavour: how ``nxc stop`` releases what it created.

``docker-container``, ``docker-network``, ``docker-volume`` and ``docker-image`` are
released through the daemon that holds them (``extra.url``); ``dockerd`` is a private
daemon, stopped with everything it left behind. Each is recorded *before* it is
created (its name is chosen by nxc), so a crash between the API call and the ledger
line cannot leak it; releasing what was never created finds nothing to do.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nxc.flavours.docker.daemon import DaemonUnreachable, client, forget_client
from nxc.ledger import Kind, Refused, ReleaseContext, ReleaseError, Resource, process_start_time

__all__ = ["KINDS", "leftover_processes", "mounts_under"]

# Executables a private dockerd runs, recognised with our directory in their argv.
DOCKER_EXECUTABLES = {
    "dockerd",
    "containerd",
    "containerd-shim",
    "containerd-shim-runc-v2",
    "docker-proxy",
    "runc",
}
DOCKERD_STOP_GRACE = 30.0


def _api(resource: Resource) -> Any | None:
    """The daemon's API client, or None when a private daemon is gone already (the
    ``dockerd`` resource then takes whatever its containers left)."""
    url = str(resource.extra.get("url", ""))
    try:
        return client(url).api
    except DaemonUnreachable as exc:
        if resource.extra.get("private"):
            return None
        raise ReleaseError(f"{exc}: cannot remove {resource.label()}") from None


class _ApiKind:
    """A Docker object removed through the API; gone already counts as released."""

    def __init__(self, name: str, noun: str, remove: Callable[[Any, Resource], str | None]):
        self.name = name
        self.noun = noun
        self._remove = remove

    def release(self, resource: Resource, ctx: ReleaseContext) -> str | None:
        from docker.errors import APIError, NotFound

        api = _api(resource)
        if api is None:
            return None
        try:
            return self._remove(api, resource)
        except NotFound:
            return None
        except APIError as exc:
            raise ReleaseError(
                f"cannot remove {self.noun} {resource.ident}: {exc.explanation or exc}"
            ) from None


def _remove_container(api: Any, resource: Resource) -> str | None:
    api.remove_container(resource.ident, force=True, v=True)
    return f"removed container {resource.ident}"


def _remove_network(api: Any, resource: Resource) -> str | None:
    from docker.errors import NotFound

    done = []
    deployment = resource.extra.get("deployment")
    if deployment:
        # A create request of a killed `nxc start` may have completed after its
        # container was released (recorded, not found, then created): its network
        # is about to go, so nothing can be created on it after this.
        label = {"label": f"nxc.deployment={deployment}"}
        for late in api.containers(all=True, filters=label):
            name = late["Names"][0].lstrip("/") if late.get("Names") else late["Id"][:12]
            with contextlib.suppress(NotFound):
                api.remove_container(late["Id"], force=True, v=True)
                done.append(f"removed container {name}")
    api.remove_network(resource.ident)
    return "; ".join([*done, f"removed network {resource.ident}"])


def _remove_volume(api: Any, resource: Resource) -> str | None:
    api.remove_volume(resource.ident, force=True)
    return f"removed volume {resource.ident}"


def _remove_image(api: Any, resource: Resource) -> str | None:
    if resource.extra.get("keep"):
        # The user's daemon keeps it: the next start of the same build loads nothing.
        api.inspect_image(resource.ident)  # NotFound: someone removed it, nothing to say
        return f"kept image {resource.ident} for the next start (docker image rm to remove it)"
    api.remove_image(resource.ident, force=True)
    return f"removed image {resource.ident}"


# -- a private dockerd -------------------------------------------------------------------


def _alive(pid: int, start_time: int | None) -> bool:
    return start_time is not None and process_start_time(pid) == start_time


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def leftover_processes(root: Path) -> list[int]:
    """Processes a private dockerd rooted at ``root`` left: its containerd, shims and
    proxies (their argv names the directory), and the containers' own processes
    (their root directory lies under it)."""
    needle = str(root).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            name = Path(argv[0].decode(errors="replace")).name if argv else ""
            if name in DOCKER_EXECUTABLES and any(needle in arg for arg in argv[1:]):
                found.append(int(entry.name))
                continue
            if _under(os.readlink(entry / "root"), str(root)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts_under(root: Path) -> list[str]:
    """Mount points at or under ``root``, deepest first (a point mounted twice, twice)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    points = [_unescape(line.split()[4]) for line in lines if len(line.split()) > 4]
    return sorted((p for p in points if _under(p, str(root))), key=len, reverse=True)


def _wait_gone(pids: list[int], starts: dict[int, int | None], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    pending = [p for p in pids if _alive(p, starts.get(p))]
    while pending and time.monotonic() < deadline:
        time.sleep(0.05)
        pending = [p for p in pending if _alive(p, starts.get(p))]
    return pending


class DockerdKind:
    """A private dockerd: stopped (TERM, then KILL), then whatever it left is killed and
    unmounted, so that its directories and namespace can go."""

    name = "dockerd"

    def release(self, resource: Resource, ctx: ReleaseContext) -> str | None:
        root_text = resource.extra.get("root")
        if not isinstance(root_text, str) or not root_text.startswith("/"):
            raise Refused(f"refusing to stop {resource.label()}: no directory recorded")
        root = Path(root_text)
        if root.exists() and not ctx.owns(root):
            raise Refused(f"refusing to stop the dockerd of {root}: not a directory nxc owns")
        pid = int(resource.ident)
        done = []
        if _alive(pid, resource.start_time):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            starts = {pid: resource.start_time}
            if _wait_gone([pid], starts, DOCKERD_STOP_GRACE):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                if _wait_gone([pid], starts, 5):
                    raise ReleaseError(f"dockerd (pid {pid}) still running after SIGKILL")
            done.append(f"stopped private dockerd (pid {pid})")
        forget_client(f"unix://{root / 'docker.sock'}")
        left = leftover_processes(root)
        if left:
            starts = {p: process_start_time(p) for p in left}
            for leftover in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(leftover, signal.SIGKILL)
            still = _wait_gone(left, starts, 5)
            if still:
                raise ReleaseError(f"processes of the private dockerd survived SIGKILL: {still}")
            done.append(f"killed {len(left)} process(es) the private dockerd left")
        # dockerd bind-mounts its data root onto itself (and containers' shm, netns
        # files): what a dockerd that did not shut down cleanly left stays mounted.
        for _attempt in range(10):
            points = mounts_under(root)
            if not points:
                break
            for point in points:
                unmounted = subprocess.run(
                    ["umount", "-l", point], capture_output=True, text=True, check=False
                )
                if unmounted.returncode != 0 and point in mounts_under(root):
                    raise ReleaseError(f"umount {point}: {unmounted.stderr.strip()}")
                done.append(f"unmounted {point}")
        else:
            raise ReleaseError(f"mounts under {root} remain after 10 rounds of umount")
        return "; ".join(done) or None


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        _ApiKind("docker-container", "container", _remove_container),
        _ApiKind("docker-network", "network", _remove_network),
        _ApiKind("docker-volume", "volume", _remove_volume),
        _ApiKind("docker-image", "image", _remove_image),
        DockerdKind(),
    )
}
