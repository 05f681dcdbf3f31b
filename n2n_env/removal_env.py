"""N2NRemoval-v0: stage 1 of N2N (paper section 3.2.1), keep or remove each teacher layer."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from n2n_env import validate
from n2n_env.arch import Architecture
from n2n_env.env_common import (
    MAX_LAYERS,
    N2NEnvBase,
    RememberedStudents,
    as_action,
    padded,
    render_bars,
)
from n2n_env.evaluators import Evaluator
from n2n_env.features import NORMALIZED_FEATURE_NAMES

REMOVE, KEEP = 0, 1
FEATURE_HIGH = 4.0
"""Upper bound of the normalised features in observations (they are about 0-1.7)."""


class N2NRemovalEnv(N2NEnvBase):
    """
    ## Description

    Stage 1 of "N2N Learning: Network to Network Compression via Policy Gradient
    Reinforcement Learning" (Ashok et al., ICLR 2018). The agent walks through the layers of
    a trained teacher network, one layer per step, and decides to keep or remove each. After
    the last layer the resulting student is trained by knowledge distillation and scored by
    the paper's reward, which trades compression against accuracy. The reward is sparse:
    only the last step of an episode earns one.

    ## Action Space

    `Discrete(2)`: `0` removes the current layer, `1` keeps it. Fixed layers (`flatten` and
    the classifier output) can only be kept; the mask in `obs["action_mask"]`,
    `info["action_mask"]` and `action_masks()` says so. A masked action is taken as the only
    allowed one (keep), with `info["action_replaced"] = True`, so agents without masking
    run unchanged; `invalid_action="raise"` makes it a `ValueError` instead. With
    `action_wall=True` (AMC's action wall, `n2n_env.action_wall`) the mask also forbids
    keeping a layer when no completion of the episode after keeping it could meet the
    upper bounds on params, flops or latency_ms; the wall never forbids removing a
    removable layer, and its completions are a heuristic bound in this MDP.

    ## Observation Space

    A `Dict` of float32 one-dimensional `Box`es with fixed shapes, as SB3 and vector
    environments need (`F` = 18 normalised features per layer, see
    `n2n_env.features.NORMALIZED_FEATURE_NAMES`; `M` = `max_layers`):

    | key | shape | meaning |
    |---|---|---|
    | `layer` | (F,) | the current layer's normalised features x_t |
    | `layers` | (M * F,) | all layers' features, zero-padded, row-major: reshape to (M, F) |
    | `layer_mask` | (M,) | 1 for real layers, 0 for padding |
    | `decisions` | (M,) | 1 kept, -1 removed, 0 not yet decided |
    | `position` | (1,) | t / L, the fraction of layers decided |
    | `params_kept` | (1,) | fraction of the teacher's parameters in layers not removed so far |
    | `action_mask` | (2,) | 1 where an action is allowed |

    The table and the decisions make the state Markov: a policy can read the whole
    sequence, as the paper's bidirectional LSTM does.

    ## Rewards

    0 on every step but the last. On the last step `R = C(2 - C) * A / A_teacher`, with `C`
    the compression (`1 - params(student)/params(teacher)`, or FLOPs with
    `compression_metric="flops"`, or latency with `"latency"`, clipped to [0, 1]) and `A`
    the student's validation accuracy after distillation. Degenerate students (appendix
    11.2) and failed trainings get -1; students violating `constraints` get
    `eps_t (R + 1) - 1`, `eps_t` annealed from 1 to 0 over `anneal_episodes` episodes.

    ## Starting State

    The teacher with no decision taken; the first layer is current.

    ## Episode End

    The episode terminates after L steps, L the number of teacher layers. It is never
    truncated. The terminal `info` holds `accuracy`, `teacher_accuracy`, `params`, `flops`,
    `compression`, `rewards`, `degenerate_reason`, `architecture` (the student as JSON),
    `eval_seconds`, `cache_hit` and `trained` (False for a student larger
    than its teacher, scored 0 without training).

    ## Arguments

    `gym.make("N2NRemoval-v0", teacher="conv4", dataset="digits", data_root=None,
    evaluator="distill", evaluator_kwargs=None, cache=None, constraints=None,
    anneal_episodes=0, episodes_played=0, compression_metric="params", action_wall=False,
    latency=None, device=None, teacher_width=1.0, teacher_progress=True, backend="local",
    workers=1, ray_address=None, gpus_per_student=0.0, max_layers=128,
    invalid_action="replace", render_mode=None)`.
    `teacher` is a zoo name (trained on first use and cached), a checkpoint path or a model
    from `build_model`, or an `Architecture` (with `evaluator="mock"`). `evaluator` is
    `"distill"` (real training), `"mock"` (instant, not real), an evaluator instance, or
    `n2n_env.stack.EvaluatorSettings`; `evaluator_kwargs` go to a named one (for
    distillation: the `DistillRecipe` fields, `seed` and `max_classifier_inputs`). `cache` is
    a SQLite path shared by processes. `backend` trains the students of a batch (see
    `gym.make_vec`) in `workers` processes or Ray actors. `episodes_played` starts the
    annealing of `eps_t` that many episodes in, for a resumed search. `latency`
    (`n2n_env.latency.LatencySettings` or a dict of its fields) times students for
    `compression_metric="latency"` and `latency_ms` constraints, which turn it on with the
    default settings when it is not given.
    `N2NRemovalEnv(evaluator, ...)` takes a ready evaluator (`n2n_env.stack.assemble`) and
    the environment options directly.

    ## Version History

    * v0: initial version.
    """

    def __init__(self, evaluator: Evaluator, *, max_layers: int = MAX_LAYERS,
                 **options: Any) -> None:
        max_layers = validate.integer("max_layers", max_layers, minimum=1)
        super().__init__(evaluator, **options)
        teacher = self.evaluator.teacher_architecture
        self.teacher = teacher
        self.num_layers = len(teacher)
        self.max_layers = max_layers
        features = teacher.features(normalized=True)
        self._table = padded(features, max_layers)
        self._layer_mask = padded(np.ones((self.num_layers,), np.float32), max_layers)
        self._fixed = ~np.array(teacher.removable())
        self._layer_params = np.array(teacher.layer_params(), dtype=np.float64)
        self._total_params = float(teacher.num_params())
        width = len(NORMALIZED_FEATURE_NAMES)
        self.action_space = spaces.Discrete(2)
        self.observation_space = spaces.Dict({
            "layer": spaces.Box(0.0, FEATURE_HIGH, (width,), np.float32),
            "layers": spaces.Box(0.0, FEATURE_HIGH, (max_layers * width,), np.float32),
            "layer_mask": spaces.Box(0.0, 1.0, (max_layers,), np.float32),
            "decisions": spaces.Box(-1.0, 1.0, (max_layers,), np.float32),
            "position": spaces.Box(0.0, 1.0, (1,), np.float32),
            "params_kept": spaces.Box(0.0, 1.0, (1,), np.float32),
            "action_mask": spaces.Box(0.0, 1.0, (2,), np.float32),
        })
        self._decisions = np.zeros(max_layers, np.float32)
        self._step = 0
        self._removed_params = 0.0
        self._done = True
        # Per step, the mask and its float form; the last entry serves the finished episode.
        self._masks = [np.array([not fixed, True]) for fixed in self._fixed] + [
            np.ones(2, dtype=bool)]
        self._float_masks = [mask.astype(np.float32) for mask in self._masks]
        self._flat_table = self._table.ravel()
        self._wall_mask: np.ndarray | None = None
        self._positions = [np.array([step / self.num_layers], np.float32)
                           for step in range(self.num_layers + 1)]
        self._students = RememberedStudents(self.num_layers)

    def action_masks(self) -> np.ndarray:
        """Allowed actions now (sb3-contrib's MaskablePPO convention)."""
        return self._mask().copy()

    def _mask(self) -> np.ndarray:
        """The mask of the current state: fixed layers keep; with the action wall, keep
        is masked when it leaves no way to meet the constraints (computed once a state)."""
        if self._done or self.wall is None or self._fixed[self._step]:
            return self._masks[-1 if self._done else self._step]
        if self._wall_mask is None:
            kept = (self._decisions[: self._step] > 0).tolist()
            self._wall_mask = self.wall.removal_mask(self.teacher, kept, self._step)
        return self._wall_mask

    def _observation(self) -> dict[str, np.ndarray]:
        current = self._table[min(self._step, self.num_layers - 1)] if not self._done else (
            np.zeros(self._table.shape[1], np.float32))
        kept = 1.0 - self._removed_params / self._total_params
        return {
            "layer": current.copy(), "layers": self._flat_table.copy(),
            "layer_mask": self._layer_mask.copy(), "decisions": self._decisions.copy(),
            "position": self._positions[self._step].copy(),
            "params_kept": np.array([min(max(kept, 0.0), 1.0)], np.float32),
            "action_mask": (self._mask().astype(np.float32) if self.wall is not None
                            else self._float_masks[-1 if self._done else self._step].copy()),
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self._decisions[:] = 0.0
        self._step, self._removed_params, self._done = 0, 0.0, False
        self._last_info, self._wall_mask = {}, None
        return self._observation(), {"action_mask": self.action_masks()}

    def advance(self, action: int) -> tuple[Architecture | None, bool]:
        action = as_action(action, 2, "0 (remove) or 1 (keep)")
        replaced = not self._mask()[action]
        if replaced:
            layer = self.teacher.layers[self._step]
            if self.invalid_action == "raise":
                if self._fixed[self._step]:
                    raise ValueError(f"layer {self._step} ({layer.kind}) is fixed and cannot "
                                     "be removed; the only allowed action is 1 (keep)")
                raise ValueError(f"keeping layer {self._step} ({layer.kind}) leaves no way to "
                                 "meet the constraints (action_wall); the only allowed action "
                                 "is 0 (remove)")
            action = 1 - action
        self._decisions[self._step] = 1.0 if action == KEEP else -1.0
        if action == REMOVE:
            self._removed_params += self._layer_params[self._step]
        self._step += 1
        self._wall_mask = None
        if self._step < self.num_layers:
            return None, replaced
        keep_mask = self._decisions[: self.num_layers] > 0
        student = self._students.get(keep_mask.tobytes(), lambda: self.teacher.remove(keep_mask))
        return student, replaced

    def _render_rgb(self) -> np.ndarray:
        widths = [shape[0] if shape else 1 for shape in self.teacher.output_shapes()]
        kinds = [layer.kind for layer in self.teacher.layers]
        decisions = self._decisions[: self.num_layers].astype(int).tolist()
        return render_bars(widths, kinds, decisions, self._step)

    def _render_text(self) -> str:
        decisions = self._decisions[: self.num_layers]
        marks = {1.0: "keep", -1.0: "REMOVE", 0.0: "?"}
        kept = self._total_params - self._removed_params
        lines = [f"N2NRemoval: {self.teacher.name} step {self._step}/{self.num_layers}, "
                 f"parameters kept {kept:,.0f} of {self._total_params:,.0f}"]
        shapes = self.teacher.output_shapes()
        for index, layer in enumerate(self.teacher.layers):
            pointer = ">" if index == self._step and not self._done else " "
            fixed = " (fixed)" if self._fixed[index] else ""
            lines.append(f"{pointer}{index:>4} {layer.kind:<8} {shapes[index]!s:<16} "
                         f"{marks[float(decisions[index])]}{fixed}")
        return "\n".join([*lines, *self._student_line()]) + "\n"
