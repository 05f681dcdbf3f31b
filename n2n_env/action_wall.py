"""AMC's action wall: mask the actions after which a size constraint can no longer be met.

AMC (He et al., ECCV 2018) bounds the agent's actions so that whatever it does next, the
compressed network can still meet its resource budget. Here that is an option of both
environments (``action_wall=True``), beside the paper's annealed relaxation eps_t (which
only penalises a finished student over budget).

The wall looks at the upper-bound constraints on quantities that shrink as the network
shrinks, rows of ``A x <= b`` with every coefficient >= 0 over ``params``, ``flops`` and
``latency_ms`` (:data:`WALL_QUANTITIES`; rows on accuracy or with a negative coefficient
are left to the reward). For each action it builds the most favourable completion of the
episode after that action and measures it (params and FLOPs from the architecture,
latency from the evaluator's per-layer table); an action is masked when its completion
violates a row. The environments decide which completion is most favourable:

* shrink MDP (:func:`shrink_mask`): every remaining variable at factor 0.1. Parameters and
  FLOPs are monotone in every width and kernel, so this is exact for them: an action is
  masked exactly when no completion meets the bound. Latency is only roughly monotone in
  widths, so for ``latency_ms`` it is a heuristic bound.
* removal MDP (:func:`removal_mask`): removing a layer can make a network bigger (removing
  a pooling layer enlarges the classifier's input; removing a conv can widen the next
  conv's input), so no completion is favourable for every network. The wall takes the
  better of two: remove every remaining removable layer except the downsampling ones (any
  ``*pool`` kind, any layer with stride > 1), and keep every remaining layer. It is a
  heuristic bound there.

A completion that is degenerate (appendix 11.2) tells nothing about the bound and is
skipped; an action with no measurable completion is not masked. The wall never masks
every action: in a state from which no action's completion meets the bound (the bound
is out of reach from the start), it masks nothing. In the removal MDP it only ever
masks *keep*: removing a removable layer stays available. Pure Python, no torch: the
latency comes through the evaluator's ``latency_ms(arch)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from n2n_env.arch import Architecture, Layer
from n2n_env.reward import LATENCY, LinearConstraint

WALL_QUANTITIES = ("params", "flops", LATENCY)
"""Quantities that shrink as the network shrinks: the wall bounds only these."""
SHRINK_ACTIONS = 10
LOWEST_FACTOR = 0.1


def wall_rows(constraints: Sequence[LinearConstraint]) -> tuple[LinearConstraint, ...]:
    """The rows the wall can enforce: every coefficient >= 0, every quantity in
    :data:`WALL_QUANTITIES`. ValueError if there are none (the wall would be inert)."""
    rows = tuple(row for row in constraints
                 if all(q in WALL_QUANTITIES and w >= 0 for q, w in row.coefficients.items()))
    if not rows:
        raise ValueError(f"action_wall=True masks actions against upper bounds on "
                         f"{', '.join(WALL_QUANTITIES)} (coefficients >= 0); the "
                         "constraints give none")
    return rows


def downsamples(layer: Layer) -> bool:
    """Whether removing ``layer`` would enlarge the feature maps after it."""
    return layer.kind.endswith("pool") or layer.stride > 1


class ActionWall:
    """Decides whether an architecture, as a completion of an episode, meets the
    wall-able constraints. ``latency`` estimates an architecture's latency in ms (the
    evaluator's ``latency_ms``); it is needed only when a row bounds ``latency_ms``."""

    def __init__(self, constraints: Sequence[LinearConstraint],
                 latency: Callable[[Architecture], float] | None = None) -> None:
        self.rows = wall_rows(constraints)
        self._needs = {q for row in self.rows for q in row.coefficients}
        if LATENCY in self._needs and latency is None:
            raise ValueError("the action wall on latency_ms needs an evaluator that "
                             "measures latency")
        self._latency = latency

    def measure(self, arch: Architecture) -> dict[str, float] | None:
        """The bounded quantities of ``arch``, or None if it is degenerate."""
        if arch.degenerate_reason() is not None:
            return None
        measured = {}
        if "params" in self._needs:
            measured["params"] = float(arch.num_params())
        if "flops" in self._needs:
            measured["flops"] = float(arch.flops())
        if LATENCY in self._needs:
            assert self._latency is not None
            measured[LATENCY] = float(self._latency(arch))
        return measured

    def reachable(self, completions: Sequence[Architecture]) -> bool | None:
        """True if a completion meets every row, False if none does, None if none could
        be measured."""
        measured = [m for m in map(self.measure, completions) if m is not None]
        if not measured:
            return None
        return any(all(row.satisfied(m) for row in self.rows) for m in measured)

    def removal_mask(self, teacher: Architecture, kept: Sequence[bool], step: int
                     ) -> np.ndarray:
        """The mask ``[remove, keep]`` of a removable layer ``step``, ``kept`` the decisions
        on the layers before it: keep is masked when no completion after keeping meets
        the bound and some completion after removing may."""
        after_keep = self.reachable(removal_completions(teacher, kept, step, True))
        if after_keep is not False:
            return np.ones(2, dtype=bool)
        after_remove = self.reachable(removal_completions(teacher, kept, step, False))
        return np.array([True, after_remove is False], dtype=bool)

    def shrink_mask(self, start: Architecture, decided: Sequence[float], count: int,
                    include_kernels: bool) -> np.ndarray:
        """The mask of the 10 actions on shrink variable ``len(decided)`` of ``count``,
        ``decided`` the factors chosen before it."""
        step = len(decided)
        mask = np.ones(SHRINK_ACTIONS, dtype=bool)
        for action in range(SHRINK_ACTIONS):
            factors = [*decided, (action + 1) / 10] + [LOWEST_FACTOR] * (count - step - 1)
            completion = start.shrink([round(f, 1) for f in factors], include_kernels)
            mask[action] = self.reachable([completion]) is not False
        return mask if mask.any() else np.ones(SHRINK_ACTIONS, dtype=bool)


def removal_completions(teacher: Architecture, kept: Sequence[bool], step: int, keep: bool
                        ) -> list[Architecture]:
    """The two completions the removal wall measures after deciding ``keep`` on layer
    ``step``: the remaining removable layers removed (downsampling ones kept), and all
    kept."""
    removable = teacher.removable()
    prefix = [*kept[:step], keep]
    rest = range(step + 1, len(teacher.layers))
    lean = prefix + [not removable[i] or downsamples(teacher.layers[i]) for i in rest]
    full = prefix + [True] * len(rest)
    return [teacher.remove(lean)] + ([teacher.remove(full)] if full != lean else [])
