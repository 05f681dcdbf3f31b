"""N2NRemovalBench-v0 and N2NShrinkBench-v0: the two N2N MDPs with tabulated rewards.

Each is its real environment (same observation and action spaces, masks, reward formula,
constraints and ``info`` keys) whose evaluator is a
:class:`~n2n_env.bench.lookup.TableEvaluator`: the terminal reward costs a dictionary
lookup instead of a distillation, while every number in it was measured by real training.
Three keys are added to the terminal ``info``:

* ``simulated_seconds``: what this evaluation cost when the table was built (0 for a
  student larger than the teacher, which the real environments score 0 without training,
  with ``trained`` False and accuracy 0, and so does the benchmark);
* ``simulated_seconds_total``: the running total since the environment was made (across
  resets), so that agents can be compared at equal compute;
* ``table_seed``: the stored training seed whose accuracy was served (None for the mean,
  or for a degenerate student), so that a logged episode can be replayed exactly.

Every evaluation is charged, repeated students included: the benchmark models an
environment without a reward cache, as NAS-Bench-101's queries do.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from n2n_env.arch import Architecture
from n2n_env.bench.lookup import TableEvaluator
from n2n_env.evaluators import Evaluation
from n2n_env.removal_env import N2NRemovalEnv
from n2n_env.reward import LATENCY, parse_constraints
from n2n_env.shrink_env import N2NShrinkEnv


class _Simulated:
    """Adds the table's evaluator, its seeding by the environment and the simulated time."""

    _evaluator: TableEvaluator
    simulated_seconds_total: float
    np_random: np.random.Generator

    def _set_up(self, space: str, evaluator: TableEvaluator, options: dict[str, Any]) -> None:
        """Build the real environment of ``space`` on the table's evaluator (and, for the
        shrink space, the table's start)."""
        if not isinstance(evaluator, TableEvaluator):
            raise TypeError(f"evaluator must be a TableEvaluator, got {evaluator!r}")
        header = evaluator.table.header
        if header.space != space:
            raise ValueError(f"the {space} environment needs a {space} table, got "
                             f"{evaluator.table.source!r} ({header.space})")
        if options.get("compression_metric") == "latency" or any(
                LATENCY in row.coefficients
                for row in parse_constraints(options.get("constraints"))):
            raise ValueError("N2N-Bench tables hold no latency: compression_metric must be "
                             "'params' or 'flops' there, and constraints may bound params, "
                             "flops and accuracy (latency needs the real environments, "
                             "N2NRemoval-v0 and N2NShrink-v0)")
        if space == "shrink":
            options["start"] = Architecture.from_json(header.start) if header.start else None
            options["include_kernels"] = header.include_kernels
        super().__init__(evaluator, **options)  # type: ignore[call-arg]
        self._evaluator = evaluator
        self.simulated_seconds_total = 0.0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        observation, info = super().reset(seed=seed, options=options)  # type: ignore[misc]
        self._evaluator.rng = self.np_random  # seeds drawn by the environment's RNG
        return observation, info

    def finish(self, student: Architecture, evaluation: Evaluation, replaced: bool = False
               ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self.terminal_reward.scores_without_training(evaluation):  # type: ignore[attr-defined]
            # As the real environment does: scored 0 untrained, whatever the table holds
            # (a diverged seed included), and nothing charged. The seed was still drawn.
            evaluation = dataclasses.replace(evaluation, accuracy=0.0, failure=None,
                                             wall_seconds=0.0, trained=False)
        outcome = super().finish(student, evaluation, replaced)  # type: ignore[misc]
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
    (conv3 on mnist-10k). `N2NRemovalBenchEnv(TableEvaluator(table), ...)` takes the
    table's evaluator directly.

    ## Version History

    * v0: initial version.
    """

    def __init__(self, evaluator: TableEvaluator, **options: Any) -> None:
        self._set_up("removal", evaluator, options)

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
    (conv3 on mnist-10k). `N2NShrinkBenchEnv(TableEvaluator(table), ...)` takes the
    table's evaluator directly.

    ## Version History

    * v0: initial version.
    """

    def __init__(self, evaluator: TableEvaluator, **options: Any) -> None:
        self._set_up("shrink", evaluator, options)
