"""How hard a table is: its optimum, the plateau of near-optimal students, the noise between
training seeds, and what random search needs to find the best student.

Random search draws every allowed action uniformly, which on both spaces draws episodes
uniformly; so the chance that one draw reaches a set of students is the share of episodes
that build them, and the expected number of draws to the first hit is its inverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from n2n_env.bench.rl import true_rewards
from n2n_env.bench.table import BenchTable

PLATEAU_GAPS = (0.0, 0.001, 0.005, 0.01)
"""Regrets below which a student counts as near-optimal, for the plateau figures."""


@dataclass(frozen=True)
class Landscape:
    """Figures that describe a table's search problem."""

    episodes: int
    students: int
    degenerate: int
    optimum: float
    """The best true reward (mean validation accuracy over seeds)."""
    optimum_student: int
    optimum_actions: tuple[int, ...]
    optimum_compression: float
    optimum_val_accuracy: float
    optimum_test_accuracy: float
    seed_sd: float
    """Median over trained students of the standard deviation of validation accuracy
    between seeds."""
    seed_tau: float
    """Kendall tau between the first two seeds' validation accuracies over all trained
    students (nan with one seed)."""
    plateau: dict[float, int]
    """Regret gap -> number of students within it of the optimum."""
    random_draws: dict[float, float]
    """Regret gap -> expected uniform random episodes to reach a student within it."""
    mean_seconds: float
    """Mean stored seconds of one evaluation (degenerate students cost 0)."""


def landscape(table: BenchTable) -> Landscape:
    rewards = true_rewards(table)
    best = int(np.argmax(rewards))
    optimum = float(rewards[best])
    trained = table.status < 0
    val = table.val_accuracy[trained].astype(np.float64)
    finite = np.isfinite(val).all(axis=1)
    seed_sd = float(np.median(val[finite].std(axis=1, ddof=1))) if table.num_seeds > 1 else 0.0
    tau = (float(stats.kendalltau(val[finite, 0], val[finite, 1]).statistic)
           if table.num_seeds > 1 else float("nan"))
    episode_rewards = rewards[table.row_student]
    plateau, draws = {}, {}
    for gap in PLATEAU_GAPS:
        near = optimum - rewards <= gap + 1e-12
        plateau[gap] = int(near.sum())
        share = float(np.mean(optimum - episode_rewards <= gap + 1e-12))
        draws[gap] = 1 / share
    episode = int(np.flatnonzero(table.row_student == best)[0])
    return Landscape(
        episodes=table.num_episodes, students=table.num_students,
        degenerate=int((~trained).sum()), optimum=optimum, optimum_student=best,
        optimum_actions=table.header.space_object().actions(episode),
        optimum_compression=float(table.compression()[best]),
        optimum_val_accuracy=float(table.val_accuracy[best].mean()),
        optimum_test_accuracy=float(table.test_accuracy[best].mean()),
        seed_sd=seed_sd, seed_tau=tau, plateau=plateau, random_draws=draws,
        mean_seconds=float(table.seconds[table.row_student].mean()),
    )


def describe(table: BenchTable) -> str:
    """The header and the landscape as text."""
    header, shape = table.header, landscape(table)
    lines = [
        f"table:        {table.source} (digest {table.digest()})",
        f"space:        {header.space}, {shape.episodes} episodes, {shape.students} distinct "
        f"students, {shape.degenerate} degenerate",
        f"teacher:      {header.teacher_name} on {header.dataset}, validation accuracy "
        f"{header.teacher_accuracy:.4f}, test {header.teacher_test_accuracy:.4f}",
        f"recipe:       {header.recipe_digest} {header.recipe}",
        f"seeds:        {', '.join(map(str, header.seeds))}",
        f"built with:   {header.command}",
        f"built on:     {header.machine}; n2n {header.package_version}; "
        f"{header.build_seconds / 3600:.2f} hours of training",
        f"optimum:      true reward {shape.optimum:.5f}: student {shape.optimum_student} "
        f"(actions {''.join(map(str, shape.optimum_actions))}), compression "
        f"{shape.optimum_compression:.4f} ({1 / max(1 - shape.optimum_compression, 1e-12):.1f}x),"
        f" validation {shape.optimum_val_accuracy:.4f}, test {shape.optimum_test_accuracy:.4f}",
        f"seed noise:   median sd of validation accuracy {shape.seed_sd:.4f}; Kendall tau "
        f"between seeds {shape.seed_tau:.3f}",
        f"evaluation:   {shape.mean_seconds:.3f} s on average (stored seconds)",
        "near-optimal: " + "; ".join(
            f"within {gap:g}: {shape.plateau[gap]} students, random search needs "
            f"{shape.random_draws[gap]:,.1f} episodes on average" for gap in PLATEAU_GAPS),
    ]
    lines += [f"note:         {key}: {value}" for key, value in sorted(header.extra.items())]
    return "\n".join(lines)
