"""N2NRemovalBench-v0 and N2NShrinkBench-v0: the two N2N MDPs with tabulated rewards.

Each is its real environment (same observation and action spaces, masks, reward formula,
constraints and ``info`` keys) whose evaluator is a
:class:`~n2n_env.bench.lookup.TableEvaluator`: the terminal reward costs a dictionary
lookup instead of a distillation, while every number in it was measured by real training.
Three keys are added to the terminal ``info``:

* ``simulated_seconds``: what this evaluation cost when the table was built;
* ``simulated_seconds_total``: the running total since the environment was made (across
  resets), so that agents can be compared at equal compute;
* ``table_seed``: the stored training seed whose accuracy was served (None for the mean,
  or for a degenerate student), so that a logged episode can be replayed exactly.

Every evaluation is charged, repeated students included: the benchmark models an
environment without a reward cache, as NAS-Bench-101's queries do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from n2n_env.arch import Architecture
from n2n_env.bench.lookup import TableEvaluator, load_table
from n2n_env.bench.table import BenchTable
from n2n_env.env_common import MAX_LAYERS
from n2n_env.removal_env import N2NRemovalEnv
from n2n_env.reward import LinearConstraint
from n2n_env.shrink_env import N2NShrinkEnv

TableArg = BenchTable | str | os.PathLike[str] | None
Constraints = Mapping[str, float] | Sequence[LinearConstraint] | None


class _Simulated:
    """Adds the table's evaluator, its seeding by the environment and the simulated time."""

    _evaluator: TableEvaluator
    simulated_seconds_total: float
    np_random: np.random.Generator

    def _set_up(self, space: str, table: TableArg, reward_seed: str,
                env_kwargs: dict[str, Any]) -> None:
        """Build the real environment of ``space`` on the table's evaluator (and, for the
        shrink space, the table's start)."""
        loaded = load_table(table, space)
        evaluator = TableEvaluator(loaded, reward_seed)
        if space == "shrink":
            env_kwargs["start"] = (Architecture.from_json(loaded.header.start)
                                   if loaded.header.start else None)
            env_kwargs["include_kernels"] = loaded.header.include_kernels
        super().__init__(teacher=evaluator.teacher_architecture,  # type: ignore[call-arg]
                         evaluator=evaluator, **env_kwargs)
        self._evaluator = evaluator
        self.simulated_seconds_total = 0.0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        observation, info = super().reset(seed=seed, options=options)  # type: ignore[misc]
        self._evaluator.rng = self.np_random  # seeds drawn by the environment's RNG
        return observation, info

    def _finish(self, student: Architecture, *args: Any
                ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        outcome = super()._finish(student, *args)  # type: ignore[misc]
        info = outcome[4]
        seconds = float(info["eval_seconds"])
        self.simulated_seconds_total += seconds
        info["simulated_seconds"] = seconds
        info["simulated_seconds_total"] = self.simulated_seconds_total
        info["table_seed"] = self._evaluator.last_seed
        return outcome


class N2NRemovalBenchEnv(_Simulated, N2NRemovalEnv):
    """
    ## Description

    N2NRemoval-v0 (see :class:`~n2n_env.removal_env.N2NRemovalEnv`) on N2N-Bench's teacher,
    with every terminal reward looked up in a table of real distillation results
    (docs/rl-benchmark.md). The optimum of the table is known, so an agent's regret can be
    measured exactly.

    ## Action Space

    As N2NRemoval-v0: `Discrete(2)`, 0 removes and 1 keeps the current layer.

    ## Observation Space

    As N2NRemoval-v0.

    ## Rewards

    As N2NRemoval-v0, with the accuracy of one stored training seed drawn by the
    environment's RNG per evaluation (`reward_seed="draw"`), or their mean
    (`reward_seed="mean"`).

    ## Starting State

    The teacher with no decision taken.

    ## Episode End

    After one decision per teacher layer. The terminal `info` has N2NRemoval-v0's keys plus
    `simulated_seconds`, `simulated_seconds_total` and `table_seed`.

    ## Arguments

    `gym.make("N2NRemovalBench-v0", table=None, reward_seed="draw", constraints=None,
    anneal_episodes=0, compression_metric="params", invalid_action="replace", max_layers=128,
    render_mode=None)`.
    `table` is a table file or a loaded `BenchTable`; None uses the shipped removal table
    (conv3 on mnist-10k).

    ## Version History

    * v0: initial version.
    """

    def __init__(self, *, table: TableArg = None, reward_seed: str = "draw",
                 constraints: Constraints = None, anneal_episodes: int = 0,
                 compression_metric: str = "params", invalid_action: str = "replace",
                 max_layers: int = MAX_LAYERS, render_mode: str | None = None) -> None:
        self._set_up("removal", table, reward_seed, {
            "constraints": constraints, "anneal_episodes": anneal_episodes,
            "compression_metric": compression_metric, "invalid_action": invalid_action,
            "max_layers": max_layers, "render_mode": render_mode})

class N2NShrinkBenchEnv(_Simulated, N2NShrinkEnv):
    """
    ## Description

    N2NShrink-v0 (see :class:`~n2n_env.shrink_env.N2NShrinkEnv`) on N2N-Bench's teacher,
    with every terminal reward looked up in a table of real distillation results
    (docs/rl-benchmark.md). The optimum of the table is known.

    ## Action Space

    As N2NShrink-v0: `Discrete(10)`, action `a` keeps `(a + 1) / 10` of the current
    variable.

    ## Observation Space

    As N2NShrink-v0.

    ## Rewards

    As N2NShrink-v0, with the accuracy of one stored training seed drawn by the
    environment's RNG per evaluation (`reward_seed="draw"`), or their mean
    (`reward_seed="mean"`).

    ## Starting State

    The table's start architecture (the teacher itself for the shipped table) with no
    variable decided.

    ## Episode End

    After one decision per shrink variable. The terminal `info` has N2NShrink-v0's keys
    plus `simulated_seconds`, `simulated_seconds_total` and `table_seed`.

    ## Arguments

    `gym.make("N2NShrinkBench-v0", table=None, reward_seed="draw", constraints=None,
    anneal_episodes=0, compression_metric="params", invalid_action="replace", max_layers=128,
    render_mode=None)`.
    `table` is a table file or a loaded `BenchTable`; None uses the shipped shrink table
    (conv3 on mnist-10k).

    ## Version History

    * v0: initial version.
    """

    def __init__(self, *, table: TableArg = None, reward_seed: str = "draw",
                 constraints: Constraints = None, anneal_episodes: int = 0,
                 compression_metric: str = "params", invalid_action: str = "replace",
                 max_layers: int = MAX_LAYERS, render_mode: str | None = None) -> None:
        self._set_up("shrink", table, reward_seed, {
            "constraints": constraints, "anneal_episodes": anneal_episodes,
            "compression_metric": compression_metric, "invalid_action": invalid_action,
            "max_layers": max_layers, "render_mode": render_mode})
