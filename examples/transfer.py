"""Transfer a layer-removal policy from a small teacher to a deeper one (paper 4.6, Table 5).

Pre-trains the paper's REINFORCE removal policy (``agents.reinforce.Reinforce``) on VGG-11,
saves it with ``Reinforce.save``, loads it back with ``Reinforce.load`` (a torch file read
with ``weights_only=True``) and lets it continue learning on VGG-19, next to a policy that
starts from scratch on VGG-19 with the same seed (so the same initial weights and sampling
stream; the only difference is the pre-training). The policy's parameters do not depend on
the number of layers, so a policy trained on VGG-11's 30 layers (on digits' 16x16 inputs)
decides all 54 of VGG-19's. As in Table 5, both are compared over their first 10 policy
updates of 5 students each: mean reward, mean compression (a student larger than its
teacher counts as 0%, as in the reward) and mean accuracy of the 50 students (the
validation accuracy after the environment's short distillation, 0 for degenerate ones).

Run: ``python examples/transfer.py``: real distillation of every student, both teachers at
width 0.125; 4.5 minutes on 2 CPU cores (100 pre-training iterations, then 2 x 10), of
which about 11 s train and cache the two teachers on first use. ``--evaluator mock`` runs
in seconds but its rewards are NOT REAL (a made-up accuracy model, see
``n2n_env.evaluators.MockEvaluator``); the output says so. ``--source resnet18 --target
resnet34`` runs the paper's other pair.

What we measured (digits, width 0.125, Reward / Comp. / Acc. over the first 10 iterations):

- real rewards, defaults: seed 0: pre-trained 0.94 / 81.1% / 98.3%, scratch 0.66 / 47.1% /
  97.9% (before batch-norm re-estimation, at commit 08dc556: 0.92 / 81.5% / 96.7% against
  0.66 / 46.9% / 97.7%). With the earlier distillation budget (25 steps of 128 samples) seed 0 gave
  0.79 / 72.9% / 89.0% against 0.61 / 55.1% / 83.9%; seed 1 0.97 / 90.0% / 97.2% against
  0.54 / 45.7% / 81.1%; seed 2 a tie, 0.65 / 68.0% / 80.8% (3 degenerate students) against
  0.65 / 57.1% / 84.3%; and pre-training for only 30 iterations did not help (seed 0:
  0.49 against 0.61).
- mock rewards, seeds 0-4: the pre-trained policy's mean reward was higher for 4 seeds and
  equal for one (0.61 / 0.61). With resnet18 -> resnet34 it was higher for all 5 seeds
  (-0.06 to 0.36 against -0.49 to -0.16): from scratch 24 to 35 of the 50 resnet34
  students were degenerate (pre-trained: 0 to 23), much as the paper reports for its
  VGG pair.

Small numbers of seeds and short runs: read these as "pre-training usually helps here",
not as a measurement of how much.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

import n2n_env  # noqa: F401  (registers N2NRemoval-v0)
from agents.reinforce import Episode, Reinforce, ReinforceConfig

DATASET = "digits"


@dataclass(frozen=True)
class TransferRow:
    """One row of Table 5: means over the students of the compared iterations."""

    name: str
    reward: float
    compression: float
    """Mean C = 1 - params(student)/params(teacher), a student larger than the teacher
    counted as 0 (as the reward clips it)."""
    accuracy: float
    """Mean validation accuracy the environment reported (0 for degenerate students)."""
    degenerate: int
    students: int
    decisions: tuple[int, ...]
    """The distinct numbers of decisions per episode (one per teacher layer)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="vgg11", help="teacher to pre-train on (vgg11)")
    parser.add_argument("--target", default="vgg19", help="teacher to transfer to (vgg19)")
    parser.add_argument("--pretrain-iterations", type=int, default=100,
                        help="policy updates of 5 students on the source (default 100)")
    parser.add_argument("--iterations", type=int, default=10,
                        help="policy updates compared on the target (default 10, as the paper)")
    parser.add_argument("--evaluator", choices=("distill", "mock"), default="distill",
                        help="distill (default, real training) or mock (instant, NOT REAL)")
    parser.add_argument("--teacher-width", type=float, default=0.125,
                        help="width multiplier of both teachers (default 0.125)")
    parser.add_argument("--seed", type=int, default=0, help="seed of both policies (default 0)")
    parser.add_argument("--out", default=None,
                        help="folder for the saved policies and reward caches "
                             "(default: a temporary folder, deleted at the end)")
    return parser.parse_args(argv)


def removal_env(teacher: str, args: argparse.Namespace, folder: Path) -> gym.Env:
    """N2NRemoval-v0 for ``teacher`` on digits, with a reward cache per teacher in ``folder``."""
    evaluator_kwargs = {"seed": args.seed} if args.evaluator == "distill" else None
    return gym.make("N2NRemoval-v0", teacher=teacher, dataset=DATASET,
                    teacher_width=args.teacher_width, evaluator=args.evaluator,
                    evaluator_kwargs=evaluator_kwargs,
                    cache=folder / f"rewards-{teacher}-w{args.teacher_width:g}.sqlite")


def learn(agent: Reinforce, env: gym.Env, iterations: int,
          report_every: int = 0) -> list[Episode]:
    """``iterations`` REINFORCE updates of m rollouts each; every episode, in order. With
    ``report_every``, print the mean reward of every block of that many iterations."""
    episodes: list[Episode] = []
    first_unreported = 1
    for iteration in range(1, iterations + 1):
        batch = [agent.rollout(env) for _ in range(agent.config.rollouts_per_update)]
        agent.update(batch)
        episodes.extend(batch)
        if report_every and (iteration % report_every == 0 or iteration == iterations):
            block = episodes[(first_unreported - 1) * len(batch):]
            print(f"  iterations {first_unreported:3d}-{iteration:3d}: mean reward "
                  f"{np.mean([e.reward for e in block]):+.3f}", flush=True)
            first_unreported = iteration + 1
    return episodes


def summarize(name: str, episodes: list[Episode]) -> TransferRow:
    return TransferRow(
        name=name,
        reward=float(np.mean([e.reward for e in episodes])),
        compression=float(np.mean([max(0.0, e.info["compression"]) for e in episodes])),
        accuracy=float(np.mean([e.info["accuracy"] for e in episodes])),
        degenerate=sum(e.info["degenerate_reason"] is not None for e in episodes),
        students=len(episodes),
        decisions=tuple(sorted({len(e.actions) for e in episodes})),
    )


def table(rows: list[TransferRow]) -> str:
    """Table 5's columns (Reward, Comp., Acc.) plus the count of degenerate students."""
    cells = [("", "Reward", "Comp.", "Acc.", "Degenerate")] + [
        (r.name, f"{r.reward:.2f}", f"{100 * r.compression:.1f}%", f"{100 * r.accuracy:.1f}%",
         f"{r.degenerate}/{r.students}") for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in cells)


def transfer(args: argparse.Namespace, folder: Path) -> list[TransferRow]:
    """Pre-train on the source, save, load, and compare with scratch on the target."""
    source_env = removal_env(args.source, args, folder)
    pretrained = Reinforce.for_env(source_env, ReinforceConfig(seed=args.seed))
    print(f"pre-training on {args.source} ({source_env.unwrapped.num_layers} layers): "
          f"{args.pretrain_iterations} iterations of 5 students ...", flush=True)
    learn(pretrained, source_env, args.pretrain_iterations, report_every=10)
    source_env.close()
    policy_path = folder / f"policy-{args.source}.pt"
    pretrained.save(policy_path)

    loaded = Reinforce.load(policy_path)
    loaded.forget_rewards()  # the baseline and the best student belong to the source teacher
    target_env = removal_env(args.target, args, folder)
    print(f"loaded {policy_path.name} (trained {loaded.iterations} iterations); "
          f"{args.iterations} iterations on {args.target} "
          f"({target_env.unwrapped.num_layers} layers), pre-trained and from scratch ...",
          flush=True)
    scratch = Reinforce.for_env(target_env, ReinforceConfig(seed=args.seed))
    rows = []
    for name, agent in (("Pre-trained", loaded), ("Scratch", scratch)):
        rows.append(summarize(name, learn(agent, target_env, args.iterations)))
        agent.save(folder / f"policy-{args.target}-{name.lower()}.pt")
    target_env.close()
    return rows


def main(argv: list[str] | None = None) -> list[TransferRow]:
    args = parse_args(argv)
    started = time.perf_counter()
    print(f"transfer of a removal policy: {args.source} -> {args.target} on {DATASET}, "
          f"teacher width {args.teacher_width:g}")
    if args.evaluator == "mock":
        print("rewards: MOCK evaluator, instant and NOT REAL (a made-up accuracy model); "
              "use --evaluator distill for real rewards")
    else:
        print("rewards: real knowledge distillation of every student")
    if args.out is None:
        with tempfile.TemporaryDirectory() as folder:
            rows = transfer(args, Path(folder))
    else:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        rows = transfer(args, Path(args.out))
    print(f"\n{args.source} -> {args.target}, first {args.iterations} iterations "
          f"({rows[0].students} students per policy):")
    print(table(rows))
    for row in rows:
        print(f"{row.name}: decisions per episode {', '.join(map(str, row.decisions))}")
    print(f"wall time: {time.perf_counter() - started:.1f} s")
    return rows


if __name__ == "__main__":
    main()
