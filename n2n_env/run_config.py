"""The typed configuration of an ``n2n compress`` run, as it is stored in ``state.json``.

A :class:`RunConfig` says everything that decides a run's result: the teacher and the
data, the stages and the agent, the distillation recipe that scores candidates, the
budgets and the seed. It is checked when it is made, before any teacher is trained, and
a resumed run reads it back from its run directory. Where students train (the backend)
and on which device do not change what a run finds for a given seed, except that a
parallel backend plays each update's episodes side by side (see :mod:`n2n_env.pipeline`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agents import registry
from agents.search import EPISODES_PER_UPDATE
from n2n_env import validate, zoo
from n2n_env.action_wall import wall_rows
from n2n_env.distill import DistillRecipe
from n2n_env.env_factory import check_quantities
from n2n_env.latency import LatencySettings
from n2n_env.reward import COMPRESSION_METRICS, LATENCY, parse_constraints
from n2n_env.stack import MOCK_OPTIONS, BackendSettings, EvaluatorSettings
from n2n_env.teacher_spec import check_teacher_name, parse_teacher_spec

STAGES = ("removal", "shrink")
"""The paper's two stages, in the only order they can run."""
DEFAULT_ITERATIONS = 40
"""Iterations per stage of the default run, chosen so that conv4 on digits (search, both
fine-tunings and, on first use, the teacher) finishes in under 10 minutes on 2 CPU cores."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what an ``n2n compress`` run finds."""

    teacher: str = "conv4"
    """A zoo name or an imported model (``torchvision:NAME``, ``file.py:FUNCTION``), trained
    on first use and cached, or a teacher checkpoint ``.pt``."""
    dataset: str = "digits"
    data_root: str | None = None
    """Folder holding the dataset's files (None: the package's default places)."""
    stages: tuple[str, ...] = STAGES
    """``removal``, ``shrink`` or both, in that order."""
    agent: str = "reinforce"
    """A name from ``agents.registry.AGENT_NAMES``, or an agent spec with settings,
    ``NAME:key=value,...`` (:mod:`agents.agent_spec`), kept in its canonical spelling."""
    iterations: int = DEFAULT_ITERATIONS
    """Policy updates per stage, of ``EPISODES_PER_UPDATE`` episodes each."""
    constraints: Mapping[str, float] = field(default_factory=dict)
    """Upper bounds such as ``{"params": 20000}`` (paper section 3.3.1)."""
    anneal_episodes: int | None = None
    """Episodes of each stage over which eps_t falls from 1 to 0; None: half the stage's
    episodes (:meth:`resolved` fixes it when a run starts), 0: hard constraints."""
    evaluator: str = "distill"
    """``distill`` (real training) or ``mock`` (instant, NOT REAL)."""
    recipe: DistillRecipe = field(default_factory=DistillRecipe)
    """How every candidate is distilled before it is scored."""
    mock_options: Mapping[str, float] = field(default_factory=dict)
    """MockEvaluator keyword arguments (``evaluator="mock"`` only)."""
    policy_init: str | None = None
    """A saved removal policy to start stage 1 from (reinforce and actor-critic only)."""
    seed: int = 0
    """Seed of the agents' sampling (and of the final fine-tuning)."""
    teacher_width: float = 1.0
    """Width multiplier of a zoo or imported teacher trained here."""
    teacher_epochs: int | None = None
    """Epochs to train a zoo teacher on first use (None: the dataset recipe's)."""
    finetune_epochs: int | None = None
    """Epochs of the final training (None: the teacher recipe's)."""
    backend: BackendSettings = field(default_factory=BackendSettings)
    """Where students train; a resumed run may change it."""
    teacher_weights: str | None = None
    """A state_dict for an imported teacher (``torchvision:NAME``, ``file.py:FUNCTION``),
    used as it is instead of training the model."""
    compression_metric: str = "params"
    """What C measures in the reward: ``params`` (the paper), ``flops`` or ``latency``."""
    latency: LatencySettings | None = None
    """How students' latency is timed; set to the defaults when the compression metric or
    a ``latency_ms`` constraint needs it (None: latency is not measured)."""
    action_wall: bool = False
    """Mask the actions that leave no way to meet the upper bounds (AMC's action wall)."""

    def __post_init__(self) -> None:
        set_field = object.__setattr__  # normalise once; the dataclass stays frozen
        for name in ("teacher", "data_root", "policy_init", "teacher_weights"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                set_field(self, name, os.fspath(value))
        if isinstance(self.stages, str) or not isinstance(self.stages, tuple | list):
            raise TypeError(f"stages must be a sequence of stage names, got {self.stages!r}")
        set_field(self, "stages", tuple(self.stages))
        set_field(self, "constraints", dict(self.constraints or {}))
        set_field(self, "mock_options", dict(self.mock_options or {}))
        set_field(self, "latency", LatencySettings.coerce(self.latency))
        # Files named by the run are stored absolute, so that a resumed run finds them from
        # any directory.
        if isinstance(self.teacher_weights, str):
            set_field(self, "teacher_weights", os.path.abspath(self.teacher_weights))
        spec = parse_teacher_spec(self.teacher) if isinstance(self.teacher, str) else None
        if spec is not None and spec.path is not None:
            set_field(self, "teacher", f"{spec.path.resolve()}:{spec.name}")
        if self.latency is not None and self.latency.table is not None:
            set_field(self, "latency", dataclasses.replace(
                self.latency, table=os.path.abspath(self.latency.table)))
        if self.latency is None and (self.compression_metric == "latency"
                                     or LATENCY in self.constraints):
            set_field(self, "latency", LatencySettings())
        self._check()

    def _check(self) -> None:
        """Reject bad settings now, before any teacher is trained, naming what is allowed."""
        check_teacher_name(self.teacher, zoo.names())
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages or len(set(self.stages)) != len(self.stages):
            raise ValueError(f"stages must be distinct names from {', '.join(STAGES)}, in "
                             f"order; got {list(self.stages)}")
        if list(self.stages) != [s for s in STAGES if s in self.stages]:
            raise ValueError("stage 'removal' must come before 'shrink'")
        validate.integer("iterations", self.iterations, minimum=1)
        for name in ("finetune_epochs", "teacher_epochs"):
            if getattr(self, name) is not None:
                validate.integer(name, getattr(self, name), minimum=1)
        if self.anneal_episodes is not None:
            validate.integer("anneal_episodes", self.anneal_episodes, minimum=0)
        validate.integer("seed", self.seed, minimum=0)
        check_quantities(self.constraints or None, self.evaluator)
        for quantity, bound in self.constraints.items():
            validate.number(f"constraint on {quantity}", bound, above=0)
        if not isinstance(self.recipe, DistillRecipe):
            raise TypeError(f"recipe must be a DistillRecipe, got {self.recipe!r}")
        validate.known_keys("mock_options", self.mock_options, MOCK_OPTIONS)
        spec = registry.check_spec(self.agent)
        object.__setattr__(self, "agent", spec.label)  # one spelling per agent and settings
        if self.policy_init is not None:
            if (spec.name not in registry.TRANSFERABLE or spec.settings
                    or self.stages[0] != "removal"):
                raise ValueError(f"policy_init needs the removal stage and an agent among "
                                 f"{', '.join(registry.TRANSFERABLE)}, without settings (the "
                                 "policy file keeps its own)")
            registry.check_policy_init(spec.name, self.policy_init)
        validate.choice("compression_metric", self.compression_metric, COMPRESSION_METRICS)
        validate.flag("action_wall", self.action_wall)
        if self.action_wall:
            wall_rows(parse_constraints(self.constraints or None))
        self.evaluator_settings()  # dataset, evaluator, widths and backend, checked there

    def resolved(self) -> RunConfig:
        """This configuration with ``anneal_episodes`` fixed (half the stage's episodes
        when None), as a run stores it: extending a run later keeps its annealing."""
        if self.anneal_episodes is not None:
            return self
        return dataclasses.replace(
            self, anneal_episodes=self.iterations * EPISODES_PER_UPDATE // 2)

    def evaluator_settings(self, *, teacher: str | None = None, cache: str | None = None,
                           device: str | None = None, progress: bool = True
                           ) -> EvaluatorSettings:
        """The evaluator stack's settings for this run (``teacher``: the checkpoint the
        run resolved its teacher to)."""
        return EvaluatorSettings(
            teacher=self.teacher if teacher is None else teacher, dataset=self.dataset,
            data_root=self.data_root, evaluator=self.evaluator, recipe=self.recipe,
            mock_options=self.mock_options, cache=cache, device=device,
            teacher_width=self.teacher_width, teacher_progress=progress, backend=self.backend,
            teacher_weights=self.teacher_weights if teacher is None else None,
            latency=self.latency)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (``state.json``'s ``config``)."""
        data = dataclasses.asdict(self)
        data["stages"] = list(self.stages)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """A configuration written by :meth:`to_dict`; ValueError naming the problem if it
        is not one."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown run settings {unknown}")
        values = dict(data)
        if "recipe" in values:
            values["recipe"] = DistillRecipe(**values["recipe"])
        if "backend" in values:
            values["backend"] = BackendSettings(**values["backend"])
        if values.get("latency") is not None:
            values["latency"] = LatencySettings(**values["latency"])
        if "stages" in values:
            values["stages"] = tuple(values["stages"])
        return cls(**values)

    @classmethod
    def from_legacy(cls, settings: Mapping[str, Any], budget: Mapping[str, Any]
                    ) -> RunConfig:
        """The configuration of a run directory written before RunConfig existed (its
        ``settings`` dict and ``budget``), so that such runs still resume."""
        values = {k: v for k, v in settings.items()
                  if k not in ("evaluator_kwargs",)}
        extra = dict(settings.get("evaluator_kwargs") or {})
        if settings.get("evaluator") == "mock":
            values["mock_options"] = extra
        else:
            values["recipe"] = DistillRecipe(**{
                k: v for k, v in extra.items() if k in DistillRecipe.__dataclass_fields__})
        values["stages"] = tuple(values.get("stages", STAGES))
        values["iterations"] = budget.get("iterations", DEFAULT_ITERATIONS)
        values["finetune_epochs"] = budget.get("finetune_epochs")
        return cls(**values)
