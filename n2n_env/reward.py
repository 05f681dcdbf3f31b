"""The N2N reward (section 3.3), its constraint relaxation (3.3.1) and degenerate cases.

``R = C(2 - C) * A / A_teacher`` with ``C = 1 - size(student) / size(teacher)``, size being
parameters (the paper), FLOPs or latency. The non-linear ``C(2 - C)`` rewards compression with
diminishing returns, so a small, inaccurate student scores below a larger, accurate one
(appendix 11.1: A=1, C=0.25 gives 0.4375; A=0.25, C=1 gives 0.25). The paper defines
C in [0, 1]; a student larger than its teacher (removing poolings can enlarge the
classifier) has a negative raw ratio, which the reward clips to C = 0, so R = 0: no
compression, no reward (unclipped, C(2 - C) would fall without bound, to -30 and below).
Degenerate architectures (appendix 11.2) get -1.

Constraints ``Ax <= b`` on anything an evaluator measures are relaxed as the paper does:
a violating student gets ``eps_t (R + 1) - 1``, with ``eps_t`` falling from 1 to 0 over a
number of episodes (:class:`EpsilonSchedule`), so early exploration is not cut off by a
cliff of -1 rewards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from n2n_env import validate

DEGENERATE_REWARD = -1.0
COMPRESSION_METRICS = ("params", "flops", "latency")
"""What C measures: parameters (the paper), FLOPs, or latency (needs an evaluator that
times students, :class:`n2n_env.latency.LatencyEvaluator`)."""
LATENCY = "latency_ms"
"""The measured quantity, in ``Evaluation.extra``, that latency constraints bound: the
student's estimated inference latency in milliseconds."""
LATENCY_COMPRESSION = "latency_compression"
"""``Evaluation.extra`` key of 1 - latency(student) / latency(teacher)."""


def compression_ratio(student_size: float, teacher_size: float) -> float:
    """C = 1 - student/teacher (1 means everything removed, 0 means nothing)."""
    if teacher_size <= 0:
        raise ValueError(f"teacher size must be positive, got {teacher_size}")
    if student_size < 0:
        raise ValueError(f"student size must be >= 0, got {student_size}")
    return 1.0 - student_size / teacher_size


def n2n_reward(compression: float, accuracy: float, teacher_accuracy: float) -> float:
    """R = C(2 - C) * A / A_teacher, the paper's reward for a non-degenerate student, with
    C clipped to [0, 1] as the paper defines it."""
    if not teacher_accuracy > 0:
        raise ValueError(f"teacher accuracy must be positive, got {teacher_accuracy}")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
    if compression > 1.0:
        raise ValueError(f"compression must be <= 1, got {compression}")
    compression = max(compression, 0.0)
    return compression * (2.0 - compression) * accuracy / teacher_accuracy


@dataclass(frozen=True)
class LinearConstraint:
    """One row of ``A x <= b``: ``sum(coefficients[q] * measured[q]) <= bound``."""

    coefficients: Mapping[str, float]
    bound: float
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.coefficients, Mapping) or not self.coefficients:
            raise TypeError(f"coefficients must be a non-empty dict of quantity names to "
                            f"numbers, got {self.coefficients!r}")
        for quantity, weight in self.coefficients.items():
            if not isinstance(quantity, str):
                raise TypeError(f"constraint quantities must be names (str), got {quantity!r}")
            validate.number(f"coefficient of {quantity!r}", weight)
        bound = validate.number("constraint bound", self.bound)
        if all(weight >= 0 for weight in self.coefficients.values()) and not bound > 0:
            # Every measured quantity is >= 0, so such a row would fail every student.
            raise ValueError(f"constraint bound must be > 0 when every coefficient is >= 0 "
                             f"(no student could meet it), got {self.bound!r}")

    @classmethod
    def upper_bound(cls, quantity: str, bound: float) -> LinearConstraint:
        """The common case: one measured quantity at most ``bound`` (e.g. params <= 1e6)."""
        bound = validate.number(f"constraint {quantity!r}", bound, above=0)
        return cls({quantity: 1.0}, bound, name=f"{quantity} <= {bound:g}")

    def value(self, measured: Mapping[str, float]) -> float:
        missing = sorted(set(self.coefficients) - set(measured))
        if missing:
            raise ValueError(f"constraint {self.describe()} needs {missing}, but the evaluator "
                             f"measured only {sorted(measured)}")
        return sum(weight * float(measured[q]) for q, weight in self.coefficients.items())

    def satisfied(self, measured: Mapping[str, float]) -> bool:
        return self.value(measured) <= self.bound

    def excess(self, measured: Mapping[str, float]) -> float:
        """How far ``measured`` is over this row, relative to its bound: 0 when the row
        is met, 0.5 for a student at 1.5 times an upper bound, inf when a quantity is
        NaN. A row bounded by 0 (possible only with a negative coefficient) is measured
        against the size of its terms, sum(|w_q * m_q|), so it stays scale-free."""
        value = self.value(measured)
        if math.isnan(value):
            return math.inf
        scale = abs(self.bound) or sum(abs(weight * float(measured[quantity]))
                                       for quantity, weight in self.coefficients.items())
        return max(0.0, value - self.bound) / (scale or 1.0)

    def describe(self) -> str:
        if self.name:
            return self.name
        terms = " + ".join(f"{w:g}*{q}" for q, w in self.coefficients.items())
        return f"{terms} <= {self.bound:g}"


def parse_constraints(
    constraints: Mapping[str, float] | Sequence[LinearConstraint] | None,
) -> tuple[LinearConstraint, ...]:
    """Accept ``{"params": 1e6, "flops": 5e7}`` (upper bounds) or LinearConstraint rows."""
    if constraints is None:
        return ()
    if isinstance(constraints, Mapping):
        return tuple(LinearConstraint.upper_bound(q, b) for q, b in constraints.items())
    rows = tuple(constraints)
    for row in rows:
        if not isinstance(row, LinearConstraint):
            raise TypeError(f"constraints must be a mapping of upper bounds or LinearConstraint "
                            f"rows, got {type(row).__name__}")
    return rows


def total_excess(constraints: Sequence[LinearConstraint],
                 measured: Mapping[str, float]) -> float:
    """The summed relative excess of ``measured`` over ``constraints`` (0 when all are
    met): how a stage ranks students that meet none of them."""
    return sum(row.excess(measured) for row in constraints)


@dataclass
class EpsilonSchedule:
    """eps_t for the relaxed constraint penalty: 1 at episode 0, falling linearly to 0 at
    ``anneal_episodes`` and staying there (``anneal_episodes=0``: hard constraints from the
    start). Environments own one and call :meth:`step` once per finished episode."""

    anneal_episodes: int = 0
    episode: int = field(default=0)

    def __post_init__(self) -> None:
        validate.integer("anneal_episodes", self.anneal_episodes, minimum=0)

    @property
    def epsilon(self) -> float:
        if self.anneal_episodes == 0:
            return 0.0
        return max(0.0, 1.0 - self.episode / self.anneal_episodes)

    def step(self) -> None:
        self.episode += 1


@dataclass(frozen=True)
class RewardBreakdown:
    """The terminal reward and its parts, as environments report them in ``info``."""

    reward: float
    compression_reward: float
    accuracy_reward: float
    unconstrained: float
    epsilon: float
    violated: tuple[str, ...]
    degenerate: bool
    excess: float
    """The student's relative excess over its constraints, summed over the rows
    (:meth:`LinearConstraint.excess`): 0 when it meets them all, and for a degenerate
    student, which is not measured. A two-stage run hands the next stage the valid
    student with the least excess when no student met the constraints."""


def constrained_reward(
    compression: float,
    accuracy: float,
    teacher_accuracy: float,
    measured: Mapping[str, float] | None = None,
    constraints: Sequence[LinearConstraint] = (),
    epsilon: float = 0.0,
    degenerate: bool = False,
) -> RewardBreakdown:
    """The full terminal reward: -1 if degenerate, else R, relaxed if constraints fail."""
    if degenerate:
        return RewardBreakdown(DEGENERATE_REWARD, 0.0, 0.0, DEGENERATE_REWARD, epsilon, (), True,
                               0.0)
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    base = n2n_reward(compression, accuracy, teacher_accuracy)
    violated = tuple(c.describe() for c in constraints if not c.satisfied(measured or {}))
    reward = epsilon * (base + 1.0) - 1.0 if violated else base
    clipped = max(compression, 0.0)
    excess = total_excess(constraints, measured or {}) if violated else 0.0
    return RewardBreakdown(reward, clipped * (2.0 - clipped),
                           accuracy / teacher_accuracy, base, epsilon, violated, False, excess)
