"""How far a simple learner that is not a policy gradient gets on an N2N-Bench table.

The cross-entropy method (Rubinstein, 1999) keeps one categorical distribution per
decision, independent of the others. Each batch it samples ``--batch`` episodes, keeps the
``--elite`` with the best rewards, and moves every decision's distribution towards the
elite's actions by ``--smoothing``; a ``--floor`` of the uniform distribution keeps every
action possible. Like REINFORCE with ``shrink_policy="independent"`` and
``risk_seeking`` it follows the *best* episodes it sees, not the average one, and nothing
couples one decision's distribution to another's.

It plays the benchmark environment through Gymnasium like every agent (the environment
draws the stored seed of each evaluation), and reports, over ``--seeds`` runs of
``--evaluations`` episodes, the final regret of its incumbent with the harness's
statistics (IQM, 95% bootstrap interval; probability of a lower regret than a run of
uniform sampling, the same loop with no elite, which is random search).

This is a reference for what the landscape allows, not a built-in agent: `n2n bench rl`'s
leaderboard stays the built-in agents'.

Run: ``python benchmarks/cem_reference.py shrink [--table FILE] [--seeds 20]`` (about
15 s a space).
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import n2n_env  # noqa: F401  (registers the environments)
from n2n_env.bench import stats
from n2n_env.bench.lookup import load_table
from n2n_env.bench.rl import ENV_IDS, true_rewards
from n2n_env.bench.table import BenchTable


def run(table: BenchTable, seed: int, evaluations: int, batch: int, elite: int,
        smoothing: float, floor: float) -> tuple[float, list[float]]:
    """One run (elite 0: uniform sampling): the regret of the student with the best reward
    it saw, and the true reward of every episode's student in order."""
    space = table.header.space_object()
    rewards = true_rewards(table)
    env = gym.make(ENV_IDS[table.header.space], table=table)
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    num_actions = int(env.action_space.n)  # type: ignore[attr-defined]
    probabilities = np.full((space.episode_length, num_actions), 1.0 / num_actions)
    best_reward, incumbent, played = -np.inf, 0, 0
    seen: list[float] = []
    while played < evaluations:
        taken, scores = [], []
        for _ in range(min(batch, evaluations - played)):
            actions, reward = [], 0.0
            _, info = env.reset()
            done = False
            while not done:
                allowed = np.asarray(info["action_mask"]) > 0
                p = np.where(allowed, probabilities[len(actions)], 0.0)
                action = int(rng.choice(num_actions, p=p / p.sum()))
                _, step_reward, terminated, truncated, info = env.step(action)
                actions.append(action)
                reward += float(step_reward)
                done = terminated or truncated
            student = table.student_of(space.index(actions))
            taken.append(actions)
            scores.append(reward)
            seen.append(float(rewards[student]))
            if reward > best_reward:
                best_reward, incumbent = reward, student
        played += len(taken)
        if elite:
            chosen = np.asarray(taken)[np.argsort(scores)[-elite:]]
            for step in range(space.episode_length):
                share = np.bincount(chosen[:, step], minlength=num_actions) / len(chosen)
                probabilities[step] = (1 - smoothing) * probabilities[step] + smoothing * share
            probabilities = (1 - floor) * probabilities + floor / num_actions
    env.close()
    return float(rewards.max() - rewards[incumbent]), seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space", choices=sorted(ENV_IDS))
    parser.add_argument("--table", help="a table file (default: the shipped one)")
    parser.add_argument("--seeds", type=int, default=20, help="runs, seeds 0..N-1")
    parser.add_argument("--evaluations", type=int, default=300, help="episodes per run")
    parser.add_argument("--batch", type=int, default=20, help="episodes per update")
    parser.add_argument("--elite", type=int, default=4, help="best episodes kept per batch")
    parser.add_argument("--smoothing", type=float, default=0.5,
                        help="step of the distributions towards the elite's actions")
    parser.add_argument("--floor", type=float, default=0.02,
                        help="share of the uniform distribution mixed in after each step")
    args = parser.parse_args()
    if not 0 < args.elite <= args.batch:
        parser.error(f"--elite must be in 1..--batch ({args.batch}), got {args.elite}")
    for name in ("seeds", "evaluations"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    for name in ("smoothing", "floor"):
        if not 0 <= getattr(args, name) <= 1:
            parser.error(f"--{name} must be in [0, 1], got {getattr(args, name)}")
    table = load_table(args.table, args.space)
    regrets = {}
    for name, elite in (("cross-entropy method", args.elite), ("uniform (random search)", 0)):
        regrets[name] = np.array([
            run(table, seed, args.evaluations, args.batch, elite, args.smoothing, args.floor)[0]
            for seed in range(args.seeds)])
    print(f"{args.space} table {table.source}: {args.seeds} runs of {args.evaluations} "
          f"evaluations; batch {args.batch}, elite {args.elite}, smoothing {args.smoothing}, "
          f"floor {args.floor}\n")
    print("| method | final regret, IQM [95% CI] | P(lower regret than uniform) [95% CI] |")
    print("|---|---|---|")
    uniform = regrets["uniform (random search)"]
    for name, values in regrets.items():
        better = ("-" if values is uniform
                  else str(stats.improvement_interval(-values, -uniform)))
        print(f"| {name} | {stats.iqm_interval(values)} | {better} |")


if __name__ == "__main__":
    main()
