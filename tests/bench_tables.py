"""Small N2N-Bench tables made without training, for the benchmark's tests.

The teacher is conv3 (16x16 inputs) with most layers removed, so that its removal space has
64 episodes; the shrink space starts from a two-variable student (100 episodes). Accuracies
are a smooth function of the parameter count plus a seed-dependent offset, so every table
has one known optimum and visible seed-to-seed noise.
"""

from __future__ import annotations

import functools

import numpy as np

from n2n_env import zoo
from n2n_env.arch import Architecture
from n2n_env.bench.spaces import catalogue, make_space
from n2n_env.bench.table import OK, BenchTable, TableHeader, signature_int

KEPT = (0, 1, 2, 3, 11, 12, 13, 14)
"""conv, bn, relu, maxpool, flatten, linear, relu, linear: six removable layers."""


@functools.cache
def small_teacher() -> Architecture:
    conv3 = zoo.get("conv3", (1, 16, 16), num_classes=10)
    return conv3.remove([i in KEPT for i in range(len(conv3.layers))])


def fake_table(space: str, seeds: tuple[int, ...] = (0, 1, 2), noise: float = 0.01,
               start: Architecture | None = None) -> BenchTable:
    """A table of ``space`` over :func:`small_teacher`, with made-up measurements."""
    teacher = small_teacher()
    if space == "shrink" and start is None:
        start = teacher.remove([True, False, False, False, True, True, False, True])
    students = catalogue(make_space(space, teacher, start))
    reasons = sorted({r for r in students.reasons if r is not None})
    rng = np.random.default_rng(0)
    count = len(students.students)
    params = np.array([s.num_params() if r is None else 0
                       for s, r in zip(students.students, students.reasons)], np.int64)
    flops = np.array([s.flops() if r is None else 0
                      for s, r in zip(students.students, students.reasons)], np.int64)
    base = 0.5 + 0.45 * (params / params.max()) ** 0.25
    val = base[:, None] + noise * rng.standard_normal((count, len(seeds)))
    test = val - 0.005
    seconds = 0.1 + params[:, None] / 1e5 + 0.01 * rng.random((count, len(seeds)))
    trained = np.array([r is None for r in students.reasons])
    val[~trained], test[~trained], seconds[~trained] = np.nan, np.nan, 0.0
    header = TableHeader(
        space=space, teacher=teacher.to_json(), teacher_name=teacher.name,
        teacher_fingerprint="0" * 16, teacher_accuracy=0.97, teacher_test_accuracy=0.96,
        dataset="synthetic", dataset_fingerprint="f" * 16, recipe={"steps": 100},
        recipe_digest="d" * 16, seeds=seeds,
        start=start.to_json() if start is not None else None,
        reasons=tuple(reasons), command="tests/bench_tables.py",
    )
    return BenchTable(
        header=header, row_student=students.row_student,
        signature=np.array([signature_int(s) for s in students.students], np.uint64),
        params=params, flops=flops,
        status=np.array([OK if r is None else reasons.index(r) for r in students.reasons],
                        np.int16),
        val_accuracy=np.clip(val, 0, 1).astype(np.float32),
        test_accuracy=np.clip(test, 0, 1).astype(np.float32),
        seconds=seconds.astype(np.float32),
    )


def table_rows(out: str) -> list[list[str]]:
    """The data rows of the markdown table a script prints last."""
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]
