"""What every backend that trains students away from the driver shares.

:class:`~n2n_env.workers.ProcessPoolEvaluator` (local worker processes) and
:class:`~n2n_env.ray_backend.RayEvaluator` (Ray actors) do the same things around the
transport: a worker builds its evaluator once and answers a hand-shake
(:func:`build_evaluator`, :func:`describe`); the driver refuses workers whose evaluators
differ (:func:`same_evaluator`); a batch is checked, trained once per distinct student and
answered in order, repeats marked as cache hits (:func:`checked_students`,
:func:`distinct`, :func:`in_order`); and a progress bar or callback hears of each student
(:func:`report`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from n2n_env.arch import Architecture
from n2n_env.evaluators import Evaluation, Evaluator

MAX_CRASHES = 3
"""How many workers one student may take down with it before a batch gives up on it."""



@runtime_checkable
class ProgressBar(Protocol):
    """What a progress bar must offer to be advanced once per finished student (tqdm does)."""

    def update(self, n: float | None = 1) -> bool | None: ...


Progress = Callable[[Architecture, Evaluation], object] | ProgressBar
"""A callback ``(student, evaluation)`` or a bar with ``update(1)``, told of every student a
backend finishes training (repeats and failures to start are not reported)."""


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker reports once its evaluator is built: the Evaluator attributes that the
    driver exposes, and the worker's process id (to tell workers apart, or to kill one)."""

    teacher_architecture: Architecture
    teacher_accuracy: float
    identity: Mapping[str, str]
    pid: int


def default_threads(workers: int) -> int:
    """Torch threads per worker when the caller does not say: the cores this process may run
    on, shared evenly, at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return max(1, (cores or os.cpu_count() or 1) // workers)


def build_evaluator(make_evaluator: Callable[[], Evaluator], threads: int) -> Evaluator:
    """Inside a worker: limit torch to ``threads`` threads, then build the evaluator.

    ``N2N_THREADS`` and ``OMP_NUM_THREADS`` are set too, so that an evaluator which sizes
    torch's thread pool itself (``DistillationEvaluator`` claims a share of the machine's
    cores through :mod:`n2n_env.thread_budget` unless one of them fixes the count) keeps the
    worker's count, and so that torch, if the factory imports it only now, starts with it.
    Torch is only imported here if the factory already did: a worker whose evaluator needs
    no torch starts in a fraction of a second.
    """
    for variable in ("N2N_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    evaluator = make_evaluator()
    if not isinstance(evaluator, Evaluator):
        raise TypeError(f"make_evaluator must return an Evaluator (teacher_architecture, "
                        f"teacher_accuracy, evaluate, evaluate_many, identity), got "
                        f"{type(evaluator).__name__}")
    return evaluator


def describe(evaluator: Evaluator) -> WorkerInfo:
    """The hand-shake a worker sends once its evaluator is built."""
    return WorkerInfo(evaluator.teacher_architecture, float(evaluator.teacher_accuracy),
                      dict(evaluator.identity()), os.getpid())


def same_evaluator(first: WorkerInfo, other: WorkerInfo) -> None:
    """Refuse a worker whose evaluator differs from the first one's: every student of a
    search must be scored under the same conditions (teacher, data, recipe, seed, device)."""
    if dict(other.identity) != dict(first.identity) or (
            other.teacher_architecture.signature() != first.teacher_architecture.signature()):
        raise RuntimeError(f"workers built different evaluators: worker {first.pid} has "
                           f"{dict(first.identity)}, worker {other.pid} has "
                           f"{dict(other.identity)}; make_evaluator must build the same "
                           f"evaluator everywhere (same teacher, data, recipe, seed, device)")


def student_label(arch: Architecture) -> str:
    """How errors name a student: its name, if any, and its signature."""
    return f"student {arch.name or '(unnamed)'!r} (signature {arch.signature()})"


def checked_students(archs: Iterable[Architecture]) -> list[Architecture]:
    """``archs`` as a list, each an Architecture (a TypeError otherwise)."""
    students = list(archs)
    for arch in students:
        if not isinstance(arch, Architecture):
            raise TypeError(f"evaluate_many takes Architectures, got {type(arch).__name__}")
    return students


def distinct(archs: Sequence[Architecture]) -> list[Architecture]:
    """The first student of each signature, in order of first appearance. The signature is
    what decides a result (a persistent cache keys on it), so a renamed copy is a repeat."""
    first: dict[str, Architecture] = {}
    for arch in archs:
        first.setdefault(arch.signature(), arch)
    return list(first.values())


def in_order(archs: Sequence[Architecture], results: Mapping[str, Evaluation]
             ) -> list[Evaluation]:
    """The result of each of ``archs`` (looked up by signature), in order; every repeat after
    the first is marked ``cache_hit=True``, as a cache would answer it."""
    seen: set[str] = set()
    answers = []
    for arch in archs:
        signature = arch.signature()
        result = results[signature]
        answers.append(dataclasses.replace(result, cache_hit=True) if signature in seen
                       else result)
        seen.add(signature)
    return answers


def report(progress: Progress | None, arch: Architecture, result: Evaluation) -> None:
    """Tell ``progress`` (a bar or a callback, or None) that ``arch`` finished."""
    if progress is None:
        return
    if isinstance(progress, ProgressBar):
        progress.update(1)
    else:
        progress(arch, result)
