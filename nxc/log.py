"""A nesting logger for nxc: console output for people, structured records for reports.

Every part of nxc (runtime, driver, CLI) logs through a :class:`Logger`::

    from nxc.log import log

    log.info("booting", node="node1")
    with log.nested("subtest: replication", nodes=3):
        log.warning("slow link", node="node2")

Each call produces a :class:`Record`. Records go to three places:

* the console (standard error): indented by nesting depth, coloured when standard
  error is a terminal, plain text otherwise; only records at or above the console
  level (``INFO`` by default) are shown;
* an in-memory list (every level, bounded), which reports read back with
  :meth:`Logger.records` / :meth:`Logger.text`;
* JSON-lines files added with :meth:`Logger.attach_file` (every level, flushed per
  record so a crash keeps the log).

A nested block writes a ``begin`` record when entered and an ``end`` record with its
duration and outcome when left; an exception leaving the block is noted once, on the
innermost block it crossed. Nesting depth is tracked per thread / context, so worker
threads started through :func:`contextvars.copy_context` nest under the block that
started them.
"""

from __future__ import annotations

import contextvars
import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import IO, Any, Literal, TextIO

__all__ = ["Level", "Logger", "Record", "Span", "log"]


class Level(IntEnum):
    DEBUG = 10
    INFO = 20
    WARNING = 30
    ERROR = 40

    @classmethod
    def parse(cls, value: str | int | Level) -> Level:
        """``"debug"``, ``"INFO"``, ``20`` or a ``Level`` → ``Level``."""
        if isinstance(value, Level):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[value.strip().upper()]
        except KeyError:
            names = ", ".join(level.name.lower() for level in cls)
            raise ValueError(f"unknown log level {value!r} (one of: {names})") from None


RecordKind = Literal["line", "begin", "end"]


@dataclass(frozen=True)
class Record:
    """One log event. ``begin``/``end`` records bracket a nested block."""

    seq: int
    time: float  # seconds since the epoch
    elapsed: float  # seconds since the logger was created
    level: Level
    kind: RecordKind
    depth: int
    message: str
    attrs: Mapping[str, Any] = field(default_factory=dict)
    duration: float | None = None  # end records: seconds spent in the block
    ok: bool | None = None  # end records: False when an exception left the block
    error: str | None = None  # end records: the exception, on the innermost failed block
    thread: str = "MainThread"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "seq": self.seq,
            "time": round(self.time, 6),
            "elapsed": round(self.elapsed, 6),
            "level": self.level.name.lower(),
            "kind": self.kind,
            "depth": self.depth,
            "msg": self.message,
        }
        if self.attrs:
            data["attrs"] = {key: _jsonable(value) for key, value in self.attrs.items()}
        if self.duration is not None:
            data["duration"] = round(self.duration, 6)
        if self.ok is not None:
            data["ok"] = self.ok
        if self.error is not None:
            data["error"] = self.error
        if self.thread != "MainThread":
            data["thread"] = self.thread
        return data

    def plain(self) -> str:
        """The record as the plain console shows it (indentation included)."""
        indent = "  " * self.depth
        text = _prefixed(self._text(), self.attrs)
        return indent + text.replace("\n", "\n" + indent + "  ")

    def _text(self) -> str:
        if self.kind == "begin":
            return self.message
        if self.kind == "end":
            seconds = f"{self.duration or 0.0:.2f}s"
            if self.ok is False:
                detail = f": {self.error}" if self.error else ""
                return f"(failed: {self.message}, after {seconds}{detail})"
            return f"(finished: {self.message}, in {seconds})"
        if self.level >= Level.WARNING:
            return f"{self.level.name.lower()}: {self.message}"
        return self.message


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return str(value)


def _prefixed(text: str, attrs: Mapping[str, Any]) -> str:
    node = attrs.get("node")
    return f"{node}: {text}" if node is not None else text


@dataclass
class Span:
    """Handle of an open nested block; attributes set here land on its end record."""

    message: str
    attrs: dict[str, Any]
    started: float
    depth: int
    children: int = 0

    def set(self, **attrs: Any) -> None:
        self.attrs.update(attrs)


class _Console:
    """Writes records to a text stream: rich styling on a terminal, plain otherwise."""

    def __init__(self, stream: TextIO | None, color: bool | None) -> None:
        self._stream = stream
        self._color = color
        self._rich: Any = None
        self._rich_for: TextIO | None = None

    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def use_color(self, stream: TextIO) -> bool:
        if self._color is not None:
            return self._color
        if os.environ.get("NO_COLOR"):
            return False
        isatty = getattr(stream, "isatty", None)
        try:
            return bool(isatty()) if isatty is not None else False
        except ValueError:  # closed stream
            return False

    def write(self, record: Record) -> None:
        stream = self.stream()
        try:
            if self.use_color(stream):
                self._write_rich(stream, record)
            else:
                stream.write(record.plain() + "\n")
                stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken console must not break the experiment

    def _write_rich(self, stream: TextIO, record: Record) -> None:
        from rich.console import Console
        from rich.text import Text

        if self._rich is None or self._rich_for is not stream:
            self._rich = Console(file=stream, force_terminal=True, highlight=False)
            self._rich_for = stream
        style = _STYLES.get((record.kind, record.level, record.ok), "")
        text = Text("  " * record.depth)
        node = record.attrs.get("node")
        if node is not None:
            text.append(f"{node}: ", style="cyan")
        body = record._text()
        text.append(body.replace("\n", "\n" + "  " * record.depth + "  "), style=style)
        self._rich.print(text, soft_wrap=True)


_STYLES: dict[tuple[RecordKind, Level, bool | None], str] = {
    ("begin", Level.DEBUG, None): "dim bold",
    ("begin", Level.INFO, None): "bold green",
    ("begin", Level.WARNING, None): "bold yellow",
    ("begin", Level.ERROR, None): "bold red",
    ("line", Level.DEBUG, None): "dim",
    ("line", Level.WARNING, None): "yellow",
    ("line", Level.ERROR, None): "bold red",
    ("end", Level.DEBUG, True): "dim",
    ("end", Level.INFO, True): "dim",
    ("end", Level.WARNING, True): "dim",
    ("end", Level.ERROR, True): "dim",
    ("end", Level.DEBUG, False): "red",
    ("end", Level.INFO, False): "red",
    ("end", Level.WARNING, False): "red",
    ("end", Level.ERROR, False): "red",
}

# A nested block that took less than this, printed nothing below it and succeeded
# gets no "(finished: …)" line on the console (its end record is still kept).
QUIET_END_SECONDS = 0.5

_LOGGED_MARK = "_nxc_logged"


class Logger:
    """A nesting logger; see the module documentation.

    ``stream``: console stream (default: ``sys.stderr`` looked up at each write);
    ``level``: lowest level shown on the console; ``color``: force colour on/off
    (default: on when the console is a terminal and ``NO_COLOR`` is unset);
    ``keep``: how many records the in-memory log holds (oldest dropped first).
    """

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        level: Level | str | int = Level.INFO,
        color: bool | None = None,
        keep: int = 100_000,
    ) -> None:
        self._console = _Console(stream, color)
        self._level = Level.parse(level)
        self._records: deque[Record] = deque(maxlen=keep)
        self._files: dict[Path, IO[str]] = {}
        self._lock = threading.RLock()
        self._seq = 0
        self._t0 = time.monotonic()
        self._epoch0 = time.time()
        self._stack: contextvars.ContextVar[tuple[Span, ...]] = contextvars.ContextVar(
            f"nxc_log_stack_{id(self)}", default=()
        )

    # -- configuration -------------------------------------------------------------

    @property
    def level(self) -> Level:
        return self._level

    def set_level(self, level: Level | str | int) -> None:
        """Lowest level shown on the console (records keep every level)."""
        self._level = Level.parse(level)

    def attach_file(self, path: str | Path, *, replay: bool = True) -> None:
        """Also append every record to ``path`` as JSON lines.

        With ``replay`` the records already in memory are written first, so a file
        attached late still holds the whole session.
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if target in self._files:
                return
            handle = target.open("a", encoding="utf-8")
            if replay:
                for record in self._records:
                    handle.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
                handle.flush()
            self._files[target] = handle

    def detach_file(self, path: str | Path) -> None:
        with self._lock:
            handle = self._files.pop(Path(path), None)
        if handle is not None:
            handle.close()

    def close(self) -> None:
        """Close every attached file (the logger stays usable for console output)."""
        with self._lock:
            handles = list(self._files.values())
            self._files.clear()
        for handle in handles:
            handle.close()

    @property
    def files(self) -> list[Path]:
        with self._lock:
            return list(self._files)

    # -- logging -------------------------------------------------------------------

    def debug(self, message: str, **attrs: Any) -> None:
        self.log(Level.DEBUG, message, **attrs)

    def info(self, message: str, **attrs: Any) -> None:
        self.log(Level.INFO, message, **attrs)

    def warning(self, message: str, **attrs: Any) -> None:
        self.log(Level.WARNING, message, **attrs)

    def error(self, message: str, **attrs: Any) -> None:
        self.log(Level.ERROR, message, **attrs)

    def log(self, level: Level | str | int, message: str, **attrs: Any) -> None:
        parsed = Level.parse(level)
        stack = self._stack.get()
        shown = parsed >= self._level
        if shown:
            for span in stack:
                span.children += 1
        self._emit("line", parsed, message, attrs, depth=len(stack), shown=shown)

    @contextmanager
    def nested(
        self, message: str, *, level: Level | str | int = Level.INFO, **attrs: Any
    ) -> Iterator[Span]:
        """A block: logs ``message``, indents what is logged inside, then its duration.

        If an exception leaves the block, the end record has ``ok=False`` and, on the
        innermost block only, the exception text; the exception propagates.
        """
        parsed = Level.parse(level)
        stack = self._stack.get()
        shown = parsed >= self._level
        if shown:
            for outer in stack:
                outer.children += 1
        span = Span(message, dict(attrs), time.monotonic(), len(stack))
        self._emit("begin", parsed, message, dict(attrs), depth=span.depth, shown=shown)
        token = self._stack.set((*stack, span))
        ok = True
        error: str | None = None
        try:
            yield span
        except BaseException as exc:
            ok = False
            if not getattr(exc, _LOGGED_MARK, False):
                error = _describe(exc)
                with suppress(AttributeError, TypeError):
                    setattr(exc, _LOGGED_MARK, True)
            raise
        finally:
            self._stack.reset(token)
            duration = time.monotonic() - span.started
            quiet = ok and span.children == 0 and duration < QUIET_END_SECONDS
            self._emit(
                "end",
                parsed,
                message,
                span.attrs,
                depth=span.depth,
                shown=shown and not quiet,
                duration=duration,
                ok=ok,
                error=error,
            )

    @property
    def depth(self) -> int:
        """Nesting depth in the current thread / context."""
        return len(self._stack.get())

    # -- reading back --------------------------------------------------------------

    def mark(self) -> int:
        """The sequence number the next record will get (for :meth:`records`)."""
        with self._lock:
            return self._seq

    def records(self, since: int = 0, until: int | None = None) -> list[Record]:
        """Records kept in memory with ``since <= seq < until``."""
        with self._lock:
            return [
                record
                for record in self._records
                if record.seq >= since and (until is None or record.seq < until)
            ]

    def text(
        self, since: int = 0, until: int | None = None, *, min_level: Level = Level.DEBUG
    ) -> str:
        """The kept records as plain console text (one line per record)."""
        return "\n".join(
            record.plain() for record in self.records(since, until) if record.level >= min_level
        )

    # -- internals -----------------------------------------------------------------

    def _emit(
        self,
        kind: RecordKind,
        level: Level,
        message: str,
        attrs: Mapping[str, Any],
        *,
        depth: int,
        shown: bool,
        duration: float | None = None,
        ok: bool | None = None,
        error: str | None = None,
    ) -> None:
        now = time.monotonic()
        with self._lock:
            record = Record(
                seq=self._seq,
                time=self._epoch0 + (now - self._t0),
                elapsed=now - self._t0,
                level=level,
                kind=kind,
                depth=depth,
                message=message,
                attrs=dict(attrs),
                duration=duration,
                ok=ok,
                error=error,
                thread=threading.current_thread().name,
            )
            self._seq += 1
            self._records.append(record)
            if self._files:
                line = json.dumps(record.to_json(), ensure_ascii=False) + "\n"
                for handle in self._files.values():
                    try:
                        handle.write(line)
                        handle.flush()
                    except (OSError, ValueError):
                        pass
            if shown:
                self._console.write(record)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    name = type(exc).__name__
    return f"{name}: {first}" if first else name


# The logger shared by nxc's modules and the CLI.
log = Logger()
