"""The two N2N-Bench search spaces: every episode of an MDP, numbered.

An episode of ``N2NRemoval-v0`` is a keep mask over the teacher's removable layers (the
fixed ones are always kept), and an episode of ``N2NShrink-v0`` is one action (0-9, keep
10%-100%) per shrink variable. Each space numbers its episodes ``0 .. size - 1`` so that a
table can store one row per episode and a lookup is an array index:

* removal: bit ``j`` (least significant first) of the index is the action at the ``j``-th
  removable layer (1 keep, 0 remove);
* shrink: the index written in base 10 with one digit per variable, the first variable
  most significant, is the action sequence.

Pure Python, like :mod:`n2n_env.arch`: no torch import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from n2n_env.arch import Architecture

SPACES = ("removal", "shrink")
SHRINK_ACTIONS = 10
SpaceName = Literal["removal", "shrink"]


@dataclass(frozen=True)
class RemovalSpace:
    """Every keep mask of ``teacher`` (2^k episodes for k removable layers)."""

    teacher: Architecture
    name: SpaceName = field(default="removal", init=False)

    @property
    def removable_layers(self) -> tuple[int, ...]:
        """Indices of the layers an episode decides on (all but flatten and the output)."""
        return tuple(i for i, free in enumerate(self.teacher.removable()) if free)

    @property
    def size(self) -> int:
        return 2 ** len(self.removable_layers)

    @property
    def episode_length(self) -> int:
        return len(self.teacher.layers)

    def actions(self, index: int) -> tuple[int, ...]:
        """The environment's action at every layer (fixed layers: 1, keep)."""
        self._check(index)
        actions = [1] * len(self.teacher.layers)
        for bit, layer in enumerate(self.removable_layers):
            actions[layer] = (index >> bit) & 1
        return tuple(actions)

    def index(self, actions: Sequence[int]) -> int:
        """The episode number of an action sequence (one action per layer)."""
        if len(actions) != len(self.teacher.layers):
            raise ValueError(f"a removal episode has {len(self.teacher.layers)} actions, "
                             f"got {len(actions)}")
        return sum(int(actions[layer] != 0) << bit
                   for bit, layer in enumerate(self.removable_layers))

    def student(self, index: int) -> Architecture:
        return self.teacher.remove([bool(a) for a in self.actions(index)])

    def _check(self, index: int) -> None:
        if not 0 <= index < self.size:
            raise ValueError(f"episode {index} is outside the removal space [0, {self.size})")


@dataclass(frozen=True)
class ShrinkSpace:
    """Every shrink vector of ``start`` (10^V episodes for V shrink variables)."""

    start: Architecture
    include_kernels: bool = False
    name: SpaceName = field(default="shrink", init=False)

    @property
    def num_variables(self) -> int:
        return len(self.start.shrink_variables(self.include_kernels))

    @property
    def size(self) -> int:
        return SHRINK_ACTIONS ** self.num_variables

    @property
    def episode_length(self) -> int:
        return self.num_variables

    def actions(self, index: int) -> tuple[int, ...]:
        """The action (0-9) at every variable, the first variable first."""
        if not 0 <= index < self.size:
            raise ValueError(f"episode {index} is outside the shrink space [0, {self.size})")
        digits = []
        for _ in range(self.num_variables):
            index, digit = divmod(index, SHRINK_ACTIONS)
            digits.append(digit)
        return tuple(reversed(digits))

    def index(self, actions: Sequence[int]) -> int:
        """The episode number of an action sequence (one action per variable)."""
        if len(actions) != self.num_variables:
            raise ValueError(f"a shrink episode has {self.num_variables} actions, "
                             f"got {len(actions)}")
        number = 0
        for action in actions:
            if not 0 <= int(action) < SHRINK_ACTIONS:
                raise ValueError(f"shrink action {action!r} not allowed; use 0-9")
            number = number * SHRINK_ACTIONS + int(action)
        return number

    def student(self, index: int) -> Architecture:
        factors = [(action + 1) / SHRINK_ACTIONS for action in self.actions(index)]
        return self.start.shrink(factors, self.include_kernels)


Space = RemovalSpace | ShrinkSpace


def make_space(name: str, teacher: Architecture, start: Architecture | None = None,
               include_kernels: bool = False) -> Space:
    """The space ``name`` ("removal" or "shrink") over ``teacher``; a shrink space starts
    from ``start`` (default: the teacher itself)."""
    if name == "removal":
        if start is not None:
            raise ValueError("start is for the shrink space; the removal space always starts "
                             "from the teacher")
        return RemovalSpace(teacher)
    if name == "shrink":
        return ShrinkSpace(start if start is not None else teacher, include_kernels)
    raise ValueError(f"unknown space {name!r}; allowed: {', '.join(SPACES)}")


@dataclass(frozen=True)
class Catalogue:
    """A space's episodes mapped onto its distinct students."""

    row_student: np.ndarray
    students: tuple[Architecture, ...]
    reasons: tuple[str | None, ...]

    @property
    def trainable(self) -> tuple[int, ...]:
        return tuple(i for i, reason in enumerate(self.reasons) if reason is None)


def catalogue(space: Space) -> Catalogue:
    """Every episode's student, deduplicated by signature in order of first appearance."""
    index_of: dict[str, int] = {}
    students: list[Architecture] = []
    rows = np.empty(space.size, np.int32)
    for episode in range(space.size):
        student = space.student(episode)
        signature = student.signature()
        if signature not in index_of:
            index_of[signature] = len(students)
            students.append(student)
        rows[episode] = index_of[signature]
    return Catalogue(rows, tuple(students), tuple(s.degenerate_reason() for s in students))
