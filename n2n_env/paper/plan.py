"""A paper table as a plan of independent units of work.

A :class:`Unit` is one piece of a table that finishes on its own and leaves one small JSON
result: a teacher's training, one search of ``n2n compress`` (agent, seed), the pruning
baseline's best of five, one hand-designed student's training, one policy's pre-training
or one transfer comparison. Its ``spec`` holds everything that decides its result (as
JSON values), so a finished unit is reused only by a plan that asks for the very same
thing; ``needs`` names the units whose results it reads. Unit ids name the teacher, data
and variant, so that tables sharing a work folder share their units: Table 2 reuses Table
1's teacher and REINFORCE searches, Table 4 its teacher.

:func:`plan` lists a table's units in the order they run (dependencies first, then seed by
seed, so that a table stopped half way has whole seeds); :func:`pool` lists several
tables' units, each once. Pure Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from n2n_env.paper.settings import PaperSettings, json_ready

__all__ = ["KINDS", "Unit", "plan", "pool", "spec_difference"]

KINDS = ("teacher", "compress", "prune", "kd", "pretrain", "transfer")
"""The kinds of unit (:mod:`n2n_env.paper.units` runs each)."""
STAGES = ("removal", "shrink")
ACCURACY_DROP = 0.01
"""The pruning stopping rule's "1%", read as one percentage point (docs/baselines.md)."""


@dataclass(frozen=True)
class Unit:
    """One independent piece of a table."""

    id: str
    """Its name, also the stem of its result file ``units/<id>.json``."""
    kind: str
    """One of :data:`KINDS`."""
    spec: Mapping[str, Any]
    """Everything that decides its result, as JSON values."""
    needs: tuple[str, ...] = ()
    """Units whose results (or files) it reads; they run first."""
    label: str = field(default="", compare=False)
    """How the report names it (the agent, student or policy)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec", json_ready(dict(self.spec)))  # as JSON reads it


def plan(settings: PaperSettings) -> tuple[Unit, ...]:
    """The units of ``settings.table``, in the order they run."""
    builders = {1: _table1, 2: _table2, 3: _table3, 4: _table4, 5: _table5}
    units = builders[settings.table](settings)
    ids = [unit.id for unit in units]
    assert len(set(ids)) == len(ids), ids
    return tuple(units)


def pool(tables: Sequence[PaperSettings]) -> tuple[tuple[Unit, PaperSettings], ...]:
    """The units of several tables in one work folder, each once, with the settings of the
    first table (in the order given) that has it: tables 1, 2 and 4 share their teacher,
    and Table 2 needs Table 1's REINFORCE searches. In the tables' order, each table's in
    :func:`plan`'s. ValueError if a table is given twice, or if two tables ask one unit for
    different things (its spec), which only one of them could reuse."""
    numbers = [settings.table for settings in tables]
    if not numbers or len(set(numbers)) != len(numbers):
        raise ValueError(f"give each table once, got tables {numbers}")
    pooled: dict[str, tuple[Unit, PaperSettings]] = {}
    for settings in tables:
        for unit in plan(settings):
            if unit.id not in pooled:
                pooled[unit.id] = (unit, settings)
                continue
            first, owner = pooled[unit.id]
            if first.spec != unit.spec:
                raise ValueError(
                    f"tables {owner.table} and {settings.table} ask unit {unit.id} for "
                    f"different things ({spec_difference(first.spec, unit.spec)}); run them "
                    "in separate work folders, or with the same settings")
    return tuple(pooled.values())


def spec_difference(first: Mapping[str, Any], second: Mapping[str, Any],
                    labels: tuple[str, str] = ("in one", "in the other")) -> str:
    """Every key whose value differs between two specs, in sorted order, as
    ``key a in one, b in the other`` (``labels`` name the two sides)."""
    keys = sorted(k for k in {*first, *second} if first.get(k) != second.get(k))
    return ", ".join(f"{k} {first.get(k)!r} {labels[0]}, {second.get(k)!r} {labels[1]}"
                     for k in keys)


def teacher_unit(settings: PaperSettings, model: str) -> Unit:
    """The teacher ``model`` at the settings' width on their dataset (teacher seed 0)."""
    from n2n_env.recipes import recipe_for

    assert settings.dataset is not None and settings.teacher_width is not None
    epochs = settings.teacher_epochs or recipe_for(settings.dataset).epochs
    return Unit(f"teacher-{model}-w{settings.teacher_width:g}-{settings.dataset}", "teacher",
                {"model": model, "width": settings.teacher_width,
                 "dataset": settings.dataset, "epochs": epochs, "seed": 0}, label=model)


def compress_units(settings: PaperSettings, teacher: Unit, agents: tuple[str, ...],
                   constraints: Mapping[str, int] | None = None) -> list[Unit]:
    """One ``n2n compress`` run (both stages, then fine-tuning) per seed and agent."""
    assert settings.seeds is not None
    bound = "".join(f"-{key}{value}" for key, value in sorted((constraints or {}).items()))
    units = []
    for seed in settings.seeds:
        for agent in agents:
            spec = {"teacher": teacher.id, "dataset": settings.dataset, "agent": agent,
                    "seed": seed, "stages": list(STAGES), "iterations": settings.iterations,
                    "constraints": dict(constraints or {}), "evaluator": settings.evaluator,
                    "finetune_epochs": settings.finetune_epochs}
            units.append(Unit(f"compress-{_stem(teacher)}-{agent}{bound}-seed{seed}",
                              "compress", spec, (teacher.id,), label=agent))
    return units


def _stem(teacher: Unit) -> str:
    """``<model>-w<width>-<dataset>`` of a teacher unit."""
    return teacher.id.removeprefix("teacher-")


def _table1(settings: PaperSettings) -> list[Unit]:
    assert settings.teacher is not None and settings.agents is not None
    teacher = teacher_unit(settings, settings.teacher)
    return [teacher, *compress_units(settings, teacher, settings.agents)]


def _table2(settings: PaperSettings) -> list[Unit]:
    assert settings.teacher is not None and settings.prune_runs is not None
    teacher = teacher_unit(settings, settings.teacher)
    searches = compress_units(settings, teacher, ("reinforce",))
    spec = {"teacher": teacher.id, "dataset": settings.dataset,
            "reference": [unit.id for unit in searches], "runs": settings.prune_runs,
            "prune_fraction": settings.prune_fraction,
            "finetune_steps": settings.prune_finetune_steps,
            "taylor_examples": settings.taylor_examples, "accuracy_drop": ACCURACY_DROP,
            "finetune_epochs": settings.finetune_epochs}
    prune = Unit(f"prune-{_stem(teacher)}-best-of-{settings.prune_runs}", "prune", spec,
                 (teacher.id, *spec["reference"]), label="pruning")
    return [teacher, *searches, prune]


def _table3(settings: PaperSettings) -> list[Unit]:
    assert settings.teacher is not None and settings.agents is not None
    assert settings.students is not None and settings.kd_seeds is not None
    teacher = teacher_unit(settings, settings.teacher)
    students = [Unit(f"kd-{_stem(teacher)}-{student}-seed{seed}", "kd",
                     {"teacher": teacher.id, "dataset": settings.dataset, "student": student,
                      "seed": seed, "finetune_epochs": settings.finetune_epochs},
                     (teacher.id,), label=student)
                for seed in settings.kd_seeds for student in settings.students]
    return [teacher, *compress_units(settings, teacher, settings.agents), *students]


def _table4(settings: PaperSettings) -> list[Unit]:
    assert settings.teacher is not None and settings.agents is not None
    assert settings.max_params is not None
    teacher = teacher_unit(settings, settings.teacher)
    return [teacher, *compress_units(settings, teacher, settings.agents,
                                     {"params": settings.max_params})]


def _table5(settings: PaperSettings) -> list[Unit]:
    assert settings.pairs is not None and settings.seeds is not None
    teachers = {name: teacher_unit(settings, name)
                for pair in settings.pairs for name in pair}
    units: list[Unit] = list(teachers.values())
    width = f"w{settings.teacher_width:g}-{settings.dataset}"
    pretrained: dict[tuple[str, int], Unit] = {}
    for seed in settings.seeds:
        for source, target in settings.pairs:
            key = (source, seed)
            if key not in pretrained:
                pretrained[key] = Unit(
                    f"pretrain-{source}-{width}-seed{seed}", "pretrain",
                    {"teacher": teachers[source].id, "dataset": settings.dataset,
                     "seed": seed, "iterations": settings.pretrain_iterations,
                     "evaluator": settings.evaluator}, (teachers[source].id,), label=source)
                units.append(pretrained[key])
            for policy in ("pretrained", "scratch"):
                spec = {"source": teachers[source].id, "target": teachers[target].id,
                        "dataset": settings.dataset, "policy": policy, "seed": seed,
                        "iterations": settings.transfer_iterations,
                        "evaluator": settings.evaluator,
                        "pretrain": pretrained[key].id if policy == "pretrained" else None}
                needs = (teachers[target].id,) + (
                    (pretrained[key].id,) if policy == "pretrained" else ())
                units.append(Unit(f"transfer-{source}-{target}-{width}-{policy}-seed{seed}",
                                  "transfer", spec, needs, label=policy))
    return units
