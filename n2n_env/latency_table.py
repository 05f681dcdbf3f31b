"""The on-disk per-layer latency table: one timing per layer shape, never measured twice.

NetAdapt (Yang et al., ECCV 2018) estimates a network's latency from a lookup table of its
layers' latencies, built once per device, because timing every candidate network would
cost more than the search. :class:`LatencyTable` is that table for n2n: a SQLite file
(WAL mode, safe to share between processes) mapping a key to the median of repeated
timings of one part of a forward pass (a layer, a projection shortcut, a residual
addition) and the timings themselves. The key is a hash of everything that changes the
timing (see :mod:`n2n_env.latency`); the table only stores and answers.

An entry, once written, stays: a second process that timed the same part meanwhile keeps
the first entry, so every reader sees one value per key. Connections are opened per call
and closed after it, so the table can be pickled and used after ``fork()``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

FORMAT = "n2n-latency-table"
VERSION = 1
BUSY_TIMEOUT_MS = 30_000
_CHUNK = 500  # keys per SELECT, well below SQLite's limit on parameters

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS timings (key TEXT PRIMARY KEY, key_json TEXT NOT NULL, "
    "median_ms REAL NOT NULL, samples_json TEXT NOT NULL, created_at TEXT NOT NULL) "
    "WITHOUT ROWID",
)


class LatencyTableError(ValueError):
    """The table path holds something that is not an n2n latency table of this version."""


@dataclass(frozen=True)
class TimingRow:
    """One entry: the part and conditions it was timed under, the median and the samples
    (milliseconds per forward call)."""

    key: str
    described: dict[str, Any]
    median_ms: float
    samples_ms: tuple[float, ...]


class LatencyTable:
    """The per-part latency table in the SQLite file ``path`` (created with its folders
    if missing; anything else there raises :class:`LatencyTableError`, untouched)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        with closing(self._connect()):
            pass  # create or check the file now, not at the first lookup

    def lookup(self, keys: Iterable[str]) -> dict[str, float]:
        """The stored medians (ms) among ``keys``, by key."""
        wanted = sorted(set(keys))
        found: dict[str, float] = {}
        if not wanted:
            return found
        with closing(self._connect()) as conn:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                rows = conn.execute(
                    f"SELECT key, median_ms FROM timings WHERE key IN "
                    f"({','.join('?' * len(chunk))})", chunk).fetchall()
                found.update({key: float(median) for key, median in rows})
        return found

    def store(self, rows: Sequence[TimingRow]) -> None:
        """Add ``rows`` in one transaction; a key already stored keeps its first entry."""
        if not rows:
            return
        created = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        values = [(row.key, json.dumps(row.described, sort_keys=True), row.median_ms,
                   json.dumps(list(row.samples_ms)), created) for row in rows]
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT INTO timings VALUES (?, ?, ?, ?, ?) "
                                 "ON CONFLICT (key) DO NOTHING", values)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def rows(self) -> Iterator[TimingRow]:
        """Every entry, in key order (for inspection and the noise benchmark)."""
        with closing(self._connect()) as conn:
            stored = conn.execute("SELECT key, key_json, median_ms, samples_json FROM timings "
                                  "ORDER BY key").fetchall()
        for key, described, median, samples in stored:
            yield TimingRow(key, json.loads(described), float(median),
                            tuple(float(s) for s in json.loads(samples)))

    def __len__(self) -> int:
        with closing(self._connect()) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM timings").fetchone()[0])

    def _error(self, problem: str) -> LatencyTableError:
        return LatencyTableError(f"{self.path}: {problem}; it is not an n2n latency table "
                                 f"({FORMAT} version {VERSION}). Move it away or give "
                                 "another latency table path")

    def _connect(self) -> sqlite3.Connection:
        """A fresh connection to the file, which is created or checked first."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._prepare(conn)
        except sqlite3.DatabaseError as error:
            conn.close()
            if "locked" in str(error):
                raise
            raise self._error(f"SQLite cannot use it ({error})") from error
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if not tables:
            conn.execute("BEGIN IMMEDIATE")  # another process may be creating it too
            try:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                                 [("format", FORMAT), ("version", str(VERSION))])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            tables = {"meta", "timings"}
            with suppress(sqlite3.OperationalError):  # WAL only speeds readers up
                conn.execute("PRAGMA journal_mode=WAL")
        if not {"meta", "timings"} <= tables:
            raise self._error(f"a SQLite database with tables {sorted(tables)}")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != FORMAT or meta.get("version") != str(VERSION):
            raise self._error(f"format {meta.get('format')!r} version {meta.get('version')!r}")
