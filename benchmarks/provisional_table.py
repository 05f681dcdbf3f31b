"""A provisional N2N-Bench table from an unfinished build, for developing agents early.

A table build takes hours; this script assembles a complete table from the parts already
on disk by *imputing* every student not trained yet: its accuracies (per seed) and seconds
are those of the finished students whose action sequences are nearest (L1 distance over
the episode's actions: the keep mask's Hamming distance on the removal space, the summed
differences of the width steps on the shrink space), their mean over ties. Params, FLOPs
and compression are exact, as they need no training. A build trains its parts spread over
the space (``n2n_env.bench.build.spread_order``), so the finished ones sample all of it.

The result is for tuning and debugging agents only, never for reporting: its header says
``provisional`` and how many students were imputed, and `n2n bench info --table FILE`
shows it.

Run: ``python benchmarks/provisional_table.py --out .provisional/removal.npz`` (about
20 s), then ``n2n bench rl removal --table .provisional/removal.npz ...``; for the shrink
table, ``--work benchmarks/n2n-bench/shrink-conv3-mnist-10k --out
.provisional/shrink.npz``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from n2n_env.bench.build import MEASURED, BuildError, read_finished, table_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="benchmarks/n2n-bench/removal-conv3-mnist-10k",
                        help="the build's work directory (teacher.pt, identity.json, parts/)")
    parser.add_argument("--out", default=".provisional/removal.npz", help="table file")
    args = parser.parse_args()
    work = Path(args.work)
    try:
        build = read_finished(work)
    except BuildError as error:
        parser.error(str(error))
    identity, record, space, students = build.identity, build.record, build.space, build.students
    finished = build.measured
    seeds = len(identity["seeds"])
    count = len(students.students)
    arrays = {key: np.full((count, seeds), np.nan, np.float64) for key in MEASURED}
    arrays["seconds"][:] = 0.0
    episode_of = {student: episode for episode, student in enumerate(students.row_student)}
    actions = np.array([space.actions(episode) for episode in range(space.size)], np.int16)
    done = [episode_of[s] for s in range(count)
            if students.reasons[s] is None and students.students[s].signature() in finished]
    done_actions = actions[done]
    done_values = {key: np.array([finished[students.students[students.row_student[e]]
                                           .signature()][key] for e in done])
                   for key in arrays}
    imputed = 0
    for student in students.trainable:
        signature = students.students[student].signature()
        if signature in finished:
            for key in arrays:
                arrays[key][student] = finished[signature][key]
            continue
        distance = np.abs(done_actions - actions[episode_of[student]]).sum(axis=1)
        closest = np.flatnonzero(distance == distance.min())
        for key in arrays:
            arrays[key][student] = done_values[key][closest].mean(axis=0)
        imputed += 1
    table = table_of(
        record, identity, students, arrays["val_accuracy"], arrays["test_accuracy"],
        arrays["seconds"], machine="provisional",
        command=f"python benchmarks/provisional_table.py --work {work} --out {args.out}",
        extra={"provisional": f"{imputed} of {len(students.trainable)} trainable students "
                              "imputed from their nearest finished action "
                              "sequences; not for reporting"})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    print(f"{table.save(args.out)}: {len(students.trainable) - imputed} finished students, "
          f"{imputed} imputed (provisional: for developing agents, not for reporting)")


if __name__ == "__main__":
    main()
