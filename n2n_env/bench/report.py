"""What ``n2n bench rl`` reports: regret curves, final statistics, a markdown table, plots.

Everything is computed from the episode logs and the table, so a report can be redrawn
from logs alone. Lower regret is better; "improvement over random" is the probability that
a run of the agent ends with a lower regret than a run of random search.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from n2n_env.bench import stats
from n2n_env.bench.rl import true_rewards
from n2n_env.bench.table import BenchTable

BASELINE = "random"


@dataclass(frozen=True)
class AgentSummary:
    """One agent's results over its runs at the budget."""

    agent: str
    runs: int
    final_regret: stats.Interval
    """IQM of the final regret over runs, with its bootstrap interval."""
    improvement_over_random: stats.Interval | None
    """P(a run of this agent ends with lower regret than a run of random search)."""
    final_reward: float
    """IQM of the incumbent's true reward."""
    test_accuracy: float
    """IQM of the incumbent's test accuracy (mean over the table's seeds)."""
    compression: float
    """IQM of the incumbent's compression (1 - params/teacher params)."""
    found_optimum: int
    """Runs whose incumbent is an optimal student."""
    mean_episodes: float
    """Mean number of episodes per run (equal to the budget for an evaluation budget)."""


def incumbent_curve(records: Sequence[dict[str, Any]]) -> np.ndarray:
    """The true reward of the incumbent (best observed reward so far) after each episode."""
    best_seen, incumbent, curve = -np.inf, -1.0, []
    for record in records:
        if record["reward"] > best_seen:
            best_seen, incumbent = record["reward"], record["true_reward"]
        curve.append(incumbent)
    return np.array(curve)


def _incumbent_record(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    best = records[0]
    for record in records[1:]:
        if record["reward"] > best["reward"]:
            best = record
    return best


def group_runs(records: Sequence[dict[str, Any]]) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """agent -> seed -> that run's records, in episode order. Records of one run must number
    their episodes 1, 2, ...: a run logged twice (two run directories holding the same agent
    and seed, say) raises a ValueError rather than being read as one longer run."""
    runs: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(dict)
    for record in records:
        runs[record["agent"]].setdefault(record["seed"], []).append(record)
    for agent, by_seed in runs.items():
        for seed, run in by_seed.items():
            run.sort(key=lambda r: r["episode"])
            if [r["episode"] for r in run] != list(range(1, len(run) + 1)):
                raise ValueError(f"the logs of {agent} seed {seed} do not number their "
                                 "episodes 1, 2, ... once each: is that run logged twice, "
                                 "or a log cut short?")
    return dict(runs)


def regret_by_evaluations(runs: dict[int, list[dict[str, Any]]], optimum: float,
                          evaluations: int) -> np.ndarray:
    """(runs, evaluations) regret of the incumbent after each evaluation."""
    curves = []
    for seed in sorted(runs):
        curve = incumbent_curve(runs[seed])[:evaluations]
        if len(curve) < evaluations:
            curve = np.concatenate([curve, np.full(evaluations - len(curve), curve[-1])])
        curves.append(optimum - curve)
    return np.array(curves)


def regret_by_seconds(runs: dict[int, list[dict[str, Any]]], optimum: float,
                      times: np.ndarray) -> np.ndarray:
    """(runs, times) regret of the incumbent once that many simulated seconds are spent
    (before the first evaluation ends: the regret of the worst reward, optimum + 1)."""
    curves = []
    for seed in sorted(runs):
        run = runs[seed]
        ends = np.array([r["simulated_seconds_total"] for r in run])
        incumbent = incumbent_curve(run)
        done = np.searchsorted(ends, times, side="right")
        values = np.where(done > 0, incumbent[np.maximum(done - 1, 0)], -1.0)
        curves.append(optimum - values)
    return np.array(curves)


def summarize(records: Sequence[dict[str, Any]], table: BenchTable,
              evaluations: int | None = None) -> list[AgentSummary]:
    """Per-agent statistics at the end of each run (or after ``evaluations`` episodes)."""
    optimum = float(true_rewards(table).max())
    runs = {agent: {seed: run[:evaluations] if evaluations else run
                    for seed, run in by_seed.items()}
            for agent, by_seed in group_runs(records).items()}
    final = {agent: np.array([optimum - incumbent_curve(by_seed[s])[-1] for s in sorted(by_seed)])
             for agent, by_seed in runs.items()}
    summaries = []
    for agent, by_seed in runs.items():
        incumbents = [_incumbent_record(by_seed[s]) for s in sorted(by_seed)]
        improvement = None
        if BASELINE in final and agent != BASELINE:
            improvement = stats.improvement_interval(-final[agent], -final[BASELINE])
        summaries.append(AgentSummary(
            agent=agent, runs=len(by_seed), final_regret=stats.iqm_interval(final[agent]),
            improvement_over_random=improvement,
            final_reward=float(stats.iqm([r["true_reward"] for r in incumbents])),
            test_accuracy=float(stats.iqm([r["test_accuracy"] for r in incumbents])),
            compression=float(stats.iqm([r["compression"] for r in incumbents])),
            found_optimum=int(np.sum(final[agent] <= 1e-12)),
            mean_episodes=float(np.mean([len(run) for run in by_seed.values()])),
        ))
    return summaries


def markdown(summaries: Sequence[AgentSummary], table: BenchTable, budget: str,
             command: str) -> str:
    """The results as a markdown table, with what they were measured on."""
    optimum = float(true_rewards(table).max())
    header = table.header
    lines = [
        f"# n2n bench rl: {header.space} table ({header.teacher_name} on {header.dataset})",
        "",
        f"Command: `{command}`",
        "",
        *[f"**Table note ({key})**: {value}\n" for key, value in sorted(header.extra.items())],
        f"Budget: {budget}. Optimum (true reward of the best student): {optimum:.5f}. "
        "Regret = optimum - true reward of the incumbent (the student with the best reward "
        "the agent saw). IQM over runs with 95% percentile-bootstrap intervals; P(improve) "
        "is the probability that a run ends with lower regret than a run of random search.",
        "",
        "| agent | runs | final regret, IQM [95% CI] | P(improve over random) [95% CI] | "
        "true reward | test accuracy | compression | found optimum |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for summary in sorted(summaries, key=lambda s: s.final_regret.point):
        improvement = (str(summary.improvement_over_random)
                       if summary.improvement_over_random else "-")
        ratio = 1 / max(1 - summary.compression, 1e-12)
        lines.append(
            f"| {summary.agent} | {summary.runs} | {summary.final_regret} | {improvement} | "
            f"{summary.final_reward:.5f} | {summary.test_accuracy:.4f} | "
            f"{summary.compression:.4f} ({ratio:.1f}x) | {summary.found_optimum}/{summary.runs} |")
    return "\n".join(lines) + "\n"


def plot(records: Sequence[dict[str, Any]], table: BenchTable, out: Path,
         evaluations: int | None = None) -> list[Path]:
    """Regret curves over evaluations and over simulated seconds (IQM with bootstrap
    bands), and a performance profile of the final true reward; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    optimum = float(true_rewards(table).max())
    runs = group_runs(records)
    length = evaluations or max(len(run) for by in runs.values() for run in by.values())
    paths = []
    horizon = min(max(r["simulated_seconds_total"] for r in run)
                  for by in runs.values() for run in by.values())
    times = np.linspace(0, horizon, 200)
    axes = (
        (np.arange(1, length + 1), "evaluations (students trained)", "regret_evaluations.png",
         lambda agent: regret_by_evaluations(runs[agent], optimum, length)),
        (times, "simulated seconds of training", "regret_seconds.png",
         lambda agent: regret_by_seconds(runs[agent], optimum, times)),
    )
    for x, label, name, curves in axes:
        figure, axis = plt.subplots(figsize=(7, 4.5))
        for agent in sorted(runs):
            center, low, high = stats.iqm_band(curves(agent))
            axis.plot(x, center, label=agent)
            axis.fill_between(x, low, high, alpha=0.2)
        _finish(axis, label, "regret (IQM, 95% CI)", table)
        paths.append(_save(figure, out / name))

    finals = {agent: np.array([incumbent_curve(run[:length])[-1] for run in by.values()])
              for agent, by in runs.items()}
    lowest = min(float(values.min()) for values in finals.values())
    thresholds = np.linspace(lowest, optimum, 200)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for agent in sorted(finals):
        axis.plot(thresholds, stats.performance_profile(finals[agent], thresholds), label=agent)
    axis.set_ylim(-0.02, 1.02)
    _finish(axis, "true reward threshold", "fraction of runs above", table, log=False)
    paths.append(_save(figure, out / "performance_profile.png"))
    return paths


def _finish(axis: Any, xlabel: str, ylabel: str, table: BenchTable, log: bool = True) -> None:
    if log:
        axis.set_yscale("symlog", linthresh=1e-4)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(f"N2N-Bench {table.header.space}: {table.header.teacher_name} on "
                   f"{table.header.dataset}")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_summary(summaries: Sequence[AgentSummary], path: Path) -> Path:
    """The summaries as JSON (for scripts and docs)."""
    path.write_text(json.dumps([asdict(s) for s in summaries], indent=1) + "\n")
    return path
