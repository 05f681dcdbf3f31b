"""N2NShrink-v0: stage 2 of N2N (paper section 3.2.2), one shrink factor per variable."""

from __future__ import annotations

import os
from pathlib import Path
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
    nearest_allowed,
    padded,
    render_bars,
)
from n2n_env.evaluators import Evaluator
from n2n_env.features import NORMALIZED_FEATURE_NAMES
from n2n_env.transitions import ShrinkVariable, scaled_value

FEATURE_HIGH = 4.0
"""Upper bound of the normalised features in observations (they are about 0-1.7)."""
_ALL_ACTIONS = np.ones(10, dtype=bool)
_ALL_ACTIONS_FLOAT = _ALL_ACTIONS.astype(np.float32)
VARIABLE_FEATURES = len(NORMALIZED_FEATURE_NAMES) + 2
"""Per variable: its first layer's normalised features, is-kernel flag, log2(1 + value)/12."""


class N2NShrinkEnv(N2NEnvBase):
    """
    ## Description

    Stage 2 of "N2N Learning: Network to Network Compression via Policy Gradient
    Reinforcement Learning" (Ashok et al., ICLR 2018). Starting from an architecture (a
    stage-1 student, or the teacher itself), the agent visits each configurable variable
    (the output filters of each conv, the units of each hidden linear layer, and with
    `include_kernels=True` each conv's kernel size) and picks how much to keep of it.
    Widths tied through identity shortcuts are one variable, so every student builds. After
    the last variable the student is trained by knowledge distillation, inheriting the
    teacher's strongest channels, and scored by the paper's reward.

    ## Action Space

    `Discrete(10)`: action `a` keeps the fraction `(a + 1) / 10` of the current variable
    (`ceil(value * (a + 1) / 10)`, at least 1). Every action is allowed, unless
    `action_wall=True` (AMC's action wall, `n2n_env.action_wall`): then the mask
    (`obs["action_mask"]`, `info["action_mask"]`, `action_masks()`) forbids the factors
    after which even every remaining variable at 0.1 could not meet the upper bounds on
    params, flops or latency_ms (exact for params and flops, a heuristic for latency). A
    masked action is taken as the nearest allowed one (`info["action_replaced"]`), or
    raises with `invalid_action="raise"`. The wall never masks all ten.

    ## Observation Space

    A `Dict` of float32 one-dimensional `Box`es with fixed shapes (`V` = 20 features per
    variable: the normalised features of the variable's first layer, an is-kernel flag and
    log2(1 + value) / 12; `M` = `max_layers`, which bounds the number of variables too):

    | key | shape | meaning |
    |---|---|---|
    | `variable` | (V,) | the current variable's features |
    | `variables` | (M * V,) | every variable's features, zero-padded, row-major |
    | `variable_mask` | (M,) | 1 for real variables, 0 for padding |
    | `decisions` | (M,) | chosen factor (0.1-1.0) per variable, 0 if not yet decided |
    | `position` | (1,) | t / T, the fraction of variables decided |
    | `previous_action` | (1,) | the previous factor (0 at the first step) |
    | `params_kept` | (1,) | estimated fraction of `start`'s parameters kept so far |
    | `action_mask` | (10,) | 1 where an action is allowed |

    `previous_action` feeds the paper's autoregressive policy. `params_kept` counts
    undecided variables as 1.0 and ignores kernel sizes and rounding; the terminal `info`
    has the exact numbers.

    ## Rewards

    As N2NRemoval-v0: 0 until the last step, then `R = C(2 - C) * A / A_teacher` with `C`
    relative to the teacher (not to the start architecture), -1 for degenerate or failed
    students, and the annealed constraint penalty.

    ## Starting State

    `start` with no variable decided; the first variable is current.

    ## Episode End

    The episode terminates after T steps, T the number of shrink variables of `start`. It
    is never truncated. The terminal `info` has the same keys as N2NRemoval-v0's.

    ## Arguments

    All of N2NRemoval-v0's, plus `start` (an `Architecture` derived from the teacher, a
    path to its JSON, or None for the teacher itself) and `include_kernels` (default
    False).

    ## Version History

    * v0: initial version.
    """

    def __init__(self, evaluator: Evaluator, *,
                 start: Architecture | str | os.PathLike[str] | None = None,
                 include_kernels: bool = False, max_layers: int = MAX_LAYERS,
                 **options: Any) -> None:
        max_layers = validate.integer("max_layers", max_layers, minimum=1)
        include_kernels = validate.flag("include_kernels", include_kernels)
        super().__init__(evaluator, **options)
        self.start = _resolve_start(start, self.evaluator.teacher_architecture)
        self.include_kernels = include_kernels
        self.variables = self.start.shrink_variables(include_kernels)
        if not self.variables:
            raise ValueError("the start architecture has no shrink variables")
        self.num_variables = len(self.variables)
        self._table = padded(self._variable_features(), max_layers)
        self._flat_table = self._table.ravel()
        self._variable_mask = padded(np.ones(self.num_variables, np.float32), max_layers)
        self._estimate = _ParamEstimate(self.start, self.variables)
        self._positions = [np.array([step / self.num_variables], np.float32)
                           for step in range(self.num_variables + 1)]
        self._students = RememberedStudents(len(self.start.layers))
        self.max_layers = max_layers
        self.action_space = spaces.Discrete(10)
        self.observation_space = spaces.Dict({
            "variable": spaces.Box(0.0, FEATURE_HIGH, (VARIABLE_FEATURES,), np.float32),
            "variables": spaces.Box(0.0, FEATURE_HIGH, (max_layers * VARIABLE_FEATURES,),
                                    np.float32),
            "variable_mask": spaces.Box(0.0, 1.0, (max_layers,), np.float32),
            "decisions": spaces.Box(0.0, 1.0, (max_layers,), np.float32),
            "position": spaces.Box(0.0, 1.0, (1,), np.float32),
            "previous_action": spaces.Box(0.0, 1.0, (1,), np.float32),
            "params_kept": spaces.Box(0.0, 1.0, (1,), np.float32),
            "action_mask": spaces.Box(0.0, 1.0, (10,), np.float32),
        })
        self._levels = [10] * self.num_variables
        """The chosen level a (factor a / 10) of every variable; 10 while undecided."""
        self._decisions = np.zeros(max_layers, np.float32)
        self._step, self._done = 0, True
        self._wall_mask: np.ndarray | None = None

    def _variable_features(self) -> np.ndarray:
        layer_features = self.start.features(normalized=True)
        rows = np.zeros((self.num_variables, VARIABLE_FEATURES), np.float32)
        for index, variable in enumerate(self.variables):
            if variable.layer is not None:
                rows[index, : layer_features.shape[1]] = layer_features[variable.layer]
            rows[index, -2] = float(variable.kind == "kernel")
            rows[index, -1] = np.log2(1 + variable.value) / 12
        return rows

    def action_masks(self) -> np.ndarray:
        """Allowed actions now (sb3-contrib's MaskablePPO convention): all of them, unless
        the action wall masks some."""
        return self._mask().copy()

    def _mask(self) -> np.ndarray:
        """The mask of the current state (computed once a state)."""
        if self._done or self.wall is None:
            return _ALL_ACTIONS
        if self._wall_mask is None:
            decided = [level / 10 for level in self._levels[: self._step]]
            self._wall_mask = self.wall.shrink_mask(self.start, decided, self.num_variables,
                                                    self.include_kernels)
        return self._wall_mask

    def _observation(self) -> dict[str, np.ndarray]:
        current = (np.zeros(VARIABLE_FEATURES, np.float32) if self._done
                   else self._table[self._step])
        previous = self._decisions[self._step - 1] if self._step > 0 else 0.0
        return {
            "variable": current.copy(), "variables": self._flat_table.copy(),
            "variable_mask": self._variable_mask.copy(), "decisions": self._decisions.copy(),
            "position": self._positions[self._step].copy(),
            "previous_action": np.array([previous], np.float32),
            "params_kept": np.array([self._estimate.fraction], np.float32),
            "action_mask": (_ALL_ACTIONS_FLOAT.copy() if self.wall is None
                            else self._mask().astype(np.float32)),
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self._levels = [10] * self.num_variables
        self._estimate.reset()
        self._decisions[:] = 0.0
        self._step, self._done, self._last_info, self._wall_mask = 0, False, {}, None
        return self._observation(), {"action_mask": self.action_masks()}

    def advance(self, action: int) -> tuple[Architecture | None, bool]:
        action = as_action(action, 10, "0-9, meaning keep 10%, 20%, ..., 100%")
        mask = self._mask()
        replaced = not mask[action]
        if replaced:
            if self.invalid_action == "raise":
                raise ValueError(f"action {action} leaves no way to meet the constraints "
                                 f"(action_wall); allowed: {np.flatnonzero(mask).tolist()}")
            action = nearest_allowed(action, mask)
        level = action + 1
        self._levels[self._step] = level
        self._decisions[self._step] = level / 10
        self._estimate.decide(self._step, level / 10)
        self._step += 1
        self._wall_mask = None
        if self._step < self.num_variables:
            return None, replaced
        student = self._students.get(tuple(self._levels), lambda: self.start.shrink(
            [level / 10 for level in self._levels], self.include_kernels))
        return student, replaced

    def _render_rgb(self) -> np.ndarray:
        widths = [scaled_value(v.kind, v.value, level)
                  for v, level in zip(self.variables, self._levels)]
        state = [1 if d else 0 for d in self._decisions[: self.num_variables]]
        kinds = ["conv" if v.kind == "width" else "maxpool" for v in self.variables]
        return render_bars(widths, kinds, state, self._step)

    def _render_text(self) -> str:
        lines = [f"N2NShrink: {self.start.name} step {self._step}/{self.num_variables}, "
                 f"estimated parameters kept {self._estimate.fraction:.1%}"]
        for index, (variable, level) in enumerate(zip(self.variables, self._levels)):
            pointer = ">" if index == self._step and not self._done else " "
            decided = index < self._step
            new = scaled_value(variable.kind, variable.value, level)
            choice = f"x{level / 10:.1f} -> {new}" if decided else "?"
            lines.append(f"{pointer}{index:>4} {variable.kind:<6} layer {variable.layer!s:<4} "
                         f"{variable.value:>5} {choice}")
        return "\n".join([*lines, *self._student_line()]) + "\n"


def _resolve_start(start: Architecture | str | os.PathLike[str] | None,
                   teacher: Architecture) -> Architecture:
    if start is None:
        return teacher
    if isinstance(start, str | os.PathLike):
        path = Path(start)
        if not path.is_file():
            raise ValueError(f"start {str(start)!r} is not an Architecture or a JSON file")
        start = Architecture.from_json(path.read_text())
    if not isinstance(start, Architecture):
        raise TypeError(f"start must be an Architecture, a JSON path or None, not "
                        f"{type(start).__name__}")
    if start.input_shape != teacher.input_shape or start.num_classes != teacher.num_classes:
        raise ValueError(f"start takes {start.input_shape} with {start.num_classes} classes; "
                         f"the teacher takes {teacher.input_shape} with {teacher.num_classes}")
    reason = start.degenerate_reason()
    if reason is not None:
        raise ValueError(f"start architecture is degenerate: {reason}")
    kinds = {layer.origin: layer.kind for layer in teacher.layers}
    foreign = [i for i, layer in enumerate(start.layers) if kinds.get(layer.origin) != layer.kind]
    if start.root_signature() != teacher.root_signature():
        raise ValueError(f"start is not derived from the teacher {teacher.name!r}: its root "
                         f"signature is {start.root_signature()}, the teacher's "
                         f"{teacher.root_signature()} (derive start with teacher.remove(...) "
                         "or from a stage-1 result of this teacher)")
    if foreign:
        raise ValueError(f"start is not derived from the teacher {teacher.name!r}: layers "
                         f"{foreign} have no counterpart in it (derive start with "
                         "teacher.remove(...) or from a stage-1 result of this teacher)")
    return start


class _ParamEstimate:
    """Fast estimate of the parameters kept under the factors decided so far: each weight
    scales with the factors of its input and output widths (undecided variables count 1.0;
    kernels and rounding are ignored). Kept up to date one decision at a time, touching
    only the weights of the decided variable, since it is read at every step."""

    def __init__(self, arch: Architecture, variables: tuple[ShrinkVariable, ...]) -> None:
        variable_of = {slot: index for index, variable in enumerate(variables)
                       if variable.kind == "width" for slot in variable.slots}
        none = len(variables)
        slots = arch.input_slots()
        weights: list[tuple[float, int, int]] = []  # (count, input variable, output variable)
        for index, (layer, params) in enumerate(zip(arch.layers, arch.layer_params())):
            source = variable_of.get(slots[("layer", index)], none)
            if layer.kind in ("conv", "linear"):
                weights.append((params, source, variable_of.get(("layer", index), none)))
            elif layer.kind == "bn":
                weights.append((params, none, source))
        for block, params in arch.projection_params().items():
            weights.append((params, variable_of.get(slots[("projection", block)], none),
                            variable_of.get(("projection", block), none)))
        self._weights = weights
        self._touching = [[weight for weight in weights if variable in weight[1:]]
                          for variable in range(len(variables))]
        self.total = float(sum(count for count, _, _ in weights))
        self.reset()

    def reset(self) -> None:
        """Every variable undecided (factor 1.0)."""
        self._scale = [1.0] * (len(self._touching) + 1)  # the factors, then "no variable"
        self._kept = self.total

    def decide(self, variable: int, factor: float) -> None:
        """Set ``variable``'s factor."""
        scale = self._scale
        touching = self._touching[variable]
        self._kept -= sum(count * scale[i] * scale[o] for count, i, o in touching)
        scale[variable] = factor
        self._kept += sum(count * scale[i] * scale[o] for count, i, o in touching)

    @property
    def fraction(self) -> float:
        """Estimated fraction of the parameters kept, in [0, 1]."""
        return min(max(self._kept / self.total, 0.0), 1.0) if self.total else 1.0
