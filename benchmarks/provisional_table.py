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
import json
from pathlib import Path

import numpy as np

from n2n_env.bench.build import table_of
from n2n_env.bench.spaces import catalogue, make_space
from n2n_env.checkpoints import read_teacher_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="benchmarks/n2n-bench/removal-conv3-mnist-10k",
                        help="the build's work directory (teacher.pt, identity.json, parts/)")
    parser.add_argument("--out", default=".provisional/removal.npz", help="table file")
    args = parser.parse_args()
    work = Path(args.work)
    identity = json.loads((work / "identity.json").read_text())
    if identity.get("start") is not None:
        parser.error(f"{work} shrinks an architecture other than its teacher; only builds "
                     "over the teacher itself are imputed")
    record = read_teacher_record(work / "teacher.pt")[0]
    space = make_space(identity["space"], record.architecture,
                       include_kernels=bool(identity.get("include_kernels")))
    students = catalogue(space)
    finished: dict[str, dict[str, list[float]]] = {}
    for path in sorted((work / "parts").glob("part-*.json")):
        part = json.loads(path.read_text())
        for index, signature in enumerate(part["signatures"]):
            finished[signature] = {key: part[key][index]
                                   for key in ("val_accuracy", "test_accuracy", "seconds")}
    if not finished:
        parser.error(f"{work / 'parts'} holds no finished part yet")
    seeds = len(identity["seeds"])
    count = len(students.students)
    arrays = {key: np.full((count, seeds), np.nan, np.float64)
              for key in ("val_accuracy", "test_accuracy", "seconds")}
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
