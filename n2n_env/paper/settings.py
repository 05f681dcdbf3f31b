"""The typed settings of one paper-table run (``n2n paper TABLE``).

:class:`PaperSettings` says everything that decides what a table's units find: the table,
the data, the teachers, the seeds, the search and training budgets and the evaluator.
Fields left at None take the table's default (:data:`TABLE_DEFAULTS`, the real runs of
issue 15); a field that does not apply to the table (``pairs`` for Table 1, say) must stay
None, so a flag that would be silently ignored is refused instead. Once made, every field
that applies to the table is filled in and checked. Pure Python; the checks that need the
dataset or agent registries import them when a settings object is made.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from n2n_env import validate

__all__ = ["APPLIES", "STUDENT_NAMES", "TABLE_DEFAULTS", "TABLE_NAMES", "PaperSettings",
           "parse_table"]

TABLE_NAMES = {1: "compression", 2: "pruning", 3: "distillation", 4: "constraints",
               5: "transfer"}
"""The tables by number, with the name ``n2n paper`` also accepts."""
STUDENT_NAMES = ("fitnet4", "vgg-small", "squeezenet1_1")
"""The hand-designed students of Table 3 (``n2n_env.baselines.STUDENTS``)."""
ALL = (1, 2, 3, 4, 5)
APPLIES: Mapping[str, tuple[int, ...]] = {
    "dataset": ALL, "data_root": ALL, "teacher_width": ALL, "teacher_epochs": ALL,
    "seeds": ALL, "evaluator": ALL,
    "teacher": (1, 2, 3, 4), "iterations": (1, 2, 3, 4), "finetune_epochs": (1, 2, 3, 4),
    "agents": (1, 3, 4), "max_params": (4,),
    "prune_runs": (2,), "prune_fraction": (2,), "prune_finetune_steps": (2,),
    "taylor_examples": (2,),
    "students": (3,), "kd_seeds": (3,),
    "pairs": (5,), "pretrain_iterations": (5,), "transfer_iterations": (5,),
}
"""The tables each setting applies to."""
COMMON_DEFAULTS: Mapping[str, Any] = {
    "data_root": None, "teacher_epochs": None, "finetune_epochs": None,
    "seeds": (0, 1, 2), "evaluator": "distill", "iterations": 40, "max_params": 20_000,
    "prune_runs": 5, "prune_fraction": 0.01, "prune_finetune_steps": 100,
    "taylor_examples": 64, "students": STUDENT_NAMES, "kd_seeds": (0,),
    "pairs": (("vgg11", "vgg19"), ("resnet18", "resnet34")),
    "pretrain_iterations": 100, "transfer_iterations": 10,
}
"""Defaults shared by the tables a setting applies to (None: the recipe's epochs)."""
TABLE_DEFAULTS: Mapping[int, Mapping[str, Any]] = {
    1: {"dataset": "mnist-10k", "teacher": "vgg13", "teacher_width": 1.0,
        "agents": ("reinforce", "random")},
    2: {"dataset": "mnist-10k", "teacher": "vgg13", "teacher_width": 1.0},
    3: {"dataset": "cifar10-14k", "teacher": "resnet18", "teacher_width": 0.25,
        "agents": ("reinforce",)},
    4: {"dataset": "mnist-10k", "teacher": "vgg13", "teacher_width": 1.0,
        "agents": ("reinforce",)},
    5: {"dataset": "cifar10-14k", "teacher_width": 0.125},
}
"""Each table's own defaults: the runs issue 15 asks for."""


def parse_table(text: str | int) -> int:
    """A table number from ``1``..``5`` or its name (``compression``, ``pruning``,
    ``distillation``, ``constraints``, ``transfer``); ValueError naming them otherwise."""
    value = str(text).strip().lower().removeprefix("table-").removeprefix("table")
    for number, name in TABLE_NAMES.items():
        if value in (str(number), name):
            return number
    allowed = ", ".join(f"{n} ({name})" for n, name in TABLE_NAMES.items())
    raise ValueError(f"unknown table {text!r}; choose from: {allowed}")


@dataclass(frozen=True)
class PaperSettings:
    """Everything that decides what one paper table's units find."""

    table: int
    """1-5: the paper's table."""
    dataset: str | None = None
    """Dataset of every unit (default: mnist-10k for Tables 1, 2 and 4, cifar10-14k for
    Tables 3 and 5)."""
    data_root: str | None = None
    """Folder holding the dataset's files (None: the package's default places)."""
    teacher: str | None = None
    """Zoo teacher of Tables 1-4 (default: vgg13 for 1, 2, 4; resnet18 for 3)."""
    teacher_width: float | None = None
    """Width multiplier of the teachers (default: 1 for 1, 2, 4; 0.25 for 3; 0.125 for 5)."""
    teacher_epochs: int | None = None
    """Epochs of each teacher's training (None: the dataset recipe's, 50 or 150)."""
    seeds: tuple[int, ...] | None = None
    """Seeds of the searches and of Table 5's policies (default 0, 1, 2)."""
    agents: tuple[str, ...] | None = None
    """Search agents (default: reinforce and random for Table 1, reinforce for 3 and 4;
    Table 2 always compares with REINFORCE)."""
    iterations: int | None = None
    """Policy updates of 5 students per stage (default 40)."""
    finetune_epochs: int | None = None
    """Epochs of every final training (None: the recipe's, as the teacher's)."""
    evaluator: str | None = None
    """``distill`` (real) or ``mock`` (instant, NOT REAL: tests and teaching only)."""
    max_params: int | None = None
    """Table 4's size constraint (default 20,000 parameters)."""
    prune_runs: int | None = None
    """Table 2's pruning runs, seeds 0..N-1, of which the best is reported (default 5)."""
    prune_fraction: float | None = None
    """Channels removed per pruning step, a fraction of the teacher's (default 0.01)."""
    prune_finetune_steps: int | None = None
    """KD updates after every pruning step (default 100)."""
    taylor_examples: int | None = None
    """Examples of the Taylor criterion per pruning step (default 64)."""
    students: tuple[str, ...] | None = None
    """Table 3's hand-designed students (default all three)."""
    kd_seeds: tuple[int, ...] | None = None
    """Seeds of each hand-designed student's training (default 0 only)."""
    pairs: tuple[tuple[str, str], ...] | None = None
    """Table 5's (source, target) teachers (default vgg11->vgg19, resnet18->resnet34)."""
    pretrain_iterations: int | None = None
    """Table 5's policy updates on the source teacher (default 100)."""
    transfer_iterations: int | None = None
    """Table 5's policy updates compared on the target teacher (default 10)."""

    def __post_init__(self) -> None:
        set_field = object.__setattr__  # fill the table's defaults once; stays frozen
        set_field(self, "table", parse_table(self.table))
        given = [f.name for f in dataclasses.fields(self)
                 if f.name != "table" and getattr(self, f.name) is not None]
        misplaced = [name for name in given if self.table not in APPLIES[name]]
        if misplaced:
            where = "; ".join(f"{flag(n)} applies to {tables_named(APPLIES[n])}"
                              for n in misplaced)
            raise ValueError(f"not a setting of {tables_named([self.table])}: {where}")
        defaults = {**COMMON_DEFAULTS, **TABLE_DEFAULTS[self.table]}
        for name, tables in APPLIES.items():
            if self.table in tables and getattr(self, name) is None:
                set_field(self, name, defaults.get(name))
        for name in ("seeds", "agents", "students", "kd_seeds"):
            value = getattr(self, name)
            if value is not None:
                set_field(self, name, tuple(value))
        if self.pairs is not None:
            set_field(self, "pairs", tuple(tuple(pair) for pair in self.pairs))
        self._check()

    def _check(self) -> None:
        """Reject bad values now, before any teacher trains, naming what is allowed."""
        from n2n_env import data, zoo

        validate.choice("dataset", self.dataset, data.names())
        validate.choice("evaluator", self.evaluator, ("distill", "mock"))
        validate.number("teacher_width", self.teacher_width, above=0)
        for name in ("teacher_epochs", "finetune_epochs"):
            if getattr(self, name) is not None:
                validate.integer(name, getattr(self, name), minimum=1)
        _seed_list("seeds", self.seeds)
        teachers = [self.teacher] if self.teacher is not None else []
        if self.pairs is not None:
            if not self.pairs or any(len(pair) != 2 or pair[0] == pair[1]
                                     for pair in self.pairs):
                raise ValueError(f"pairs must be (source, target) pairs of two different "
                                 f"zoo teachers, got {self.pairs!r}")
            teachers += [name for pair in self.pairs for name in pair]
        shape, classes = data.info(self.dataset)
        for name in teachers:
            validate.choice("teacher", name, zoo.names())
            zoo.get(name, shape, classes, width=self.teacher_width)  # fits the data?
        if self.agents is not None:
            from agents import registry

            if not self.agents or len(set(self.agents)) != len(self.agents):
                raise ValueError(f"agents must be distinct names, got {list(self.agents)}")
            for agent in self.agents:
                validate.choice("agent", agent, registry.AGENT_NAMES)
                registry.check_available(agent)
        for name in ("iterations", "max_params", "prune_runs", "taylor_examples",
                     "pretrain_iterations", "transfer_iterations"):
            if getattr(self, name) is not None:
                validate.integer(name, getattr(self, name), minimum=1)
        if self.prune_fraction is not None:
            validate.number("prune_fraction", self.prune_fraction, above=0, at_most=1)
        if self.prune_finetune_steps is not None:
            validate.integer("prune_finetune_steps", self.prune_finetune_steps, minimum=0)
        if self.students is not None:
            if not self.students or len(set(self.students)) != len(self.students):
                raise ValueError(f"students must be distinct names, got {list(self.students)}")
            for student in self.students:
                validate.choice("student", student, STUDENT_NAMES)
        if self.kd_seeds is not None:
            _seed_list("kd_seeds", self.kd_seeds)

    @property
    def name(self) -> str:
        """The table's name (``compression``, ``pruning``, ...)."""
        return TABLE_NAMES[self.table]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (lists for tuples)."""
        return json_ready(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PaperSettings:
        """The settings :meth:`to_dict` wrote (None for a setting that does not apply);
        ValueError naming any unknown key, or a set one that does not apply."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown or "table" not in values:
            raise ValueError(f"not paper settings: unknown keys {unknown}" if unknown
                             else "not paper settings: no 'table'")
        return cls(**{k: v for k, v in values.items() if k == "table" or v is not None})

    def command(self, work: str) -> str:
        """The ``n2n paper`` command line that makes these settings (defaults left out)."""
        defaults = PaperSettings(self.table)
        words = ["n2n", "paper", str(self.table), "--work", work]
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "table" or value == getattr(defaults, field.name):
                continue
            words += [flag(field.name), flag_value(value)]
        return shlex.join(words)


def flag(name: str) -> str:
    """The command-line flag of setting ``name``."""
    return "--" + name.replace("_", "-")


def json_ready(value: Any) -> Any:
    """``value`` with tuples turned into lists, as JSON reads it back."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    return value


def flag_value(value: Any) -> str:
    """A setting's value as its flag takes it (``0.125``, ``reinforce,random``)."""
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return ",".join(f"{a}:{b}" for a, b in value)
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def tables_named(tables: Iterable[int]) -> str:
    """``table 1``, ``tables 1 and 4`` or ``tables 1, 3 and 4`` (in the order given, each
    once), for messages."""
    numbers = [str(table) for table in dict.fromkeys(tables)]
    if len(numbers) == 1:
        return f"table {numbers[0]}"
    return f"tables {', '.join(numbers[:-1])} and {numbers[-1]}"


def _seed_list(name: str, seeds: Any) -> None:
    if not seeds:
        raise ValueError(f"{name} must hold at least one seed")
    for seed in seeds:
        validate.integer(name, seed, minimum=0)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{name} must be distinct, got {list(seeds)}")
