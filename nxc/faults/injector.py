"""Applying and healing faults on a running deployment, and recording every event.

:class:`Injector` is the scenario's ``faults``::

    pause = faults.pause("node2", name="worker")    # SIGSTOP every process called worker
    ...
    pause.heal()                                    # SIGCONT exactly those
    faults.partition(pattern="halves", seed=1)      # a Jepsen-style partition (netem)
    faults.heal_all()                               # what the end of the run does anyway

Each fault and heal is recorded (time, offset, nodes, what was chosen, outcome) in
the run record's ``faults.jsonl`` as it happens. Whatever is still applied when the
driver ends is healed, in reverse order.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nxc.contracts import Deployment
from nxc.errors import NxcError
from nxc.faults.plans import (
    Fault,
    FaultError,
    NetemPlan,
    Plan,
    PowerPlan,
    ShellPlan,
    plan,
    resolve_nodes,
)
from nxc.fsutil import private_append
from nxc.log import Logger
from nxc.parallel import fan_out

if TYPE_CHECKING:
    from nxc.driver.machine import Machine
    from nxc.faults.timeline import Timeline, TimelineRun
    from nxc.netem import Netem, Topology

__all__ = ["ActiveFault", "Injector"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
COMMAND_TIMEOUT = 120


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class ActiveFault:
    """A fault that was applied; :meth:`heal` undoes it (once)."""

    fault: Fault
    plan: Plan
    injector: Injector
    detail: dict[str, Any] = field(default_factory=dict)
    healed: bool = False

    @property
    def id(self) -> str:
        return self.fault.id

    def heal(self) -> None:
        self.injector.heal(self)


class Injector:
    """Faults on the machines of one deployment (see the module documentation).

    ``machines``: node name → Machine; ``netem``: the driver's network emulation (for
    partitions and spikes); ``record``: the JSON-lines file of the run record;
    ``seed``: makes random choices (partition sides) reproducible.
    """

    def __init__(
        self,
        deployment: Deployment,
        machines: Mapping[str, Machine],
        logger: Logger,
        *,
        netem: Netem | None = None,
        record: Path | None = None,
        seed: int | None = None,
    ) -> None:
        self.deployment = deployment
        self.machines = dict(machines)
        self.logger = logger
        self.netem = netem
        self.record = record
        self.rng = random.Random(seed)
        self.events: list[dict[str, Any]] = []
        self.origin = time.monotonic()
        self._active: list[ActiveFault] = []
        self._counter = itertools.count(1)
        self._lock = threading.RLock()
        self._busy: set[str] = set()
        # Network faults change one shared topology: one change at a time.
        self._netem_lock = threading.Lock()
        self._netem_base: Topology | None = None
        self._runs: list[TimelineRun] = []

    # -- the fault kinds ------------------------------------------------------------

    def kill(self, nodes: Sequence[str] | str | None = None, **params: Any) -> ActiveFault:
        """Signal processes (``name=``, ``pid=``, ``pattern=`` or ``service=``; ``signal=``
        default KILL). ``restart=`` a shell command: what healing runs."""
        return self.inject("kill", nodes, **params)

    def pause(self, nodes: Sequence[str] | str | None = None, **params: Any) -> ActiveFault:
        """SIGSTOP processes (chosen as for :meth:`kill`); healing sends SIGCONT to them."""
        return self.inject("pause", nodes, **params)

    def clock_skew(
        self, nodes: Sequence[str] | str | None = None, *, offset: int, **params: Any
    ) -> ActiveFault:
        """Move the nodes' clocks ``offset`` whole seconds; healing moves them back."""
        return self.inject("clock_skew", nodes, offset=offset, **params)

    def cpu(self, nodes: Sequence[str] | str | None = None, **params: Any) -> ActiveFault:
        """Busy CPUs (``workers=`` default one per CPU; stress-ng when the node has it)."""
        return self.inject("cpu", nodes, **params)

    def memory(self, nodes: Sequence[str] | str | None = None, **params: Any) -> ActiveFault:
        """Hold ``size=`` (default 64M) of memory (stress-ng, else a file in /dev/shm)."""
        return self.inject("memory", nodes, **params)

    def disk_full(
        self, nodes: Sequence[str] | str | None = None, *, path: str, **params: Any
    ) -> ActiveFault:
        """Fill the file system holding ``path``; healing removes the filler."""
        return self.inject("disk_full", nodes, path=path, **params)

    def crash(self, nodes: Sequence[str] | str | None = None, **params: Any) -> ActiveFault:
        """Cut the nodes' power; healing starts them again."""
        return self.inject("crash", nodes, **params)

    def partition(self, nodes: Sequence[str] | str | None = None, **params: Any) -> ActiveFault:
        """A netem partition: ``pattern=`` halves|isolate|ring|bridge among ``nodes``
        (default every node), or ``groups=[[...], [...]]``."""
        return self.inject("partition", nodes, **params)

    def loss(self, nodes: Sequence[str] | str | None = None, **params: Any) -> ActiveFault:
        """A loss spike (``loss="30%"``) between ``from``/``to`` (default all nodes)."""
        return self.inject("loss", nodes, **params)

    def delay(self, nodes: Sequence[str] | str | None = None, **params: Any) -> ActiveFault:
        """A delay spike (``delay="200ms"``, ``jitter=``) between ``from``/``to``."""
        return self.inject("delay", nodes, **params)

    # -- applying and healing -------------------------------------------------------

    @property
    def active(self) -> list[ActiveFault]:
        with self._lock:
            return list(self._active)

    def find(self, fault_id: str) -> ActiveFault:
        with self._lock:
            for active in self._active:
                if active.id == fault_id:
                    return active
        known = ", ".join(a.id for a in self.active) or "none"
        raise FaultError(f"no active fault {fault_id!r} (active: {known})")

    def inject(
        self,
        kind: str,
        nodes: Sequence[str] | str | None = None,
        *,
        id: str | None = None,
        offset_s: float | None = None,
        **params: Any,
    ) -> ActiveFault:
        """Apply one fault now; record it; return its handle (raises if it failed).

        Faults on different nodes may be applied from several threads at once (a
        timeline does): the lock only guards the bookkeeping, not the commands.
        """
        names = resolve_nodes(self.deployment, _names(nodes))
        with self._lock:
            fault_id = id or f"f{next(self._counter)}"
            if not _ID.match(fault_id):
                raise FaultError(f"bad fault id {fault_id!r} (letters, digits, '_', '-')")
            if fault_id in self._busy or any(a.id == fault_id for a in self._active):
                raise FaultError(f"a fault with id {fault_id!r} is already active")
            fault = Fault(kind, names, dict(params), fault_id)
            the_plan = plan(fault, self.deployment, self.rng)
            self._check_nodes_take(fault)
            self._busy.add(fault_id)
        try:
            active = ActiveFault(fault, the_plan, self)
            if isinstance(the_plan, NetemPlan):
                active.detail = dict(the_plan.detail)
            started = time.time()
            with self.logger.nested(f"fault {fault_id}: {fault.describe()}"):
                try:
                    self._apply(active)
                except Exception as exc:
                    self._note("fault", active, started, offset_s, exc)
                    self._undo(active, quiet=True)
                    raise
            with self._lock:
                self._active.append(active)
            self._note("fault", active, started, offset_s)
        finally:
            with self._lock:
                self._busy.discard(fault_id)
        return active

    def heal(self, active: ActiveFault, offset_s: float | None = None) -> None:
        """Undo one fault (a second call does nothing)."""
        with self._lock:
            if active.healed:
                return
            active.healed = True
        started = time.time()
        try:
            with self.logger.nested(f"heal {active.id}: {active.fault.describe()}"):
                try:
                    self._undo(active)
                except Exception as exc:
                    self._note("heal", active, started, offset_s, exc)
                    raise
        finally:
            with self._lock:
                if active in self._active:
                    self._active.remove(active)
        self._note("heal", active, started, offset_s)

    def heal_all(self) -> list[str]:
        """Heal every active fault, newest first; return the problems (one line each)."""
        problems = []
        for active in reversed(self.active):
            try:
                self.heal(active)
            except Exception as exc:
                problems.append(f"heal {active.id}: {exc}")
        return problems

    # -- timelines --------------------------------------------------------------------

    def timeline(self, source: Path | str | Timeline) -> TimelineRun:
        """Start a timeline (a YAML file or a :class:`~nxc.faults.timeline.Timeline`)
        in the background; ``.wait()`` for it. Closing the injector cancels it."""
        from nxc.faults.timeline import Timeline, TimelineRun

        loaded = source if isinstance(source, Timeline) else Timeline.load(Path(source))
        run = TimelineRun(loaded, self)
        with self._lock:
            self._runs.append(run)
        run.start()
        return run

    def close(self) -> list[str]:
        """Cancel running timelines, then heal everything still applied."""
        for run in list(self._runs):
            run.cancel()
        return self.heal_all()

    # -- execution ----------------------------------------------------------------------

    def _check_nodes_take(self, fault: Fault) -> None:
        """Refuse, before touching anything, a fault that a node's flavour says it
        cannot take safely: a node control may define ``refuse_fault(kind, params)``
        returning why not (a container shares the host's clock...), or None."""
        for name in fault.nodes:
            machine = self.machines.get(name)
            control = getattr(machine, "control", None) if machine is not None else None
            refuse = getattr(control, "refuse_fault", None)
            if not callable(refuse):
                continue
            reason = refuse(fault.kind, dict(fault.params))
            if reason:
                flavour = getattr(control, "flavour", "?")
                raise FaultError(f"{name}: {fault.kind} is refused on flavour {flavour}: {reason}")

    def _machine(self, name: str) -> Machine:
        try:
            return self.machines[name]
        except KeyError:
            raise FaultError(f"no machine for node {name}") from None

    def _shell(self, commands: Mapping[str, str], what: str) -> None:
        todo = [(node, command) for node, command in commands.items() if command]

        def run(item: tuple[str, str]) -> None:
            node, command = item
            result = self._machine(node).run(command, COMMAND_TIMEOUT)
            if result.status != 0:
                said = result.stderr.decode(errors="replace").strip().splitlines()
                raise FaultError(
                    f"{node}: {what} failed (status {result.status})"
                    + (f": {said[-1]}" if said else "")
                )

        failures = [o.error for o in fan_out(run, todo) if o.error is not None]
        if failures:
            raise FaultError("; ".join(str(e) for e in failures))

    def _netem_update(
        self, adding: ActiveFault | None = None, without: ActiveFault | None = None
    ) -> None:
        """Install the topology in force before any network fault, with every active
        network fault (plus ``adding``, minus ``without``) layered on it in order."""
        if self.netem is None:
            raise FaultError("network faults need the driver's netem (no netem here)")
        if self._netem_base is None:
            self._netem_base = self.netem.topology
        topology = self._netem_base
        layered = [a for a in self._active if isinstance(a.plan, NetemPlan) and a is not without]
        if adding is not None:
            layered.append(adding)
        for active in layered:
            assert isinstance(active.plan, NetemPlan)
            topology = active.plan.transform(topology)
        self.netem.update(topology)
        if not layered:
            self._netem_base = None

    def _apply(self, active: ActiveFault) -> None:
        the_plan = active.plan
        if isinstance(the_plan, ShellPlan):
            self._shell(the_plan.apply, active.fault.kind)
        elif isinstance(the_plan, NetemPlan):
            self._netem_update(adding=active)
        elif isinstance(the_plan, PowerPlan):
            for node in the_plan.nodes:
                self._machine(node).crash()

    def _undo(self, active: ActiveFault, quiet: bool = False) -> None:
        the_plan = active.plan
        try:
            if isinstance(the_plan, ShellPlan):
                self._shell(the_plan.undo, f"healing {active.fault.kind}")
            elif isinstance(the_plan, NetemPlan):
                self._netem_update(without=active)
            elif isinstance(the_plan, PowerPlan):

                def start(node: str) -> None:
                    self._machine(node).start()

                failures = [o.error for o in fan_out(start, the_plan.nodes) if o.error]
                if failures:
                    raise FaultError("; ".join(str(e) for e in failures))
        except NxcError:
            if not quiet:
                raise

    def _note(
        self,
        event: str,
        active: ActiveFault,
        started: float,
        offset_s: float | None,
        error: BaseException | None = None,
    ) -> None:
        fault = active.fault
        entry: dict[str, Any] = {
            "event": event,
            "id": fault.id,
            "kind": fault.kind,
            "nodes": list(fault.nodes),
            "params": {k: v for k, v in fault.params.items() if k != "restart"},
            "time": _iso(started),
            "epoch": round(started, 6),
            "offset": round(offset_s if offset_s is not None else started - self._epoch0(), 3),
            "duration": round(time.time() - started, 3),
            "ok": error is None,
        }
        if active.detail:
            entry["detail"] = active.detail
        if error is not None:
            entry["error"] = str(error).splitlines()[0] if str(error) else type(error).__name__
        with self._lock:
            self.events.append(entry)
            if self.record is not None:
                private_append(self.record, json.dumps(entry, default=str) + "\n")
        status = "" if error is None else f" FAILED: {entry['error']}"
        self.logger.info(f"{event} {fault.id} ({fault.kind}) at +{entry['offset']:.3f}s{status}")

    def _epoch0(self) -> float:
        return time.time() - (time.monotonic() - self.origin)


def _names(nodes: Sequence[str] | str | Any | None) -> Sequence[str] | str | None:
    """Node arguments may be Machines (``faults.pause(node2, ...)``)."""
    if nodes is None or isinstance(nodes, str):
        return nodes
    if hasattr(nodes, "name") and not isinstance(nodes, list | tuple):
        return str(nodes.name)
    return [n if isinstance(n, str) else str(n.name) for n in nodes]
