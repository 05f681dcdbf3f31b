"""Where agents' policies settle on an N2N-Bench table, beside where its best students are.

A policy that picks each decision from its own distribution (every built-in agent's does,
conditioned on what came before) is pulled towards the actions whose episodes score well
on average. This script puts three things side by side, per decision (a removable layer
of the removal space, a variable of the shrink space):

- the marginal landscape: the mean true reward over all of the table's episodes that take
  each action (degenerate students at -1, as in the environments);
- the near-optimal students: how often each action appears among the episodes within
  ``--gap`` of the optimum's true reward;
- for every agent of each run directory given, how often its runs took each action in
  their last ``--last`` episodes (in percent, over all of that agent's runs), and how
  many distinct students a run played in them (a policy that stopped exploring plays few).

When the near-optimal actions are not those with the best marginal, a policy that climbs
the marginals settles away from the optimum: the landscape rewards interactions between
decisions that a first-order learner sees only slowly.

Run: ``python benchmarks/policy_landscape.py shrink [RUN_DIR ...] [--table FILE]``
(a few seconds; ``RUN_DIR`` is an ``n2n bench rl --out`` directory).
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from n2n_env.bench.lookup import load_table
from n2n_env.bench.rl import true_rewards
from n2n_env.bench.spaces import RemovalSpace
from n2n_env.bench.table import BenchTable


def decision_positions(table: BenchTable) -> list[tuple[str, int]]:
    """(name, step) of every decision an episode makes: removable layers or variables."""
    space = table.header.space_object()
    if isinstance(space, RemovalSpace):
        layers = space.teacher.layers
        return [(f"layer {i} ({layers[i].kind})", i) for i in space.removable_layers]
    return [(f"variable {i}", i) for i in range(space.episode_length)]


def episode_actions(table: BenchTable) -> np.ndarray:
    """(episodes, steps) the action sequence of every episode of the table's space."""
    space = table.header.space_object()
    return np.array([space.actions(episode) for episode in range(table.num_episodes)])


def action_shares(actions: np.ndarray, step: int, num_actions: int) -> np.ndarray:
    """Percent of the rows of ``actions`` that take each action at ``step``."""
    counts = np.bincount(actions[:, step], minlength=num_actions)
    return 100.0 * counts / max(1, counts.sum())


def agent_actions(run_dir: Path, last: int) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Per agent of a run directory, the actions of its runs' last ``last`` episodes, and
    how many distinct action sequences each run played in them."""
    taken: dict[str, list[list[int]]] = defaultdict(list)
    distinct: dict[str, list[int]] = defaultdict(list)
    for log in sorted((run_dir / "episodes").glob("*.csv")):
        with log.open(newline="") as handle:
            rows = list(csv.DictReader(handle))[-last:]
        for row in rows:
            taken[row["agent"]].append([int(a) for a in row["actions"]])
        if rows:
            distinct[rows[0]["agent"]].append(len({row["actions"] for row in rows}))
    return {agent: (np.array(rows), distinct[agent]) for agent, rows in taken.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space", choices=("removal", "shrink"))
    parser.add_argument("runs", nargs="*", type=Path, help="n2n bench rl run directories")
    parser.add_argument("--table", help="a table file (default: the shipped one)")
    parser.add_argument("--gap", type=float, default=0.005,
                        help="near-optimal: true reward within this of the optimum")
    parser.add_argument("--last", type=int, default=50,
                        help="episodes at the end of each run whose actions are counted")
    args = parser.parse_args()
    if args.last < 1:
        parser.error(f"--last must be at least 1, got {args.last}")
    table = load_table(args.table, args.space)
    rewards = true_rewards(table)[table.row_student]
    actions = episode_actions(table)
    num_actions = int(actions.max()) + 1
    near = actions[rewards >= rewards.max() - args.gap]
    agents: dict[str, np.ndarray] = {}
    distinct: dict[str, list[int]] = {}
    for run in args.runs:
        for agent, (taken, counts) in agent_actions(run, args.last).items():
            name = f"{agent} ({run.name})" if len(args.runs) > 1 else agent
            agents[name], distinct[name] = taken, counts
    print(f"{args.space} table {table.source}: optimum {rewards.max():.5f}; "
          f"{len(near)} episodes within {args.gap}")
    for name, counts in distinct.items():
        print(f"{name}: {np.median(counts):g} distinct students in a run's last {args.last} "
              f"episodes (median of {len(counts)} runs; range {min(counts)}-{max(counts)})")
    width = max([34, *(len(f"% {agent}, last {args.last}") + 1 for agent in agents)])
    header = "action".ljust(width) + "".join(f"{a:>7d}" for a in range(num_actions))
    for name, step in decision_positions(table):
        print(f"\n{name}\n{header}")
        marginal = [rewards[actions[:, step] == a].mean() for a in range(num_actions)]
        print("mean true reward".ljust(width) + "".join(f"{m:7.3f}" for m in marginal))
        print(f"% of the {len(near)} near-optimal".ljust(width)
              + "".join(f"{s:7.0f}" for s in action_shares(near, step, num_actions)))
        for agent, taken in agents.items():
            print(f"% {agent}, last {args.last}".ljust(width)
                  + "".join(f"{s:7.0f}" for s in action_shares(taken, step, num_actions)))


if __name__ == "__main__":
    main()
