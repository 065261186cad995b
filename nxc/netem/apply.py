"""Apply, change and reset a topology on running nodes, through the driver's machines.

Works with anything that has ``execute(command, timeout=…) -> (status, stdout)`` (the
driver's :class:`Machine`, :class:`nxc.netem.netns.NetnsMachine`…). Per node, one round
trip reads the installed state, one ``tc -batch`` changes it; nodes are handled in
parallel. The driver builds the façade from the deployment and its machines::

    netem = Netem(deployment, machines, topology)   # machines: node name → Machine
    netem.apply()                                   # or netem.apply("topology.yaml")
    netem.set("site_a", "site_b", delay="80ms")
    netem.partition(["site_a"], ["site_b"]); netem.heal()
    netem.validate(); netem.reset()

iproute2 is always called by absolute path: busybox's shell runs its own ``tc``/``ip``
applets even when iproute2 is first on PATH. Paths are detected on each node
(``/usr/sbin``, ``/sbin``, ``/usr/bin``, ``/bin``, NixOS's system profile, then
``command -v``), keeping the first whose ``-V`` says iproute2; pass ``tc_path``/``ip_path``
to force them.
"""

from __future__ import annotations

import re
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from nxc.contracts.deployment import Deployment
from nxc.errors import ContractError, NxcError
from nxc.netem import tcgen
from nxc.netem.model import PairShaping, Topology
from nxc.parallel import fan_out
from nxc.runtime.transport import TransportError

if TYPE_CHECKING:
    from nxc.netem.validate import ValidationReport

MARK = "@@nxc"
TOOL_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin", "/run/current-system/sw/bin")
T = TypeVar("T")


class MachineLike(Protocol):
    """The part of the driver's Machine (NixOS-test API) netem uses."""

    def execute(self, command: str, *, timeout: int | None = ...) -> tuple[int, str]: ...


class NetemMissing(NxcError):
    """A node's kernel cannot do what the topology needs (no netem, htb or ifb)."""


class NetemApplyError(NxcError):
    """tc or ip refused a command on a node."""


@dataclass
class NodeTools:
    tc: str
    ip: str
    probed: dict[str, str]  # qdisc/device kind -> "ok" | "missing: why" | "unknown"


# ------------------------------------------------------------------ node-side shell


def detect_command() -> str:
    """Shell text printing ``@@nxc tc=PATH`` and ``@@nxc ip=PATH`` (empty if not found)."""
    dirs = " ".join(f"{d}/$1" for d in TOOL_DIRS)
    return (
        "nxc_find() { for p in " + dirs + ' $(command -v "$1" 2>/dev/null); do '
        'case "$p" in /*) ;; *) continue ;; esac; [ -x "$p" ] || continue; '
        'case "$("$p" -V 2>&1)" in *iproute2*) echo "$p"; return 0 ;; esac; done; return 1; }; '
        f'echo "{MARK} tc=$(nxc_find tc)"; echo "{MARK} ip=$(nxc_find ip)"'
    )


def probe_command(tc: str, ip: str, kinds: Sequence[str], want_ifb: bool) -> str:
    """Shell text loading modules and trying each qdisc kind on a scratch ifb device.

    Prints ``@@nxc probe KIND ok|missing MESSAGE|unknown`` per kind (and for ``ifb``).
    When no scratch device can be made, falls back on /sys/module (``unknown`` if absent:
    the apply itself will then tell).
    """
    tc_q, ip_q = shlex.quote(tc), shlex.quote(ip)
    modules = " ".join(
        [f"sch_{k}" for k in kinds] + ["cls_u32"] + (["ifb", "act_mirred"] if want_ifb else [])
    )
    tries = []
    for kind in kinds:
        tries.append(
            f'if out=$({tc_q} qdisc add dev "$P" root handle 1: {kind} 2>&1); then '
            f'echo "{MARK} probe {kind} ok"; '
            f'{tc_q} qdisc del dev "$P" root >/dev/null 2>&1 || true; '
            f'else echo "{MARK} probe {kind} missing" $out; fi'
        )
    fallback = [
        f'if [ -d /sys/module/sch_{k} ]; then echo "{MARK} probe {k} ok"; '
        f'else echo "{MARK} probe {k} unknown"; fi'
        for k in kinds
    ]
    return (
        "if command -v modprobe >/dev/null 2>&1; then for m in "
        + modules
        + '; do modprobe -q "$m" >/dev/null 2>&1 || true; done; fi; '
        + "P=nxcprobe$$; "
        + f'if out=$({ip_q} link add "$P" type ifb 2>&1); then echo "{MARK} probe ifb ok"; '
        + "; ".join(tries)
        + f'; {ip_q} link del "$P" >/dev/null 2>&1 || true; '
        + f'else echo "{MARK} probe ifb missing" $out; '
        + "; ".join(fallback)
        + "; fi"
    )


def inspect_command(tc: str, ip: str, interface: str) -> str:
    """Shell text dumping the interface's qdiscs, ingress filters and nxc's ifb device."""
    tc_q, ip_q = shlex.quote(tc), shlex.quote(ip)
    dev = shlex.quote(interface)
    ifb = shlex.quote(tcgen.ifb_name(interface))
    return (
        f'if {ip_q} link show dev {dev} >/dev/null 2>&1; then echo "{MARK} link present"; '
        f'else echo "{MARK} link absent"; fi; '
        f'echo "{MARK} qdisc"; {tc_q} qdisc show dev {dev} 2>&1 || true; '
        f'echo "{MARK} ingress"; {tc_q} filter show dev {dev} parent ffff: 2>/dev/null || true; '
        f'if {ip_q} link show dev {ifb} >/dev/null 2>&1; then echo "{MARK} ifb present"; '
        f'{tc_q} qdisc show dev {ifb} 2>&1 || true; else echo "{MARK} ifb absent"; fi; '
        f'echo "{MARK} end"'
    )


def script_command(script: tcgen.NodeScript, tc: str, ip: str) -> str:
    """Shell text running the script: ``ip -batch``, one ``tc -batch``, ``ip -batch``.

    Output lines ``@@nxc failed STAGE`` say which stage stopped (tc/ip print
    ``Command failed -:LINE`` themselves).
    """
    parts: list[str] = []
    for stage, tool, lines in (
        ("ip-before", ip, script.ip_before),
        ("tc", tc, script.tc),
        ("ip-after", ip, script.ip_after),
    ):
        if not lines:
            continue
        body = "\n".join(lines)
        if "NXC_EOF" in body:  # pragma: no cover - generated text never contains it
            raise AssertionError("heredoc marker in batch text")
        parts.append(
            f"{shlex.quote(tool)} -batch - <<'NXC_EOF' || "
            f'{{ echo "{MARK} failed {stage}"; exit 1; }}\n{body}\nNXC_EOF'
        )
    if not parts:
        return "true"
    return "{\n" + "\n".join(parts) + "\n} 2>&1"


# ------------------------------------------------------------------ parsing node output


def parse_marked(output: str) -> dict[str, list[str]]:
    """Split ``@@nxc SECTION`` marked output into section → lines (marker words kept)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith(MARK + " "):
            words = line[len(MARK) + 1 :].split(" ", 1)
            key = words[0]
            rest = words[1] if len(words) > 1 else ""
            current = sections.setdefault(key, [])
            if rest:
                current.append(rest)
            continue
        if current is not None:
            current.append(line)
    return sections


def parse_detect(output: str) -> tuple[str | None, str | None]:
    tc = ip = None
    for line in output.splitlines():
        if line.startswith(f"{MARK} tc="):
            tc = line.split("=", 1)[1].strip() or None
        elif line.startswith(f"{MARK} ip="):
            ip = line.split("=", 1)[1].strip() or None
    return tc, ip


def parse_probe(output: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith(f"{MARK} probe "):
            words = line.split(" ", 4)
            kind, verdict = words[2], words[3] if len(words) > 3 else "unknown"
            detail = words[4].strip() if len(words) > 4 else ""
            found[kind] = verdict if not detail else f"{verdict}: {detail}"
    return found


def parse_inspect(interface: str, output: str) -> tuple[bool, tcgen.InstalledState]:
    """(interface exists, installed state) from :func:`inspect_command` output."""
    sections = parse_marked(output)
    link = sections.get("link", ["absent"])
    present = bool(link) and link[0].strip() == "present"
    ifb_lines = sections.get("ifb", ["absent"])
    ifb_present = bool(ifb_lines) and ifb_lines[0].strip() == "present"
    state = tcgen.InstalledState(
        interface=interface,
        qdiscs=tcgen.parse_qdiscs("\n".join(sections.get("qdisc", []))),
        ingress_prefs=tcgen.parse_filter_prefs("\n".join(sections.get("ingress", []))),
        ifb_present=ifb_present,
        ifb_qdiscs=tcgen.parse_qdiscs("\n".join(ifb_lines[1:])) if ifb_present else (),
    )
    return present, state


_FAILED_LINE = re.compile(r"Command failed (?:-|\S+):(\d+)")


def explain_failure(node: str, script: tcgen.NodeScript, output: str) -> NxcError:
    """One line saying which generated command the node refused, and why."""
    sections = parse_marked(output)
    stage = (sections.get("failed") or ["tc"])[0].strip()
    lines = {"ip-before": script.ip_before, "tc": script.tc, "ip-after": script.ip_after}.get(
        stage, script.tc
    )
    messages = [
        ln.strip()
        for ln in output.splitlines()
        if ln.strip() and not ln.startswith(MARK) and not _FAILED_LINE.search(ln)
    ]
    reason = messages[-1] if messages else "no message"
    match = _FAILED_LINE.search(output)
    command = ""
    if match and 0 < int(match.group(1)) <= len(lines):
        command = lines[int(match.group(1)) - 1]
    if "kind is unknown" in output and command:
        kind = _qdisc_kind(command)
        return NetemMissing(
            f"{node}: the kernel has no '{kind}' qdisc (module sch_{kind}): "
            f"tc refused '{command}': {reason}"
        )
    tool = "ip" if stage.startswith("ip") else "tc"
    where = f" '{command}'" if command else ""
    return NetemApplyError(f"{node}: {tool} refused{where}: {reason}")


def _qdisc_kind(command: str) -> str:
    words = command.split()
    for i, word in enumerate(words):
        if word == "handle" and i + 2 < len(words):
            return words[i + 2]
        if word == "root" and i + 1 < len(words) and words[i + 1] != "handle":
            return words[i + 1]
    return "netem"


# ------------------------------------------------------------------ the façade

TopologySource = Topology | Mapping[str, Any] | str | Path


def load_topology(source: TopologySource) -> Topology:
    if isinstance(source, Topology):
        return source
    if isinstance(source, Mapping):
        return Topology.from_dict(dict(source), source="topology")
    return Topology.load(Path(source))


class Netem:
    """Network emulation of one running deployment (see the module docstring)."""

    def __init__(
        self,
        deployment: Deployment,
        machines: Mapping[str, MachineLike],
        topology: TopologySource | None = None,
        *,
        tc_path: str | None = None,
        ip_path: str | None = None,
        options: tcgen.GenOptions | None = None,
        max_workers: int = 32,
        timeout: int = 120,
    ) -> None:
        missing = [n.name for n in deployment.nodes if n.name not in machines]
        if missing:
            raise NxcError(f"netem: no machine for node(s) {', '.join(missing)}")
        self.deployment = deployment
        self.machines = machines
        self.topology = load_topology(topology) if topology is not None else Topology()
        self.options = options or tcgen.GenOptions()
        self.tc_path = tc_path
        self.ip_path = ip_path
        self.max_workers = max_workers
        self.timeout = timeout
        self._tools: dict[str, NodeTools] = {}
        self._installed: dict[str, tcgen.NodePlan] = {}
        self._lock = threading.Lock()
        # Where validate() writes its JSON report when not told (the driver sets the
        # session's run-record directory, so every validation lands in the record).
        self.report_dir: Path | None = None

    # -- public API -------------------------------------------------------

    def apply(
        self, topology: TopologySource | None = None, *, nodes: Sequence[str] | None = None
    ) -> None:
        """Install ``topology`` (or the current one) from scratch, on every node or on
        ``nodes`` only (e.g. one that rebooted)."""
        if topology is not None:
            self.topology = load_topology(topology)
        plans = tcgen.plan(self.topology, self.deployment)
        self._install(plans, incremental=False, names=nodes)

    def update(self, topology: TopologySource) -> None:
        """Make ``topology`` the current one, changing on each node only what differs
        (what fault injection uses to add and remove partitions and spikes)."""
        self.topology = load_topology(topology)
        self._sync()

    def set(
        self,
        src: str | Sequence[str],
        dst: str | Sequence[str],
        *,
        symmetric: bool = True,
        **values: Any,
    ) -> None:
        """Change the given fields between two groups now (e.g. ``delay="80ms"``)."""
        self.topology = self.topology.constrain(src, dst, symmetric=symmetric, **values)
        self._sync()

    def partition(
        self, a: str | Sequence[str], b: str | Sequence[str], *, symmetric: bool = True
    ) -> None:
        """Cut ``a`` off from ``b`` (both ways unless ``symmetric=False``)."""
        self.topology = self.topology.partition(a, b, symmetric=symmetric)
        self._sync()

    def heal(self) -> None:
        """Remove every partition; the other constraints stay."""
        self.topology = self.topology.healed()
        self._sync()

    def reset(self) -> None:
        """Remove what nxc installed on every node (foreign qdiscs are left alone)."""

        def one(name: str) -> None:
            tools = self._tools_for(name, probe=False)
            _present, state = self._inspect(name, tools)
            script = tcgen.reset_script(name, state)
            if not script.is_empty():
                self._run_script(name, tools, script)

        self._each(one, "reset")
        self._installed = {}

    def pairs(self) -> dict[tuple[str, str], PairShaping]:
        """The shaping every ordered pair gets under the current topology."""
        return self.topology.resolve(self.deployment)

    def scripts(self) -> dict[str, tcgen.NodeScript]:
        """What apply() would run on fresh nodes (for reading; nothing is executed)."""
        return tcgen.install_all(tcgen.plan(self.topology, self.deployment), self.options)

    def show(self, installed: bool = True) -> str:
        """The pairs the topology shapes, and (``installed``) each node's live tc state."""
        lines = [f"topology ({self.topology.source}):"]
        pairs = self.pairs()
        if not pairs:
            lines.append("  (no constraint: every pair unshaped)")
        for (src, dst), shaping in pairs.items():
            lines.append(f"  {src} -> {dst}: {shaping.describe()}")
        if installed:
            dev = self.deployment.interface

            def one(name: str) -> str:
                tools = self._tools_for(name, probe=False)
                ifb = shlex.quote(tcgen.ifb_name(dev))
                tc_q = shlex.quote(tools.tc)
                command = (
                    f"{tc_q} -s qdisc show dev {shlex.quote(dev)} 2>&1 || true; "
                    f"{tc_q} class show dev {shlex.quote(dev)} 2>&1 || true; "
                    f"{tc_q} -s qdisc show dev {ifb} 2>/dev/null || true"
                )
                _, output = self._execute(name, command)
                return output.rstrip()

            results = self._each(one, "show")
            for name in self._names():
                lines.append(f"--- {name} ({dev})")
                lines.extend("  " + ln for ln in results[name].splitlines())
        return "\n".join(lines)

    def validate(self, **kwargs: Any) -> ValidationReport:
        """Measure and compare with the topology; raises NxcError listing bad pairs.

        Where a node's kernel lacks what the topology needs (no netem qdisc, as in
        containers on a host without sch_netem), the topology cannot be in place:
        raises :class:`NetemMissing` saying validation cannot run, instead of reporting
        every shaped pair as wrong. Keyword arguments go to
        :func:`nxc.netem.validate.validate`.
        """
        from nxc.netem.validate import validate

        plans = tcgen.plan(self.topology, self.deployment)

        def missing(name: str) -> str | None:
            plan = plans[name]
            if plan.is_empty():
                return None
            tools = self._tools_for(name, probe=True, want_ifb=plan.ingress is not None)
            try:
                self._check_probe(name, tools, plan)
            except NetemMissing as exc:
                return str(exc)
            return None

        lacking = [why for why in self._each(missing, "validate").values() if why]
        if lacking:
            raise NetemMissing(
                "netem validation cannot run: the topology cannot be in place ("
                + "; ".join(lacking)
                + ")"
            )
        if kwargs.get("report") is None and self.report_dir is not None:
            n = 1
            while (self.report_dir / f"netem-validation-{n}.json").exists():
                n += 1
            kwargs["report"] = self.report_dir / f"netem-validation-{n}.json"
        return validate(self.deployment, self.machines, self.topology, **kwargs)

    def probe(self) -> dict[str, dict[str, str]]:
        """Per node, what the kernel offers (netem, htb, ifb) — ``ok``/``missing: …``."""
        self._each(lambda name: self._tools_for(name, probe=True), "probe")
        return {name: dict(self._tools[name].probed) for name in self._names()}

    # -- internals --------------------------------------------------------

    def _names(self) -> list[str]:
        return [n.name for n in self.deployment.nodes]

    def _sync(self) -> None:
        previous = self._installed or None
        plans = tcgen.plan(self.topology, self.deployment, previous=previous)
        self._install(plans, incremental=previous is not None)

    def _install(
        self,
        plans: dict[str, tcgen.NodePlan],
        incremental: bool,
        names: Sequence[str] | None = None,
    ) -> None:
        def one(name: str) -> None:
            node_plan = plans[name]
            tools = self._tools_for(name, probe=True, want_ifb=node_plan.ingress is not None)
            self._check_probe(name, tools, node_plan)
            present, state = self._inspect(name, tools)
            if not present:
                raise NxcError(f"{name}: no interface {self.deployment.interface} on the node")
            script: tcgen.NodeScript | None = None
            old = self._installed.get(name)
            if incremental and old is not None:
                script = tcgen.update_script(old, node_plan, state, self.options)
            if script is None:
                if (
                    node_plan.is_empty()
                    and not state.ours_at_root
                    and not state.ifb_present
                    and not state.our_ingress_filter
                ):
                    with self._lock:
                        self._installed[name] = node_plan
                    return
                script = tcgen.install_script(node_plan, state, self.options)
            if not script.is_empty():
                try:
                    self._run_script(name, tools, script)
                except NxcError:
                    self._rollback(name, tools)
                    raise
            with self._lock:
                self._installed[name] = node_plan

        self._each(one, "apply", names)

    def _rollback(self, name: str, tools: NodeTools) -> None:
        try:
            _, state = self._inspect(name, tools)
            script = tcgen.reset_script(name, state)
            if not script.is_empty():
                self._execute(name, script_command(script, tools.tc, tools.ip))
        except (NxcError, TransportError, OSError, TimeoutError):
            pass
        with self._lock:
            self._installed.pop(name, None)

    def _check_probe(self, name: str, tools: NodeTools, node_plan: tcgen.NodePlan) -> None:
        needed = ["htb"]
        if self.options.leaf == "netem":
            needed.append("netem")
        if node_plan.ingress is not None:
            needed.append("ifb")
        for kind in needed:
            verdict = tools.probed.get(kind, "unknown")
            if verdict.startswith("missing"):
                detail = verdict.partition(": ")[2]
                what = "device type 'ifb'" if kind == "ifb" else f"'{kind}' qdisc (sch_{kind})"
                raise NetemMissing(
                    f"{name}: the kernel has no {what}" + (f": {detail}" if detail else "")
                )

    def _tools_for(self, name: str, probe: bool, want_ifb: bool = False) -> NodeTools:
        with self._lock:
            tools = self._tools.get(name)
        if tools is None:
            tc, ip = self.tc_path, self.ip_path
            if tc is None or ip is None:
                _, output = self._execute(name, detect_command())
                found_tc, found_ip = parse_detect(output)
                tc = tc or found_tc
                ip = ip or found_ip
            if not tc:
                raise NxcError(
                    f"{name}: iproute2's tc not found (looked in {', '.join(TOOL_DIRS)} and PATH)"
                )
            if not ip:
                raise NxcError(
                    f"{name}: iproute2's ip not found (looked in {', '.join(TOOL_DIRS)} and PATH)"
                )
            tools = NodeTools(tc, ip, {})
        if probe and not tools.probed:
            kinds = ["htb"] + (["netem"] if self.options.leaf == "netem" else [])
            _, output = self._execute(name, probe_command(tools.tc, tools.ip, kinds, True))
            tools.probed = parse_probe(output)
        with self._lock:
            self._tools[name] = tools
        return tools

    def _inspect(self, name: str, tools: NodeTools) -> tuple[bool, tcgen.InstalledState]:
        status, output = self._execute(
            name, inspect_command(tools.tc, tools.ip, self.deployment.interface)
        )
        if f"{MARK} end" not in output:
            raise NxcError(
                f"{name}: could not read the tc state (status {status}): "
                + (output.strip().splitlines() or ["no output"])[-1]
            )
        return parse_inspect(self.deployment.interface, output)

    def _run_script(self, name: str, tools: NodeTools, script: tcgen.NodeScript) -> None:
        status, output = self._execute(name, script_command(script, tools.tc, tools.ip))
        if status != 0:
            raise explain_failure(name, script, output)

    def _execute(self, name: str, command: str) -> tuple[int, str]:
        machine = self.machines[name]
        try:
            return machine.execute(command, timeout=self.timeout)
        except (TransportError, OSError, TimeoutError) as exc:
            raise NxcError(f"{name}: {type(exc).__name__}: {exc}") from None

    def _each(
        self, fn: Callable[[str], T], what: str, only: Sequence[str] | None = None
    ) -> dict[str, T]:
        names = self._names()
        if only is not None:
            unknown = [n for n in only if n not in names]
            if unknown:
                raise NxcError(f"netem {what}: no node named {', '.join(unknown)}")
            names = [n for n in names if n in only]
        results: dict[str, T] = {}
        errors: list[tuple[str, NxcError]] = []
        for outcome in fan_out(fn, names, workers=self.max_workers):
            if outcome.error is None:
                results[outcome.item] = outcome.value  # type: ignore[assignment]
            elif isinstance(outcome.error, NxcError):
                errors.append((outcome.item, outcome.error))
            else:
                raise outcome.error
        if errors:
            first = errors[0][1]
            if isinstance(first, ContractError) and len(errors) == len(names):
                raise first
            # Keep netem's own kind of error when every node had the same one; anything
            # else (a node unreachable or busy: the driver's ConnectionLost, whose
            # constructor takes the node too) becomes a plain NxcError. Each message
            # starts with its node's name and says why.
            cls: type[NxcError] = NxcError
            if type(first).__init__ is NxcError.__init__ and all(
                type(e) is type(first) for _, e in errors
            ):
                cls = type(first)
            detail = "; ".join(str(e) for _, e in errors)
            failed = len(errors)
            raise cls(f"netem {what} failed on {failed} node{'s' if failed > 1 else ''}: {detail}")
        return results
