"""Does the learnt policy beat random search? A table's searches compared over seeds.

Table 1 runs REINFORCE and random search with the same seeds and the same budget (the
same iterations of 5 students per stage). Each search gets two scores per stage:

* the **best reward** it found there: the number its agent maximises, what a user of the
  search gets;
* the **mean reward of the students of its last** :data:`LATE_ITERATIONS` **iterations**:
  what its policy has learnt to propose. Random search's stays at its first iterations'
  level; a learning agent's should climb above it (the paper's Figure 3).

The scores are compared as N2N-Bench compares agents (:mod:`n2n_env.bench.stats`, the
estimators of Agarwal et al. 2021): the interquartile mean over seeds with a 95%
percentile-bootstrap interval, and the probability that a seed of the learning agent
beats a seed of random search, with its interval. Stage 2 searches from each run's own
stage-1 student, so its rows compare two whole pipelines rather than two agents on one
MDP.

:func:`section` returns the markdown, or nothing while either side has no finished seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from n2n_env.bench import stats
from n2n_env.paper import cells
from n2n_env.paper.runner import UnitState
from n2n_env.paper.tables import AGENT_NAMES, md_row

__all__ = ["BASELINE", "LATE_ITERATIONS", "MEASURES", "STAGE_NAMES", "Measure", "scores",
           "section"]

BASELINE = "random"
"""The agent every other one is held against."""
STAGE_NAMES = {"removal": "stage 1 (removal)", "shrink": "stage 2 (shrink)"}
LATE_ITERATIONS = 10
"""The last iterations whose students' mean reward says what a policy has learnt."""
Measure = Literal["best", "late"]
MEASURES: dict[Measure, str] = {"best": "Best reward", "late": "Mean reward, last {n}"}
"""The scores compared, by key, as the table's first column names them."""


def scores(states: Sequence[UnitState], measure: Measure = "best",
           window: int = LATE_ITERATIONS) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """agent -> stage -> (seed, score) of the finished searches, in seed order: the best
    reward found (``best``) or the mean reward of the students of the last ``window``
    iterations (``late``; all of them when the stage has fewer). A stage that found no
    valid student (its best reward is None), or whose result keeps no curves (``late``),
    is left out."""
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {list(MEASURES)}, got {measure!r}")
    found: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for state, stage, saved, means in _stages(states):
        if measure == "best":
            value = float(saved["best_reward"])
        else:
            late = [mean for mean in means[-window:] if not math.isnan(mean)]
            if not late:
                continue
            value = float(np.mean(late))
        found.setdefault(state.unit.label, {}).setdefault(stage, []).append(
            (int(state.unit.spec["seed"]), value))
    for per_stage in found.values():
        for entries in per_stage.values():
            entries.sort()
    return found


def _stages(states: Sequence[UnitState]) -> Iterator[tuple[UnitState, str, Mapping[str, Any],
                                                           list[float]]]:
    """(state, stage, its summary, its iterations' mean rewards, NaN where none) of every
    finished search's stages that found a valid student."""
    for state in states:
        if state.unit.kind != "compress" or state.record is None:
            continue
        result = state.record["result"]
        for stage, saved in result["stages"].items():
            if saved.get("best_reward") is None:
                continue
            means = result.get("curves", {}).get(stage, {}).get("reward_mean") or []
            yield state, stage, saved, [np.nan if v is None else float(v) for v in means]


def _window(states: Sequence[UnitState], stage: str) -> int:
    """The late window of ``stage``: :data:`LATE_ITERATIONS`, or fewer when a search's
    stage kept fewer iterations, so that every seed is scored over the same iterations."""
    lengths = [len(means) for _, name, _, means in _stages(states) if name == stage and means]
    return min([LATE_ITERATIONS, *lengths])


def section(states: Sequence[UnitState]) -> list[str]:
    """The comparison's markdown lines (a heading, a table, how to read it), or [] when
    random search or every other agent has no finished seed yet."""
    rows = []
    for measure, measure_name in MEASURES.items():
        for stage, stage_name in STAGE_NAMES.items():
            window = _window(states, stage)
            found = scores(states, measure, window)
            theirs = found.get(BASELINE, {}).get(stage)
            name = measure_name.format(n=f"{window} iteration{'s' if window > 1 else ''}")
            for agent, per_stage in found.items():
                ours = per_stage.get(stage)
                if agent == BASELINE or not ours or not theirs:
                    continue
                x = np.array([value for _, value in ours])
                y = np.array([value for _, value in theirs])
                rows.append(md_row([f"{name}, {stage_name}",
                                    AGENT_NAMES.get(agent, agent), _seeds(ours),
                                    str(stats.iqm_interval(x)), _seeds(theirs),
                                    str(stats.iqm_interval(y)),
                                    str(stats.improvement_interval(x, y))]))
    if not rows:
        return []
    return ["## The learnt policy against random search", "",
            md_row(["Score", "Agent", "Per seed", "IQM [95% CI]", "Random search per seed",
                    "IQM [95% CI]", "P(agent > random) [95% CI]"]),
            md_row(["---"] * 7), *rows, "",
            "- Best reward: the best reward a search found in the stage (validation "
            "accuracy after the short distillation, times the compression reward), what "
            "the search delivers. Mean reward, last "
            f"{LATE_ITERATIONS} iterations (fewer when a stage had fewer): the mean over the "
            "students its policy proposed at the end, what the policy has learnt (random "
            "search learns nothing). Both "
            "agents had the same seeds and the same number of students.",
            "- IQM: interquartile mean over seeds, with a 95% percentile-bootstrap interval; "
            "P(agent > random): the chance that a seed of the agent scores above a seed of "
            "random search (ties count one half), with a bootstrap interval "
            "(`n2n_env.bench.stats`, as N2N-Bench). With 3 seeds a side the intervals are "
            "wide; P = 1 means that every seed of the agent beat every seed of random "
            "search.",
            "- Stage 2 starts from each run's own stage-1 student: its rows compare the "
            "whole pipelines."]


def _seeds(entries: Sequence[tuple[int, float]]) -> str:
    return cells.per_seed([(seed, f"{value:.4f}") for seed, value in entries])
