"""One container per node: its NodeControl, and the wait for its agent's ready line.

The agent prints ``nxc-ready node=… boot_id=…`` on the container's console, which is
its log: a thread per container follows the log stream from the moment the container
starts and keeps what it saw (the last lines, for error messages).
"""

from __future__ import annotations

import collections
import contextlib
import posixpath
import shlex
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nxc.errors import NxcError, StartError, StateError
from nxc.flavours.docker.transport import DockerExecTransport
from nxc.runtime import ready
from nxc.runtime.contract import Progress, RuntimeState
from nxc.runtime.node import Capability, NodeControl
from nxc.runtime.transport import Transport
from nxc.wait import Attempt, PollExpired, poll

__all__ = ["CONTAINER_CAPABILITIES", "DockerNode", "LogFollower", "wait_all_ready"]

READY_MARK = "nxc-ready node="
ERROR_MARK = "nxc-agent-error:"
CONTAINER_CAPABILITIES = frozenset(
    {Capability.POWER, Capability.CRASH, Capability.BLOCK, Capability.CONSOLE, Capability.PAUSE}
)
# What `docker exec` finds on every image (NixOS's profile first, then the FHS dirs).
EXEC_PATH = (
    "/run/wrappers/bin:/run/current-system/sw/bin:"
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)
STOP_TIMEOUT = 10
# The one file system of a container that a disk_full fault may fill: a tmpfs the
# runtime sizes at a quarter of the node's memory. Anything else (the image's layer,
# volumes) is on the host's disk.
SCRATCH_TMPFS = "/tmp"

# The agent renames the experiment NIC (Docker's eth0) to the deployment's interface
# name. Docker still knows it by its own name, and a disconnection only removes the
# interface of that name: blocking gives it back its Docker name first, unblocking
# names Docker's new interface (eth1, eth2…) like the deployment again, MAC included,
# and prints the Docker name for the next block.
_FIND_IP = """\
for p in /usr/sbin/ip /sbin/ip /run/current-system/sw/bin/ip /usr/bin/ip /bin/ip; do
  [ -x "$p" ] && case "$("$p" -V 2>&1)" in *iproute2*) IP=$p; break ;; esac
done
[ -n "${IP:-}" ] || IP="busybox ip"
"""
_GIVE_BACK_NIC = (
    _FIND_IP
    + """\
[ -e "/sys/class/net/$IFACE" ] || exit 0
[ "$IFACE" != "$DOCKER" ] || exit 0
$IP link set dev "$IFACE" down && $IP link set dev "$IFACE" name "$DOCKER"
"""
)
_TAKE_NIC = (
    _FIND_IP
    + """\
dev=$($IP -o -4 addr show to "$V4" | awk '{ print $2; exit }')
[ -n "$dev" ] || { echo "no interface has $V4" >&2; exit 1; }
echo "$dev"
if [ "$dev" != "$IFACE" ]; then
  $IP link set dev "$dev" down && $IP link set dev "$dev" address "$MAC" &&
    $IP link set dev "$dev" name "$IFACE" || exit 1
fi
$IP link set dev "$IFACE" up && $IP addr replace "$V4" dev "$IFACE" || exit 1
[ -z "$V6" ] || $IP addr replace "$V6" dev "$IFACE" nodad
n=0
until [ "$(cat "/sys/class/net/$IFACE/operstate" 2>/dev/null)" = up ]; do
  n=$((n + 1)); [ "$n" -le 100 ] || { echo "$IFACE did not come up" >&2; exit 1; }
  sleep 0.05
done
# Tell the neighbours where the address is now (their caches may hold the old port).
if command -v arping >/dev/null 2>&1; then
  (arping -U -c 2 -I "$IFACE" "${V4%/*}" >/dev/null 2>&1 &)
fi
"""
)
# What Docker calls a container's first interface.
DOCKER_FIRST_NIC = "eth0"


class LogFollower:
    """Follows one container's log from ``since`` and finds the agent's ready line."""

    def __init__(self, api: Any, container: str, node: str, since: float | None,
                 old_boot: str | None = None) -> None:  # fmt: skip
        self.api = api
        self.container = container
        self.node = node
        self.since = since
        self.old_boot = old_boot
        self.lines: collections.deque[str] = collections.deque(maxlen=40)
        self.boot_id: str | None = None
        self.error: str | None = None
        self.ended = False
        self._stream: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"nxc-log-{node}", daemon=True)

    def start(self) -> LogFollower:
        self._thread.start()
        return self

    def _follow(self) -> None:
        try:
            while not self._stop.is_set():
                self._read_stream()
                if self.boot_id or self.error or self._stop.is_set():
                    return
                # The stream ended: the container stopped, or a read timed out.
                found = self.api.inspect_container(self.container)
                if not found["State"].get("Running"):
                    return
                self._stop.wait(0.2)
        except Exception as exc:  # the daemon went away
            if not self._stop.is_set():
                self.error = self.error or f"following the container's log failed: {exc}"
        finally:
            self.ended = True
            self.stop()

    def _read_stream(self) -> None:
        kwargs: dict[str, Any] = {"stream": True, "follow": True}
        if self.since is not None:
            kwargs["since"] = self.since
        pending = ""
        self._stream = self.api.logs(self.container, **kwargs)
        if self._stop.is_set():
            self._stream.close()
            return
        try:
            for chunk in self._stream:
                pending += chunk.decode(errors="replace").replace("\r", "")
                *complete, pending = pending.split("\n")
                for line in complete:
                    self._line(line)
                if self.boot_id or self.error:
                    return
        except Exception:  # a read timeout, or stop() closed it: the caller decides
            return
        finally:
            with contextlib.suppress(Exception):
                self._stream.close()

    def _line(self, line: str) -> None:
        self.lines.append(line)
        if ERROR_MARK in line:
            self.error = line[line.index(ERROR_MARK) :].strip()
        elif READY_MARK in line:
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
            boot = fields.get("boot_id")
            if fields.get("node") == self.node and boot and boot != self.old_boot:
                self.boot_id = boot

    def tail(self, count: int = 3) -> str:
        shown = [line for line in self.lines if line.strip()][-count:]
        return " | ".join(shown) or "(no output yet)"

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()


@dataclass
class DockerNode:
    """NodeControl for one container, rebuilt from runtime.json in any nxc process."""

    name: str
    container: str  # the container's name (unique on the daemon)
    network: str
    ipv4: str
    ipv6: str
    mac: str
    interface: str
    environment: dict[str, str]
    client: Any  # docker.DockerClient of the daemon
    state: RuntimeState | None = None
    last_boot_id: str | None = None
    docker_nic: str = DOCKER_FIRST_NIC  # Docker's name of the experiment NIC
    flavour: str = "docker"
    capabilities: frozenset[Capability] = CONTAINER_CAPABILITIES
    _transport: DockerExecTransport | None = field(default=None, repr=False)
    _follower: LogFollower | None = field(default=None, repr=False)

    @property
    def api(self) -> Any:
        return self.client.api

    def _inspect(self) -> dict[str, Any] | None:
        from docker.errors import NotFound

        try:
            found: dict[str, Any] = self.api.inspect_container(self.container)
        except NotFound:
            return None
        return found

    def _call(self, doing: str, method: str, *args: Any, **kwargs: Any) -> Any:
        from docker.errors import APIError, NotFound

        try:
            return getattr(self.api, method)(self.container, *args, **kwargs)
        except NotFound:
            raise NxcError(f"{self.name}: its container {self.container} is gone") from None
        except APIError as exc:
            raise NxcError(f"{self.name}: {doing}: {exc.explanation or exc}") from None

    # -- state ----------------------------------------------------------------------

    def is_running(self) -> bool:
        found = self._inspect()
        return bool(found and found["State"].get("Running"))

    def boot_id(self) -> str | None:
        return self.last_boot_id

    def _save(self) -> None:
        if self.state is None:
            return

        def change(state: dict[str, Any]) -> None:
            entry = state["nodes"][self.name]
            entry.update(boot_id=self.last_boot_id, docker_nic=self.docker_nic)

        with contextlib.suppress(StateError):
            self.state.update(change)

    # -- boot -----------------------------------------------------------------------

    def boot(self, since: float | None) -> None:
        """Start the created (or stopped) container and begin following its log."""
        self.last_boot_id, old = None, self.last_boot_id
        self.docker_nic = DOCKER_FIRST_NIC  # a new sandbox: Docker numbers from eth0 again
        self._call("starting the container", "start")
        self._follower = LogFollower(self.api, self.container, self.name, since, old).start()

    def poll_ready(self) -> Attempt[str]:
        follower = self._follower
        assert follower is not None, "boot() first"
        if follower.boot_id:
            self.last_boot_id = follower.boot_id
            self._save()
            return Attempt.ok(follower.boot_id)
        if follower.error:
            raise StartError(f"{self.name}: {follower.error}")
        if follower.ended:
            found = self._inspect()
            state = found["State"] if found else {}
            if not state.get("Running"):
                raise StartError(
                    f"{self.name}: the container stopped during boot "
                    f"(exit code {state.get('ExitCode')}; {state.get('Error') or 'no error'})"
                )
        return Attempt.not_yet(follower.tail())

    def stop_following(self) -> None:
        if self._follower is not None:
            self._follower.stop()

    # -- NodeControl ----------------------------------------------------------------

    def transport(self) -> Transport:
        if not self.is_running():
            raise NxcError(f"{self.name}: the container is not running (start it first)")
        if self._transport is None or self._transport.closed:
            self._transport = DockerExecTransport(
                self.api, self.container, self.name, self.environment
            )
        return self._transport

    def _drop_transport(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def start(self, timeout: float = 120.0) -> None:
        if self.is_running():
            return
        self._drop_transport()
        # The log keeps earlier boots: only what comes after this start counts.
        self.boot(since=time.time())
        wait_all_ready([self], timeout)

    def _wait_stopped(self, timeout: float) -> None:
        # Stopped = not running, and Docker done releasing its network (the old
        # namespace, with the node's address, gone): a start right after must not
        # share the segment with it.
        def stopped(_remaining: float) -> Attempt[bool]:
            found = self._inspect()
            if found is None:
                return Attempt.ok(True)
            if found["State"].get("Running"):
                return Attempt.not_yet("running")
            networks = (found.get("NetworkSettings") or {}).get("Networks") or {}
            if any(n.get("EndpointID") for n in networks.values()):
                return Attempt.not_yet("stopped, its network endpoint not yet released")
            return Attempt.ok(True)

        try:
            poll(f"{self.name}'s container to stop", stopped, timeout)
        except PollExpired as exc:
            raise NxcError(f"{self.name}: {exc}") from None

    def shutdown(self, timeout: float = 60.0) -> None:
        if not self.is_running():
            return
        self._drop_transport()
        # docker stop: the image's stop signal (its init powers off), KILL at the end
        self._call("stopping the container", "stop", timeout=max(1, int(timeout)))
        self._wait_stopped(10)

    def crash(self) -> None:
        if not self.is_running():
            return
        self._drop_transport()
        from docker.errors import APIError

        with contextlib.suppress(APIError):  # it may have stopped meanwhile
            self.api.kill(self.container)
        self._wait_stopped(10)

    def _script(self, text: str, doing: str) -> str:
        values = {
            "V4": self.ipv4,
            "V6": self.ipv6,
            "MAC": self.mac,
            "IFACE": self.interface,
            "DOCKER": self.docker_nic,
        }
        prelude = "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())
        result = self.transport().run(prelude + text, 30)
        if result.status != 0:
            detail = result.stderr.decode(errors="replace").strip() or f"status {result.status}"
            raise NxcError(f"{self.name}: {doing}: {detail}")
        return result.output

    def _paused(self) -> bool:
        found = self._inspect()
        return bool(found and found["State"].get("Paused"))

    def block(self) -> None:
        from docker.errors import APIError

        if self._paused():
            raise NxcError(f"{self.name}: block: the node is paused (resume it first)")
        if self.is_running():
            self._script(_GIVE_BACK_NIC, f"block: giving {self.interface} back to Docker")
        try:
            self.api.disconnect_container_from_network(self.container, self.network)
        except APIError as exc:
            raise NxcError(f"{self.name}: block: {exc.explanation or exc}") from None

    def unblock(self) -> None:
        from docker.errors import APIError

        if self._paused():
            raise NxcError(f"{self.name}: unblock: the node is paused (resume it first)")
        try:
            self.api.connect_container_to_network(
                self.container,
                self.network,
                aliases=[self.name],
                ipv4_address=self.ipv4.split("/")[0],
                ipv6_address=self.ipv6.split("/")[0] or None,
            )
        except APIError as exc:
            raise NxcError(f"{self.name}: unblock: {exc.explanation or exc}") from None
        if not self.is_running():
            return  # the agent names the NIC when the node starts
        output = self._script(_TAKE_NIC, f"unblock: restoring {self.interface}")
        self.docker_nic = (output.split() or [DOCKER_FIRST_NIC])[0]
        self._save()

    def pause(self) -> None:
        self._call("pausing the container", "pause")

    def resume(self) -> None:
        self._call("resuming the container", "unpause")

    def refuse_fault(self, kind: str, params: dict[str, Any]) -> str | None:
        """Why this container must not take fault ``kind`` (None: it may), for the
        fault injector: a container is a group of the host's own processes."""
        if kind == "clock_skew":
            return (
                "a container shares the host kernel's clock, so setting it would move the "
                "host's clock (or fail without CAP_SYS_TIME); skew clocks on VMs (vm-ramdisk) "
                "or run the program under libfaketime"
            )
        if kind == "disk_full":
            path = str(params.get("path", ""))
            normal = posixpath.normpath(path) if path.startswith("/") else path
            if normal != SCRATCH_TMPFS and not normal.startswith(SCRATCH_TMPFS + "/"):
                return (
                    f"{path} is on the container's image layer or a volume, on the host's "
                    "disk: filling it would fill the host's file system; fill "
                    f"{SCRATCH_TMPFS} (a tmpfs of the container, a quarter of its memory)"
                )
        return None

    def console_tail(self, lines: int = 20) -> str:
        from docker.errors import APIError

        try:
            raw = self.api.logs(self.container, tail=lines)
        except APIError as exc:
            return f"(no console: {exc.explanation or exc})"
        text = raw.decode(errors="replace").replace("\r", "")
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def wait_all_ready(
    nodes: list[DockerNode], timeout: float, progress: Progress | None = None
) -> None:
    """Wait until every node's agent reports ready, or fail naming each late node."""
    try:
        # The followers do the reading: a check only looks at what they found.
        ready.wait_all_ready(nodes, timeout, progress, first=0.005, longest=0.05)
    finally:
        for node in nodes:
            node.stop_following()


if TYPE_CHECKING:  # the driver's protocols, checked by mypy: drift breaks the build

    def _is_node_control(control: DockerNode) -> NodeControl:
        return control

    def _is_transport(transport: DockerExecTransport) -> Transport:
        return transport
