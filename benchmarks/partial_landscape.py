"""An early look at an N2N-Bench table from its finished parts, before the table is complete.

Reads the committed part files of a build (removal or shrink, from its ``identity.json``),
scores every finished student with the paper's reward (validation accuracy, each stored
seed), and prints how many students lie near the best one found so far and the
seed-to-seed spread, and what each decision is worth: the mean reward of the finished
episodes that take the decision's largest action (keep the layer; keep all of the
variable) minus that of those that take its smallest (remove it; keep 10%), degenerate
students counting -1 as in the environments. On an unfinished build the numbers are a
preview (builds train their parts spread over the space); on a finished one they are the
table's (``n2n bench info SPACE`` prints its header and near-optimum counts).

Run: ``python benchmarks/partial_landscape.py [--work benchmarks/n2n-bench/SPACE-conv3-mnist-10k]``
(about 10 s).
"""

from __future__ import annotations

import argparse

import numpy as np

from n2n_env.bench.build import BuildError, FinishedParts, read_finished
from n2n_env.bench.spaces import RemovalSpace
from n2n_env.reward import n2n_reward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="benchmarks/n2n-bench/removal-conv3-mnist-10k",
                        help="the build's work directory (teacher.pt and parts/)")
    args = parser.parse_args()
    try:
        build = read_finished(args.work)
    except BuildError as error:
        parser.error(str(error))
    record, teacher, space = build.record, build.record.architecture, build.students
    params = {student.signature(): student.num_params()
              for student, reason in zip(space.students, space.reasons) if reason is None}
    signatures = list(build.measured)
    accuracies = [values["val_accuracy"] for values in build.measured.values()]
    compression = 1 - np.array([params[s] for s in signatures], float) / teacher.num_params()
    rewards = np.array([[n2n_reward(c, a, record.val_accuracy) for a in seeds]
                        for c, seeds in zip(compression, accuracies)])
    mean = rewards.mean(axis=1)
    best = mean.max()
    print(f"{build.identity['space']} space: {len(space.students):,} students, {len(params):,} "
          f"trainable; finished "
          f"{len(signatures):,} ({len(signatures) / len(params):.0%}), "
          f"{rewards.shape[1]} seeds each; teacher validation accuracy {record.val_accuracy:.4f}")
    print(f"best mean reward so far: {best:.4f}")
    for gap in (0.005, 0.01, 0.02):
        near = mean >= best - gap
        print(f"  within {gap}: {near.sum():,} students ({near.mean():.2%} of those finished), "
              f"compression {compression[near].min():.3f}-{compression[near].max():.3f}")
    print(f"seed-to-seed standard deviation of the reward: median {np.median(rewards.std(1)):.4f},"
          f" 90th percentile {np.percentile(rewards.std(1), 90):.4f}")
    effects = decision_effects(build, dict(zip(signatures, mean)))
    print("what each decision is worth (mean reward of the largest action minus the smallest):")
    for name, effect in effects:
        print(f"  {name}: {effect:+.3f}")


def decision_effects(build: FinishedParts, mean_reward: dict[str, float]
                     ) -> list[tuple[str, float]]:
    """Per decision of the space, the mean reward over the finished episodes that take its
    largest action minus over those that take its smallest (-1 for a degenerate student)."""
    space, catalogue = build.space, build.students
    rewards, actions = [], []
    for episode, student in enumerate(catalogue.row_student):
        reward = (-1.0 if catalogue.reasons[student] is not None
                  else mean_reward.get(catalogue.students[student].signature()))
        if reward is not None:
            rewards.append(reward)
            actions.append(space.actions(episode))
    reward_of, taken = np.array(rewards), np.array(actions)
    if isinstance(space, RemovalSpace):
        layers = space.teacher.layers
        decisions = [(f"layer {i} ({layers[i].kind}), keep - remove", i)
                     for i in space.removable_layers]
    else:
        decisions = [(f"variable {i}, 100% - 10%", i) for i in range(space.num_variables)]
    effects = []
    for name, position in decisions:
        largest = taken[:, position] == taken[:, position].max()
        smallest = taken[:, position] == taken[:, position].min()
        effects.append((name, float(reward_of[largest].mean() - reward_of[smallest].mean())))
    return effects


if __name__ == "__main__":
    main()
