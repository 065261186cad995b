"""The driver's handle on a Grid'5000 node once it runs its role: ssh as root with the
deployment's key, the node's new host key checked. No power control (the API offers
none to nxc: ``crash()`` and ``shutdown()`` are refused with one line), no link cutting;
the console tail comes from a console capture when one is configured."""

from __future__ import annotations

from pathlib import Path

from nxc.runtime.node import Capability
from nxc.runtime.transport import Transport
from nxc.transports.ssh import SshEndpoint, SshNodeControl, SshSettings, SshTransport


def console_tail(consoles: Path | None, fqdn: str, lines: int = 15) -> str:
    """The last lines of ``<consoles>/<fqdn>.log``, or "" without a capture."""
    if consoles is None:
        return ""
    try:
        data = (consoles / f"{fqdn}.log").read_bytes()[-16384:]
    except OSError:
        return ""
    text = data.decode(errors="replace").replace("\r", "")
    return "\n".join(text.splitlines()[-lines:])


class G5kNode:
    """NodeControl for one deployed node (rebuilt from runtime.json in any process)."""

    def __init__(
        self,
        name: str,
        fqdn: str,
        flavour: str,
        settings: SshSettings,
        *,
        ready: bool,
        boot_id: str | None,
        consoles: Path | None,
    ) -> None:
        self.name = name
        self.fqdn = fqdn
        self.flavour = flavour
        self._ready = ready
        self._boot_id = boot_id
        self._consoles = consoles
        self._ssh = SshNodeControl(SshTransport(SshEndpoint(fqdn), settings), flavour=flavour)
        caps = set(self._ssh.capabilities)
        if consoles is not None:
            caps.add(Capability.CONSOLE)
        self.capabilities = frozenset(caps)

    def transport(self) -> Transport:
        return self._ssh.transport()

    def is_running(self) -> bool:
        return self._ready

    def boot_id(self) -> str | None:
        return self._boot_id

    def start(self, timeout: float = 120.0) -> None:
        if not self._ready:
            from nxc.runtime.node import CapabilityMissing

            raise CapabilityMissing(
                f"{self.name}: the node failed to deploy; nxc start --retry-failed redeploys it"
            )

    def shutdown(self, timeout: float = 60.0) -> None:
        self._ssh.shutdown(timeout)

    def crash(self) -> None:
        self._ssh.crash()

    def block(self) -> None:
        self._ssh.block()

    def unblock(self) -> None:
        self._ssh.unblock()

    def pause(self) -> None:
        self._ssh.pause()

    def resume(self) -> None:
        self._ssh.resume()

    def console_tail(self, lines: int = 20) -> str:
        return console_tail(self._consoles, self.fqdn, lines)
