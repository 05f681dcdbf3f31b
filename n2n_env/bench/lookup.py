"""An evaluator that looks rewards up in an N2N-Bench table instead of training.

:class:`TableEvaluator` answers the :class:`~n2n_env.evaluators.Evaluator` protocol from a
:class:`~n2n_env.bench.table.BenchTable`: each evaluation draws one of the stored training
seeds with its ``rng`` (as NAS-Bench-101's query does, so an agent sees the seed-to-seed
noise of real training), or, with ``reward_seed="mean"``, averages them. The stored
seconds of that training become the evaluation's ``wall_seconds``: the compute a real
environment would have spent, which lets agents be compared at equal compute.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from n2n_env.arch import Architecture
from n2n_env.bench.table import BenchTable, BenchTableError, signature_int
from n2n_env.evaluators import Evaluation

REWARD_SEEDS = ("draw", "mean")
SHIPPED = {"removal": "removal-conv3-mnist-10k.npz", "shrink": "shrink-conv3-mnist-10k.npz"}
"""The tables shipped inside the package, by space."""


def shipped_table_path(space: str) -> Path:
    """The path of the table shipped for ``space`` ("removal" or "shrink")."""
    if space not in SHIPPED:
        raise ValueError(f"no shipped table for space {space!r}; allowed: {', '.join(SHIPPED)}")
    return Path(str(resources.files("n2n_env.bench") / "tables" / SHIPPED[space]))


def load_table(table: BenchTable | str | os.PathLike[str] | None, space: str) -> BenchTable:
    """``table`` as a BenchTable: a loaded one, a path, or None for the shipped table of
    ``space``. A table of the other space is refused."""
    if table is None:
        table = shipped_table_path(space)
        if not table.is_file():
            raise BenchTableError(
                f"this copy of n2n ships no {space} table ({table} is missing); build it "
                f"with 'n2n bench build {space} --data-root DIR --out {table}' (hours on a "
                "CPU, docs/rl-benchmark.md) or pass table=FILE")
    if not isinstance(table, BenchTable):
        if not isinstance(table, str | os.PathLike):
            raise TypeError(f"table must be a BenchTable, a path or None, not "
                            f"{type(table).__name__}")
        table = BenchTable.load(table)
    if table.header.space != space:
        raise ValueError(f"table {table.source!r} enumerates the {table.header.space} space; "
                         f"this environment needs a {space} table")
    return table


class TableEvaluator:
    """Stored results of every student of one table, served through the Evaluator
    protocol. ``evaluate`` refuses an architecture the table does not hold."""

    def __init__(self, table: BenchTable, reward_seed: str = "draw",
                 rng: np.random.Generator | None = None) -> None:
        if reward_seed not in REWARD_SEEDS:
            raise ValueError(f"reward_seed must be one of {REWARD_SEEDS}, got {reward_seed!r}")
        self.table = table
        self.reward_seed = reward_seed
        self.rng = rng if rng is not None else np.random.default_rng()
        """Draws the seed of each evaluation; an environment hands over its ``np_random``."""
        self.teacher_architecture: Architecture = table.header.teacher_architecture()
        self.teacher_accuracy: float = table.header.teacher_accuracy
        self.last_seed: int | None = None
        """The stored training seed the last evaluation drew (None: the mean, or no
        training)."""
        self.next_column: int | None = None
        """If set, the next evaluation uses this seed column instead of drawing one (a
        replay of a logged episode), then it is cleared."""
        self._index = table.signature_index()
        # Python lists, so that a lookup converts no numpy scalar (it runs once a step).
        self._sizes = [
            {"params": params, "flops": flops, "compression": compression,
             "flops_compression": flops_compression}
            for params, flops, compression, flops_compression in zip(
                table.params.tolist(), table.flops.tolist(),
                table.compression("params").tolist(), table.compression("flops").tolist())]
        self._reasons = [table.reason(student) for student in range(table.num_students)]
        self._accuracy = table.val_accuracy.tolist()
        self._seconds = table.seconds.tolist()
        self._mean_accuracy = table.val_accuracy.mean(axis=1).tolist()  # NaN if a seed failed
        self._mean_seconds = table.seconds.mean(axis=1).tolist()

    def identity(self) -> Mapping[str, str]:
        header = self.table.header
        return {"evaluator": "bench-table", "teacher": header.teacher_fingerprint,
                "dataset": f"{header.dataset}:{header.dataset_fingerprint}",
                "recipe": header.recipe_digest, "space": header.space,
                "seeds": ",".join(map(str, header.seeds)), "reward_seed": self.reward_seed}

    def student_index(self, arch: Architecture) -> int:
        """The table's index of ``arch``; ValueError if the table does not hold it."""
        index = self._index.get(signature_int(arch))
        if index is None:
            raise ValueError(f"architecture {arch.name!r} (signature {arch.signature()}) is not "
                             f"in the {self.table.header.space} table {self.table.source!r}")
        return index

    def evaluate(self, arch: Architecture) -> Evaluation:
        return self.evaluate_student(self.student_index(arch))

    def evaluate_many(self, archs: Sequence[Architecture]) -> list[Evaluation]:
        """Each architecture looked up in order, every one drawing its own seed (a lookup
        costs nothing, so repeats are not merged)."""
        return [self.evaluate(arch) for arch in archs]

    def evaluate_student(self, student: int) -> Evaluation:
        """The Evaluation of the table's student ``student``, at one drawn seed (or the
        mean over seeds)."""
        sizes = self._sizes[student]
        reason = self._reasons[student]
        forced, self.next_column, self.last_seed = self.next_column, None, None
        if reason is not None:
            return Evaluation(accuracy=0.0, degenerate_reason=reason, **sizes)
        if self.reward_seed == "draw" or forced is not None:
            column = int(self.rng.integers(self.table.num_seeds)) if forced is None else forced
            self.last_seed = self.table.header.seeds[column]
            accuracy = self._accuracy[student][column]
            seconds = self._seconds[student][column]
        else:
            accuracy = self._mean_accuracy[student]
            seconds = self._mean_seconds[student]
        if not math.isfinite(accuracy):
            return Evaluation(accuracy=0.0, wall_seconds=seconds,
                              failure="training diverged at this seed", **sizes)
        return Evaluation(accuracy=accuracy, wall_seconds=seconds, **sizes)
