"""Pure generation of the ``tc -batch`` scripts that realise a topology on each node.

Nothing here runs a command. From a :class:`~nxc.netem.model.Topology` and a
:class:`~nxc.contracts.deployment.Deployment`, :func:`plan` decides what each node
needs; :func:`install_script`, :func:`update_script` and :func:`reset_script` turn that
into text for ``tc -batch`` (plus ``ip -batch`` lines for the ifb device).

The tree nxc installs on a node's experiment interface (egress, shaped at the sender)::

    6e78:   htb root, default class 6e78:1
    ├─ 6e78:1   unlisted traffic: unshaped (rate ``unshaped_rate``), leaf 8000: pfifo
    └─ 6e78:M   one class per constrained destination node (M = 2 + its position in
                the deployment), rate = the pair's rate or ``unshaped_rate``,
                leaf (8001+position): netem with delay/jitter/loss/… and a sized ``limit``;
                u32 filters ``ip dst A/32`` (prio 1) and ``ip6 dst A/128`` (prio 2)

With ``side: destination`` the same tree is built on an ifb device ``nxi-<interface>``
matching *source* addresses, and the interface's ingress gets one u32 filter (pref 28280)
redirecting every packet to the ifb. Reserved identifiers, which reset uses to remove
only what nxc installed: root handle ``6e78:``, leaf handles ``8000:``-``fffe:`` under it,
ingress filter pref 28280, device names ``nxi-*``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from nxc.contracts.deployment import Deployment
from nxc.errors import ContractError, NxcError
from nxc.netem import units
from nxc.netem.model import PairShaping, Topology

ROOT_MAJOR = 0x6E78
ROOT = f"{ROOT_MAJOR:x}:"
DEFAULT_MINOR = 1
DEFAULT_LEAF_MAJOR = 0x8000
INGRESS_PREF = 0x6E78  # 28280
IFB_PREFIX = "nxi-"
IPV4_PRIO = 1
IPV6_PRIO = 2
QUANTUM = 60000
MAX_PEERS = 0xFFFE - DEFAULT_LEAF_MAJOR  # leaf majors 8001..fffe

Direction = Literal["egress", "ingress"]


@dataclass(frozen=True)
class GenOptions:
    """Knobs of the generator (defaults suit VMs and Grid'5000 nodes alike).

    ``leaf``: ``"netem"``, or a substitute qdisc kind (``"pfifo"``, ``"bfifo"``) for hosts
    whose kernel has no netem: the tree keeps its shape, leaves only queue (tests, bench).
    ``unshaped_rate``: rate of classes that must not limit (bits/s).
    ``line_rate`` and ``packet_bytes``: assumed fastest sender and typical packet size, to
    size netem's queue for delayed traffic that has no rate limit.
    ``min_limit``: queue length added on top of the in-flight packets (netem's own default).
    """

    leaf: str = "netem"
    unshaped_rate: int = 100_000_000_000
    line_rate: int = 10_000_000_000
    packet_bytes: int = 1500
    min_limit: int = 1000
    max_limit: int = 10_000_000
    ipv6: bool = True


@dataclass(frozen=True)
class PeerClass:
    """One HTB class: traffic to (egress) or from (ingress) one peer node."""

    peer: str
    position: int
    addresses: tuple[str, ...]
    shaping: PairShaping | None  # None: a pass-through class kept from an earlier plan

    @property
    def minor(self) -> int:
        return self.position + 2

    @property
    def classid(self) -> str:
        return f"{ROOT_MAJOR:x}:{self.minor:x}"

    @property
    def leaf_handle(self) -> str:
        return f"{DEFAULT_LEAF_MAJOR + 1 + self.position:x}:"


@dataclass(frozen=True)
class DevicePlan:
    device: str
    direction: Direction
    classes: tuple[PeerClass, ...]

    def peers(self) -> list[str]:
        return [c.peer for c in self.classes]


@dataclass(frozen=True)
class NodePlan:
    node: str
    interface: str
    egress: DevicePlan | None = None
    ingress: DevicePlan | None = None

    @property
    def ifb(self) -> str:
        return ifb_name(self.interface)

    def is_empty(self) -> bool:
        return self.egress is None and self.ingress is None


@dataclass(frozen=True)
class NodeScript:
    """What to run on one node: ``ip -batch`` lines before and after one ``tc -batch``."""

    ip_before: tuple[str, ...] = ()
    tc: tuple[str, ...] = ()
    ip_after: tuple[str, ...] = ()

    @property
    def tc_batch(self) -> str:
        return "".join(line + "\n" for line in self.tc)

    def is_empty(self) -> bool:
        return not (self.ip_before or self.tc or self.ip_after)


@dataclass(frozen=True)
class Qdisc:
    kind: str
    handle: str
    parent: str  # "root", "ffff:fff1" (ingress) or a class id


@dataclass(frozen=True)
class InstalledState:
    """What an interface carries, as read back from ``tc``/``ip`` on the node."""

    interface: str
    qdiscs: tuple[Qdisc, ...] = ()
    ingress_prefs: tuple[int, ...] = ()
    ifb_present: bool = False
    ifb_qdiscs: tuple[Qdisc, ...] = field(default_factory=tuple)

    @property
    def root(self) -> Qdisc | None:
        return next((q for q in self.qdiscs if q.parent == "root"), None)

    @property
    def ifb_root(self) -> Qdisc | None:
        return next((q for q in self.ifb_qdiscs if q.parent == "root"), None)

    @property
    def has_ingress_qdisc(self) -> bool:
        return any(q.kind in ("ingress", "clsact") for q in self.qdiscs)

    @property
    def ours_at_root(self) -> bool:
        return is_ours(self.root)

    @property
    def our_ingress_filter(self) -> bool:
        return INGRESS_PREF in self.ingress_prefs


class ForeignQdisc(NxcError):
    """The interface's root qdisc was installed by someone else: nxc will not replace it."""


def ifb_name(interface: str) -> str:
    return (IFB_PREFIX + interface)[:15]


def is_ours(qdisc: Qdisc | None) -> bool:
    return qdisc is not None and qdisc.kind == "htb" and qdisc.handle == ROOT


def is_kernel_default(qdisc: Qdisc | None) -> bool:
    """Qdiscs the kernel attaches by itself have handle 0: (noqueue, pfifo_fast, mq…)."""
    return qdisc is None or qdisc.handle == "0:"


# ------------------------------------------------------------------ planning


def plan(
    topology: Topology,
    deployment: Deployment,
    previous: Mapping[str, NodePlan] | None = None,
) -> dict[str, NodePlan]:
    """Per node, the classes it needs. ``previous`` keeps earlier classes as pass-through
    so that a run-time change can be applied without deleting filters (see update_script).
    """
    if len(deployment.nodes) > MAX_PEERS:
        raise ContractError(
            f"{topology.source}: at most {MAX_PEERS} nodes can be shaped "
            f"(the deployment has {len(deployment.nodes)})"
        )
    pairs = topology.resolve(deployment)
    position = {n.name: i for i, n in enumerate(deployment.nodes)}
    by_name = {n.name: n for n in deployment.nodes}
    egress: dict[str, dict[str, PairShaping]] = {n.name: {} for n in deployment.nodes}
    ingress: dict[str, dict[str, PairShaping]] = {n.name: {} for n in deployment.nodes}
    for (src, dst), shaping in pairs.items():
        if shaping.side == "destination":
            ingress[dst][src] = shaping
        else:
            egress[src][dst] = shaping

    def addresses(peer: str) -> tuple[str, ...]:
        node = by_name[peer]
        return (node.ipv4, node.ipv6)

    def device(
        node: str, device_name: str, direction: Direction, wanted: dict[str, PairShaping]
    ) -> DevicePlan | None:
        old = previous.get(node) if previous else None
        old_device = (old.egress if direction == "egress" else old.ingress) if old else None
        peers = set(wanted)
        if old_device is not None:
            peers |= {p for p in old_device.peers() if p in position}
        if not peers:
            return None
        classes = tuple(
            PeerClass(peer, position[peer], addresses(peer), wanted.get(peer))
            for peer in sorted(peers, key=position.__getitem__)
        )
        return DevicePlan(device_name, direction, classes)

    plans: dict[str, NodePlan] = {}
    for node in deployment.nodes:
        iface = deployment.interface
        plans[node.name] = NodePlan(
            node=node.name,
            interface=iface,
            egress=device(node.name, iface, "egress", egress[node.name]),
            ingress=device(node.name, ifb_name(iface), "ingress", ingress[node.name]),
        )
    return plans


# ------------------------------------------------------------------ sizing


def netem_limit(shaping: PairShaping | None, options: GenOptions) -> int:
    """Queue length (packets) of a leaf so that delayed traffic is not silently dropped.

    limit = min_limit + ceil(pps x (delay + 4 x jitter)), where
    pps = (the pair's rate, or ``line_rate`` if it has none) / (8 x packet_bytes):
    the packets in flight inside netem during the delay, plus netem's usual queue.
    An explicit ``limit`` in the topology wins.
    """
    if shaping is None:
        return options.min_limit
    if shaping.limit is not None:
        return shaping.limit
    rate = shaping.rate if shaping.rate is not None else options.line_rate
    seconds = (shaping.delay + 4 * shaping.jitter) / 1_000_000
    pps = rate / (8 * options.packet_bytes)
    return min(options.max_limit, options.min_limit + math.ceil(pps * seconds))


def htb_burst(rate: int) -> int:
    """Bytes of burst: 2 ms worth of the rate, at least 3200 (two full frames).

    Given explicitly because tc's own computation overflows to 0 above ~4gbit.
    """
    return max(3200, math.ceil(rate / 8 * 0.002))


# ------------------------------------------------------------------ rendering


def _class_args(rate: int) -> str:
    burst = htb_burst(rate)
    r = units.format_rate(rate)
    return f"htb rate {r} ceil {r} burst {burst} cburst {burst} quantum {QUANTUM}"


def leaf_args(shaping: PairShaping | None, options: GenOptions) -> str:
    """Arguments of a leaf qdisc (after the handle): ``netem limit N delay …``."""
    limit = netem_limit(shaping, options)
    if options.leaf != "netem":
        return f"{options.leaf} limit {limit}"
    words = ["netem", "limit", str(limit)]
    if shaping is None:
        return " ".join(words)
    if shaping.partitioned:
        return " ".join([*words, "loss", "100%"])
    if shaping.delay or shaping.jitter:
        words += ["delay", units.format_duration(shaping.delay)]
        if shaping.jitter:
            words.append(units.format_duration(shaping.jitter))
            if shaping.distribution and shaping.distribution != "uniform":
                words += ["distribution", shaping.distribution]
    for name in ("loss", "corrupt", "duplicate", "reorder"):
        value = getattr(shaping, name)
        if value:
            words += [name, units.format_percent(value)]
    return " ".join(words)


def _class_rate(shaping: PairShaping | None, options: GenOptions) -> int:
    if shaping is None or shaping.partitioned or shaping.rate is None:
        return options.unshaped_rate
    return shaping.rate


def _filters(dev: str, peer: PeerClass, direction: Direction, options: GenOptions) -> list[str]:
    key = "dst" if direction == "egress" else "src"
    ipv4, *rest = peer.addresses
    lines = [
        f"filter add dev {dev} parent {ROOT} protocol ip prio {IPV4_PRIO} "
        f"u32 match ip {key} {ipv4}/32 flowid {peer.classid}"
    ]
    if options.ipv6:
        for ipv6 in rest:
            lines.append(
                f"filter add dev {dev} parent {ROOT} protocol ipv6 prio {IPV6_PRIO} "
                f"u32 match ip6 {key} {ipv6}/128 flowid {peer.classid}"
            )
    return lines


def _add_class(dev: str, peer: PeerClass, options: GenOptions) -> list[str]:
    return [
        f"class add dev {dev} parent {ROOT} classid {peer.classid} "
        + _class_args(_class_rate(peer.shaping, options)),
        f"qdisc add dev {dev} parent {peer.classid} handle {peer.leaf_handle} "
        + leaf_args(peer.shaping, options),
    ]


def _build_device(device: DevicePlan, options: GenOptions) -> list[str]:
    dev = device.device
    lines = [
        f"qdisc add dev {dev} root handle {ROOT} htb default {DEFAULT_MINOR:x}",
        f"class add dev {dev} parent {ROOT} classid {ROOT}{DEFAULT_MINOR:x} "
        + _class_args(options.unshaped_rate),
        f"qdisc add dev {dev} parent {ROOT}{DEFAULT_MINOR:x} handle {DEFAULT_LEAF_MAJOR:x}: "
        f"pfifo limit {options.min_limit}",
    ]
    for peer in device.classes:
        lines += _add_class(dev, peer, options)
    for peer in device.classes:
        lines += _filters(dev, peer, device.direction, options)
    return lines


def _ingress_hook(node: NodePlan, state: InstalledState) -> list[str]:
    lines: list[str] = []
    if not state.has_ingress_qdisc:
        lines.append(f"qdisc add dev {node.interface} handle ffff: ingress")
    if not state.our_ingress_filter:
        lines.append(
            f"filter add dev {node.interface} parent ffff: protocol all prio {INGRESS_PREF} "
            f"u32 match u32 0 0 action mirred egress redirect dev {node.ifb}"
        )
    return lines


def _unhook_ingress(interface: str, state: InstalledState) -> list[str]:
    lines: list[str] = []
    if state.our_ingress_filter:
        lines.append(f"filter del dev {interface} parent ffff: protocol all prio {INGRESS_PREF}")
        others = [p for p in state.ingress_prefs if p != INGRESS_PREF]
        if not others and any(q.kind == "ingress" for q in state.qdiscs):
            lines.append(f"qdisc del dev {interface} ingress")
    return lines


def check_ownership(node: str, state: InstalledState) -> None:
    """Refuse to touch a root qdisc nxc did not install."""
    root = state.root
    if root is not None and not is_ours(root) and not is_kernel_default(root):
        raise ForeignQdisc(
            f"{node}: {state.interface} already has a root qdisc that nxc did not install "
            f"({root.kind} {root.handle}); nxc leaves it alone: remove it first "
            f"(tc qdisc del dev {state.interface} root)"
        )
    if state.ifb_present:
        ifb_root = state.ifb_root
        if ifb_root is not None and not is_ours(ifb_root) and not is_kernel_default(ifb_root):
            raise ForeignQdisc(
                f"{node}: {ifb_name(state.interface)} carries a root qdisc nxc did not install "
                f"({ifb_root.kind} {ifb_root.handle}); nxc leaves it alone"
            )


def install_script(node: NodePlan, state: InstalledState, options: GenOptions) -> NodeScript:
    """Replace whatever nxc had installed with ``node``'s plan (one ``tc -batch``)."""
    check_ownership(node.node, state)
    ip_before: list[str] = []
    tc: list[str] = []
    ip_after: list[str] = []
    if state.ours_at_root:
        tc.append(f"qdisc del dev {node.interface} root")
    if node.egress is not None:
        tc += _build_device(node.egress, options)
    if node.ingress is not None:
        if not state.ifb_present:
            ip_before += [f"link add {node.ifb} type ifb", f"link set dev {node.ifb} up"]
        elif is_ours(state.ifb_root):
            tc.append(f"qdisc del dev {node.ifb} root")
        tc += _build_device(node.ingress, options)
        tc += _ingress_hook(node, state)
    else:
        tc += _unhook_ingress(node.interface, state)
        if state.ifb_present:
            ip_after.append(f"link del {node.ifb}")
    return NodeScript(tuple(ip_before), tuple(tc), tuple(ip_after))


def update_script(
    old: NodePlan, new: NodePlan, state: InstalledState, options: GenOptions
) -> NodeScript | None:
    """Change an installed plan into ``new`` without rebuilding, or None if that is not possible.

    Possible when every class of ``old`` is still in ``new`` (plan() keeps them as
    pass-through) and the installed state still has nxc's trees: classes are added, their
    rates changed with ``class change``, their leaves with ``qdisc change``; packets queued
    in unchanged classes are kept.
    """
    check_ownership(new.node, state)
    tc: list[str] = []
    ip_before: list[str] = []
    for direction in ("egress", "ingress"):
        before: DevicePlan | None = getattr(old, direction)
        after: DevicePlan | None = getattr(new, direction)
        if before is None and after is None:
            continue
        if before is None and after is not None:
            installed = state.ours_at_root if direction == "egress" else is_ours(state.ifb_root)
            if installed:
                return None
            if direction == "ingress":
                if not state.ifb_present:
                    ip_before += [f"link add {new.ifb} type ifb", f"link set dev {new.ifb} up"]
                tc += _build_device(after, options)
                tc += _ingress_hook(new, state)
            else:
                tc += _build_device(after, options)
            continue
        if after is None or before is None:
            return None
        installed = state.ours_at_root if direction == "egress" else is_ours(state.ifb_root)
        if not installed:
            return None
        old_classes = {c.peer: c for c in before.classes}
        new_classes = {c.peer: c for c in after.classes}
        if not set(old_classes) <= set(new_classes):
            return None
        dev = after.device
        added: list[PeerClass] = []
        for peer, cls in new_classes.items():
            prev = old_classes.get(peer)
            if prev is None:
                added.append(cls)
                tc += _add_class(dev, cls, options)
                continue
            if prev.position != cls.position or prev.addresses != cls.addresses:
                return None
            if _class_rate(prev.shaping, options) != _class_rate(cls.shaping, options):
                tc.append(
                    f"class change dev {dev} parent {ROOT} classid {cls.classid} "
                    + _class_args(_class_rate(cls.shaping, options))
                )
            if leaf_args(prev.shaping, options) != leaf_args(cls.shaping, options):
                tc.append(
                    f"qdisc change dev {dev} parent {cls.classid} handle {cls.leaf_handle} "
                    + leaf_args(cls.shaping, options)
                )
        for cls in added:
            tc += _filters(dev, cls, after.direction, options)
    return NodeScript(tuple(ip_before), tuple(tc), ())


def reset_script(node: str, state: InstalledState) -> NodeScript:
    """Remove what nxc installed on this interface, and nothing else."""
    tc: list[str] = []
    ip_after: list[str] = []
    if state.ours_at_root:
        tc.append(f"qdisc del dev {state.interface} root")
    tc += _unhook_ingress(state.interface, state)
    if state.ifb_present:
        ip_after.append(f"link del {ifb_name(state.interface)}")
    return NodeScript((), tuple(tc), tuple(ip_after))


def install_all(
    plans: Mapping[str, NodePlan], options: GenOptions | None = None
) -> dict[str, NodeScript]:
    """Scripts for fresh nodes (nothing installed yet): handy for tests and previews."""
    opts = options or GenOptions()
    return {name: install_script(p, InstalledState(p.interface), opts) for name, p in plans.items()}


# ------------------------------------------------------------------ reading state back

_QDISC_LINE = re.compile(
    r"^qdisc\s+(?P<kind>\S+)\s+(?P<handle>[0-9a-f]+:)\s+(?:dev\s+\S+\s+)?"
    r"(?P<where>root|parent\s+(?P<parent>\S+))"
)
_PREF = re.compile(r"\bpref\s+(\d+)\b")


def parse_qdiscs(text: str) -> tuple[Qdisc, ...]:
    """Parse ``tc qdisc show dev IF`` output."""
    found: list[Qdisc] = []
    for line in text.splitlines():
        match = _QDISC_LINE.match(line.strip())
        if match:
            parent = "root" if match.group("where") == "root" else match.group("parent")
            found.append(Qdisc(match.group("kind"), match.group("handle"), parent))
    return tuple(found)


def parse_filter_prefs(text: str) -> tuple[int, ...]:
    """Distinct filter preferences in ``tc filter show dev IF ingress`` output."""
    prefs: list[int] = []
    for line in text.splitlines():
        match = _PREF.search(line)
        if match and int(match.group(1)) not in prefs:
            prefs.append(int(match.group(1)))
    return tuple(prefs)
