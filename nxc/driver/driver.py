"""The driver: a set of machines, scenarios run on them, their reports, and events.

``Driver(machines, logger, out_dir, extra_globals)`` is what the CLI builds once the
runtime has given one :class:`~nxc.driver.machine.Machine` per node. It offers:

* :meth:`Driver.start_all` (parallel), :meth:`Driver.subtest`, :meth:`Driver.run_parallel`;
* :meth:`Driver.run_script`: run a scenario (the composition's ``testScript`` or a
  file) with every machine bound by name, and write ``report.json`` and ``report.xml``
  (JUnit) to ``out_dir``;
* ``sync``: the deployment's sync service (:class:`~nxc.driver.sync.Sync`): the
  scenario signals, waits at barriers, publishes and discovers on the same service
  the nodes' programs use (``nxc-sync``), with no relaying through the driver.
"""

from __future__ import annotations

import datetime as dt
import json
import linecache
import os
import re
import signal
import socket
import sysconfig
import threading
import time
import traceback
import unittest
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nxc
from nxc.driver.duration import Duration, optional_seconds, seconds
from nxc.driver.machine import Machine, machines_by_role
from nxc.driver.polling import PollingCondition, ScenarioLog, retry
from nxc.driver.sync import Sync, SyncUnavailable
from nxc.errors import NxcError, WaitTimeout
from nxc.fsutil import atomic_write
from nxc.log import Logger
from nxc.log import log as default_log
from nxc.parallel import fan_out

__all__ = [
    "Driver",
    "ErrorInfo",
    "GlobalTimeout",
    "SubtestResult",
    "python_name",
]

T = TypeVar("T")

_NXC_DIR = str(Path(nxc.__file__).resolve().parent)
_LIBRARY_DIRS = tuple(
    {
        str(Path(path).resolve())
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (path := sysconfig.get_paths().get(key))
    }
)

_XML_INVALID = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def python_name(name: str) -> str:
    """A node or role name as a Python identifier, as NixOS binds machines
    (``web-1`` → ``web_1``)."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return cleaned if cleaned and not cleaned[0].isdigit() else "_" + cleaned


class GlobalTimeout(WaitTimeout):
    """The scenario ran past the driver's global timeout (NixOS's ``globalTimeout``)."""


class _Assertions(unittest.TestCase):
    """``t`` in scenarios: ``t.assertEqual(...)``, ``t.assertIn(...)``… raise
    ``AssertionError`` (reported as a failure), as NixOS's ``t`` does."""

    def runTest(self) -> None:  # a TestCase needs a test method to be built
        pass


@dataclass(frozen=True)
class ErrorInfo:
    """Why a subtest or script failed; ``traceback`` keeps the scenario's frames only."""

    type: str
    message: str
    traceback: str
    kind: str  # "failure" (assertion, node command, wait) or "error" (anything else)

    def to_json(self) -> dict[str, str]:
        return {
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
            "kind": self.kind,
        }


@dataclass
class SubtestResult:
    name: str
    started_at: float  # epoch seconds
    success: bool = True
    duration: float = 0.0
    error: ErrorInfo | None = None
    log_from: int = 0
    log_until: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "success": self.success,
            "started_at": _iso(self.started_at),
            "duration": round(self.duration, 3),
            "error": self.error.to_json() if self.error else None,
        }


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")


def _is_internal(filename: str, script: str | None = None) -> bool:
    """Whether a traceback frame is nxc's or a library's (not the scenario's)."""
    if filename == script:
        return False
    try:
        path = str(Path(filename).resolve())
    except (OSError, ValueError):
        return False
    if path.startswith(_NXC_DIR + "/"):
        return True
    return any(path.startswith(lib + "/") for lib in _LIBRARY_DIRS)


def _describe(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class Driver:
    """Machines plus the means to run scenarios on them.

    ``machines``: one per node (their ``out_dir`` defaults to the driver's);
    ``logger``: defaults to :data:`nxc.log.log`; ``out_dir``: where reports and
    copied files go; ``extra_globals``: more names for scenarios (``netem``,
    ``deployment``…); ``sync``: the deployment's sync service, if it has one.
    """

    def __init__(
        self,
        machines: Sequence[Machine],
        logger: Logger | None = None,
        out_dir: Path = Path("."),
        extra_globals: dict[str, Any] | None = None,
        *,
        sync: Sync | None = None,
    ) -> None:
        self.machines: list[Machine] = list(machines)
        self.logger = logger if logger is not None else default_log
        self.out_dir = Path(out_dir)
        self.extra_globals: dict[str, Any] = dict(extra_globals or {})
        self._sync = sync
        self.subtests: list[SubtestResult] = []
        self._script: str | None = None
        names = [machine.name for machine in self.machines]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise NxcError(f"several machines share a name: {', '.join(duplicates)}")
        self.polling_conditions: list[PollingCondition] = []
        self.global_timeout: float | None = None
        self._deadline_timer: threading.Timer | None = None
        self._expired = False
        self._alarm_set = False
        self._limit: float | None = None
        self._serial: _SerialFollower | None = None
        for machine in self.machines:
            if machine.out_dir is None:
                machine.out_dir = self.out_dir
            machine.callbacks.append(self.check_polling_conditions)

    # -- machines ------------------------------------------------------------------

    def machine(self, name: str) -> Machine:
        """The machine called ``name`` (a node name, or the name of a role that has a
        single node; ``-`` and ``_`` are interchangeable)."""
        for machine in self.machines:
            if machine.name == name:
                return machine
        wanted = python_name(name)
        for machine in self.machines:
            if python_name(machine.name) == wanted:
                return machine
        for alias, machine in self.role_aliases().items():
            if alias == wanted:
                return machine
        known = ", ".join(m.name for m in self.machines) or "none"
        raise NxcError(f"no node named {name!r} (nodes: {known})")

    def role_aliases(self) -> dict[str, Machine]:
        """``{python_name(role): its machine}`` for each role that has one node and
        whose name is no node's name (``server`` for ``server1``)."""
        taken = {python_name(m.name) for m in self.machines}
        return {
            python_name(role): machines[0]
            for role, machines in self.roles.items()
            if len(machines) == 1 and python_name(role) not in taken
        }

    @property
    def roles(self) -> dict[str, list[Machine]]:
        """``{role: [machines of that role, by index]}``."""
        return machines_by_role(self.machines)

    def start_all(self, timeout: Duration = 120.0) -> None:
        """Start every machine that is not running, in parallel."""
        with self.logger.nested("starting all nodes"):
            self.run_parallel(lambda m: m.start(timeout=timeout), what="start")

    def join_all(self, timeout: Duration = 900) -> None:
        """Wait until every machine has powered off (NixOS's ``join_all``); this ends
        the global timeout, as there."""
        with self.logger.nested("waiting for all nodes to power off"):
            for machine in self.machines:
                machine.wait_for_shutdown(timeout)
        self._cancel_deadline()

    def run_parallel(
        self,
        fn: Callable[[Machine], T],
        machines: Sequence[Machine] | None = None,
        *,
        what: str = "",
    ) -> list[T]:
        """Call ``fn(machine)`` for each machine concurrently; results in machine order.

        Every call runs to completion; if some raised, the first exception (in machine
        order) is raised with a note naming each other failure.
        """
        targets = list(self.machines if machines is None else machines)
        label = what or getattr(fn, "__name__", "call")
        names = ", ".join(m.name for m in targets)
        with self.logger.nested(f"in parallel on {names}: {label}"):
            outcomes = self._map(fn, targets)
        failures = [
            (m, out) for m, out in zip(targets, outcomes, strict=True) if isinstance(out, _Failed)
        ]
        if failures:
            first = failures[0][1].exc
            for machine, failed in failures[1:]:
                first.add_note(f"also failed on {machine.name}: {_describe(failed.exc)}")
            raise first
        return [out for out in outcomes if not isinstance(out, _Failed)]

    def _map(self, fn: Callable[[Machine], T], targets: list[Machine]) -> list[T | _Failed]:
        return [
            _Failed(o.error) if o.error is not None else o.value  # type: ignore[misc]
            for o in fan_out(fn, targets)
        ]

    # -- subtests and scripts ------------------------------------------------------

    @contextmanager
    def subtest(self, name: str) -> Iterator[None]:
        """A named part of the scenario; its outcome and duration go to the reports.

        An exception inside marks the subtest failed and propagates (the scenario
        stops, as in the NixOS test driver).
        """
        result = SubtestResult(name, time.time(), log_from=self.logger.mark())
        self.subtests.append(result)
        started = time.monotonic()
        try:
            with self.logger.nested(f"subtest: {name}", subtest=name):
                yield
        except BaseException as exc:
            result.success = False
            result.error = _error_info(exc, self._script)
            raise
        finally:
            result.duration = time.monotonic() - started
            result.log_until = self.logger.mark()

    def retry(
        self,
        fn: Callable[..., Any],
        timeout: Duration = 900,
        *,
        timeout_seconds: Duration | None = None,
    ) -> None:
        """NixOS's ``retry``: call ``fn`` until it returns true, then a last time once
        ``timeout`` is up; raise ``WaitTimeout`` (``action timed out after …``) if
        that is false too. ``fn(remaining)`` gets the time left as a ``timedelta``
        that is true only on the last try (NixOS's ``last_try``); a callback taking
        no argument is called without one. See :func:`nxc.driver.polling.retry`."""
        retry(fn, timeout, timeout_seconds=timeout_seconds)

    # -- polling conditions and serial output --------------------------------------

    def check_polling_conditions(self) -> None:
        """Raise if a registered polling condition does not hold, or the global timeout
        has passed (called before every command a machine sends)."""
        if self._expired and self._limit is not None:
            raise GlobalTimeout(self._timeout_message(self._limit))
        for condition in list(self.polling_conditions):
            condition.maybe_raise()

    def polling_condition(
        self,
        fun_: Callable[[], Any] | None = None,
        *,
        seconds_interval: float | None = None,
        interval: dt.timedelta | None = None,
        description: str | None = None,
    ) -> Any:
        """NixOS's ``polling_condition``: as a decorator (with or without arguments) it
        makes a context manager; inside ``with cond:``, ``cond`` is checked before every
        command (at most every ``seconds_interval`` / ``interval``, default 2 s) and
        the scenario fails the first time it does not hold. ``cond.wait(timeout)``
        waits until it holds."""
        if seconds_interval is not None and interval is not None:
            raise NxcError("polling_condition: give seconds_interval or interval, not both")
        every = 2.0
        if interval is not None:
            every = seconds(interval, "interval")
        elif seconds_interval is not None:
            every = seconds(seconds_interval, "seconds_interval")
        driver = self

        class Poll:
            def __init__(self, fun: Callable[[], Any]) -> None:
                self.condition = PollingCondition(fun, driver.logger, every, description)

            def __enter__(self) -> Poll:
                driver.polling_conditions.append(self.condition)
                return self

            def __exit__(self, *_: object) -> None:
                driver.polling_conditions.remove(self.condition)

            def wait(self, timeout: Duration = 900) -> None:
                def holds(last_try: Any) -> bool:
                    return self.condition.check(force=True)

                with driver.logger.nested(f"waiting for {self.condition.description}"):
                    retry(holds, timeout, what=self.condition.description)

        if fun_ is None:
            return Poll
        return Poll(fun_)

    def serial_stdout_on(self) -> None:
        """Log what the nodes print on their consoles as it comes (``stream=serial``
        records, on the driver's console too); off by default."""
        if self._serial is None:
            self._serial = _SerialFollower(self.machines, self.logger)
            self._serial.start()

    def serial_stdout_off(self) -> None:
        """Stop :meth:`serial_stdout_on`."""
        if self._serial is not None:
            self._serial.stop()
            self._serial = None

    def globals(self) -> dict[str, Any]:
        """The names a scenario sees (also the interactive shell's)."""
        names: dict[str, Any] = {
            "driver": self,
            "machines": self.machines,
            "roles": self.roles,
            "start_all": self.start_all,
            "subtest": self.subtest,
            "run_parallel": self.run_parallel,
            "barrier": self.barrier,
            "retry": self.retry,
            "log": ScenarioLog(self.logger),
            "os": os,
            "t": _Assertions(),
            "join_all": self.join_all,
            "polling_condition": self.polling_condition,
            "serial_stdout_on": self.serial_stdout_on,
            "serial_stdout_off": self.serial_stdout_off,
        }
        if self._sync is not None:
            names["sync"] = self._sync
        names.update(self.extra_globals)
        machine_names = {python_name(m.name): m for m in self.machines}
        for alias, machine in self.role_aliases().items():
            if alias not in names:
                machine_names[alias] = machine
        if len(self.machines) == 1 and "machine" not in machine_names:
            machine_names["machine"] = self.machines[0]
        for key in sorted(set(machine_names) & set(names)):
            self.logger.warning(f"node {key} hides the scenario name {key!r}")
        names.update(machine_names)
        return names

    # -- global timeout -----------------------------------------------------------

    def _expire(self) -> None:
        self._expired = True

    def _cancel_deadline(self) -> None:
        timer, self._deadline_timer = self._deadline_timer, None
        if timer is not None:
            timer.cancel()
        if self._alarm_set:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._alarm_set = False

    @contextmanager
    def _deadline(self, limit: float | None) -> Iterator[None]:
        """Fail the scenario once ``limit`` seconds have passed: the main thread gets a
        :class:`GlobalTimeout` at once (SIGALRM), and every later command raises it
        too, so a scenario catching exceptions cannot outlive the limit."""
        self._expired = False
        self._limit = limit
        if limit is None:
            yield
            return
        on_main = threading.current_thread() is threading.main_thread()
        previous: Any = None

        def alarm(_signum: int, _frame: object) -> None:
            self._expire()
            raise GlobalTimeout(self._timeout_message(limit))

        if on_main:
            previous = signal.signal(signal.SIGALRM, alarm)
            signal.setitimer(signal.ITIMER_REAL, limit)
            self._alarm_set = True
        else:
            self._deadline_timer = threading.Timer(limit, self._expire)
            self._deadline_timer.daemon = True
            self._deadline_timer.start()
        try:
            yield
        finally:
            self._cancel_deadline()
            if on_main:
                signal.signal(signal.SIGALRM, previous)

    def _timeout_message(self, limit: float) -> str:
        return f"global timeout: the scenario ran past {limit:g}s (--global-timeout)"

    def run_script(
        self, text: str, filename: str = "testScript", *, global_timeout: Duration | None = None
    ) -> bool:
        """Run a scenario; write ``report.json`` and ``report.xml``; return success.

        The scenario's exceptions are caught and reported (a ``KeyboardInterrupt``
        is reported, then re-raised). ``sys.exit(0)`` in a scenario is a success.
        ``global_timeout`` (default: the driver's ``global_timeout``, none if unset)
        fails a scenario that runs longer, as NixOS's ``globalTimeout`` does.
        """
        limit = optional_seconds(
            global_timeout if global_timeout is not None else self.global_timeout,
            "global timeout",
        )
        self.subtests = []
        self._script = filename
        log_from = self.logger.mark()
        started_at = time.time()
        started = time.monotonic()
        error: ErrorInfo | None = None
        interrupted: KeyboardInterrupt | None = None
        lines = text.splitlines(keepends=True)
        linecache.cache[filename] = (len(text), None, lines, filename)
        try:
            with self._deadline(limit), self.logger.nested(f"running {filename}"):
                code = compile(text, filename, "exec")
                scope = self.globals()
                scope.update({"__name__": "__main__", "__file__": filename})
                exec(code, scope)
            if self._expired and limit is not None:
                raise GlobalTimeout(self._timeout_message(limit))
        except SystemExit as exc:
            if exc.code not in (None, 0):
                error = ErrorInfo(
                    "SystemExit", f"the scenario exited with {exc.code!r}", "", "failure"
                )
        except KeyboardInterrupt as exc:
            interrupted = exc
            error = ErrorInfo("KeyboardInterrupt", "interrupted", "", "error")
        except Exception as exc:
            if self._expired and limit is not None and not isinstance(exc, GlobalTimeout):
                exc = GlobalTimeout(f"{self._timeout_message(limit)}; then: {_describe(exc)}")
            error = _error_info(exc, filename)
        if self._expired:
            for machine in self.machines:  # commands still in flight in other threads
                machine.release()
        duration = time.monotonic() - started
        success = error is None
        if error is not None:
            self.logger.error(
                f"{filename} failed: {error.message}"
                + (f"\n{error.traceback}" if error.traceback else "")
            )
        passed = sum(1 for s in self.subtests if s.success)
        self.logger.info(
            f"{filename}: {'PASSED' if success else 'FAILED'} in {duration:.2f}s "
            f"({passed}/{len(self.subtests)} subtests passed)"
        )
        self.write_reports(filename, success, started_at, duration, error, log_from)
        if interrupted is not None:
            raise interrupted
        return success

    # -- reports -------------------------------------------------------------------

    def write_reports(
        self,
        name: str,
        success: bool,
        started_at: float,
        duration: float,
        error: ErrorInfo | None,
        log_from: int,
    ) -> tuple[Path, Path]:
        """Write ``report.json`` and ``report.xml`` in ``out_dir``; return their paths."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        report = {
            "nxc_report": 1,
            "script": name,
            "success": success,
            "started_at": _iso(started_at),
            "duration": round(duration, 3),
            "error": error.to_json() if error else None,
            "machines": [{"name": m.name, "role": m.role, "index": m.index} for m in self.machines],
            "subtests": [s.to_json() for s in self.subtests],
            "log_files": [str(path) for path in self.logger.files],
            "log": [record.to_json() for record in self.logger.records(log_from)],
        }
        json_path = self.out_dir / "report.json"
        xml_path = self.out_dir / "report.xml"
        atomic_write(json_path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        root = self._junit(name, success, started_at, duration, error, log_from)
        ET.indent(root)
        atomic_write(xml_path, ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n")
        return json_path, xml_path

    def _junit(
        self,
        name: str,
        success: bool,
        started_at: float,
        duration: float,
        error: ErrorInfo | None,
        log_from: int,
    ) -> ET.Element:
        cases: list[tuple[str, float, ErrorInfo | None, str]] = [
            (
                s.name,
                s.duration,
                s.error if not s.success else None,
                self.logger.text(s.log_from, s.log_until),
            )
            for s in self.subtests
        ]
        cases.append((f"{name} (whole script)", duration, error, self.logger.text(log_from)))
        failures = sum(1 for case in cases if case[2] is not None and case[2].kind == "failure")
        errors = sum(1 for case in cases if case[2] is not None and case[2].kind == "error")
        root = ET.Element(
            "testsuites",
            name="nxc",
            tests=str(len(cases)),
            failures=str(failures),
            errors=str(errors),
            time=f"{duration:.3f}",
        )
        suite = ET.SubElement(
            root,
            "testsuite",
            name=_xml(name),
            tests=str(len(cases)),
            failures=str(failures),
            errors=str(errors),
            skipped="0",
            time=f"{duration:.3f}",
            timestamp=_iso(started_at),
            hostname=socket.gethostname(),
        )
        properties = ET.SubElement(suite, "properties")
        for machine in self.machines:
            ET.SubElement(
                properties,
                "property",
                name=f"node.{machine.name}",
                value=f"role={machine.role} index={machine.index}",
            )
        for case_name, case_time, case_error, case_log in cases:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=_xml(name),
                name=_xml(case_name),
                time=f"{case_time:.3f}",
            )
            if case_error is not None:
                failure = ET.SubElement(
                    case,
                    "failure" if case_error.kind == "failure" else "error",
                    message=_xml(case_error.message),
                    type=_xml(case_error.type),
                )
                failure.text = _xml(case_error.traceback or case_error.message)
            if case_log:
                ET.SubElement(case, "system-out").text = _xml(case_log)
        return root

    # -- sync service ---------------------------------------------------------------

    @property
    def sync(self) -> Sync:
        """The deployment's sync service (barriers, signals, topics, discovery)."""
        if self._sync is None:
            raise SyncUnavailable("this driver has no sync service (the deployment has none)")
        return self._sync

    def barrier(self, state: str, count: int | None = None, timeout: float | None = 600) -> None:
        """``sync.barrier``: wait until ``state`` was signalled ``count`` times (default:
        once per node). Nodes join with ``nxc-sync signal-and-wait STATE COUNT``."""
        self.sync.barrier(state, count, timeout)

    # -- cleanup -------------------------------------------------------------------

    def release(self) -> None:
        """Close every machine's channel and the sync connection (nodes keep running)."""
        self.serial_stdout_off()
        for machine in self.machines:
            machine.release()
        if self._sync is not None:
            self._sync.close()

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


@dataclass
class _Failed:
    exc: Exception


class _SerialFollower:
    """Logs the new console lines of each machine twice a second (serial_stdout_on)."""

    def __init__(self, machines: Sequence[Machine], logger: Logger) -> None:
        self._machines = list(machines)
        self._logger = logger
        self._stop = threading.Event()
        self._seen = {m.name: len(self._console(m)) for m in self._machines}
        self._thread = threading.Thread(target=self._follow, name="nxc-serial", daemon=True)

    @staticmethod
    def _console(machine: Machine) -> str:
        try:
            return machine.get_console_log()
        except Exception:  # a node without a console, or one being restarted
            return ""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _follow(self) -> None:
        # Whole lines are logged as they come; a last line without its newline once
        # it has stayed unchanged for one interval (a prompt, a line being written).
        last_size = dict.fromkeys(self._seen, -1)
        while not self._stop.wait(0.5):
            for machine in self._machines:
                text = self._console(machine)
                seen = self._seen.get(machine.name, 0)
                if len(text) < seen:
                    seen = 0  # a new console
                fresh = text[seen:]
                complete, newline, rest = fresh.rpartition("\n")
                if not newline:
                    complete = ""
                take = complete + newline
                if rest and len(text) == last_size.get(machine.name):
                    take = fresh
                last_size[machine.name] = len(text)
                if take:
                    self._seen[machine.name] = seen + len(take)
                    for line in take.splitlines():
                        self._logger.info(line, node=machine.name, stream="serial")


def _error_info(exc: BaseException, script: str | None = None) -> ErrorInfo:
    kind = "failure" if isinstance(exc, AssertionError | NxcError) else "error"
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not _is_internal(frame.filename, script)
    ]
    message = str(exc).strip()
    if not message and frames and frames[-1].line:
        where = f"{frames[-1].filename}:{frames[-1].lineno}"
        message = f"{type(exc).__name__} at {where}: {frames[-1].line.strip()}"
    elif not message:
        message = type(exc).__name__
    notes = getattr(exc, "__notes__", None)
    if notes:
        message += "\n" + "\n".join(str(note) for note in notes)
    lines = []
    if frames:
        lines.append("Traceback (most recent call last, scenario frames only):\n")
        lines.extend(traceback.format_list(frames))
    lines.extend(traceback.format_exception_only(type(exc), exc))
    return ErrorInfo(type(exc).__name__, message, "".join(lines).rstrip(), kind)


def _xml(text: str) -> str:
    return _XML_INVALID.sub("\ufffd", text)
