"""Students per minute through the batch backends: in-process, worker processes, Ray actors.

Trains one fixed batch of distinct random removal students of a cached zoo teacher (conv4 on
``digits`` by default) with the default DistillRecipe, on the CPU:

* in this process, one student after another, with all the cores and with one thread;
* through :class:`~n2n_env.workers.ProcessPoolEvaluator` and
  :class:`~n2n_env.ray_backend.RayEvaluator` with 1 and 2 workers (the cores shared evenly
  among the workers: 1 x 2 threads, 2 x 1 thread).

Start-up (spawning workers, loading teacher, data and logits in each; for Ray, ``ray.init``)
is timed apart from the batch. Each backend's results are compared with the in-process ones
at the same thread count (they must be identical: same seed, same recipe). Then each
backend's cost per student is measured with the instant MockEvaluator (the backend's own
overhead: pickling, messages, scheduling) against calling it in-process.

Run: ``python benchmarks/bench_backends.py`` (about 3 minutes on 2 cores; the teacher is
trained first if it is not cached yet, untimed).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import platform
import random
import shlex
import sys
import time
from collections.abc import Callable, Sequence

from n2n_env.arch import MAX_CLASSIFIER_INPUTS, Architecture
from n2n_env.evaluators import Evaluation, Evaluator, MockEvaluator
from n2n_env.workers import ProcessPoolEvaluator, default_threads


def make_distillation(model: str, dataset: str, width: float, data_root: str | None
                      ) -> Evaluator:
    """The default DistillationEvaluator of the cached teacher (built in each worker)."""
    from n2n_env import data
    from n2n_env.distill import DistillationEvaluator
    from n2n_env.teacher import get_teacher

    teacher, record = get_teacher(model, dataset, width=width, data_root=data_root,
                                  train_if_missing=False, progress=False)
    return DistillationEvaluator(teacher, data.load(dataset, root=data_root),
                                 teacher_accuracy=record.val_accuracy, device="cpu")


def make_mock(model: str, dataset: str, width: float) -> Evaluator:
    """A MockEvaluator of the same teacher architecture (instant: the backend's overhead)."""
    from n2n_env import data, zoo

    shape, classes = data.info(dataset)
    return MockEvaluator(zoo.get(model, shape, classes, width=width))


def candidates(teacher: Architecture, count: int, seed: int) -> list[Architecture]:
    """``count`` distinct, non-degenerate random removal students of ``teacher``."""
    rng, found = random.Random(seed), {}
    while len(found) < count:
        student = teacher.remove([not r or rng.random() < 0.6 for r in teacher.removable()])
        if student.degenerate_reason(MAX_CLASSIFIER_INPUTS) is None:
            found.setdefault(student.signature(), student)
    return list(found.values())


def timed(evaluator: Evaluator, students: Sequence[Architecture]
          ) -> tuple[float, list[Evaluation]]:
    started = time.perf_counter()
    results = evaluator.evaluate_many(students)
    return time.perf_counter() - started, results


def same(results: Sequence[Evaluation], reference: Sequence[Evaluation]) -> bool:
    """Identical but for the wall time."""
    def strip(rs: Sequence[Evaluation]) -> list[Evaluation]:
        return [dataclasses.replace(r, wall_seconds=0.0) for r in rs]
    return strip(results) == strip(reference)


def in_process(factory: Callable[[], Evaluator], threads: int) -> Evaluator:
    """The evaluator built here, with torch fixed at ``threads`` threads."""
    import torch

    os.environ["N2N_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    return factory()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="conv4")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--students", type=int, default=24)
    parser.add_argument("--mock-students", type=int, default=300)
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--backends", default="process,ray")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("command: python benchmarks/bench_backends.py " + shlex.join(sys.argv[1:]))
    import torch

    from n2n_env.teacher import get_teacher

    cores = default_threads(1)
    worker_counts = [int(w) for w in args.workers.split(",")]
    backends = args.backends.split(",")
    print(f"{platform.processor() or platform.machine()}, {cores} cores, torch "
          f"{torch.__version__}, Python {platform.python_version()}")
    get_teacher(args.teacher, args.dataset, width=args.width, data_root=args.data_root,
                progress=False)  # trained now if missing, untimed
    factory = functools.partial(make_distillation, args.teacher, args.dataset, args.width,
                                args.data_root)
    mock = functools.partial(make_mock, args.teacher, args.dataset, args.width)
    rows, reference = [], {}
    for threads in sorted({cores, 1}, reverse=True):
        started = time.perf_counter()
        evaluator = in_process(factory, threads)
        startup = time.perf_counter() - started
        students = candidates(evaluator.teacher_architecture, args.students, args.seed)
        seconds, results = timed(evaluator, students)
        reference[threads] = results
        rows.append(("in-process", 1, threads, startup, seconds, results, "(reference)"))
    ray = None
    if "ray" in backends:
        import ray

        started = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        print(f"ray.init (local, {cores} CPUs): {time.perf_counter() - started:.1f} s")
    for backend in backends:
        for workers in worker_counts:
            threads = max(1, cores // workers)
            started = time.perf_counter()
            evaluator = build(backend, factory, workers, threads)
            startup = time.perf_counter() - started
            try:
                seconds, results = timed(evaluator, students)
            finally:
                evaluator.close()  # type: ignore[attr-defined]
            check = "yes" if same(results, reference.get(threads, [])) else "NO"
            rows.append((backend, workers, threads, startup, seconds, results, check))

    print(f"\n{args.teacher} (width {args.width:g}) on {args.dataset}, default DistillRecipe, "
          f"{len(students)} distinct students, CPU\n")
    print("| backend | workers x threads | start-up s | batch s | students/min | speed-up "
          "| mean s/student in a worker | results = in-process |")
    print("|---|---|---|---|---|---|---|---|")
    base = rows[0][4]
    for backend, workers, threads, startup, seconds, results, check in rows:
        inside = sum(r.wall_seconds for r in results) / len(results)
        print(f"| {backend} | {workers} x {threads} | {startup:.1f} | {seconds:.1f} | "
              f"{60 * len(results) / seconds:.1f} | {base / seconds:.2f}x | {inside:.2f} | "
              f"{check} |")

    print(f"\nOverhead per student: {args.mock_students} distinct MockEvaluator students, "
          "1 worker\n")
    evaluator = in_process(mock, 1)
    many = candidates(evaluator.teacher_architecture, args.mock_students, args.seed + 1)
    local = min(timed(evaluator, many)[0] for _ in range(3))
    print("| backend | ms/student | overhead ms/student |")
    print("|---|---|---|")
    print(f"| in-process | {1000 * local / len(many):.3f} | - |")
    for backend in backends:
        evaluator = build(backend, mock, 1, 1)
        try:
            timed(evaluator, many[:20])  # warm-up: first messages, imports
            seconds, _ = timed(evaluator, many)
        finally:
            evaluator.close()  # type: ignore[attr-defined]
        print(f"| {backend} | {1000 * seconds / len(many):.3f} | "
              f"{1000 * (seconds - local) / len(many):.3f} |")
    if ray is not None:
        ray.shutdown()


def build(backend: str, factory: Callable[[], Evaluator], workers: int, threads: int
          ) -> Evaluator:
    if backend == "process":
        return ProcessPoolEvaluator(factory, workers=workers, threads_per_worker=threads)
    if backend == "ray":
        from n2n_env.ray_backend import RayEvaluator

        return RayEvaluator(factory, workers=workers, cpus_per_worker=threads,
                            threads_per_worker=threads)
    raise SystemExit(f"unknown backend {backend!r}: use process or ray")


if __name__ == "__main__":
    main()
