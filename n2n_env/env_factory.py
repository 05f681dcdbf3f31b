"""``gym.make`` entry points: keyword arguments in, an environment on a ready evaluator out.

The environment classes take a ready evaluator (:mod:`n2n_env.stack`) and their own
options. ``gym.make("N2NRemoval-v0", teacher=..., evaluator=..., ...)`` lands here: the
keyword arguments that describe the evaluator become :class:`~n2n_env.stack.
EvaluatorSettings`, are checked now (before any teacher is trained), and are assembled
into a lazy stack; the rest go to the environment. The N2N-Bench twins load their table
here, for the same reason. ``gym.make_vec(..., vectorization_mode="vector_entry_point")``
lands in the ``make_*_vector_env`` functions: one evaluator stack (or one table) for all
sub-environments of an :class:`~n2n_env.vector_env.N2NVectorEnv`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from n2n_env import validate
from n2n_env.arch import Architecture
from n2n_env.bench.lookup import TableEvaluator, load_table
from n2n_env.bench.table import BenchTable
from n2n_env.env_common import N2NEnvBase
from n2n_env.latency import LatencyEvaluator, LatencyMeter, LatencySettings
from n2n_env.reward import LATENCY, parse_constraints
from n2n_env.stack import (
    IN_MEMORY,
    MEASURED,
    MOCK_OPTIONS,
    BackendSettings,
    EvaluatorSettings,
    LazyEvaluator,
    LoadedTeacher,
    assemble,
    is_evaluator,
)

if TYPE_CHECKING:
    from n2n_env.vector_env import N2NVectorEnv

ENV_OPTIONS = ("constraints", "anneal_episodes", "episodes_played", "compression_metric",
               "max_layers", "render_mode", "invalid_action", "action_wall")
"""Keyword arguments that both environments take themselves."""
SHRINK_OPTIONS = ("start", "include_kernels")
"""Further keyword arguments of the shrink environment."""
DISTILL_OPTIONS = ("seed", "max_classifier_inputs")
"""``evaluator_kwargs`` for distillation besides the DistillRecipe fields."""


def make_removal_env(**kwargs: Any) -> Any:
    """``gym.make("N2NRemoval-v0", **kwargs)``."""
    from n2n_env.removal_env import N2NRemovalEnv

    options, stack_kwargs = _split(kwargs, ENV_OPTIONS)
    return N2NRemovalEnv(_evaluator(stack_kwargs, options), **options)


def make_shrink_env(**kwargs: Any) -> Any:
    """``gym.make("N2NShrink-v0", **kwargs)``."""
    from n2n_env.shrink_env import N2NShrinkEnv

    options, stack_kwargs = _split(kwargs, (*ENV_OPTIONS, *SHRINK_OPTIONS))
    return N2NShrinkEnv(_evaluator(stack_kwargs, options), **options)


def make_removal_bench_env(table: BenchTable | str | os.PathLike[str] | None = None,
                           reward_seed: str = "draw", **options: Any) -> Any:
    """``gym.make("N2NRemovalBench-v0", table=None, reward_seed="draw", **options)``."""
    from n2n_env.bench.envs import N2NRemovalBenchEnv

    _check_options(options, ENV_OPTIONS, "N2NRemovalBench-v0")
    return N2NRemovalBenchEnv(TableEvaluator(load_table(table, "removal"), reward_seed),
                              **options)


def make_shrink_bench_env(table: BenchTable | str | os.PathLike[str] | None = None,
                          reward_seed: str = "draw", **options: Any) -> Any:
    """``gym.make("N2NShrinkBench-v0", table=None, reward_seed="draw", **options)``."""
    from n2n_env.bench.envs import N2NShrinkBenchEnv

    _check_options(options, ENV_OPTIONS, "N2NShrinkBench-v0")
    return N2NShrinkBenchEnv(TableEvaluator(load_table(table, "shrink"), reward_seed),
                             **options)


for _factory in (make_removal_env, make_shrink_env, make_removal_bench_env,
                 make_shrink_bench_env):
    _factory.metadata = N2NEnvBase.metadata  # type: ignore[attr-defined]  # gym.make reads it


def make_removal_vector_env(num_envs: int = 1, **kwargs: Any) -> N2NVectorEnv:
    """``gym.make_vec("N2NRemoval-v0", num_envs, vectorization_mode="vector_entry_point",
    **kwargs)``: ``num_envs`` removal environments on ONE evaluator stack, whose
    ``evaluate_many`` trains the students of a step as one batch (on ``workers`` workers
    with ``backend="processes"`` or ``"ray"``). ``kwargs`` are those of ``gym.make``."""
    from n2n_env.removal_env import N2NRemovalEnv
    from n2n_env.vector_env import N2NVectorEnv

    count = _num_envs(num_envs)
    options, stack_kwargs = _split(kwargs, ENV_OPTIONS)
    evaluator = _evaluator(stack_kwargs, options)
    return N2NVectorEnv([N2NRemovalEnv(evaluator, **options) for _ in range(count)])


def make_shrink_vector_env(num_envs: int = 1, **kwargs: Any) -> N2NVectorEnv:
    """``gym.make_vec("N2NShrink-v0", num_envs, vectorization_mode="vector_entry_point",
    **kwargs)``: as :func:`make_removal_vector_env`, for the shrink environment."""
    from n2n_env.shrink_env import N2NShrinkEnv
    from n2n_env.vector_env import N2NVectorEnv

    count = _num_envs(num_envs)
    options, stack_kwargs = _split(kwargs, (*ENV_OPTIONS, *SHRINK_OPTIONS))
    evaluator = _evaluator(stack_kwargs, options)
    return N2NVectorEnv([N2NShrinkEnv(evaluator, **options) for _ in range(count)])


def make_removal_bench_vector_env(num_envs: int = 1, table: BenchTable | str | os.PathLike[str]
                                  | None = None, reward_seed: str = "draw",
                                  **options: Any) -> N2NVectorEnv:
    """``gym.make_vec("N2NRemovalBench-v0", num_envs, vectorization_mode=
    "vector_entry_point", table=None, reward_seed="draw", **options)``: ``num_envs`` bench
    environments on one table, loaded once, and one TableEvaluator. Each lookup draws its
    seed with the RNG of the sub-environment that asks (see N2NVectorEnv), so a seed gives
    the same episodes every time, and the same as the sub-environments played alone."""
    from n2n_env.bench.envs import N2NRemovalBenchEnv
    from n2n_env.vector_env import N2NVectorEnv

    count = _num_envs(num_envs)
    _check_options(options, ENV_OPTIONS, "N2NRemovalBench-v0")
    evaluator = TableEvaluator(load_table(table, "removal"), reward_seed)
    return N2NVectorEnv([N2NRemovalBenchEnv(evaluator, **dict(options))
                         for _ in range(count)])


def make_shrink_bench_vector_env(num_envs: int = 1, table: BenchTable | str | os.PathLike[str]
                                 | None = None, reward_seed: str = "draw",
                                 **options: Any) -> N2NVectorEnv:
    """``gym.make_vec("N2NShrinkBench-v0", num_envs, ...)``: as
    :func:`make_removal_bench_vector_env`, for the shrink table."""
    from n2n_env.bench.envs import N2NShrinkBenchEnv
    from n2n_env.vector_env import N2NVectorEnv

    count = _num_envs(num_envs)
    _check_options(options, ENV_OPTIONS, "N2NShrinkBench-v0")
    evaluator = TableEvaluator(load_table(table, "shrink"), reward_seed)
    return N2NVectorEnv([N2NShrinkBenchEnv(evaluator, **dict(options))
                         for _ in range(count)])


def _num_envs(num_envs: Any) -> int:
    return validate.integer("num_envs", num_envs, minimum=1)


def _check_options(options: Mapping[str, Any], allowed: tuple[str, ...], env_id: str) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"{env_id} got unexpected keyword arguments {unknown}; allowed: "
                        f"table, reward_seed, {', '.join(allowed)}")


def _split(kwargs: Mapping[str, Any], env_options: tuple[str, ...]
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    options = {k: v for k, v in kwargs.items() if k in env_options}
    return options, {k: v for k, v in kwargs.items() if k not in env_options}


def _evaluator(kwargs: dict[str, Any], options: Mapping[str, Any]
               ) -> LazyEvaluator | LatencyEvaluator:
    """The evaluator described by ``gym.make``'s keyword arguments, checked now; it
    measures latency with the default settings when the environment ``options`` reward
    or bound latency and ``latency`` was not given."""
    name = kwargs.get("evaluator", "distill")
    constraints = options.get("constraints")
    if isinstance(name, str):
        check_quantities(constraints, name)
    wants_latency = options.get("compression_metric") == "latency" or any(
        LATENCY in row.coefficients for row in parse_constraints(constraints))
    measured = callable(getattr(name, "latency_ms", None)) or (
        isinstance(name, EvaluatorSettings) and name.latency is not None)
    if wants_latency and kwargs.get("latency") is None and not measured:
        kwargs = {**kwargs, "latency": LatencySettings()}
    return make_evaluator(**kwargs)


def make_evaluator(teacher: Any = "conv4", dataset: str = "digits",
                   data_root: str | os.PathLike[str] | None = None, evaluator: Any = "distill",
                   evaluator_kwargs: Mapping[str, Any] | None = None,
                   cache: str | os.PathLike[str] | None = None, device: str | None = None,
                   teacher_width: float = 1.0, teacher_progress: bool = True,
                   backend: str = "local", workers: int = 1, ray_address: str | None = None,
                   gpus_per_student: float = 0.0,
                   latency: LatencySettings | Mapping[str, Any] | bool | None = None
                   ) -> LazyEvaluator | LatencyEvaluator:
    """The lazy evaluator stack that ``gym.make``'s keyword arguments describe.

    ``teacher``: a zoo name, a checkpoint ``.pt``, a model from ``build_model``, or an
    Architecture (with ``evaluator="mock"``). ``evaluator``: ``"distill"``, ``"mock"``,
    :class:`EvaluatorSettings`, or an evaluator instance (its own teacher wins).
    ``latency``: :class:`~n2n_env.latency.LatencySettings` (or a dict of its fields, or
    True for the defaults) to time every student, outermost in the stack.
    """
    latency_settings = LatencySettings.coerce(latency)
    if cache is not None and not isinstance(cache, str | os.PathLike):
        raise TypeError(f"cache must be a file path or None, got {cache!r}")
    if evaluator_kwargs is not None and not isinstance(evaluator_kwargs, Mapping):
        raise TypeError(f"evaluator_kwargs must be a dict or None, got {evaluator_kwargs!r}")
    extra = dict(evaluator_kwargs or {})
    backend_settings = BackendSettings(backend, workers, ray_address, gpus_per_student)
    if isinstance(evaluator, EvaluatorSettings):
        if latency_settings is not None and evaluator.latency not in (None, latency_settings):
            raise ValueError("latency is given twice, differently: as latency= and in "
                             "EvaluatorSettings.latency; give it once")
        if latency_settings is not None:
            evaluator = dataclasses.replace(evaluator, latency=latency_settings)
        return assemble(evaluator)
    if not isinstance(evaluator, str):
        if not is_evaluator(evaluator):
            raise TypeError("evaluator must be 'distill', 'mock', EvaluatorSettings or an "
                            "object with evaluate(arch), identity(), teacher_architecture "
                            "and teacher_accuracy")
        if extra:
            raise ValueError(f"evaluator_kwargs {sorted(extra)} apply to evaluator='distill' "
                             "or 'mock' only; configure an evaluator object when making it")
        if backend_settings.kind != "local":
            raise ValueError("an evaluator instance runs in this process; use a named "
                             "evaluator ('distill' or 'mock') with backend "
                             f"{backend_settings.kind!r}")
        if latency_settings is None:
            return assemble(evaluator, cache=cache)
        if callable(getattr(evaluator, "latency_ms", None)):
            raise ValueError(f"{type(evaluator).__name__} already measures latency; drop "
                             "latency=")
        return LatencyEvaluator(assemble(evaluator, cache=cache),
                                LatencyMeter(latency_settings, device))
    validate.choice("evaluator", evaluator, ("distill", "mock"))
    fields = _evaluator_fields(evaluator, extra)
    common = {"dataset": dataset, "data_root": None if data_root is None else os.fspath(data_root),
              "evaluator": evaluator, "cache": None if cache is None else os.fspath(cache),
              "device": device, "teacher_width": teacher_width,
              "teacher_progress": teacher_progress, "backend": backend_settings,
              "latency": latency_settings, **fields}
    if isinstance(teacher, Architecture):
        if evaluator == "distill":
            raise ValueError("an Architecture has no weights to distil from; pass a zoo "
                             "name, a checkpoint path or a model, or use evaluator='mock'")
        settings = EvaluatorSettings(teacher=IN_MEMORY, **common)
        return assemble(settings, teacher=LoadedTeacher(_ArchitectureOnly(teacher)))
    if isinstance(getattr(teacher, "architecture", None), Architecture):
        settings = EvaluatorSettings(teacher=IN_MEMORY, **common)
        return assemble(settings, teacher=LoadedTeacher(teacher))
    if isinstance(teacher, os.PathLike):
        teacher = os.fspath(teacher)
    return assemble(EvaluatorSettings(teacher=teacher, **common))


class _ArchitectureOnly:
    """Stands in for a model where only the architecture matters (the mock evaluator)."""

    def __init__(self, architecture: Architecture) -> None:
        self.architecture = architecture


def _evaluator_fields(evaluator: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """``evaluator_kwargs`` as EvaluatorSettings fields, refusing what ``evaluator`` does
    not take."""
    if evaluator == "mock":
        validate.known_keys("evaluator_kwargs for evaluator='mock'", extra,
                            (*MOCK_OPTIONS, "max_classifier_inputs"))
        options = {k: v for k, v in extra.items() if k in MOCK_OPTIONS}
        from n2n_env.evaluators import MockEvaluator
        from n2n_env.zoo import get

        MockEvaluator(get("conv4", (1, 8, 8), 10), **options)  # range checks, now
        return {"mock_options": options,
                "max_classifier_inputs": extra.get("max_classifier_inputs")}
    from n2n_env.distill import DistillRecipe

    recipe_fields = {k: v for k, v in extra.items() if k in DistillRecipe.__dataclass_fields__}
    unknown = sorted(set(extra) - set(recipe_fields) - set(DISTILL_OPTIONS))
    if unknown:
        allowed = sorted([*DistillRecipe.__dataclass_fields__, *DISTILL_OPTIONS])
        raise ValueError(f"unknown evaluator_kwargs {unknown} for evaluator='distill'; "
                         f"allowed: {', '.join(allowed)}")
    return {"recipe": DistillRecipe(**recipe_fields), "seed": extra.get("seed", 0),
            "max_classifier_inputs": extra.get("max_classifier_inputs")}


def check_quantities(constraints: Any, evaluator: str) -> None:
    """Refuse constraints on a quantity the named evaluator never measures (latency_ms is
    measured by the latency wrapper that such a constraint turns on)."""
    allowed = (*MEASURED, LATENCY)
    for row in parse_constraints(constraints):
        unknown = sorted(set(row.coefficients) - set(allowed))
        if unknown:
            raise ValueError(f"constraint {row.describe()!r} bounds {unknown}, which "
                             f"evaluator={evaluator!r} does not measure; allowed: "
                             f"{', '.join(allowed)}")
