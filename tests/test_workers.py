"""ProcessPoolEvaluator: parallel students, same results, deduplication, dead workers.

Most tests share one pool of two workers running :class:`Scripted`, a mock evaluator that
logs every student it starts and finishes to a file and, for the students listed in files of
its folder, sleeps, kills its own process or raises; so the tests can see what trained
where, and a SIGKILL lands mid-student. It imports no torch, so a worker starts in about a
second. One test trains real students by distillation on ``synthetic`` in two workers and
compares them with the same evaluator run here. The Ray tests reuse these helpers.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from n2n_env import zoo
from n2n_env.arch import Architecture
from n2n_env.cache import CachedEvaluator
from n2n_env.evaluators import Evaluation, Evaluator, MockEvaluator, evaluate_each
from n2n_env.workers import ProcessPoolEvaluator

TEACHER = zoo.get("conv4", (1, 16, 16), 10, width=0.25)


def draw_students(n: int, seed: int = 0) -> list[Architecture]:
    """``n`` distinct random removal students of TEACHER."""
    rng, found = random.Random(seed), {}
    while len(found) < n:
        s = TEACHER.remove([not r or rng.random() < 0.6 for r in TEACHER.removable()])
        found.setdefault(s.signature(), s)
    return list(found.values())


STUDENTS = draw_students(64)
"""Each test takes its own slice, so the shared log tells its students apart."""


def log_lines(folder: Path) -> list[list[str]]:
    """The Scripted log: [event, signature, pid] per line."""
    path = folder / "log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def events(folder: Path, event: str, arch: Architecture) -> list[int]:
    """The pids of the processes that logged ``event`` for ``arch``."""
    return [int(pid) for kind, sig, pid in log_lines(folder)
            if kind == event and sig == arch.signature()]


def instruct(folder: Path, behaviour: str, *archs: Architecture) -> None:
    """List ``archs`` for ``behaviour`` (slow, poison, raises); no archs clears the list."""
    (folder / behaviour).write_text("".join(f"{a.signature()}\n" for a in archs))


class Scripted:
    """A MockEvaluator of TEACHER that logs "start SIG PID" and "done SIG PID" lines to
    ``folder/log``; for the students listed in ``folder/slow`` it sleeps two minutes on the
    first attempt (a retry is instant), in ``folder/poison`` it SIGKILLs its own process, in
    ``folder/raises`` it raises."""

    def __init__(self, folder: str | Path, teacher_accuracy: float = 0.99) -> None:
        self.folder = Path(folder)
        self.inner = MockEvaluator(TEACHER, teacher_accuracy)
        self.teacher_architecture = TEACHER
        self.teacher_accuracy = teacher_accuracy

    def identity(self) -> Mapping[str, str]:
        return self.inner.identity()

    def evaluate_many(self, archs: Sequence[Architecture]) -> list[Evaluation]:
        return evaluate_each(self, archs)

    def evaluate(self, arch: Architecture) -> Evaluation:
        first = not events(self.folder, "start", arch)
        self._log("start", arch)
        if self._listed("poison", arch):
            os.kill(os.getpid(), signal.SIGKILL)
        if self._listed("raises", arch):
            raise ValueError(f"scripted failure for {arch.signature()}")
        if self._listed("slow", arch) and first:
            time.sleep(120)
        result = self.inner.evaluate(arch)
        self._log("done", arch)
        return result

    def _listed(self, behaviour: str, arch: Architecture) -> bool:
        path = self.folder / behaviour
        return path.exists() and arch.signature() in path.read_text().split()

    def _log(self, event: str, arch: Architecture) -> None:
        with open(self.folder / "log", "a") as log:
            log.write(f"{event} {arch.signature()} {os.getpid()}\n")


def make_broken() -> Evaluator:
    """A factory that fails the way a wrong path does."""
    raise FileNotFoundError("no teacher checkpoint at /nowhere/teacher.pt")


def kill_when_started(folder: Path, arch: Architecture, kill: object = None,
                      timeout: float = 60.0) -> tuple[threading.Thread, list[int]]:
    """A thread that waits until ``arch`` starts, then SIGKILLs the process that started it
    (or calls ``kill(pid)``); the list receives that pid."""
    killed: list[int] = []

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not killed:
            pids = events(folder, "start", arch)
            if pids:
                time.sleep(0.2)  # well inside its two-minute sleep
                if callable(kill):
                    kill(pids[0])
                else:
                    os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, killed


def expected(archs: Sequence[Architecture]) -> list[Evaluation]:
    """What a sequential MockEvaluator answers (repeats marked cache_hit)."""
    return MockEvaluator(TEACHER).evaluate_many(archs)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scripted")


@pytest.fixture(scope="module")
def pool(folder: Path):
    finished: list[tuple[Architecture, Evaluation]] = []
    with ProcessPoolEvaluator(functools.partial(Scripted, str(folder)), workers=2,
                              threads_per_worker=1,
                              progress=lambda a, e: finished.append((a, e))) as evaluator:
        evaluator.finished = finished  # type: ignore[attr-defined]
        yield evaluator


def test_batch_equals_sequential_each_distinct_student_once(
        pool: ProcessPoolEvaluator, folder: Path) -> None:
    assert isinstance(pool, Evaluator) and pool.teacher_architecture == TEACHER
    assert pool.identity() == MockEvaluator(TEACHER).identity() and pool.teacher_accuracy == 0.99
    some = STUDENTS[:6]
    renamed = dataclasses.replace(some[2], name="renamed")  # same signature: a repeat
    batch = [some[0], some[1], some[2], some[0], some[3], renamed, some[4], some[5], some[1]]
    pool.finished.clear()  # type: ignore[attr-defined]
    results = pool.evaluate_many(batch)
    assert results == expected(batch)  # values, order and cache_hit flags
    assert [r.cache_hit for r in results] == [False] * 3 + [True] + [False, True] + [False] * 2 + [
        True]
    for arch in some:
        assert len(events(folder, "done", arch)) == 1, "trained once"
    assert len({pid for arch in some for pid in events(folder, "done", arch)}) == 2
    assert sorted(a.signature() for a, _ in pool.finished) == sorted(  # type: ignore[attr-defined]
        a.signature() for a in some)
    assert pool.evaluate(STUDENTS[6]) == MockEvaluator(TEACHER).evaluate(STUDENTS[6])
    assert pool.evaluate_many([]) == []


def test_worker_killed_mid_student_is_replaced_and_the_student_retried(
        pool: ProcessPoolEvaluator, folder: Path) -> None:
    batch = STUDENTS[10:16]
    slow = batch[1]
    instruct(folder, "slow", slow)
    before = set(pool.pids)
    thread, killed = kill_when_started(folder, slow)
    started = time.monotonic()
    results = pool.evaluate_many(batch)
    thread.join()
    assert time.monotonic() - started < 60 and killed and killed[0] in before
    assert results == expected(batch)
    assert len(events(folder, "start", slow)) == 2 and len(events(folder, "done", slow)) == 1
    assert all(len(events(folder, "done", arch)) == 1 for arch in batch), "none trained twice"
    assert killed[0] not in pool.pids and len(set(pool.pids) - before) == 1
    assert pool.evaluate_many(STUDENTS[16:18]) == expected(STUDENTS[16:18])


def test_student_that_keeps_killing_workers_is_named(
        pool: ProcessPoolEvaluator, folder: Path) -> None:
    fine, poison = STUDENTS[20:22]
    instruct(folder, "poison", poison)
    try:
        with pytest.raises(RuntimeError, match=rf"{poison.signature()}.*took down 3 worker "
                                               r"processes \(the last: killed by SIGKILL\)"):
            pool.evaluate_many([fine, poison])
    finally:
        instruct(folder, "poison")
    assert len(events(folder, "start", poison)) == 3
    assert pool.evaluate_many(STUDENTS[22:24]) == expected(STUDENTS[22:24])  # still usable
    assert len(pool.pids) == 2


def test_an_evaluator_that_raises_is_reported_with_its_traceback(
        pool: ProcessPoolEvaluator, folder: Path) -> None:
    bad = STUDENTS[25]
    instruct(folder, "raises", bad)
    try:
        with pytest.raises(RuntimeError, match=r"raised in worker process") as error:
            pool.evaluate_many([STUDENTS[26], bad])
    finally:
        instruct(folder, "raises")
    assert "ValueError: scripted failure for" in str(error.value)
    assert "in evaluate" in str(error.value)  # the worker's traceback
    assert pool.evaluate_many(STUDENTS[27:29]) == expected(STUDENTS[27:29])


def test_a_factory_that_raises_fails_the_constructor_with_its_traceback() -> None:
    before = set(multiprocessing.active_children())
    with pytest.raises(RuntimeError, match="make_evaluator failed in worker process") as error:
        ProcessPoolEvaluator(make_broken, workers=2, threads_per_worker=1)
    assert "FileNotFoundError: no teacher checkpoint at /nowhere/teacher.pt" in str(error.value)
    assert "in make_broken" in str(error.value)
    assert set(multiprocessing.active_children()) <= before  # nothing left behind


def test_close_stops_the_workers_and_the_cache_stays_with_the_driver(tmp_path: Path) -> None:
    (tmp_path / "scripted").mkdir()
    pool = ProcessPoolEvaluator(functools.partial(Scripted, str(tmp_path / "scripted")),
                                workers=1, threads_per_worker=1)
    (pid,) = pool.pids
    with CachedEvaluator(pool, tmp_path / "c.sqlite") as cache:
        assert cache.identity() == MockEvaluator(TEACHER).identity()
        first = cache.evaluate_many(STUDENTS[30:33])
        again = cache.evaluate_many(STUDENTS[30:34])
    assert [r.cache_hit for r in first + again] == [False] * 3 + [True] * 3 + [False]
    assert len(log_lines(tmp_path / "scripted")) == 8  # four students, each started once
    pool.close()
    pool.close()  # idempotent
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(RuntimeError, match="closed"):
        pool.evaluate(STUDENTS[30])
    with pytest.raises(TypeError, match="cannot be pickled"):
        import pickle

        pickle.dumps(pool)


# A driver that starts a pool, prints its workers' pids, and then exits without close()
# (argv[2] == "exit") or is SIGKILLed (argv[2] == "kill").
DRIVER = """
import functools, os, signal, sys
from test_workers import STUDENTS, Scripted
from n2n_env.workers import ProcessPoolEvaluator
if __name__ == "__main__":
    pool = ProcessPoolEvaluator(functools.partial(Scripted, sys.argv[1]), workers=2,
                                threads_per_worker=1)
    pool.evaluate_many(STUDENTS[:3])
    print(*pool.pids, flush=True)
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text(
        ).split()[2] != "Z"


@pytest.mark.parametrize("end", ["exit", "kill"])
def test_no_worker_outlives_its_driver(tmp_path: Path, end: str) -> None:
    """At interpreter exit the workers are stopped; a SIGKILLed driver's workers notice
    within about a second and exit."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    tests = str(Path(__file__).parent)
    done = subprocess.run([sys.executable, str(script), str(tmp_path), end],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": tests})
    pids = [int(pid) for pid in done.stdout.split()]
    assert len(pids) == 2, done.stderr
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in pids)


# ---------------------------------------------------------------------- real distillation
def make_distill(folder: str, threads: int | None = None) -> Evaluator:
    """A DistillationEvaluator of the teacher saved in ``folder`` on ``synthetic`` with a tiny
    recipe; checks torch's thread count when ``threads`` is given."""
    import torch

    from n2n_env import data
    from n2n_env.build import build_model
    from n2n_env.distill import DistillationEvaluator, DistillRecipe

    arch = Architecture.from_json((Path(folder) / "teacher.json").read_text())
    teacher = build_model(arch)
    teacher.load_state_dict(torch.load(Path(folder) / "teacher.pt", weights_only=True))
    evaluator = DistillationEvaluator(
        teacher, data.load("synthetic"), DistillRecipe(steps=12, batch_norm_samples=64),
        seed=3, device="cpu")
    if threads is not None:
        assert torch.get_num_threads() == threads, torch.get_num_threads()
    return evaluator


def save_distill_teacher(folder: Path) -> Architecture:
    """A randomly initialised conv4 (width 0.25) for ``synthetic``, saved for make_distill."""
    import torch

    from n2n_env import data
    from n2n_env.build import build_model

    shape, classes = data.info("synthetic")
    arch = zoo.get("conv4", shape, classes, width=0.25)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        teacher = build_model(arch)
    torch.save(teacher.state_dict(), folder / "teacher.pt")
    (folder / "teacher.json").write_text(arch.to_json())
    return arch


def distill_students(teacher: Architecture) -> list[Architecture]:
    rng, found = random.Random(5), {}
    while len(found) < 3:
        s = teacher.remove([not r or rng.random() < 0.7 for r in teacher.removable()])
        found.setdefault(s.signature(), s)
    return list(found.values())


def sequential(folder: Path, archs: Sequence[Architecture],
               monkeypatch: pytest.MonkeyPatch) -> list[Evaluation]:
    """The students evaluated one by one here, with one torch thread as in the workers."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # DistillationEvaluator keeps it
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return evaluate_each(make_distill(str(folder), threads=1), archs)
    finally:
        torch.set_num_threads(threads)


def without_time(results: Sequence[Evaluation]) -> list[Evaluation]:
    return [dataclasses.replace(r, wall_seconds=0.0) for r in results]


@pytest.mark.slow
def test_distillation_in_workers_equals_sequential_distillation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same seed, same recipe, same single torch thread: the same floats, bit for bit."""
    teacher = save_distill_teacher(tmp_path)
    archs = distill_students(teacher)
    batch = [archs[0], archs[1], archs[0], archs[2]]
    with ProcessPoolEvaluator(functools.partial(make_distill, str(tmp_path), threads=1),
                              workers=2, threads_per_worker=1) as pool:
        assert pool.teacher_architecture == teacher
        results = pool.evaluate_many(batch)
        identity = pool.identity()
    local = sequential(tmp_path, batch, monkeypatch)
    assert identity == make_distill(str(tmp_path)).identity()
    assert all(r.ok and r.optimizer_steps == 12 for r in results)
    assert [r.cache_hit for r in results] == [False, False, True, False]
    assert without_time(results) == without_time(local)
