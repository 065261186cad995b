"""The nodes as Grid'5000 hands them out: running the standard environment, reached
over ssh as the user. One fan-out learns, per node, what the deployment needs: the
boot id (to recognise the node once it has kexec'ed), whether root comes from
``sudo-g5k``, where kexec is, and the NICs with their MACs and addresses (the
experiment NIC and the site addresses kept across the kexec)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nxc.errors import StartError
from nxc.transports.ssh import FanoutResult, SshFleet

PROBE = r"""
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
echo "uid $(id -u)"
echo "boot $(cat /proc/sys/kernel/random/boot_id)"
echo "arch $(uname -m)"
echo "cmdline $(cat /proc/cmdline)"
echo "mem $(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
# the address this node sees nxc's connection come from (where it reaches nxc's services)
echo "client ${SSH_CONNECTION%% *}"
r=$(ip -o -4 route show default 2>/dev/null | head -n 1)
[ -z "$r" ] || echo "route $r"
for d in /sys/class/net/*; do
	[ -e "$d/device" ] || continue
	n=${d##*/}
	a=$(ip -o -4 addr show dev "$n" | awk '{ print $4 }' | tr '\n' ' ')
	echo "nic $n $(cat "$d/address") $a"
done
k=$(command -v kexec) && echo "kexec $k"
s=$(command -v sudo-g5k) && echo "sudo $s"
exit 0
"""


@dataclass(frozen=True)
class Nic:
    device: str
    mac: str
    addresses: tuple[str, ...]  # IPv4 CIDRs


@dataclass(frozen=True)
class NodeFacts:
    """What the standard environment of one node said about itself."""

    fqdn: str
    uid: int
    boot_id: str
    arch: str
    nics: Mapping[str, Nic]
    default_dev: str | None = None
    gateway: str | None = None
    kexec: str | None = None
    sudo: str | None = None
    cmdline: str = ""
    mem_kb: int = 0  # MemTotal
    client: str = ""  # where nxc's ssh connection comes from, as the node sees it

    @property
    def root_prefix(self) -> str:
        """What to put before a command to run it as root."""
        if self.uid == 0:
            return ""
        if self.sudo:
            return f"{self.sudo} "
        raise StartError(
            f"{self.fqdn}: not root and no sudo-g5k there (a deploy job gives root only "
            "after a deployment: reserve with --job-type deploy, or without 'deploy')"
        )

    def experiment_nic(self, wanted: str | None) -> Nic:
        if wanted:
            nic = self.nics.get(wanted)
            if nic is None:
                known = ", ".join(self.nics) or "none"
                raise StartError(f"{self.fqdn}: no NIC named {wanted} (NICs: {known})")
            return nic
        if self.default_dev and self.default_dev in self.nics:
            return self.nics[self.default_dev]
        raise StartError(
            f"{self.fqdn}: cannot tell the experiment NIC (no default route on a physical NIC;"
            f" NICs: {', '.join(self.nics) or 'none'}): give --experiment-nic"
        )

    def site_net(self) -> list[str]:
        """The node's own addressing, kept across the kexec: ``addr MAC CIDR`` lines and
        ``route MAC GATEWAY`` for the default route."""
        lines = [f"addr {nic.mac} {cidr}" for nic in self.nics.values() for cidr in nic.addresses]
        if self.gateway and self.default_dev and self.default_dev in self.nics:
            lines.append(f"route {self.nics[self.default_dev].mac} {self.gateway}")
        return lines


def parse_probe(fqdn: str, text: str) -> NodeFacts:
    values: dict[str, str] = {}
    nics: dict[str, Nic] = {}
    default_dev = gateway = None
    for line in text.splitlines():
        key, _, rest = line.strip().partition(" ")
        if key == "nic":
            parts = rest.split()
            if len(parts) >= 2:
                addresses = tuple(a for a in parts[2:] if _is_cidr(a))
                nics[parts[0]] = Nic(parts[0], parts[1].lower(), addresses)
        elif key == "route":
            words = rest.split()
            if "via" in words[:-1]:
                gateway = words[words.index("via") + 1]
            if "dev" in words[:-1]:
                default_dev = words[words.index("dev") + 1]
        elif key:
            values[key] = rest.strip()
    try:
        uid = int(values["uid"])
        boot_id = values["boot"]
    except (KeyError, ValueError):
        raise StartError(
            f"{fqdn}: unexpected answer from the standard environment: {text[:200]!r}"
        ) from None
    return NodeFacts(
        fqdn=fqdn,
        uid=uid,
        boot_id=boot_id,
        arch=values.get("arch", ""),
        nics=nics,
        default_dev=default_dev,
        gateway=gateway,
        kexec=values.get("kexec"),
        sudo=values.get("sudo"),
        cmdline=values.get("cmdline", ""),
        mem_kb=int(values["mem"]) if values.get("mem", "").isdigit() else 0,
        client=values.get("client", "") if _is_address(values.get("client", "")) else "",
    )


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_cidr(text: str) -> bool:
    try:
        ipaddress.ip_interface(text)
    except ValueError:
        return False
    return True


def probe(
    fleet: SshFleet, nodes: Sequence[str], timeout: float
) -> tuple[dict[str, NodeFacts], dict[str, str]]:
    """Ask every node at once; facts for those that answered, an error for the others."""
    result: FanoutResult = fleet.run(PROBE, timeout=timeout, nodes=nodes)
    facts: dict[str, NodeFacts] = {}
    errors: dict[str, str] = {}
    for outcome in result:
        if not outcome.ok:
            errors[outcome.node] = outcome.describe()
            continue
        try:
            facts[outcome.node] = parse_probe(outcome.node, outcome.stdout)
        except StartError as exc:
            errors[outcome.node] = str(exc)
    return facts, errors
