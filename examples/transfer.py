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

The experiment's reusable part is :mod:`n2n_env.transfer`, which the Table 5 command
(``n2n paper 5``, docs/paper.md) shares.

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
from pathlib import Path

import gymnasium as gym

from n2n_env.transfer import (
    TransferRow,
    learn,
    load_pretrained,
    pretrain,
    removal_env,
    scratch,
    summarize,
    table,
)

DATASET = "digits"


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


def environment(teacher: str, args: argparse.Namespace, folder: Path) -> gym.Env:
    """N2NRemoval-v0 for ``teacher`` on digits, with a reward cache per teacher in ``folder``."""
    return removal_env(teacher, DATASET, teacher_width=args.teacher_width,
                       evaluator=args.evaluator, seed=args.seed,
                       cache=folder / f"rewards-{teacher}-w{args.teacher_width:g}.sqlite")


def transfer(args: argparse.Namespace, folder: Path) -> list[TransferRow]:
    """Pre-train on the source, save, load, and compare with scratch on the target."""
    source_env = environment(args.source, args, folder)
    print(f"pre-training on {args.source} ({source_env.unwrapped.num_layers} layers): "
          f"{args.pretrain_iterations} iterations of 5 students ...", flush=True)
    pretrained, _ = pretrain(source_env, args.pretrain_iterations, seed=args.seed,
                          report_every=10, report=lambda line: print(line, flush=True))
    source_env.close()
    policy_path = folder / f"policy-{args.source}.pt"
    pretrained.save(policy_path)

    loaded = load_pretrained(policy_path)
    target_env = environment(args.target, args, folder)
    print(f"loaded {policy_path.name} (trained {loaded.iterations} iterations); "
          f"{args.iterations} iterations on {args.target} "
          f"({target_env.unwrapped.num_layers} layers), pre-trained and from scratch ...",
          flush=True)
    fresh = scratch(target_env, seed=args.seed)
    rows = []
    for name, agent in (("Pre-trained", loaded), ("Scratch", fresh)):
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
