"""Evaluators: what a candidate student is worth, measured once per terminal state.

Every evaluator answers ``evaluate(arch) -> Evaluation``. :class:`Evaluation` carries the
validation accuracy (the only accuracy a reward may see), sizes, cost and what went wrong,
if anything. :class:`MockEvaluator` is an instant, deterministic stand-in for tests,
teaching and RL benchmarking; :class:`~n2n_env.distill.DistillationEvaluator` trains the
student for real; :class:`~n2n_env.cache.CachedEvaluator` remembers results on disk.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from n2n_env import validate
from n2n_env.arch import MAX_CLASSIFIER_INPUTS, Architecture


@dataclass(frozen=True)
class Evaluation:
    """The measured outcome of one candidate.

    ``degenerate_reason`` (appendix 11.2) and ``failure`` (training diverged, ran out of
    memory) both mean the candidate gets no accuracy-based reward.
    """

    accuracy: float
    params: int
    flops: int
    compression: float
    """1 - params(student) / params(teacher)."""
    flops_compression: float
    """1 - flops(student) / flops(teacher)."""
    wall_seconds: float = 0.0
    optimizer_steps: int = 0
    samples_seen: int = 0
    cache_hit: bool = False
    degenerate_reason: str | None = None
    failure: str | None = None
    extra: Mapping[str, float] = field(default_factory=dict)
    """Further measurements an evaluator reports (constraints may bound them)."""
    trained: bool = True
    """False for a student an environment scored without training it, because its reward
    could not depend on its accuracy (:meth:`n2n_env.env_common.TerminalReward.untrained`);
    its accuracy is then 0 and means nothing."""

    @property
    def ok(self) -> bool:
        """True when the accuracy is meaningful (trained, neither degenerate nor failed)."""
        return self.degenerate_reason is None and self.failure is None and self.trained

    @property
    def unrewarded(self) -> bool:
        """True for a degenerate or failed student, which gets the degenerate reward."""
        return self.degenerate_reason is not None or self.failure is not None

    def measured(self) -> dict[str, float]:
        """Quantities that constraints may bound: params, flops, accuracy and the extras."""
        return {"params": float(self.params), "flops": float(self.flops),
                "accuracy": self.accuracy, **{k: float(v) for k, v in self.extra.items()}}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["extra"] = dict(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        return cls(**{**data, "extra": dict(data.get("extra", {}))})


@runtime_checkable
class Evaluator(Protocol):
    """Scores architectures derived from one teacher on one dataset."""

    teacher_architecture: Architecture
    teacher_accuracy: float

    def evaluate(self, arch: Architecture) -> Evaluation:
        """Measure ``arch``; never raises for a bad candidate (see Evaluation)."""
        ...

    def evaluate_many(self, archs: Sequence[Architecture]) -> list[Evaluation]:
        """Measure a batch: one Evaluation per architecture, in order. Identical students
        in a batch are trained once (the repeats come back with ``cache_hit=True``)."""
        ...

    def identity(self) -> Mapping[str, str]:
        """Everything besides the architecture that decides the result (teacher, dataset,
        recipe, seed); a persistent cache keys on it."""
        ...


def evaluate_each(evaluator: Evaluator, archs: Sequence[Architecture]) -> list[Evaluation]:
    """``evaluate_many`` for an evaluator that measures one student at a time: each distinct
    student once, in order of first appearance; a repeat is the first result marked
    ``cache_hit=True``, as a cache would answer it."""
    first: dict[Architecture, Evaluation] = {}
    results = []
    for arch in archs:
        if arch in first:
            results.append(dataclasses.replace(first[arch], cache_hit=True))
        else:
            first[arch] = evaluator.evaluate(arch)
            results.append(first[arch])
    return results


def unscored(teacher: Architecture, arch: Architecture, reason: str | None = None,
             failure: str | None = None, **costs: Any) -> Evaluation:
    """An Evaluation without accuracy, for degenerate or failed candidates."""
    params = flops = 0
    if arch.degenerate_reason(max_classifier_inputs=2**62) is None:
        params, flops = arch.num_params(), arch.flops()
    return Evaluation(
        accuracy=0.0, params=params, flops=flops,
        compression=1.0 - params / teacher.num_params() if params else 0.0,
        flops_compression=1.0 - flops / teacher.flops() if flops else 0.0,
        degenerate_reason=reason, failure=failure, **costs,
    )


class MockEvaluator:
    """NOT REAL: an instant, deterministic accuracy model, for tests, CI, docs and teaching.

    With ``c = params(student) / params(teacher)`` and ``d`` the fraction of the teacher's
    conv and linear layers still present,
    ``accuracy = chance + (A_teacher - chance) * (1 - exp(-c / capacity_scale))
    * (1 - depth_penalty * (1 - d))``. Accuracy rises smoothly with capacity and depth and
    saturates near the teacher's, so the N2N reward has an interior optimum like the real
    one; it says nothing about any real network.
    """

    def __init__(self, teacher_architecture: Architecture, teacher_accuracy: float = 0.99,
                 capacity_scale: float = 0.03, depth_penalty: float = 0.3,
                 max_classifier_inputs: int = MAX_CLASSIFIER_INPUTS) -> None:
        if not isinstance(teacher_architecture, Architecture):
            raise TypeError(f"teacher_architecture must be an Architecture, got "
                            f"{type(teacher_architecture).__name__}")
        teacher_accuracy = validate.number("teacher_accuracy", teacher_accuracy, above=0,
                                           at_most=1)
        capacity_scale = validate.number("capacity_scale", capacity_scale, above=0)
        depth_penalty = validate.number("depth_penalty", depth_penalty, at_least=0, at_most=1)
        max_classifier_inputs = validate.integer("max_classifier_inputs",
                                                 max_classifier_inputs, minimum=1)
        self.teacher_architecture = teacher_architecture
        self.teacher_accuracy = teacher_accuracy
        self.capacity_scale = capacity_scale
        self.depth_penalty = depth_penalty
        self.max_classifier_inputs = max_classifier_inputs
        self._teacher_depth = _weighted_depth(teacher_architecture)

    def identity(self) -> Mapping[str, str]:
        return {"evaluator": "mock", "teacher": self.teacher_architecture.signature(),
                "recipe": f"{self.teacher_accuracy}|{self.capacity_scale}|{self.depth_penalty}"
                          f"|{self.max_classifier_inputs}"}

    def evaluate_many(self, archs: Sequence[Architecture]) -> list[Evaluation]:
        return evaluate_each(self, archs)

    def evaluate(self, arch: Architecture) -> Evaluation:
        reason = arch.degenerate_reason(self.max_classifier_inputs)
        if reason is not None:
            return unscored(self.teacher_architecture, arch, reason)
        chance = 1.0 / arch.num_classes
        capacity = arch.num_params() / self.teacher_architecture.num_params()
        depth = min(1.0, _weighted_depth(arch) / self._teacher_depth)
        quality = (1.0 - math.exp(-capacity / self.capacity_scale)) * (
            1.0 - self.depth_penalty * (1.0 - depth))
        accuracy = chance + (self.teacher_accuracy - chance) * quality
        params, flops = arch.num_params(), arch.flops()
        return Evaluation(
            accuracy=accuracy, params=params, flops=flops,
            compression=1.0 - params / self.teacher_architecture.num_params(),
            flops_compression=1.0 - flops / self.teacher_architecture.flops(),
        )


def _weighted_depth(arch: Architecture) -> int:
    return sum(layer.kind in ("conv", "linear") for layer in arch.layers)
