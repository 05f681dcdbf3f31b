"""Is the top of an N2N-Bench table a plateau of the paper's reward?

The paper's reward is R = C(2 - C) * A / A_teacher. C(2 - C) flattens as C -> 1 (0.9975 at
20x, 0.9999 at 100x), so near the top students may differ by compression that the reward
hardly sees, and random draws may reach a wide, flat top easily. This script measures it on
a table: for the students within a gap of the optimum's true reward it prints how far
apart they are in compression (x) and in each of the reward's two factors, the slope of
C(2 - C) at the optimum (what the reward pays for compressing further there), and the
seed noise of the reward, against which every difference must be read.

Run: ``python benchmarks/reward_plateau.py removal`` (or ``shrink``, or ``--table FILE``);
a second.
"""

from __future__ import annotations

import argparse

import numpy as np

from n2n_env.bench.lookup import load_table
from n2n_env.bench.rl import true_rewards
from n2n_env.bench.table import BenchTableError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space", choices=("removal", "shrink"))
    parser.add_argument("--table", help="a table file (default: the shipped one)")
    args = parser.parse_args()
    try:
        table = load_table(args.table, args.space)
    except (BenchTableError, OSError) as error:
        parser.error(str(error))
    compression = table.compression("params")
    size_factor = compression * (2.0 - compression)
    rewards = true_rewards(table)
    trained = rewards > 0  # not degenerate, not larger than the teacher
    accuracy_factor = table.val_accuracy.astype(np.float64).mean(axis=1) / (
        table.header.teacher_accuracy)
    best = int(np.argmax(rewards))
    noise = table.val_accuracy.astype(np.float64).std(axis=1) / table.header.teacher_accuracy
    slope = 2 * (1 - compression[best])
    print(f"{args.space} table {table.source}: optimum {rewards[best]:.5f} at "
          f"{1 / (1 - compression[best]):.1f}x; slope of C(2-C) there {slope:.3f}"
          f" (halving the student again would add {halved_gain(compression[best]):.4f}); "
          f"seed noise of the accuracy factor: median sd {np.median(noise[trained]):.4f}")
    print("\n| within | students | compression | C(2-C) | A/A_teacher | sd of log C(2-C) | "
          "sd of log A/A_teacher |")
    print("|---|---|---|---|---|---|---|")
    for gap in (0.005, 0.01, 0.02):
        near = trained & (rewards >= rewards[best] - gap)
        ratio = 1 / (1 - compression[near])
        spreads = np.log(size_factor[near]).std(), np.log(accuracy_factor[near]).std()
        print(f"| {gap} | {near.sum():,} | {ratio.min():.1f}-{ratio.max():.1f}x | "
              f"{size_factor[near].min():.4f}-{size_factor[near].max():.4f} | "
              f"{accuracy_factor[near].min():.4f}-{accuracy_factor[near].max():.4f} | "
              f"{spreads[0]:.4f} | {spreads[1]:.4f} |")


def halved_gain(compression: float) -> float:
    """How much C(2 - C) grows when the student's size is halved once more."""
    halved = 1 - (1 - compression) / 2
    return halved * (2 - halved) - compression * (2 - compression)


if __name__ == "__main__":
    main()
