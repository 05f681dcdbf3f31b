"""A provisional removal table from an unfinished build, for developing agents early.

An N2N-Bench removal build takes hours; this script assembles a complete table from the
parts already on disk by *imputing* every student not trained yet: its accuracies (per
seed) and seconds are those of the finished student whose keep mask is nearest in Hamming
distance (the mean over ties). Params, FLOPs and compression are exact, as they need no
training.

The result is for tuning and debugging agents only, never for reporting: its header says
``provisional`` and how many students were imputed, and `n2n bench info --table FILE`
shows it. On conv3 the students that keep the hidden linear layer (87% of the teacher's
parameters) have compression below 0.13 and rewards below 0.25, so errors in their imputed
accuracies barely move the landscape's top, which the finished parts cover first.

Run: ``python benchmarks/provisional_table.py --out .provisional/removal.npz`` (about
20 s), then ``n2n bench rl removal --table .provisional/removal.npz ...``.
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
                        help="the removal build's work directory (teacher.pt, identity.json, "
                        "parts/)")
    parser.add_argument("--out", default=".provisional/removal.npz", help="table file")
    args = parser.parse_args()
    work = Path(args.work)
    identity = json.loads((work / "identity.json").read_text())
    if identity["space"] != "removal":
        parser.error(f"{work} is a {identity['space']} build; only removal builds are imputed")
    record = read_teacher_record(work / "teacher.pt")[0]
    space = make_space("removal", record.architecture)
    students = catalogue(space)
    finished: dict[str, dict[str, list[float]]] = {}
    for path in sorted((work / "parts").glob("part-*.json")):
        part = json.loads(path.read_text())
        for index, signature in enumerate(part["signatures"]):
            finished[signature] = {key: part[key][index]
                                   for key in ("val_accuracy", "test_accuracy", "seconds")}
    seeds = len(identity["seeds"])
    count = len(students.students)
    arrays = {key: np.full((count, seeds), np.nan, np.float64)
              for key in ("val_accuracy", "test_accuracy", "seconds")}
    arrays["seconds"][:] = 0.0
    episode_of = {student: episode for episode, student in enumerate(students.row_student)}
    masks = np.array([[(episode >> bit) & 1 for bit in range(len(space.removable_layers))]
                      for episode in range(space.size)], np.int8)
    done = [episode_of[s] for s in range(count)
            if students.reasons[s] is None and students.students[s].signature() in finished]
    done_masks = masks[done]
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
        distance = (done_masks != masks[episode_of[student]]).sum(axis=1)
        closest = np.flatnonzero(distance == distance.min())
        for key in arrays:
            arrays[key][student] = done_values[key][closest].mean(axis=0)
        imputed += 1
    table = table_of(
        record, identity, students, arrays["val_accuracy"], arrays["test_accuracy"],
        arrays["seconds"], machine="provisional",
        command=f"python benchmarks/provisional_table.py --work {work} --out {args.out}",
        extra={"provisional": f"{imputed} of {len(students.trainable)} trainable students "
                              "imputed from their nearest finished keep mask; not for "
                              "reporting"})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    print(f"{table.save(args.out)}: {len(students.trainable) - imputed} finished students, "
          f"{imputed} imputed (provisional: for developing agents, not for reporting)")


if __name__ == "__main__":
    main()
