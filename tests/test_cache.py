"""CachedEvaluator: hits and misses, keys, persistence, processes, crashes, bad files."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import pytest

from n2n_env import zoo
from n2n_env.arch import Architecture
from n2n_env.cache import FORMAT, CachedEvaluator, CacheFileError, stored_evaluations
from n2n_env.evaluators import Evaluation, Evaluator, MockEvaluator, evaluate_each

REPO = Path(__file__).resolve().parents[1]

# Run in a child process: evaluate distinct students of the conv4 teacher through a cache at
# argv[1] and print each one's JSON once evaluate() has returned (i.e. it is committed).
CHILD = """
import random, sys
from n2n_env import zoo
from n2n_env.cache import CachedEvaluator
from n2n_env.evaluators import MockEvaluator
teacher = zoo.get("conv4", (1, 16, 16), 10, width=0.25)
cache = CachedEvaluator(MockEvaluator(teacher), sys.argv[1])
rng, seen, limit = random.Random(int(sys.argv[2])), set(), int(sys.argv[3])
while len(seen) < limit:
    student = teacher.remove([not r or rng.random() < 0.6 for r in teacher.removable()])
    if student.signature() not in seen:
        seen.add(student.signature())
        assert not cache.evaluate(student).cache_hit or sys.argv[4] == "shared"
        print(student.to_json(), flush=True)
"""


def spawn_writer(path: Path, seed: int, limit: int, shared: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(seed), str(limit),
         "shared" if shared else "alone"],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})


class Counting:
    """Wraps an evaluator, counting calls (``calls``: students, ``batches``: the lists given to
    evaluate_many); ``strict`` makes any call an error."""

    def __init__(self, inner: Evaluator, strict: bool = False) -> None:
        self.inner, self.strict, self.calls = inner, strict, 0
        self.batches: list[list[Architecture]] = []
        self.teacher_architecture = inner.teacher_architecture
        self.teacher_accuracy = inner.teacher_accuracy

    def identity(self) -> Mapping[str, str]:
        return self.inner.identity()

    def evaluate(self, arch: Architecture) -> Evaluation:
        assert not self.strict, "inner evaluator called although the result was cached"
        self.calls += 1
        return self.inner.evaluate(arch)

    def evaluate_many(self, archs: Sequence[Architecture]) -> list[Evaluation]:
        self.batches.append(list(archs))
        return evaluate_each(self, archs)


class Failing(Counting):
    def evaluate(self, arch: Architecture) -> Evaluation:
        self.calls += 1
        return dataclasses.replace(self.inner.evaluate(arch), failure="CUDA out of memory")


@pytest.fixture(scope="module")
def teacher() -> Architecture:
    return zoo.get("conv4", (1, 16, 16), 10, width=0.25)


def students(teacher: Architecture, n: int, seed: int = 0) -> list[Architecture]:
    rng, found = random.Random(seed), {}
    while len(found) < n:
        s = teacher.remove([not r or rng.random() < 0.6 for r in teacher.removable()])
        found.setdefault(s.signature(), s)
    return list(found.values())


def test_hit_after_miss_without_calling_inner(teacher: Architecture, tmp_path: Path) -> None:
    inner = Counting(MockEvaluator(teacher))
    cache = CachedEvaluator(inner, tmp_path / "c.sqlite")
    assert isinstance(cache, Evaluator) and cache.teacher_architecture is teacher
    assert cache.identity() == inner.identity() and cache.teacher_accuracy == 0.99
    a, b = students(teacher, 2)
    first, again, other = cache.evaluate(a), cache.evaluate(a), cache.evaluate(b)
    assert (first.cache_hit, again.cache_hit, other.cache_hit) == (False, True, False)
    assert dataclasses.replace(again, cache_hit=False) == first == MockEvaluator(
        teacher).evaluate(a)
    assert other != first
    assert inner.calls == 2 and len(cache) == 2
    assert cache.stats == {"hits": 1, "misses": 2, "uncached": 0}


def test_other_identity_misses(teacher: Architecture, tmp_path: Path) -> None:
    path, a = tmp_path / "c.sqlite", students(teacher, 1)[0]
    strong = CachedEvaluator(MockEvaluator(teacher, 0.99), path)
    weak_inner = Counting(MockEvaluator(teacher, 0.5))
    weak = CachedEvaluator(weak_inner, path)
    high, low = strong.evaluate(a), weak.evaluate(a)
    assert not low.cache_hit and weak_inner.calls == 1 and low.accuracy < high.accuracy
    assert weak.evaluate(a).accuracy == low.accuracy and strong.evaluate(a).accuracy == (
        high.accuracy)
    assert len(strong) == len(weak) == 1


def test_persists_and_is_inspectable(teacher: Architecture, tmp_path: Path) -> None:
    path = tmp_path / "new" / "dirs" / "c.sqlite"  # missing folders are created
    some = students(teacher, 5)
    with CachedEvaluator(MockEvaluator(teacher), path) as cache:
        written = [cache.evaluate(s) for s in some]
    strict = CachedEvaluator(Counting(MockEvaluator(teacher), strict=True), path)
    again = [strict.evaluate(s) for s in some]
    assert all(e.cache_hit for e in again) and len(strict) == 5
    assert [dataclasses.replace(e, cache_hit=False) for e in again] == written
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert dict(db.execute("SELECT key, value FROM meta"))["format"] == FORMAT
    arch_json, created = db.execute(
        "SELECT architecture_json, created_at FROM evaluations WHERE signature=?",
        (some[0].signature(),)).fetchone()
    assert Architecture.from_json(arch_json).signature() == some[0].signature()
    assert abs(datetime.fromisoformat(created).timestamp() - time.time()) < 60


def test_child_process_writes_parent_reads_concurrently(
        teacher: Architecture, tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    reader = CachedEvaluator(Counting(MockEvaluator(teacher), strict=True), path)
    child = spawn_writer(path, seed=1, limit=150)
    reported, while_running = [], 0
    for line in child.stdout:  # type: ignore[union-attr]
        # each line is printed after its commit, so it must already be a hit here
        reported.append(Architecture.from_json(line))
        assert reader.evaluate(reported[-1]).cache_hit
        while_running += child.poll() is None
    assert child.wait(timeout=20) == 0 and len(reported) == 150 == len(reader)
    assert reader.stats == {"hits": 150, "misses": 0, "uncached": 0}
    print(f"{while_running} of 150 reads happened while the child was still writing")


def test_two_processes_racing_on_the_same_candidates(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    children = [spawn_writer(path, seed=2, limit=100, shared=True) for _ in range(2)]
    outputs = [child.communicate(timeout=20)[0].splitlines() for child in children]
    assert [child.returncode for child in children] == [0, 0]
    assert outputs[0] == outputs[1] and len(outputs[0]) == 100
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 100


def test_result_stored_by_another_writer_meanwhile_wins(
        teacher: Architecture, tmp_path: Path) -> None:
    """The race two processes run into, made deterministic: while this cache's inner
    evaluator trains, another connection stores a (different) result for the same key."""
    path, a = tmp_path / "c.sqlite", students(teacher, 1)[0]
    other = CachedEvaluator(MockEvaluator(teacher), path)

    class Slow(Counting):
        def evaluate(self, arch: Architecture) -> Evaluation:
            stored = other.evaluate(arch)  # the other process finishes first
            return dataclasses.replace(stored, accuracy=stored.accuracy / 2)

    cache = CachedEvaluator(Slow(MockEvaluator(teacher)), path)
    mine = cache.evaluate(a)  # must not raise on the conflicting insert
    assert not mine.cache_hit and len(cache) == 1
    assert cache.evaluate(a).accuracy == other.evaluate(a).accuracy == 2 * mine.accuracy


def test_entries_survive_sigkill_of_writer(teacher: Architecture, tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    child = spawn_writer(path, seed=3, limit=5000)
    committed = [Architecture.from_json(child.stdout.readline()) for _ in range(30)]  # type: ignore[union-attr]
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL
    cache = CachedEvaluator(Counting(MockEvaluator(teacher), strict=True), path)
    assert len(cache) >= 30
    hits = [cache.evaluate(arch) for arch in committed]
    assert all(h.cache_hit for h in hits)
    assert [dataclasses.replace(h, cache_hit=False) for h in hits] == [
        MockEvaluator(teacher).evaluate(arch) for arch in committed]
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_random_bytes_file_is_refused_untouched(teacher: Architecture, tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    junk = random.Random(0).randbytes(4096)
    path.write_bytes(junk)
    with pytest.raises(CacheFileError, match="file is not a database") as error:
        CachedEvaluator(MockEvaluator(teacher), path)
    assert str(path) in str(error.value) and "another cache path" in str(error.value)
    assert path.read_bytes() == junk and issubclass(CacheFileError, ValueError)
    with pytest.raises(CacheFileError, match="SQLite cannot use it"):
        CachedEvaluator(MockEvaluator(teacher), tmp_path)  # a directory


def test_foreign_sqlite_database_is_refused_untouched(
        teacher: Architecture, tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE foo (x INTEGER)")
        db.execute("INSERT INTO foo VALUES (7)")
    with pytest.raises(CacheFileError, match="without an n2n 'meta' table") as error:
        CachedEvaluator(MockEvaluator(teacher), path)
    assert str(path) in str(error.value)
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master")]
        assert tables == ["foo"] and db.execute("PRAGMA journal_mode").fetchone()[0] != "wal"


@pytest.mark.parametrize(("rows", "message"), [
    ([("format", "someone-else"), ("version", "1")], "another format"),
    ([("format", FORMAT), ("version", "2")], r"newer n2n \(format version 2\)"),
    ([("format", FORMAT)], "invalid format version"),
])
def test_bad_meta_is_refused(teacher: Architecture, tmp_path: Path, rows: list[tuple[str, str]],
                             message: str) -> None:
    path = tmp_path / "c.sqlite"
    CachedEvaluator(MockEvaluator(teacher), path).close()
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM meta")
        db.executemany("INSERT INTO meta VALUES (?, ?)", rows)
    with pytest.raises(CacheFileError, match=message) as error:
        CachedEvaluator(MockEvaluator(teacher), path)
    assert str(path) in str(error.value)


def test_failures_are_not_cached_degenerate_ones_are(
        teacher: Architecture, tmp_path: Path) -> None:
    path, a = tmp_path / "c.sqlite", students(teacher, 1)[0]
    failing = Failing(MockEvaluator(teacher))
    cache = CachedEvaluator(failing, path)
    assert cache.evaluate(a).failure and cache.evaluate(a).failure and failing.calls == 2
    assert len(cache) == 0 and cache.stats == {"hits": 0, "misses": 2, "uncached": 2}
    inner = Counting(MockEvaluator(teacher))
    cache = CachedEvaluator(inner, path)
    empty = teacher.remove([not r for r in teacher.removable()])
    first, second = cache.evaluate(empty), cache.evaluate(empty)
    assert first.degenerate_reason and not first.cache_hit and second.cache_hit
    assert second.degenerate_reason == first.degenerate_reason and inner.calls == 1
    assert not cache.evaluate(a).cache_hit  # the earlier failure left nothing behind


def test_stored_evaluations_reads_every_entry_without_changing_the_file(
        teacher: Architecture, tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    some = students(teacher, 4)
    empty = teacher.remove([not r for r in teacher.removable()])
    with CachedEvaluator(MockEvaluator(teacher), path) as cache:
        written = [cache.evaluate(s) for s in [*some, empty]]
        cache.evaluate(some[0])  # a hit stores nothing more
    before = path.read_bytes()
    entries = stored_evaluations(path)
    assert path.read_bytes() == before
    stored = {e.architecture.signature(): e.evaluation for e in entries}
    assert len(entries) == 5
    assert stored == {s.signature(): e for s, e in zip([*some, empty], written)}
    assert stored[empty.signature()].degenerate_reason
    assert all(e.identity == dict(MockEvaluator(teacher).identity()) for e in entries)
    with sqlite3.connect(path) as db:  # stored in the reverse order of their signatures
        signatures = sorted(stored, reverse=True)
        db.executemany("UPDATE evaluations SET created_at = ? WHERE signature = ?",
                       [(f"2026-01-0{day + 1}T00:00:00+00:00", signature)
                        for day, signature in enumerate(signatures)])
    assert [e.architecture.signature() for e in stored_evaluations(path)] == signatures


def test_stored_evaluations_refuses_what_is_not_a_cache(
        teacher: Architecture, tmp_path: Path) -> None:
    with pytest.raises(CacheFileError, match="no such cache file") as error:
        stored_evaluations(tmp_path / "missing.sqlite")
    assert str(tmp_path / "missing.sqlite") in str(error.value)
    assert not (tmp_path / "missing.sqlite").exists()
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"x" * 4096)
    with pytest.raises(CacheFileError, match="SQLite cannot read it"):
        stored_evaluations(junk)
    with pytest.raises(CacheFileError, match="is not a file"):
        stored_evaluations(tmp_path)
    (tmp_path / "empty.sqlite").touch()
    with pytest.raises(CacheFileError, match=r"'meta' table \(tables: none\)"):
        stored_evaluations(tmp_path / "empty.sqlite")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE foo (x INTEGER)")
    with pytest.raises(CacheFileError, match=r"without an n2n 'meta' table.*rewards\.sqlite"):
        stored_evaluations(other)
    path = tmp_path / "c.sqlite"
    with CachedEvaluator(MockEvaluator(teacher), path) as cache:
        cache.evaluate(students(teacher, 1)[0])
    signature = students(teacher, 1)[0].signature()
    for column, value in (("evaluation_json", '{"accuracy": "high"}'),
                          ("identity_json", '["not", "an", "object"]')):
        copy = tmp_path / f"{column}.sqlite"
        copy.write_bytes(path.read_bytes())
        with sqlite3.connect(copy) as db:
            db.execute(f"UPDATE evaluations SET {column} = ?", (value,))
        with pytest.raises(CacheFileError, match=f"entry of {signature} stored .* does not "
                           "decode") as error:
            stored_evaluations(copy)
        assert str(copy) in str(error.value)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '2' WHERE key = 'version'")
    with pytest.raises(CacheFileError, match=r"newer n2n \(format version 2\).*upgrade n2n"):
        stored_evaluations(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_stored_evaluations_reads_a_cache_in_a_read_only_folder(
        teacher: Architecture, tmp_path: Path) -> None:
    folder = tmp_path / "published"
    with CachedEvaluator(MockEvaluator(teacher), folder / "c.sqlite") as cache:
        cache.evaluate_many(students(teacher, 3))
    for side in folder.glob("c.sqlite-*"):  # as a copied or downloaded cache comes
        side.unlink()
    folder.chmod(0o555)
    try:
        assert len(stored_evaluations(folder / "c.sqlite")) == 3
    finally:
        folder.chmod(0o755)


def _evaluate_in_child(cache: CachedEvaluator, archs: list[Architecture], queue: object) -> None:
    flags = [cache.evaluate(a).cache_hit for a in archs]
    # a forked copy must have opened its own connection, not used the parent's
    queue.put((flags, cache._pid == os.getpid()))  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pickled_or_forked_copy_works(teacher: Architecture, tmp_path: Path, method: str) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    cache = CachedEvaluator(MockEvaluator(teacher), tmp_path / "c.sqlite")
    old, new = students(teacher, 6)[:3], students(teacher, 6)[3:]
    for arch in old:
        cache.evaluate(arch)
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.path == cache.path and copy.evaluate(old[0]).cache_hit
    assert copy.stats == {"hits": 1, "misses": 0, "uncached": 0}  # counters are per object
    context = multiprocessing.get_context(method)
    queue = context.Queue()
    child = context.Process(target=_evaluate_in_child, args=(cache, old + new, queue))
    child.start()
    flags, own_connection = queue.get(timeout=30)
    child.join(timeout=30)
    assert child.exitcode == 0 and own_connection and flags == [True] * 3 + [False] * 3
    assert all(cache.evaluate(arch).cache_hit for arch in new) and len(cache) == 6


def test_empty_file_is_initialised(teacher: Architecture, tmp_path: Path) -> None:
    path = tmp_path / "touched.sqlite"
    path.touch()
    cache = CachedEvaluator(MockEvaluator(teacher), path)
    assert not cache.evaluate(teacher).cache_hit and cache.evaluate(teacher).cache_hit
    cache.close()
    assert len(CachedEvaluator(MockEvaluator(teacher), path)) == 1


def test_batch_hits_from_the_file_misses_in_one_inner_batch(
        teacher: Architecture, tmp_path: Path) -> None:
    path, some = tmp_path / "c.sqlite", students(teacher, 6)
    CachedEvaluator(MockEvaluator(teacher), path).evaluate_many(some[:3])
    inner = Counting(MockEvaluator(teacher))
    cache = CachedEvaluator(inner, path)
    batch = [some[0], some[3], some[4], some[0], some[3], some[5], some[1]]
    results = cache.evaluate_many(batch)
    # the misses went to the inner evaluator once, deduplicated, in order of first appearance
    assert inner.batches == [[some[3], some[4], some[5]]] and inner.calls == 3
    assert [r.cache_hit for r in results] == [True, False, False, True, True, False, True]
    assert [dataclasses.replace(r, cache_hit=False) for r in results] == [
        MockEvaluator(teacher).evaluate(arch) for arch in batch]  # input order kept
    assert cache.stats == {"hits": 4, "misses": 3, "uncached": 0} and len(cache) == 6
    # committed by the time evaluate_many returned: another connection answers all six
    strict = CachedEvaluator(Counting(MockEvaluator(teacher), strict=True), path)
    assert all(r.cache_hit for r in strict.evaluate_many(some))
    assert cache.evaluate_many([]) == [] and inner.batches == [[some[3], some[4], some[5]]]


def test_batch_of_one_student_repeated_trains_it_once(
        teacher: Architecture, tmp_path: Path) -> None:
    inner = Counting(MockEvaluator(teacher))
    cache = CachedEvaluator(inner, tmp_path / "c.sqlite")
    a = students(teacher, 1)[0]
    renamed = dataclasses.replace(a, name="same student, other name")  # same signature
    results = cache.evaluate_many([a, a, renamed])
    assert inner.calls == 1 and inner.batches == []  # a single miss goes to evaluate()
    assert [r.cache_hit for r in results] == [False, True, True]
    assert cache.stats == {"hits": 2, "misses": 1, "uncached": 0} and len(cache) == 1


class FailingSome(Counting):
    """Fails the students whose signature is in ``failing``."""

    def __init__(self, inner: Evaluator, failing: set[str]) -> None:
        super().__init__(inner)
        self.failing = failing

    def evaluate(self, arch: Architecture) -> Evaluation:
        result = super().evaluate(arch)
        if arch.signature() in self.failing:
            return dataclasses.replace(result, failure="loss became non-finite by step 50")
        return result


def test_failures_in_a_batch_are_returned_not_cached(
        teacher: Architecture, tmp_path: Path) -> None:
    a, b, c = students(teacher, 3)
    inner = FailingSome(MockEvaluator(teacher), {a.signature()})
    cache = CachedEvaluator(inner, tmp_path / "c.sqlite")
    first = cache.evaluate_many([a, b, a, c])
    assert [r.failure is not None for r in first] == [True, False, True, False]
    assert [r.cache_hit for r in first] == [False, False, True, False]
    assert inner.batches == [[a, b, c]] and len(cache) == 2
    assert cache.stats == {"hits": 1, "misses": 3, "uncached": 1}
    again = cache.evaluate_many([c, a, b])  # only the failed student is trained again
    assert inner.calls == 4 and len(inner.batches) == 1
    assert [r.cache_hit for r in again] == [True, False, True] and again[1].failure


def test_inner_batch_of_the_wrong_length_is_an_error(
        teacher: Architecture, tmp_path: Path) -> None:
    class Short(Counting):
        def evaluate_many(self, archs: Sequence[Architecture]) -> list[Evaluation]:
            return super().evaluate_many(archs)[:-1]

    cache = CachedEvaluator(Short(MockEvaluator(teacher)), tmp_path / "c.sqlite")
    with pytest.raises(RuntimeError, match="returned 1 evaluations for 2 students"):
        cache.evaluate_many(students(teacher, 2))
    assert len(cache) == 0
