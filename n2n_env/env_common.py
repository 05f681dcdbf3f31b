"""What both N2N environments share: resolving the teacher and the evaluator from
``gym.make`` keyword arguments, turning a finished student into the terminal reward and
``info``, and drawing an architecture for teaching.

The MDPs themselves live in :mod:`n2n_env.removal_env` and :mod:`n2n_env.shrink_env`.
Heavy work is lazy: the teacher is trained (or loaded) and the evaluator built on the
first terminal step, so ``gym.make`` is instant and environments pickle cheaply.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from n2n_env import data as data_mod
from n2n_env import validate, zoo
from n2n_env.arch import LAYER_KINDS, Architecture
from n2n_env.device import resolve_device
from n2n_env.evaluators import Evaluation, Evaluator, MockEvaluator
from n2n_env.reward import (
    COMPRESSION_METRICS,
    EpsilonSchedule,
    LinearConstraint,
    constrained_reward,
    parse_constraints,
)

MEASURED = ("accuracy", "flops", "params")
"""What the distillation and mock evaluators measure, so what constraints may bound."""
MOCK_OPTIONS = ("teacher_accuracy", "capacity_scale", "depth_penalty", "max_classifier_inputs")
INVALID_ACTIONS = ("replace", "raise")
"""What a step does with an action the mask forbids: take the only allowed one instead
(flagged in ``info["action_replaced"]``), as Gymnasium's own environments take every action
of their space and publish masks as advice, or raise ValueError."""
MAX_LAYERS = 128
"""Default padding of the layer table: resnet34 at the paper's granularity has 102 layers."""
EVALUATORS = ("distill", "mock")


class StudentScorer:
    """Turns finished students into terminal rewards for one teacher, lazily set up."""

    def __init__(self, teacher: str | os.PathLike[str] | Architecture | Any = "conv4",
                 dataset: str = "digits", data_root: str | os.PathLike[str] | None = None,
                 evaluator: str | Evaluator = "distill",
                 evaluator_kwargs: Mapping[str, Any] | None = None,
                 cache: str | os.PathLike[str] | None = None,
                 constraints: Mapping[str, float] | Sequence[LinearConstraint] | None = None,
                 anneal_episodes: int = 0, compression_metric: str = "params",
                 device: str | None = None, teacher_width: float = 1.0,
                 teacher_progress: bool = True) -> None:
        if compression_metric not in COMPRESSION_METRICS:
            raise ValueError(f"compression_metric must be one of {COMPRESSION_METRICS}, "
                             f"got {compression_metric!r}")
        if isinstance(evaluator, str) and evaluator not in EVALUATORS:
            raise ValueError(f"evaluator must be one of {EVALUATORS} or an evaluator instance, "
                             f"got {evaluator!r}")
        if not isinstance(evaluator, str) and not isinstance(evaluator, Evaluator):
            raise TypeError("evaluator must be 'distill', 'mock' or an object with "
                            "evaluate(arch), identity(), teacher_architecture and "
                            "teacher_accuracy")
        if dataset not in data_mod.names():
            raise ValueError(f"unknown dataset {dataset!r}; allowed: {', '.join(data_mod.names())}")
        resolve_device(device)  # a bad or unavailable device fails now, not after training
        if cache is not None and not isinstance(cache, str | os.PathLike):
            raise TypeError(f"cache must be a file path or None, got {cache!r}")
        self.dataset, self.data_root, self.device = dataset, data_root, device
        self.evaluator_name = evaluator if isinstance(evaluator, str) else "instance"
        if evaluator_kwargs is not None and not isinstance(evaluator_kwargs, Mapping):
            raise TypeError(f"evaluator_kwargs must be a dict or None, got {evaluator_kwargs!r}")
        self.evaluator_kwargs = dict(evaluator_kwargs or {})
        if self.evaluator_name == "instance" and self.evaluator_kwargs:
            raise ValueError(f"evaluator_kwargs {sorted(self.evaluator_kwargs)} apply to "
                             "evaluator='distill' or 'mock' only; configure an evaluator "
                             "object when making it")
        self.cache = cache
        self.constraints = parse_constraints(constraints)
        if self.evaluator_name != "instance":
            check_quantities(self.constraints, self.evaluator_name)
        self.schedule = EpsilonSchedule(anneal_episodes)
        self.compression_metric = compression_metric
        self.teacher_width = validate.number("teacher_width", teacher_width, above=0)
        self.teacher_spec = teacher
        self.teacher_progress = validate.flag("teacher_progress", teacher_progress)
        if self.evaluator_name == "distill":
            _split_distill_kwargs(self.evaluator_kwargs)
            data_mod.check_root(dataset, data_root)
        self._given: Evaluator | None = None if isinstance(evaluator, str) else evaluator
        self._evaluator: Evaluator | None = None
        self.teacher_architecture = self._resolve_architecture()
        if self.evaluator_name == "mock":
            validate.known_keys("evaluator_kwargs for evaluator='mock'", self.evaluator_kwargs,
                                MOCK_OPTIONS)
            MockEvaluator(self.teacher_architecture, **self.evaluator_kwargs)

    def _resolve_architecture(self) -> Architecture:
        teacher = self.teacher_spec
        if self._given is not None:
            return self._given.teacher_architecture
        if isinstance(teacher, Architecture):
            if self.evaluator_name == "distill":
                raise ValueError("an Architecture has no weights to distil from; pass a zoo "
                                 "name, a checkpoint path or a model, or use evaluator='mock'")
            return teacher
        if isinstance(getattr(teacher, "architecture", None), Architecture):
            return teacher.architecture
        if isinstance(teacher, str | os.PathLike) and Path(teacher).suffix == ".pt":
            from n2n_env.checkpoints import read_teacher_record

            return read_teacher_record(teacher)[0].architecture
        if isinstance(teacher, str) and teacher in zoo.names():
            shape, classes = data_mod.info(self.dataset)
            return zoo.get(teacher, shape, classes, width=self.teacher_width)
        raise ValueError(f"unknown teacher {teacher!r}; use a zoo name ({', '.join(zoo.names())}),"
                         " a checkpoint path ending in .pt, a model from build_model, or an "
                         "Architecture (with evaluator='mock')")

    @property
    def evaluator(self) -> Evaluator:
        """The evaluator, built on first use (this may train the teacher once)."""
        if self._evaluator is None:
            inner = self._given if self._given is not None else self._build_evaluator()
            if self.cache is not None:
                from n2n_env.cache import CachedEvaluator

                inner = CachedEvaluator(inner, self.cache)
            self._evaluator = inner
        return self._evaluator

    def _build_evaluator(self) -> Evaluator:
        if self.evaluator_name == "mock":
            return MockEvaluator(self.teacher_architecture, **self.evaluator_kwargs)
        from n2n_env.checkpoints import load_teacher
        from n2n_env.distill import DistillationEvaluator
        from n2n_env.teacher import get_teacher

        data = data_mod.load(self.dataset, root=self.data_root)
        teacher = self.teacher_spec
        if isinstance(teacher, str) and teacher in zoo.names():
            model, record = get_teacher(teacher, self.dataset, width=self.teacher_width,
                                        data_root=self.data_root, device=self.device,
                                        progress=self.teacher_progress)
            accuracy: float | None = record.val_accuracy
        elif isinstance(teacher, str | os.PathLike):
            model, record = load_teacher(teacher, dataset_fingerprint=data.fingerprint,
                                         device=self.device or "cpu")
            accuracy = record.val_accuracy
        else:
            model, accuracy = teacher, None
        recipe, other = _split_distill_kwargs(self.evaluator_kwargs)
        return DistillationEvaluator(model, data, recipe, teacher_accuracy=accuracy,
                                     device=self.device, **other)

    def close(self) -> None:
        """Close the evaluator's resources (the cache's database connection)."""
        close = getattr(self._evaluator, "close", None)
        if callable(close):
            close()

    def score(self, student: Architecture) -> tuple[float, dict[str, Any]]:
        """Evaluate a finished student: the terminal reward and the terminal ``info``."""
        evaluation = self.evaluator.evaluate(student)
        teacher_accuracy = self.evaluator.teacher_accuracy
        compression = (evaluation.compression if self.compression_metric == "params"
                       else evaluation.flops_compression)
        breakdown = constrained_reward(compression, evaluation.accuracy, teacher_accuracy,
                                       evaluation.measured(), self.constraints,
                                       self.schedule.epsilon, degenerate=not evaluation.ok)
        self.schedule.step()
        return breakdown.reward, terminal_info(evaluation, teacher_accuracy, compression,
                                               dict(vars(breakdown)), student)


class N2NEnvBase(gym.Env[dict[str, np.ndarray], int]):
    """What both environments share outside their MDP: the scorer, render-mode checking,
    render dispatch and closing. Subclasses draw with ``_render_rgb`` and ``_render_text``."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"],
                                          "render_fps": 4}

    def __init__(self, render_mode: str | None, scorer_kwargs: Mapping[str, Any],
                 invalid_action: str = "replace") -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or "
                             f"None, got {render_mode!r}")
        self.render_mode = render_mode
        self.invalid_action = validate.choice("invalid_action", invalid_action, INVALID_ACTIONS)
        self.scorer = StudentScorer(**scorer_kwargs)
        self._last_info: dict[str, Any] = {}

    _done: bool = True

    def close(self) -> None:
        """Release the evaluation cache's database connection, if any."""
        self.scorer.close()

    def _require_running(self) -> None:
        if self._done:
            raise RuntimeError("the episode is over (or reset() was never called); call "
                               "reset() before step()")

    def _finish(self, student: Architecture, replaced: bool = False
                ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """The terminal step: score the finished student and end the episode."""
        self._done = True
        reward, info = self.scorer.score(student)
        self._last_info = info
        info["action_mask"] = self.action_masks()
        info["action_replaced"] = replaced
        return self._observation(), float(reward), True, False, info

    @abstractmethod
    def action_masks(self) -> np.ndarray:
        """Allowed actions now (sb3-contrib's MaskablePPO convention)."""

    @abstractmethod
    def _observation(self) -> dict[str, np.ndarray]:
        """The observation of the current state."""

    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='ansi' "
                            "or 'rgb_array' to gym.make")
            return None
        return self._render_rgb() if self.render_mode == "rgb_array" else self._render_text()

    @abstractmethod
    def _render_rgb(self) -> np.ndarray:
        """The state as an HxWx3 uint8 image."""

    @abstractmethod
    def _render_text(self) -> str:
        """The state as a text table."""

    def _student_line(self) -> list[str]:
        """The finished student's summary, once the episode is over."""
        if not self._last_info:
            return []
        info = self._last_info
        return [f"student: accuracy {info['accuracy']:.4f}, compression "
                f"{info['compression']:.3f}, degenerate: {info['degenerate_reason']}"]


def check_quantities(constraints: Sequence[LinearConstraint], evaluator: str) -> None:
    """Refuse constraints on a quantity the named evaluator never measures."""
    for row in constraints:
        unknown = sorted(set(row.coefficients) - set(MEASURED))
        if unknown:
            raise ValueError(f"constraint {row.describe()!r} bounds {unknown}, which "
                             f"evaluator={evaluator!r} does not measure; allowed: "
                             f"{', '.join(MEASURED)}")


def check_evaluator_kwargs(evaluator: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse ``evaluator_kwargs`` that ``evaluator`` ("distill" or "mock") does not take,
    or distillation settings out of range, before any teacher is trained."""
    if evaluator == "distill":
        _split_distill_kwargs(kwargs)
    else:
        validate.known_keys(f"evaluator_kwargs for evaluator={evaluator!r}", kwargs, MOCK_OPTIONS)


def _split_distill_kwargs(kwargs: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """evaluator_kwargs for distillation: DistillRecipe fields and evaluator options, checked
    now (not after the teacher has trained)."""
    from n2n_env.distill import DistillRecipe

    options = ("seed", "max_classifier_inputs")
    recipe_fields = {k: v for k, v in kwargs.items() if k in DistillRecipe.__dataclass_fields__}
    unknown = sorted(set(kwargs) - set(recipe_fields) - set(options))
    if unknown:
        allowed = sorted([*DistillRecipe.__dataclass_fields__, *options])
        raise ValueError(f"unknown evaluator_kwargs {unknown} for evaluator='distill'; "
                         f"allowed: {', '.join(allowed)}")
    other = {k: kwargs[k] for k in options if k in kwargs}
    if "seed" in other:
        validate.integer("seed", other["seed"], minimum=0)
    if "max_classifier_inputs" in other:
        validate.integer("max_classifier_inputs", other["max_classifier_inputs"], minimum=1)
    return DistillRecipe(**recipe_fields), other


def terminal_info(evaluation: Evaluation, teacher_accuracy: float, compression: float,
                  rewards: dict[str, Any], student: Architecture) -> dict[str, Any]:
    """The documented terminal ``info`` keys (later tools rely on these names)."""
    reason = evaluation.degenerate_reason or (
        f"training failed: {evaluation.failure}" if evaluation.failure else None)
    return {"accuracy": evaluation.accuracy, "teacher_accuracy": teacher_accuracy,
            "params": evaluation.params, "flops": evaluation.flops, "compression": compression,
            "rewards": rewards, "degenerate_reason": reason, "architecture": student.to_json(),
            "eval_seconds": evaluation.wall_seconds, "cache_hit": evaluation.cache_hit}


def as_action(action: Any, count: int, allowed: str) -> int:
    """``action`` as an int in [0, count), or a ValueError that says what is allowed."""
    value = action.item() if isinstance(action, np.ndarray) and action.size == 1 else action
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer) or not (
            0 <= int(value) < count):
        raise ValueError(f"invalid action {action!r}; allowed: {allowed}")
    return int(value)


def padded(rows: np.ndarray, max_rows: int) -> np.ndarray:
    """``rows`` padded with zeros to ``max_rows`` rows (float32)."""
    if len(rows) > max_rows:
        raise ValueError(f"{len(rows)} rows exceed max_layers={max_rows}; pass a larger "
                         "max_layers to gym.make")
    table = np.zeros((max_rows, *rows.shape[1:]), dtype=np.float32)
    table[: len(rows)] = rows
    return table


def render_bars(widths: Sequence[int], kinds: Sequence[str], state: Sequence[int],
                position: int, height: int = 160) -> np.ndarray:
    """An HxWx3 uint8 picture of a network: one bar per layer, its height growing with the
    log of its width, coloured by kind; state -1 greys a removed layer, 0 marks undecided
    layers pale, and the current position is underlined in red."""
    palette = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40],
                        [148, 103, 189], [140, 86, 75], [227, 119, 194], [23, 190, 207]])
    bar, gap = 6, 2
    image = np.full((height, max(1, len(widths)) * (bar + gap) + gap, 3), 255, np.uint8)
    top = max(np.log2(1 + max(widths, default=1)), 1.0)
    for index, (width, kind, decided) in enumerate(zip(widths, kinds, state)):
        left = gap + index * (bar + gap)
        bar_height = max(4, int((height - 12) * np.log2(1 + width) / top))
        colour = palette[LAYER_KINDS.index(kind)]
        if decided < 0:
            colour = np.array([200, 200, 200])
        elif decided == 0:
            colour = (colour + 2 * 255) // 3
        image[height - 8 - bar_height : height - 8, left : left + bar] = colour
        if index == position:
            image[height - 5 : height - 2, left : left + bar] = (220, 0, 0)
    return image

