"""A persistent, process-shared cache of evaluations, so no candidate is trained twice.

Evaluating a student costs seconds to minutes of training and an N2N run revisits many
candidates, so :class:`CachedEvaluator` wraps any :class:`~n2n_env.evaluators.Evaluator`
and keeps its results in one SQLite file (WAL mode) that several processes may share.

Entries are keyed by a hash of the inner evaluator's ``identity()`` (teacher, dataset,
recipe, seed) and by ``Architecture.signature()``, so a result is only reused under the
exact conditions that produced it. ``evaluate_many`` answers what it can from the file and
sends the rest to the inner evaluator as one batch (which a parallel evaluator, such as
:class:`~n2n_env.workers.ProcessPoolEvaluator`, trains side by side); the fresh results are
committed as soon as that batch returns: a process killed at any moment loses at most the
batch it was waiting for. The cache lives with the caller only; workers never open it.
Evaluations whose ``failure`` is set (out of memory, divergence) are NOT cached, since
the failure may not recur; degenerate ones are (they depend on the architecture alone).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from n2n_env.arch import Architecture
from n2n_env.evaluators import Evaluation, Evaluator

FORMAT = "n2n-evaluation-cache"
VERSION = 1
BUSY_TIMEOUT_MS = 30_000
_LOOKUP_CHUNK = 500  # signatures per SELECT, well below SQLite's limit on parameters

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE evaluations (
    identity_hash TEXT NOT NULL, signature TEXT NOT NULL,
    identity_json TEXT NOT NULL,
    architecture_json TEXT NOT NULL,
    evaluation_json TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (identity_hash, signature)
) WITHOUT ROWID;
"""

# A connection inherited through fork() must be neither used nor closed by the child (SQLite
# forbids it; closing may checkpoint or unlock on the parent's behalf), so keep it alive.
_INHERITED: list[sqlite3.Connection] = []
_LIVE: weakref.WeakSet[CachedEvaluator] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for cache in list(_LIVE):
        if cache._conn is not None:
            _INHERITED.append(cache._conn)
        cache._conn, cache._lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_ELSEWHERE = ("use another cache path (gym.make's cache=; n2n compress keeps its cache in "
              "RUN/rewards.sqlite, so give it another --out)")


class CacheFileError(ValueError):
    """The cache path holds something that is not a usable n2n evaluation cache."""


def identity_hash(identity: Mapping[str, Any]) -> str:
    """sha256 of the canonical (sorted-key, compact) JSON of an evaluator identity."""
    return hashlib.sha256(_canonical(identity).encode()).hexdigest()


def _contention(error: sqlite3.Error) -> bool:  # busy beyond the timeout: not the file
    return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)


def _canonical(identity: Mapping[str, Any]) -> str:
    return json.dumps(dict(identity), sort_keys=True, separators=(",", ":"))


class CachedEvaluator:
    """An :class:`~n2n_env.evaluators.Evaluator` that answers from ``path`` when it can.

    ``evaluate`` returns the stored result with ``cache_hit=True`` or calls ``inner`` and
    stores the result (unless it failed); ``evaluate_many`` does the same for a batch,
    calling ``inner`` once for all its misses. The file is created with its parent folders if
    missing; anything else there that is not an n2n cache of a supported version raises
    :class:`CacheFileError` and is left untouched. Picklable: the copy reopens the file
    lazily in whichever process uses it (one connection per process).
    """

    def __init__(self, inner: Evaluator, path: str | os.PathLike[str]) -> None:
        self.inner = inner
        self.path = os.path.abspath(os.fspath(path))
        self._hits = self._misses = self._uncached = 0
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._lock = threading.Lock()
        _LIVE.add(self)
        with self._lock:
            self._connection()  # validate (or create) now, not at the first evaluation

    # ------------------------------------------------------------------ Evaluator protocol
    @property
    def teacher_architecture(self) -> Architecture:
        """The inner evaluator's teacher."""
        return self.inner.teacher_architecture

    @property
    def teacher_accuracy(self) -> float:
        """The inner evaluator's teacher accuracy."""
        return self.inner.teacher_accuracy

    def identity(self) -> Mapping[str, str]:
        """The inner evaluator's identity: caching does not change what a result means."""
        return self.inner.identity()

    def evaluate(self, arch: Architecture) -> Evaluation:
        """The stored evaluation of ``arch`` (``cache_hit=True``), else a fresh one.

        A fresh result is committed before it is returned. If another process stores the
        same candidate meanwhile, the first stored result stays and this one is returned.
        """
        return self.evaluate_many([arch])[0]

    def evaluate_many(self, archs: Sequence[Architecture]) -> list[Evaluation]:
        """One Evaluation per architecture, in order: stored ones (``cache_hit=True``) from
        the file, the others trained by ``inner`` in ONE batch.

        The misses go to the inner evaluator deduplicated (same signature, same cache key),
        in order of first appearance, so a parallel inner evaluator (a process pool, Ray)
        trains them side by side; a single miss goes to ``inner.evaluate``, which is the same
        thing for a batch of one. Every fresh result that did not fail is committed in one
        transaction as soon as the batch returns, before anything is returned. A repeat of
        a candidate within ``archs`` comes back as its first result with ``cache_hit=True``.
        Only this object touches the file: the inner evaluator's workers never do.
        """
        archs = list(archs)
        identity = self.identity()
        digest = identity_hash(identity)
        stored = self._lookup(digest, {arch.signature() for arch in archs})
        first: dict[str, Architecture] = {}
        for arch in archs:
            if arch.signature() not in stored:
                first.setdefault(arch.signature(), arch)
        misses = list(first.values())
        fresh: dict[str, Evaluation] = {}
        if misses:
            trained = ([self.inner.evaluate(misses[0])] if len(misses) == 1
                       else list(self.inner.evaluate_many(misses)))
            if len(trained) != len(misses):
                raise RuntimeError(f"{type(self.inner).__name__}.evaluate_many returned "
                                   f"{len(trained)} evaluations for {len(misses)} students")
            for arch, result in zip(misses, trained):
                fresh[arch.signature()] = dataclasses.replace(result, cache_hit=False)
            self._store(identity, digest, misses, fresh)
        results, answered = [], set()
        for arch in archs:
            signature = arch.signature()
            if signature in stored or signature in answered:
                self._hits += 1
                result = stored[signature] if signature in stored else fresh[signature]
                results.append(dataclasses.replace(result, cache_hit=True))
            else:
                answered.add(signature)
                self._misses += 1
                self._uncached += fresh[signature].failure is not None
                results.append(fresh[signature])
        return results

    def _lookup(self, digest: str, signatures: set[str]) -> dict[str, Evaluation]:
        """The stored evaluations among ``signatures``, by signature (one query per 500)."""
        found: dict[str, Evaluation] = {}
        wanted = sorted(signatures)
        with self._lock:
            for start in range(0, len(wanted), _LOOKUP_CHUNK):
                chunk = wanted[start : start + _LOOKUP_CHUNK]
                rows = self._execute(
                    "SELECT signature, evaluation_json FROM evaluations WHERE identity_hash=?"
                    f" AND signature IN ({','.join('?' * len(chunk))})",
                    (digest, *chunk)).fetchall()
                for signature, text in rows:
                    found[signature] = self._decode(text, (digest, signature))
        return found

    def _store(self, identity: Mapping[str, Any], digest: str, archs: Sequence[Architecture],
               results: Mapping[str, Evaluation]) -> None:
        """Commit the results that did not fail, in one transaction; an entry another process
        stored meanwhile stays as it is."""
        created = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        rows = [(digest, arch.signature(), _canonical(identity), arch.to_json(),
                 json.dumps(results[arch.signature()].to_dict(), sort_keys=True), created)
                for arch in archs if results[arch.signature()].failure is None]
        if not rows:
            return
        with self._lock:
            self._execute("BEGIN IMMEDIATE")  # waits up to BUSY_TIMEOUT_MS for other writers
            try:
                self._connection().executemany(
                    "INSERT INTO evaluations VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (identity_hash, signature) DO NOTHING", rows)
                self._execute("COMMIT")
            except BaseException:
                if self._connection().in_transaction:
                    self._execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------ bookkeeping
    def __len__(self) -> int:
        """Number of stored entries for this evaluator's identity."""
        with self._lock:
            row = self._execute("SELECT COUNT(*) FROM evaluations WHERE identity_hash=?",
                                (identity_hash(self.identity()),)).fetchone()
        return int(row[0])

    @property
    def stats(self) -> dict[str, int]:
        """Counters of this object in this process: hits, misses (inner evaluator called)
        and uncached (misses that failed and were therefore not stored)."""
        return {"hits": self._hits, "misses": self._misses, "uncached": self._uncached}

    def close(self) -> None:
        """Close this process's connection; a later call reopens it."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> CachedEvaluator:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_conn"], state["_lock"]
        state.update(_pid=-1, _hits=0, _misses=0, _uncached=0)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _conn=None, _lock=threading.Lock())
        _LIVE.add(self)

    # ------------------------------------------------------------------ SQLite
    def _error(self, problem: str, advice: str = f"move the file away or {_ELSEWHERE}"
               ) -> CacheFileError:
        return CacheFileError(f"{self.path}: {problem}. It is not a usable n2n evaluation "
                              f"cache ({FORMAT} version {VERSION}); {advice}.")

    def _decode(self, text: str, key: tuple[str, str]) -> Evaluation:
        try:
            return Evaluation.from_dict(json.loads(text))
        except (ValueError, TypeError) as error:
            raise self._error(f"entry {key} does not decode ({error})") from error

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._connection().execute(sql, params)
        except sqlite3.DatabaseError as error:
            if _contention(error):
                raise
            raise self._error(f"SQLite error ({error})") from error

    def _connection(self) -> sqlite3.Connection:
        """This process's connection, opened (and the file checked) on first use."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:  # inherited through fork()
            _INHERITED.append(self._conn)
        self._conn, conn = None, None
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._prepare(conn)
        except BaseException as error:
            if conn is not None:
                conn.close()
            if isinstance(error, sqlite3.DatabaseError) and not _contention(error):
                raise self._error(f"SQLite cannot use it ({error})") from error
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Create the schema in an empty database, else check it is ours; then WAL mode."""
        if not conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall():
            _ensure_wal(conn)
            conn.execute("BEGIN IMMEDIATE")  # another process may be creating it too
            try:
                if not conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall():
                    for statement in _SCHEMA.split(";")[:-1]:
                        conn.execute(statement)
                    conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                        ("format", FORMAT), ("version", str(VERSION)),
                        ("created_at", datetime.now(timezone.utc).isoformat())])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self._check(conn)  # before WAL mode: a foreign file is left exactly as it was
        _ensure_wal(conn)

    def _check(self, conn: sqlite3.Connection) -> None:
        problem = _schema_problem(conn)
        if problem is not None:
            raise self._error(problem.problem, *([problem.advice] if problem.advice else []))


class _SchemaProblem(NamedTuple):
    problem: str
    """Why the file is not a cache this version reads."""
    advice: str | None = None
    """What to do, where the usual advice (another cache path) does not fit."""


def _schema_problem(conn: sqlite3.Connection) -> _SchemaProblem | None:
    """Why the database behind ``conn`` is not an n2n evaluation cache this version reads,
    or None."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    if "meta" not in tables:
        return _SchemaProblem(f"a SQLite database without an n2n 'meta' table (tables: "
                              f"{', '.join(sorted(tables)) or 'none'})")
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("format") != FORMAT:
        return _SchemaProblem(f"a SQLite database of another format ({meta.get('format')!r})")
    version = str(meta.get("version", ""))
    if not version.isdigit():
        return _SchemaProblem(f"an invalid format version {version!r}")
    if int(version) > VERSION:
        return _SchemaProblem(f"written by a newer n2n (format version {version})",
                              f"upgrade n2n, or {_ELSEWHERE}")
    if "evaluations" not in tables:
        return _SchemaProblem("an n2n cache without its 'evaluations' table")
    return None


@dataclasses.dataclass(frozen=True)
class StoredEvaluation:
    """One entry of a cache file: a student and what its evaluation found."""

    identity: Mapping[str, str]
    """The evaluator identity it was made under (teacher, dataset, recipe, seed, device)."""
    architecture: Architecture
    """The student."""
    evaluation: Evaluation
    """Its evaluation, as the evaluator returned it (degenerate ones included)."""
    created_at: str
    """When it was stored (ISO 8601, UTC)."""


def stored_evaluations(path: str | os.PathLike[str]) -> list[StoredEvaluation]:
    """Every entry of the cache file at ``path``: each student a run trained, or found
    degenerate, with its evaluation, to study a search after (or during) it; ``n2n
    compress`` keeps its cache in ``RUN/rewards.sqlite``. Oldest first; entries stored at
    the same moment (one batch) by signature, then identity.

    The file itself is never changed, but SQLite may leave its side files (``-wal``,
    ``-shm``) beside it, as any reader of a write-ahead-logged database does. A file that
    is missing, unreadable or not an n2n evaluation cache this version reads raises
    :class:`CacheFileError`, naming the path."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise CacheFileError(f"{path}: " + ("is not a file" if os.path.exists(path)
                                            else "no such cache file"))
    try:
        rows, problem = _read_entries(path)
    except sqlite3.DatabaseError as error:
        if "not a database" not in str(error):  # permissions, a lock: the file may be fine
            raise CacheFileError(f"{path}: SQLite cannot open it ({error})") from error
        rows, problem = [], _SchemaProblem(f"SQLite cannot read it ({error})")
    if problem is not None:
        raise CacheFileError(
            f"{path}: {problem.problem}. It is not an n2n evaluation cache this version reads "
            f"({FORMAT} version {VERSION}); "
            + ("upgrade n2n to read it." if problem.advice else
               "give the rewards.sqlite of a run, or a cache= file of gym.make."))
    entries = []
    for signature, identity, architecture, evaluation, created_at in rows:
        try:
            identity = json.loads(identity)
            if not isinstance(identity, dict):
                raise TypeError(f"identity {identity!r} is not an object")
            entries.append(StoredEvaluation(
                identity, Architecture.from_json(architecture),
                Evaluation.from_dict(json.loads(evaluation)), created_at))
        except (ValueError, TypeError) as error:
            raise CacheFileError(f"{path}: the entry of {signature} stored {created_at} does "
                                 f"not decode ({error})") from error
    return entries


def _read_entries(path: str) -> tuple[list[tuple[str, ...]], _SchemaProblem | None]:
    """The rows of the cache at ``path``, oldest first, or the problem with its schema. Read
    only; in a folder that cannot be written (where a reader cannot make the side files a
    write-ahead log needs, and no writer can be adding to it) the file is read as it is."""
    uri = f"{Path(path).as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")  # opens the file now
    except sqlite3.DatabaseError as error:
        conn.close()
        if (not isinstance(error, sqlite3.OperationalError) or os.path.exists(f"{path}-wal")
                or os.access(os.path.dirname(path), os.W_OK)):
            raise
        conn = sqlite3.connect(f"{uri}&immutable=1", uri=True)
    try:
        problem = _schema_problem(conn)
        rows = [] if problem is not None else conn.execute(
            "SELECT signature, identity_json, architecture_json, evaluation_json, created_at "
            "FROM evaluations ORDER BY created_at, signature, identity_hash").fetchall()
    finally:
        conn.close()
    return rows, problem


def _ensure_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL mode (persistent in the file), retrying while another process holds a
    lock: SQLite answers a journal-mode change with "locked" without calling the busy
    handler."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if not _contention(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
