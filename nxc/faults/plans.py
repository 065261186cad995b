"""Faults as plans: what to do to apply one, and what undoes it (pure, no execution).

A :class:`Fault` names a kind, its target nodes and its parameters. :func:`plan`
turns it into one of:

* :class:`ShellPlan`: a shell command per node to apply it and one to undo it (POSIX
  sh with busybox's applets; node-side state under ``/run/nxc/faults/<id>.*``, so
  that the undo acts on exactly what the apply touched);
* :class:`NetemPlan`: a change to the network topology (partitions in Jepsen's
  patterns, loss and delay spikes), applied and removed through :mod:`nxc.netem`;
* :class:`PowerPlan`: a node power action (crash, then start again).

Executing plans is :mod:`nxc.faults.injector`'s job.
"""

from __future__ import annotations

import base64
import random
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nxc.contracts import Deployment
from nxc.errors import NxcError
from nxc.faults.patterns import PATTERNS, cuts
from nxc.netem import Topology

__all__ = [
    "KINDS",
    "STATE_DIR",
    "Fault",
    "FaultError",
    "NetemPlan",
    "Plan",
    "PowerPlan",
    "ShellPlan",
    "plan",
    "resolve_nodes",
]

STATE_DIR = "/run/nxc/faults"
_SIGNAL = re.compile(r"^(SIG)?[A-Z0-9]{2,8}$|^[0-9]{1,2}$")
_SIZE = re.compile(r"^([0-9]+)([KMG]?)$")


class FaultError(NxcError):
    """A fault is malformed, or could not be applied or undone."""


@dataclass(frozen=True)
class Fault:
    """One fault: ``kind`` on ``nodes`` with ``params``; ``id`` names its node-side state."""

    kind: str
    nodes: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    id: str = "f1"

    def describe(self) -> str:
        shown = " ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.kind} on {','.join(self.nodes) or '-'}" + (f" ({shown})" if shown else "")


@dataclass(frozen=True)
class ShellPlan:
    apply: dict[str, str]
    undo: dict[str, str]


@dataclass(frozen=True)
class NetemPlan:
    transform: Callable[[Topology], Topology]
    detail: dict[str, Any]


@dataclass(frozen=True)
class PowerPlan:
    nodes: tuple[str, ...]
    apply: str  # "crash"
    undo: str | None  # "start"


Plan = ShellPlan | NetemPlan | PowerPlan


def resolve_nodes(deployment: Deployment, names: Sequence[str] | str | None) -> tuple[str, ...]:
    """Node names from node or role names (None or "all": every node), in order."""
    if names is None or names == "all":
        return tuple(n.name for n in deployment.nodes)
    wanted = [names] if isinstance(names, str) else list(names)
    found: list[str] = []
    for name in wanted:
        if any(n.name == name for n in deployment.nodes):
            matches = [name]
        else:
            matches = [n.name for n in deployment.nodes_of(name)]
        if not matches:
            known = ", ".join(n.name for n in deployment.nodes)
            raise FaultError(f"no node or role named {name!r} (nodes: {known})")
        found += [m for m in matches if m not in found]
    return tuple(found)


# -- shell helpers --------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _select(params: Mapping[str, Any]) -> tuple[str, str]:
    """Which processes: exactly one of name, pid, pattern, service."""
    given = [k for k in ("name", "pid", "pattern", "service") if params.get(k) is not None]
    if len(given) != 1:
        raise FaultError("say which processes with exactly one of name, pid, pattern, service")
    key = given[0]
    value = str(params[key])
    if key == "pid" and not value.isdigit():
        raise FaultError(f"pid must be a number, not {value!r}")
    if not value.strip() or "\n" in value:
        raise FaultError(f"{key} must be one non-empty line")
    return key, value


def _pids(key: str, value: str) -> str:
    """Shell text that prints the selected pids (never this shell's own), one a line.

    A pattern travels base64-encoded, so that no command line but the targets'
    contains it.
    """
    if key == "name":
        found = f"pidof {shlex.quote(value)} | tr ' ' '\\n'"
    elif key == "pid":
        found = f"[ -d /proc/{value} ] && echo {value}"
    elif key == "service":
        unit = shlex.quote(value)
        found = (
            f'cg=$(systemctl show -p ControlGroup --value {unit}) && [ -n "$cg" ] && '
            'cat "/sys/fs/cgroup$cg/cgroup.procs"'
        )
    else:
        # One grep over every command line (arguments are NUL-separated: -z), the
        # pattern read from a file so that grep's own command line does not match.
        found = (
            f'pf=$(mktemp) && echo {_b64(value)} | base64 -d > "$pf" && '
            'grep -lzsF -f "$pf" /proc/[0-9]*/cmdline | sed "s|^/proc/||; s|/cmdline$||"; '
            'rm -f "$pf"'
        )
    return f"{{ {found}; }} 2>/dev/null | grep -vx \"$$\" | grep -v '^$'"


def _what(key: str, value: str) -> str:
    """For messages: the pattern is decoded only when the message is printed."""
    if key == "pattern":
        return f"command line '$(echo {_b64(value)} | base64 -d)'"
    label = {"name": "process", "pid": "pid", "service": "service"}[key]
    return f"{label} {shlex.quote(value)}"


def _signal(params: Mapping[str, Any], default: str) -> str:
    sig = str(params.get("signal", default)).upper()
    if not _SIGNAL.match(sig):
        raise FaultError(f"bad signal {sig!r} (e.g. KILL, TERM, 9)")
    return sig.removeprefix("SIG")


def _state(fault: Fault, suffix: str) -> str:
    return f"{STATE_DIR}/{fault.id}.{suffix}"


def _every(fault: Fault, command: str) -> dict[str, str]:
    return {node: command for node in fault.nodes}


# -- kinds ----------------------------------------------------------------------------


def _kill(fault: Fault) -> ShellPlan:
    key, value = _select(fault.params)
    sig = _signal(fault.params, "KILL")
    apply = (
        f"pids=$({_pids(key, value)}); "
        f'[ -n "$pids" ] || {{ echo "no {_what(key, value)} running" >&2; exit 3; }}; '
        f"kill -{sig} $pids"
    )
    restart = fault.params.get("restart")
    undo = ""
    if restart:
        # Started in its own session, with no tie to the command's output.
        undo = f"setsid sh -c {shlex.quote(str(restart))} </dev/null >/dev/null 2>&1 &"
    return ShellPlan(_every(fault, apply), _every(fault, undo))


def _pause(fault: Fault) -> ShellPlan:
    key, value = _select(fault.params)
    state = _state(fault, "pids")
    apply = (
        f"mkdir -p {STATE_DIR} && pids=$({_pids(key, value)}); "
        f'[ -n "$pids" ] || {{ echo "no {_what(key, value)} running" >&2; exit 3; }}; '
        f"echo $pids > {state} && kill -STOP $pids"
    )
    undo = f"[ -r {state} ] || exit 0; kill -CONT $(cat {state}) 2>/dev/null; rm -f {state}"
    return ShellPlan(_every(fault, apply), _every(fault, undo))


def _set_clock(offset: str) -> str:
    # Wait for a second to begin, so that the whole-second clock is set with no
    # truncation error (busybox date sets whole seconds).
    return (
        's=$(date +%s); while [ "$(date +%s)" = "$s" ]; do :; done; '
        f'date -s "@$((s + 1 + ({offset})))" >/dev/null'
    )


def _clock_skew(fault: Fault) -> ShellPlan:
    raw = fault.params.get("offset")
    try:
        offset = int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise FaultError(f"clock_skew: offset must be whole seconds, not {raw!r}") from None
    if offset != float(raw):  # type: ignore[arg-type]
        raise FaultError(f"clock_skew: offset must be whole seconds, not {raw!r}")
    state = _state(fault, "skew")
    apply = f"mkdir -p {STATE_DIR} && echo {offset} > {state} && {_set_clock(str(offset))}"
    undo = f"[ -r {state} ] || exit 0; off=$(cat {state}); {_set_clock('-off')} && rm -f {state}"
    return ShellPlan(_every(fault, apply), _every(fault, undo))


def _stop_groups(state: str) -> str:
    return (
        f"[ -r {state} ] || exit 0; for p in $(cat {state}); do "
        'kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null; done; '
        f"rm -f {state}"
    )


def _cpu(fault: Fault) -> ShellPlan:
    workers = int(fault.params.get("workers", 0))
    if workers < 0:
        raise FaultError("cpu: workers must be 0 (one per CPU) or more")
    state = _state(fault, "pgids")
    quiet = "</dev/null >/dev/null 2>&1 &"
    apply = (
        f"mkdir -p {STATE_DIR} && n={workers}; [ $n -gt 0 ] || n=$(nproc); : > {state}; "
        "if command -v stress-ng >/dev/null 2>&1; then "
        f"setsid stress-ng --cpu $n --quiet {quiet} echo $! >> {state}; "
        "else i=0; while [ $i -lt $n ]; do "
        f"setsid sh -c 'while :; do :; done' {quiet} echo $! >> {state}; i=$((i + 1)); done; fi"
    )
    return ShellPlan(_every(fault, apply), _every(fault, _stop_groups(state)))


def _size_mib(raw: Any, what: str) -> int:
    match = _SIZE.match(str(raw).upper().removesuffix("B").removesuffix("I"))
    if not match:
        raise FaultError(f"{what}: size must be like 64M or 1G, not {raw!r}")
    number, unit = int(match.group(1)), match.group(2)
    mib = {"K": number // 1024, "": number // (1024 * 1024), "M": number, "G": number * 1024}[unit]
    if mib < 1:
        raise FaultError(f"{what}: size {raw!r} is less than 1 MiB")
    return mib


def _memory(fault: Fault) -> ShellPlan:
    mib = _size_mib(fault.params.get("size", "64M"), "memory")
    state = _state(fault, "pgids")
    fill = f"/dev/shm/.nxc-fault-{fault.id}"
    apply = (
        f"mkdir -p {STATE_DIR} && : > {state}; "
        "if command -v stress-ng >/dev/null 2>&1; then "
        f"setsid stress-ng --vm 1 --vm-bytes {mib}M --vm-keep --quiet "
        f"</dev/null >/dev/null 2>&1 & echo $! >> {state}; "
        # tmpfs pages stay in memory (no swap on nxc nodes) until the file goes.
        f"else mkdir -p /dev/shm && dd if=/dev/zero of={fill} bs=1M count={mib} 2>/dev/null "
        f'|| {{ rm -f {fill}; echo "cannot hold {mib} MiB in /dev/shm" >&2; exit 3; }}; fi'
    )
    undo = f"rm -f {fill}; {_stop_groups(state)}"
    return ShellPlan(_every(fault, apply), _every(fault, undo))


def _disk_full(fault: Fault) -> ShellPlan:
    path = fault.params.get("path")
    if not path or not str(path).startswith("/"):
        raise FaultError("disk_full: give the path (absolute) of the file system to fill")
    force = bool(fault.params.get("force", False))
    directory = shlex.quote(str(path))
    fill = shlex.quote(f"{str(path).rstrip('/')}/.nxc-fault-{fault.id}")
    # File systems in memory: ramfs has no limit, and a tmpfs bigger than a quarter
    # of the node's memory (an initramfs root, a default /tmp) would starve the node
    # before it is full.
    memory_check = (
        ""
        if force
        else f"if [ $t = tmpfs ]; then size=$(stat -f -c '%b %S' {directory} | "
        "awk '{ print int($1 * $2 / 1024) }'); "
        "mem=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo); "
        'if [ -z "$size" ] || [ "$size" -gt $((mem / 4)) ]; then '
        f"echo \"{path} is a tmpfs of ${{size:-?}} KiB, more than a quarter of the node's "
        'memory: filling it would starve the node (force: true to do it anyway)" >&2; '
        "exit 3; fi; fi; "
    )
    apply = (
        f"[ -d {directory} ] || {{ echo 'no directory {path}' >&2; exit 3; }}; "
        f"t=$(stat -f -c %T {directory}); case $t in ramfs|rootfs) "
        f"echo '{path} is on '$t' (no size limit): filling it would take all memory' >&2; "
        "exit 3;; esac; "
        + memory_check
        # dd stops at "no space left": that is the point.
        + f"dd if=/dev/zero of={fill} bs=1M 2>/dev/null; sync; "
        f"[ -s {fill} ] || {{ echo 'could not fill {path}' >&2; exit 3; }}"
    )
    undo = f"rm -f {fill}; sync"
    return ShellPlan(_every(fault, apply), _every(fault, undo))


def _crash(fault: Fault) -> PowerPlan:
    return PowerPlan(fault.nodes, "crash", "start")


def _partition(fault: Fault, deployment: Deployment, rng: random.Random) -> NetemPlan:
    groups = fault.params.get("groups")
    pattern = fault.params.get("pattern")
    if (groups is None) == (pattern is None):
        raise FaultError(f"partition: give a pattern ({', '.join(PATTERNS)}) or groups")
    if groups is not None:
        if not isinstance(groups, list | tuple) or len(groups) != 2:
            raise FaultError("partition: groups must be two lists of node or role names")
        sides = [resolve_nodes(deployment, side) for side in groups]
        pairs = [(tuple(sides[0]), tuple(sides[1]))]
        detail: dict[str, Any] = {"groups": [list(s) for s in sides]}
    else:
        if pattern not in PATTERNS:
            raise FaultError(
                f"partition: unknown pattern {pattern!r} (known: {', '.join(PATTERNS)})"
            )
        try:
            pairs, detail = cuts(str(pattern), list(fault.nodes), rng)
        except ValueError as exc:
            raise FaultError(str(exc)) from None

    def transform(topology: Topology) -> Topology:
        for a, b in pairs:
            topology = topology.partition(list(a), list(b))
        return topology

    return NetemPlan(transform, {**detail, "cuts": [[list(a), list(b)] for a, b in pairs]})


_SPIKE_FIELDS = ("loss", "delay", "jitter", "rate", "corrupt", "duplicate", "reorder")


def _spike(fault: Fault, deployment: Deployment) -> NetemPlan:
    values = {k: fault.params[k] for k in _SPIKE_FIELDS if fault.params.get(k) is not None}
    if fault.kind not in values:
        raise FaultError(f"{fault.kind}: give the {fault.kind} (e.g. loss: 30% or delay: 200ms)")
    src = resolve_nodes(deployment, fault.params.get("from")) if "from" in fault.params else None
    dst = resolve_nodes(deployment, fault.params.get("to")) if "to" in fault.params else None
    src = src or fault.nodes
    dst = dst or fault.nodes

    def transform(topology: Topology) -> Topology:
        return topology.constrain(list(src), list(dst), **values)

    return NetemPlan(transform, {"from": list(src), "to": list(dst), **values})


KINDS: tuple[str, ...] = (
    "kill", "pause", "clock_skew", "cpu", "memory", "disk_full", "crash",
    "partition", "loss", "delay",
)  # fmt: skip


def plan(fault: Fault, deployment: Deployment, rng: random.Random | None = None) -> Plan:
    """The plan of ``fault`` (raises :class:`FaultError` naming what is wrong)."""
    rng = rng or random.Random()
    if not fault.nodes:
        raise FaultError(f"{fault.kind}: no target nodes")
    shell: dict[str, Callable[[Fault], ShellPlan]] = {
        "kill": _kill,
        "pause": _pause,
        "clock_skew": _clock_skew,
        "cpu": _cpu,
        "memory": _memory,
        "disk_full": _disk_full,
    }
    if fault.kind in shell:
        return shell[fault.kind](fault)
    if fault.kind == "crash":
        return _crash(fault)
    if fault.kind == "partition":
        return _partition(fault, deployment, rng)
    if fault.kind in ("loss", "delay"):
        return _spike(fault, deployment)
    raise FaultError(f"unknown fault {fault.kind!r} (known: {', '.join(KINDS)})")
