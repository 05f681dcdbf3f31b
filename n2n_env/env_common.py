"""What both N2N environments share: the terminal reward of a finished student, its
``info``, the step skeleton, rendering helpers and argument checks.

The MDPs themselves live in :mod:`n2n_env.removal_env` and :mod:`n2n_env.shrink_env`.
An environment receives a ready evaluator (see :mod:`n2n_env.stack`; ``gym.make`` builds
one through :mod:`n2n_env.env_factory`) and never trains a teacher or opens a file, so
this module and the two MDPs import no torch.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from n2n_env import validate
from n2n_env.action_wall import ActionWall
from n2n_env.arch import FEATURE_KIND, PAPER_KINDS, Architecture
from n2n_env.evaluators import Evaluation, Evaluator, unscored
from n2n_env.reward import (
    COMPRESSION_METRICS,
    LATENCY,
    LATENCY_COMPRESSION,
    EpsilonSchedule,
    LinearConstraint,
    constrained_reward,
    parse_constraints,
)
from n2n_env.transitions import MAX_DERIVED_LAYERS

INVALID_ACTIONS = ("replace", "raise")
"""What a step does with an action the mask forbids: take the only allowed one instead
(flagged in ``info["action_replaced"]``), as Gymnasium's own environments take every action
of their space and publish masks as advice, or raise ValueError."""
MAX_LAYERS = 128
"""Default padding of the layer table: resnet34 at the paper's granularity has 102 layers."""
Constraints = Mapping[str, float] | Sequence[LinearConstraint] | None
"""Upper bounds such as ``{"params": 20000}``, or parsed constraint rows."""
StepResult = tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]


class TerminalReward:
    """The paper's reward of a finished student under constraints (section 3.3.1), with
    the annealed relaxation eps_t of each episode."""

    def __init__(self, constraints: Constraints = None, anneal_episodes: int = 0,
                 episodes_played: int = 0, compression_metric: str = "params") -> None:
        self.constraints = parse_constraints(constraints)
        self.compression_metric = validate.choice("compression_metric", compression_metric,
                                                  COMPRESSION_METRICS)
        self.schedule = EpsilonSchedule(anneal_episodes)
        self.schedule.episode = validate.integer("episodes_played", episodes_played, minimum=0)

    @property
    def reads_accuracy_only_to_reward(self) -> bool:
        """Whether only the reward needs a student's accuracy: the compression metric and
        every constraint use params or FLOPs, which a student's architecture gives."""
        return self.compression_metric in ("params", "flops") and all(
            quantity in ("params", "flops")
            for row in self.constraints for quantity in row.coefficients)

    def untrained(self, student: Architecture, teacher: Architecture,
                  max_classifier_inputs: int | None) -> Evaluation | None:
        """The evaluation of a student whose reward cannot depend on its accuracy, made
        without training it; None for every other student.

        A student larger than its teacher by the compression metric has C < 0, which the
        reward clips to 0, so R = 0 whatever its accuracy (plus the constraints'
        relaxation, which reads only params and FLOPs here). Removing a pooling layer can
        enlarge the classifier past the teacher: on conv4, about half of the students an
        agent samples early are such, and training them would cost as much as the rest.
        ``max_classifier_inputs`` is the evaluator's limit (None when it is not known, and
        nothing is skipped), so that a student it would call degenerate keeps its -1.
        """
        if max_classifier_inputs is None or not self.reads_accuracy_only_to_reward:
            return None
        if student.degenerate_reason(max_classifier_inputs) is not None:
            return None
        evaluation = unscored(teacher, student, trained=False)
        return evaluation if self.scores_without_training(evaluation) else None

    def scores_without_training(self, evaluation: Evaluation) -> bool:
        """Whether the student of ``evaluation`` earns R = 0 whatever its accuracy: it is
        larger than its teacher by the compression metric (C < 0) and nothing else in the
        reward reads its accuracy. The real environments do not train such a student
        (:meth:`untrained`); N2N-Bench charges it no simulated time."""
        return (self.reads_accuracy_only_to_reward and evaluation.degenerate_reason is None
                and self.compression(evaluation) < 0.0)

    @property
    def needs_latency(self) -> bool:
        """Whether the reward reads latency (the compression metric or a constraint)."""
        return self.compression_metric == "latency" or any(
            LATENCY in row.coefficients for row in self.constraints)

    def compression(self, evaluation: Evaluation) -> float:
        """C of ``evaluation`` by the compression metric (latency: from its ``extra``; 0
        for a degenerate or failed student that could not be timed)."""
        if self.compression_metric == "params":
            return evaluation.compression
        if self.compression_metric == "flops":
            return evaluation.flops_compression
        if LATENCY_COMPRESSION in evaluation.extra:
            return float(evaluation.extra[LATENCY_COMPRESSION])
        if evaluation.unrewarded:
            return 0.0
        raise ValueError("compression_metric='latency' needs evaluations that carry "
                         f"extra[{LATENCY_COMPRESSION!r}] (n2n_env.latency.LatencyEvaluator)")

    def score(self, student: Architecture, evaluation: Evaluation, teacher_accuracy: float
              ) -> tuple[float, dict[str, Any]]:
        """The reward of ``student`` measured as ``evaluation``, and its terminal ``info``;
        the relaxation moves on by one episode."""
        compression = self.compression(evaluation)
        breakdown = constrained_reward(compression, evaluation.accuracy, teacher_accuracy,
                                       evaluation.measured(), self.constraints,
                                       self.schedule.epsilon,
                                       degenerate=evaluation.unrewarded)
        self.schedule.step()
        return breakdown.reward, terminal_info(evaluation, teacher_accuracy, compression,
                                               dict(vars(breakdown)), student)


class N2NEnvBase(gym.Env[dict[str, np.ndarray], int]):
    """What both environments share outside their MDP: the evaluator and the terminal
    reward, the step skeleton, render-mode checking, render dispatch and closing.

    A subclass implements :meth:`advance` (one decision) and draws with ``_render_rgb``
    and ``_render_text``. ``step`` is ``advance`` followed, at the last decision, by one
    evaluation and :meth:`finish`; a vector environment calls the two itself so that the
    students of all its sub-environments are evaluated as one batch.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"],
                                          "render_fps": 4}

    def __init__(self, evaluator: Evaluator, *, constraints: Constraints = None,
                 anneal_episodes: int = 0, episodes_played: int = 0,
                 compression_metric: str = "params", render_mode: str | None = None,
                 invalid_action: str = "replace", action_wall: bool = False) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or "
                             f"None, got {render_mode!r}")
        missing = [name for name in ("evaluate", "evaluate_many", "identity",
                                     "teacher_architecture", "teacher_accuracy")
                   if not has_attribute(evaluator, name)]
        if missing or not isinstance(evaluator.teacher_architecture, Architecture):
            raise TypeError(f"evaluator must be an n2n evaluator (see n2n_env.stack.assemble); "
                            f"{type(evaluator).__name__} lacks {missing or 'an Architecture'}")
        self.render_mode = render_mode
        self.invalid_action = validate.choice("invalid_action", invalid_action, INVALID_ACTIONS)
        self.evaluator = evaluator
        self.terminal_reward = TerminalReward(constraints, anneal_episodes, episodes_played,
                                              compression_metric)
        measures_latency = callable(getattr(evaluator, "latency_ms", None))
        if self.terminal_reward.needs_latency and not measures_latency:
            raise ValueError(self._no_latency(type(evaluator).__name__))
        self.wall: ActionWall | None = None
        """AMC's action wall (``action_wall=True``), see :mod:`n2n_env.action_wall`."""
        if validate.flag("action_wall", action_wall):
            self.wall = ActionWall(self.terminal_reward.constraints,
                                   evaluator.latency_ms if measures_latency else None)
        self._last_info: dict[str, Any] = {}

    @staticmethod
    def _no_latency(evaluator: str) -> str:
        """Why latency cannot be rewarded or bounded with this evaluator."""
        return (f"compression_metric='latency' and latency_ms constraints need an evaluator "
                f"that measures latency, and {evaluator} does not; pass latency=... to "
                "gym.make (n2n_env.latency.LatencySettings) or wrap the evaluator in "
                "n2n_env.latency.LatencyEvaluator")

    _done: bool = True

    @property
    def teacher_architecture(self) -> Architecture:
        return self.evaluator.teacher_architecture

    def close(self) -> None:
        """Close the evaluator (its cache connection, its workers), if it can be closed."""
        close = getattr(self.evaluator, "close", None)
        if callable(close):
            close()

    def step(self, action: int) -> StepResult:
        self._require_running()
        student, replaced = self.advance(action)
        if student is None:
            return self.midway(replaced)
        evaluation = self.untrained(student) or self.evaluator.evaluate(student)
        return self.finish(student, evaluation, replaced)

    def untrained(self, student: Architecture) -> Evaluation | None:
        """``student``'s evaluation without training, when its reward cannot depend on its
        accuracy (:meth:`TerminalReward.untrained`; only with an evaluator that says its
        ``max_classifier_inputs``), else None."""
        return self.terminal_reward.untrained(
            student, self.teacher_architecture,
            getattr(self.evaluator, "max_classifier_inputs", None))

    def midway(self, replaced: bool = False) -> StepResult:
        """The step result of a decision that did not finish the episode."""
        return self._observation(), 0.0, False, False, {
            "action_mask": self.action_masks(), "action_replaced": replaced}

    @abstractmethod
    def advance(self, action: int) -> tuple[Architecture | None, bool]:
        """Take one decision: the finished student after the last one (else None), and
        whether a masked action was replaced by the allowed one."""

    def finish(self, student: Architecture, evaluation: Evaluation, replaced: bool = False
               ) -> StepResult:
        """The terminal step of a student that ``advance`` finished, scored from its
        ``evaluation``."""
        self._done = True
        reward, info = self.terminal_reward.score(student, evaluation,
                                                  self.evaluator.teacher_accuracy)
        self._last_info = info
        info["action_mask"] = self.action_masks()
        info["action_replaced"] = replaced
        return self._observation(), float(reward), True, False, info

    def _require_running(self) -> None:
        if self._done:
            raise RuntimeError("the episode is over (or reset() was never called); call "
                               "reset() before step()")

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


class RememberedStudents:
    """The finished students of an environment by their actions, so that a repeated episode
    does not build (and check) its student again. Bounded as an architecture's own memory of
    its derived students is (:data:`n2n_env.transitions.MAX_DERIVED_LAYERS` layers): past
    that, it starts over."""

    def __init__(self, layers_per_student: int) -> None:
        self._limit = max(1, MAX_DERIVED_LAYERS // max(1, layers_per_student))
        self._students: dict[Hashable, Architecture] = {}

    def get(self, actions: Hashable, build: Callable[[], Architecture]) -> Architecture:
        """The student of ``actions``, from ``build()`` the first time."""
        student = self._students.get(actions)
        if student is None:
            if len(self._students) >= self._limit:
                self._students.clear()
            student = self._students[actions] = build()
        return student


def has_attribute(candidate: Any, name: str) -> bool:
    """``hasattr`` that does not run properties (a lazy evaluator's ``teacher_accuracy``
    would otherwise build its whole stack, training the teacher)."""
    return name in getattr(candidate, "__dict__", {}) or hasattr(type(candidate), name)


def terminal_info(evaluation: Evaluation, teacher_accuracy: float, compression: float,
                  rewards: dict[str, Any], student: Architecture) -> dict[str, Any]:
    """The documented terminal ``info`` keys (later tools rely on these names)."""
    reason = evaluation.degenerate_reason or (
        f"training failed: {evaluation.failure}" if evaluation.failure else None)
    info = {"accuracy": evaluation.accuracy, "teacher_accuracy": teacher_accuracy,
            "params": evaluation.params, "flops": evaluation.flops, "compression": compression,
            "rewards": rewards, "degenerate_reason": reason, "architecture": student.to_json(),
            "eval_seconds": evaluation.wall_seconds, "cache_hit": evaluation.cache_hit,
            "trained": evaluation.trained}
    if LATENCY in evaluation.extra:
        info[LATENCY] = float(evaluation.extra[LATENCY])
    return info


def nearest_allowed(action: int, mask: np.ndarray) -> int:
    """``action`` if ``mask`` allows it, else the nearest allowed action (ties: the
    larger one); what a step takes instead of a masked action."""
    allowed = np.flatnonzero(mask)
    if allowed.size == 0 or mask[action]:
        return action
    distance = np.abs(allowed - action) - allowed * 1e-6
    return int(allowed[int(np.argmin(distance))])


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
        colour = palette[PAPER_KINDS.index(FEATURE_KIND.get(kind, kind))]
        if decided < 0:
            colour = np.array([200, 200, 200])
        elif decided == 0:
            colour = (colour + 2 * 255) // 3
        image[height - 8 - bar_height : height - 8, left : left + bar] = colour
        if index == position:
            image[height - 5 : height - 2, left : left + bar] = (220, 0, 0)
    return image

