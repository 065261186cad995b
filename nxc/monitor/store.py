"""The per-run metrics store: one SQLite file (``metrics.sqlite``) in the run directory.

Why SQLite: it is in Python's standard library, one file per run that any tool opens
(``sqlite3``, pandas, R, DuckDB), safe to read from another process while the driver
writes (WAL mode: ``nxc monitor`` tails it live), and its queries by node/metric/time
need no code of ours. A columnar file (Parquet) would need pyarrow and could not be
appended to row by row.

Tables (schema ``nxc_metrics`` 1):

* ``series(id, node, job, metric, labels, type)`` — one per node/endpoint/metric/label
  set (``labels`` is canonical sorted JSON, ``job`` is ``node`` for the node's own
  metrics or the name of an application endpoint);
* ``samples(series, t, value)`` — one row per observation (``t``: epoch seconds, the
  driver's clock when the scrape's answer arrived); the ``tidy`` view joins both into one row
  per node/job/metric/labels/time/value;
* ``scrapes(node, job, t, duration, samples)`` — each successful scrape;
* ``errors(node, job, t, kind, message)`` — each failed or skipped one (the gaps);
* ``marks(t, label, node)`` — ``monitor.mark(...)`` from scenarios;
* ``sessions(id, started, stopped, interval, pid)`` — when a driver was scraping
  (time outside every session is no node's fault);
* ``nodes(node, role, idx)``, ``sources(node, job, kind, detail, t)``, ``meta(key, value)``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nxc.errors import NxcError
from nxc.monitor.parse import ParsedSample, labels_key

__all__ = [
    "FAILURE_KINDS",
    "NODE_JOB",
    "SCHEMA_VERSION",
    "Mark",
    "MetricsStore",
    "Sample",
    "ScrapeError",
    "ScrapeRecord",
    "Session",
    "Source",
    "StoreError",
]

SCHEMA_VERSION = 1
# The job of a node's own metrics (node_exporter or nxc-metrics).
NODE_JOB = "node"
# Error kinds that mean the node did not answer; "busy" (the previous scrape of the node
# was still running at the next tick) and "no-source" do not.
FAILURE_KINDS = ("down", "unreachable", "timeout", "failed", "parse")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes(node TEXT PRIMARY KEY, role TEXT, idx INTEGER);
CREATE TABLE IF NOT EXISTS sources(
  node TEXT NOT NULL, job TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,
  t REAL NOT NULL, PRIMARY KEY(node, job));
CREATE TABLE IF NOT EXISTS series(
  id INTEGER PRIMARY KEY, node TEXT NOT NULL, job TEXT NOT NULL, metric TEXT NOT NULL,
  labels TEXT NOT NULL, type TEXT NOT NULL, UNIQUE(node, job, metric, labels));
CREATE TABLE IF NOT EXISTS samples(
  series INTEGER NOT NULL REFERENCES series(id), t REAL NOT NULL, value REAL NOT NULL,
  PRIMARY KEY(series, t)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scrapes(
  node TEXT NOT NULL, job TEXT NOT NULL, t REAL NOT NULL, duration REAL NOT NULL,
  samples INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS scrapes_by_node ON scrapes(node, job, t);
CREATE TABLE IF NOT EXISTS errors(
  node TEXT NOT NULL, job TEXT NOT NULL, t REAL NOT NULL, kind TEXT NOT NULL,
  message TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS marks(t REAL NOT NULL, label TEXT NOT NULL, node TEXT);
CREATE TABLE IF NOT EXISTS sessions(
  id INTEGER PRIMARY KEY, started REAL NOT NULL, stopped REAL, interval REAL NOT NULL,
  pid INTEGER NOT NULL);
CREATE VIEW IF NOT EXISTS tidy AS
  SELECT s.node AS node, s.job AS job, s.metric AS metric, s.labels AS labels,
         p.t AS t, p.value AS value
  FROM samples p JOIN series s ON s.id = p.series;
"""


class StoreError(NxcError):
    """The metrics file is missing, unreadable or of another schema."""


@dataclass(frozen=True)
class Sample:
    """One stored observation: ``metric{labels}`` of ``node`` at ``t`` (epoch seconds)."""

    node: str
    metric: str
    labels: dict[str, str]
    t: float
    value: float
    job: str = NODE_JOB


@dataclass(frozen=True)
class Mark:
    t: float
    label: str
    node: str | None = None


@dataclass(frozen=True)
class ScrapeError:
    node: str
    job: str
    t: float
    kind: str
    message: str


@dataclass(frozen=True)
class ScrapeRecord:
    node: str
    job: str
    t: float
    duration: float
    samples: int


@dataclass(frozen=True)
class Session:
    id: int
    started: float
    stopped: float | None
    interval: float
    pid: int


@dataclass(frozen=True)
class Source:
    """How a node's metrics are fetched: ``kind`` (``http``, ``exec``…) and ``detail``."""

    node: str
    job: str
    kind: str
    detail: str


class MetricsStore:
    """A run's ``metrics.sqlite``, usable from several threads (one connection, a lock).

    ``MetricsStore.create(path)`` makes (or reopens, to append) a store;
    ``MetricsStore.open(path)`` opens an existing one for reading.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection
        self._lock = threading.RLock()
        self._series: dict[tuple[str, str, str, str], int] = {}

    @classmethod
    def create(cls, path: Path) -> MetricsStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(path, check_same_thread=False, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            found = db.execute("SELECT value FROM meta WHERE key='nxc_metrics'").fetchone()
            if found is None:
                db.execute("INSERT INTO meta VALUES('nxc_metrics', ?)", (str(SCHEMA_VERSION),))
            elif found[0] != str(SCHEMA_VERSION):
                raise StoreError(
                    f"{path}: metrics schema {found[0]}, this nxc writes {SCHEMA_VERSION}"
                )
            db.commit()
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot create the metrics store: {exc}") from None
        store = cls(path, db)
        store._load_series()
        return store

    @classmethod
    def open(cls, path: Path) -> MetricsStore:
        if not path.is_file():
            raise StoreError(f"no metrics at {path} (was the run started with --no-monitor?)")
        try:
            db = sqlite3.connect(path, check_same_thread=False, timeout=10)
            found = db.execute("SELECT value FROM meta WHERE key='nxc_metrics'").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: not a metrics store: {exc}") from None
        if found is None or found[0] != str(SCHEMA_VERSION):
            version = "none" if found is None else found[0]
            raise StoreError(f"{path}: metrics schema {version}, this nxc reads {SCHEMA_VERSION}")
        store = cls(path, db)
        store._load_series()
        return store

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> MetricsStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _load_series(self) -> None:
        with self._lock:
            for row in self._db.execute("SELECT id, node, job, metric, labels FROM series"):
                self._series[(row[1], row[2], row[3], row[4])] = row[0]

    # -- writing -------------------------------------------------------------------

    def set_meta(self, values: Mapping[str, Any]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO meta VALUES(?, ?)",
                [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in values.items()],
            )
            self._db.commit()

    def set_nodes(self, nodes: Iterable[tuple[str, str, int]]) -> None:
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO nodes VALUES(?, ?, ?)", list(nodes))
            self._db.commit()

    def begin_session(self, interval: float, started: float | None = None) -> int:
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO sessions(started, stopped, interval, pid) VALUES(?, NULL, ?, ?)",
                (started if started is not None else time.time(), interval, os.getpid()),
            )
            self._db.commit()
            return int(cursor.lastrowid or 0)

    def end_session(self, session: int, stopped: float | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE sessions SET stopped=? WHERE id=?",
                (stopped if stopped is not None else time.time(), session),
            )
            self._db.commit()

    def set_source(self, node: str, job: str, kind: str, detail: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO sources VALUES(?, ?, ?, ?, ?)",
                (node, job, kind, detail, time.time()),
            )
            self._db.commit()

    def _series_id(self, node: str, job: str, sample: ParsedSample) -> int:
        key = (node, job, sample.metric, labels_key(sample.labels))
        found = self._series.get(key)
        if found is not None:
            return found
        cursor = self._db.execute(
            "INSERT INTO series(node, job, metric, labels, type) VALUES(?, ?, ?, ?, ?)",
            (*key, sample.type),
        )
        ident = int(cursor.lastrowid or 0)
        self._series[key] = ident
        return ident

    def add_scrape(
        self,
        node: str,
        job: str,
        t: float,
        duration: float,
        samples: Sequence[ParsedSample],
    ) -> None:
        """Store one successful scrape (committed at once: readers see it)."""
        with self._lock:
            rows = [(self._series_id(node, job, s), t, s.value) for s in samples]
            # OR REPLACE: an exposition repeating a series keeps its last value.
            self._db.executemany("INSERT OR REPLACE INTO samples VALUES(?, ?, ?)", rows)
            self._db.execute(
                "INSERT INTO scrapes VALUES(?, ?, ?, ?, ?)", (node, job, t, duration, len(rows))
            )
            self._db.commit()

    def add_error(self, node: str, job: str, t: float, kind: str, message: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO errors VALUES(?, ?, ?, ?, ?)", (node, job, t, kind, message)
            )
            self._db.commit()

    def add_mark(self, label: str, t: float | None = None, node: str | None = None) -> Mark:
        mark = Mark(t if t is not None else time.time(), label, node)
        with self._lock:
            self._db.execute("INSERT INTO marks VALUES(?, ?, ?)", (mark.t, mark.label, mark.node))
            self._db.commit()
        return mark

    # -- reading -------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def nodes(self) -> list[tuple[str, str, int]]:
        """``(node, role, index)`` of every node, in deployment order."""
        with self._lock:
            rows = self._db.execute("SELECT node, role, idx FROM nodes ORDER BY rowid")
            return [(r[0], r[1], r[2]) for r in rows]

    def sources(self) -> list[Source]:
        with self._lock:
            rows = self._db.execute(
                "SELECT node, job, kind, detail FROM sources ORDER BY node, job"
            )
            return [Source(*r) for r in rows]

    def sessions(self) -> list[Session]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, started, stopped, interval, pid FROM sessions ORDER BY id"
            )
            return [Session(*r) for r in rows]

    def marks(self) -> list[Mark]:
        with self._lock:
            rows = self._db.execute("SELECT t, label, node FROM marks ORDER BY t")
            return [Mark(*r) for r in rows]

    def errors(
        self, node: str | None = None, job: str | None = None, since: float | None = None
    ) -> list[ScrapeError]:
        query = "SELECT node, job, t, kind, message FROM errors"
        where, args = _where(node=node, job=job)
        params: list[Any] = list(args)
        if since is not None:
            where += (" AND" if where else " WHERE") + " t >= ?"
            params.append(since)
        with self._lock:
            rows = self._db.execute(f"{query}{where} ORDER BY t", params)
            return [ScrapeError(*r) for r in rows]

    def scrapes(self, node: str | None = None, job: str | None = None) -> list[ScrapeRecord]:
        query = "SELECT node, job, t, duration, samples FROM scrapes"
        where, args = _where(node=node, job=job)
        with self._lock:
            rows = self._db.execute(f"{query}{where} ORDER BY t", args)
            return [ScrapeRecord(*r) for r in rows]

    def metrics(self, node: str | None = None, job: str | None = None) -> list[str]:
        """Names of the metrics stored (for ``node``/``job`` if given)."""
        where, args = _where(node=node, job=job)
        with self._lock:
            rows = self._db.execute(
                f"SELECT DISTINCT metric FROM series{where} ORDER BY metric", args
            )
            return [r[0] for r in rows]

    def samples(
        self,
        metric: str,
        node: str | None = None,
        *,
        since: float | None = None,
        until: float | None = None,
        labels: Mapping[str, str] | None = None,
        job: str = NODE_JOB,
        previous: bool = False,
    ) -> list[Sample]:
        """Samples of ``metric`` (of ``node``, or every node), oldest first.

        ``labels`` keeps the series having at least those label values; ``since`` and
        ``until`` bound ``t`` (inclusive). ``previous`` adds, per series, the last sample
        before ``since``: the base a counter's increase over the window starts from.
        """
        wanted = dict(labels or {})
        where, args = _where(node=node, job=job, metric=metric)
        with self._lock:
            rows = self._db.execute(f"SELECT id, node, labels FROM series{where}", args).fetchall()
            chosen: dict[int, tuple[str, dict[str, str]]] = {}
            for ident, series_node, text in rows:
                parsed: dict[str, str] = json.loads(text)
                if all(parsed.get(k) == v for k, v in wanted.items()):
                    chosen[ident] = (series_node, parsed)
            if not chosen:
                return []
            marks = ",".join("?" * len(chosen))
            query = f"SELECT series, t, value FROM samples WHERE series IN ({marks})"
            params: list[Any] = list(chosen)
            if since is not None:
                query += " AND t >= ?"
                params.append(since)
            if until is not None:
                query += " AND t <= ?"
                params.append(until)
            found = self._db.execute(query + " ORDER BY t, series", params).fetchall()
            if previous and since is not None:
                before = self._db.execute(
                    "SELECT p.series, p.t, p.value FROM samples p JOIN ("
                    f"SELECT series, MAX(t) AS t FROM samples WHERE series IN ({marks}) "
                    "AND t < ? GROUP BY series) q ON p.series = q.series AND p.t = q.t",
                    [*chosen, since],
                ).fetchall()
                found = sorted(before, key=lambda row: (row[1], row[0])) + found
        return [Sample(chosen[s][0], metric, chosen[s][1], t, value, job) for s, t, value in found]

    def last_scrape_times(self, job: str = NODE_JOB) -> dict[str, float]:
        """Per node, the time of its latest successful scrape."""
        with self._lock:
            rows = self._db.execute(
                "SELECT node, MAX(t) FROM scrapes WHERE job=? GROUP BY node", (job,)
            )
            return {r[0]: r[1] for r in rows}

    def size(self) -> int:
        """Bytes on disk (database plus its write-ahead log)."""
        total = 0
        for suffix in ("", "-wal"):
            candidate = Path(str(self.path) + suffix)
            if candidate.exists():
                total += candidate.stat().st_size
        return total


def _where(**conditions: str | None) -> tuple[str, list[str]]:
    parts = [(k, v) for k, v in conditions.items() if v is not None]
    if not parts:
        return "", []
    return " WHERE " + " AND ".join(f"{k}=?" for k, _ in parts), [v for _, v in parts]
