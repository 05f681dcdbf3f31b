"""RayEvaluator on a local two-CPU Ray: same results, deduplication, dead actors.

The scripted mock evaluator and the distillation helpers come from test_workers (the
ProcessPoolEvaluator tests); their module is shipped to the actors by value, since Ray's
workers cannot import a test module. Actors ask for half a CPU each, so the shared
two-actor evaluator and a one-actor one fit next to each other on the two-CPU Ray.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import signal
import sys
from pathlib import Path

import pytest
import test_workers
from test_workers import (
    STUDENTS,
    TEACHER,
    Scripted,
    distill_students,
    events,
    expected,
    instruct,
    kill_when_started,
    make_broken,
    make_distill,
    save_distill_teacher,
    sequential,
    without_time,
)

from n2n_env.evaluators import Evaluator, MockEvaluator

HALF = {"cpus_per_worker": 0.5, "threads_per_worker": 1}


def test_missing_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "n2n_env.ray_backend", raising=False)
    with pytest.raises(ImportError, match=r'pip install "n2n\[ray\]"'):
        importlib.import_module("n2n_env.ray_backend")


class Bar:
    """The part of tqdm a backend uses."""

    def __init__(self) -> None:
        self.n = 0

    def update(self, n: float | None = 1) -> None:
        self.n += int(n or 0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scripted-ray")


@pytest.fixture(scope="module")
def ray_here(ray_session):
    """The session's Ray, shipping the test helpers' module to the actors by value."""
    ray_session.cloudpickle.register_pickle_by_value(test_workers)
    yield ray_session
    ray_session.cloudpickle.unregister_pickle_by_value(test_workers)


@pytest.fixture(scope="module")
def remote(ray_here, folder: Path):
    from n2n_env.ray_backend import RayEvaluator

    with RayEvaluator(functools.partial(Scripted, str(folder)), workers=2, progress=Bar(),
                      **HALF) as evaluator:
        assert not evaluator.started_ray
        yield evaluator


def test_batch_equals_sequential_each_distinct_student_once(remote, folder: Path) -> None:
    assert isinstance(remote, Evaluator) and remote.teacher_architecture == TEACHER
    assert remote.identity() == MockEvaluator(TEACHER).identity()
    some = STUDENTS[40:45]
    renamed = dataclasses.replace(some[1], name="renamed")
    batch = [some[0], some[1], some[0], some[2], renamed, some[3], some[4]]
    remote.progress.n = 0
    results = remote.evaluate_many(batch)
    assert results == expected(batch)
    assert [r.cache_hit for r in results] == [False, False, True, False, True, False, False]
    assert all(len(events(folder, "done", arch)) == 1 for arch in some), "trained once"
    assert len({pid for arch in some for pid in events(folder, "done", arch)}) == 2
    assert remote.progress.n == 5
    assert remote.evaluate(STUDENTS[45]) == MockEvaluator(TEACHER).evaluate(STUDENTS[45])


@pytest.mark.parametrize(("how", "first"), [("SIGKILL", 46), ("restartable ray.kill", 50),
                                            ("ray.kill for good", 60)])
def test_actor_killed_mid_student_is_survived_and_the_student_retried(
        ray_here, remote, folder: Path, how: str, first: int) -> None:
    """SIGKILL and ``ray.kill(no_restart=False)``: Ray restarts the actor; ``ray.kill``
    (no restart): the evaluator starts a fresh actor in its place."""
    batch = STUDENTS[first : first + 4]
    slow = batch[1]
    instruct(folder, "slow", slow)
    actors: dict[int | None, object] = {}

    def kill(pid: int) -> None:  # the slot got its student after its hand-shake: pid known
        actors.update(zip(remote.pids, remote.actors))
        if how == "SIGKILL":
            os.kill(pid, signal.SIGKILL)
        else:
            ray_here.kill(actors[pid], no_restart=how == "ray.kill for good")

    thread, killed = kill_when_started(folder, slow, kill=kill)
    results = remote.evaluate_many(batch)
    thread.join()
    assert killed and killed[0] in actors
    assert results == expected(batch)
    assert len(events(folder, "start", slow)) == 2 and len(events(folder, "done", slow)) == 1
    assert all(len(events(folder, "done", arch)) == 1 for arch in batch), "none trained twice"
    assert killed[0] not in remote.pids  # restarting (None) or restarted (a new pid)
    replaced = actors[killed[0]] not in remote.actors
    assert replaced == (how == "ray.kill for good")


def test_student_that_keeps_killing_actors_is_named(remote, folder: Path) -> None:
    fine, poison = STUDENTS[55:57]
    instruct(folder, "poison", poison)
    try:
        with pytest.raises(RuntimeError, match=rf"{poison.signature()}.*took down 3 Ray "
                                               r"actors"):
            remote.evaluate_many([fine, poison])
    finally:
        instruct(folder, "poison")
    assert len(events(folder, "start", poison)) == 3
    assert remote.evaluate_many(STUDENTS[57:59]) == expected(STUDENTS[57:59])


def test_an_evaluator_that_raises_is_reported_with_its_traceback(remote, folder: Path) -> None:
    bad = STUDENTS[59]
    instruct(folder, "raises", bad)
    try:
        with pytest.raises(RuntimeError, match="raised in a Ray actor") as error:
            remote.evaluate(bad)
    finally:
        instruct(folder, "raises")
    assert "scripted failure for" in str(error.value) and "in evaluate" in str(error.value)
    assert remote.evaluate_many(STUDENTS[40:42]) == expected(STUDENTS[40:42])


def test_a_factory_that_raises_fails_the_constructor_and_ray_stays_up(ray_here) -> None:
    from n2n_env.ray_backend import RayEvaluator

    with pytest.raises(RuntimeError, match="make_evaluator failed in a Ray actor") as error:
        RayEvaluator(make_broken, workers=1, **HALF)
    assert "no teacher checkpoint at /nowhere/teacher.pt" in str(error.value)
    assert ray_here.is_initialized()  # not ours to shut down


@pytest.mark.slow
def test_distillation_on_ray_equals_sequential_distillation(
        ray_here, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One torch thread in the actor and here: the same floats, bit for bit."""
    from n2n_env.ray_backend import RayEvaluator

    teacher = save_distill_teacher(tmp_path)
    archs = distill_students(teacher)
    batch = [archs[2], archs[0], archs[2], archs[1]]
    factory = functools.partial(make_distill, str(tmp_path), threads=1)
    with RayEvaluator(factory, workers=1, **HALF) as evaluator:
        results = evaluator.evaluate_many(batch)
        identity = evaluator.identity()
    assert ray_here.is_initialized()
    local = sequential(tmp_path, batch, monkeypatch)
    assert identity == make_distill(str(tmp_path)).identity()
    assert [r.cache_hit for r in results] == [False, False, True, False]
    assert all(r.ok for r in results) and without_time(results) == without_time(local)


def test_actors_that_a_local_ray_cannot_place_are_refused_at_once() -> None:
    pytest.importorskip("ray")
    from n2n_env.ray_backend import RayEvaluator

    evaluator = RayEvaluator.__new__(RayEvaluator)  # the check alone, on given resources
    evaluator.gpus_per_student, evaluator.cpus_per_worker = 0.25, 1.0
    evaluator._started_ray = False
    with pytest.raises(RuntimeError, match=r"asks for 0\.25 GPUs but this machine's Ray has 0"):
        evaluator._check_fits({"CPU": 2.0})
    evaluator._check_fits({"CPU": 2.0, "GPU": 1.0})
    evaluator.gpus_per_student, evaluator.cpus_per_worker = 0.0, 4.0
    with pytest.raises(RuntimeError, match="lower cpus_per_worker"):
        evaluator._check_fits({"CPU": 2.0})
