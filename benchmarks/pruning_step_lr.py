"""How the learning rate of the updates between pruning steps decides the first steps.

Table 2's stopping rule ends a pruning run at the first step whose validation accuracy,
after ``finetune_steps`` KD updates, falls more than a point below the N2N student's. The
teacher has finished its training at its recipe's final learning rate; updates at the
recipe's initial rate first cost it accuracy, which the rule cannot tell from pruning
damage. This script prunes the teacher for ``--steps`` steps at each ``--lr`` and seed
(the same channels go at step 1, since the criterion sees the same examples) and prints
each step's parameters and validation accuracy.

    python benchmarks/pruning_step_lr.py --data-root ../shared/datasets \\
        --teacher benchmarks/paper/teachers/teacher-vgg13-w1-mnist-10k.pt \\
        --lr 0.01 0.001 --seeds 1 2

(Full-width VGG-13 on mnist-10k: about 3 minutes per step on one core.)
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from n2n_env import data as data_mod
from n2n_env.baselines.pruning import PruningConfig, StopRule, pruning_loop
from n2n_env.checkpoints import load_teacher
from n2n_env.recipes import recipe_for
from n2n_env.training import evaluate_accuracy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True, help="a teacher checkpoint (n2n's format)")
    parser.add_argument("--dataset", default="mnist-10k")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--lr", type=float, nargs="+", default=[0.01, 0.001],
                        help="learning rates of the updates between steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=1, help="pruning steps per run")
    parser.add_argument("--finetune-steps", type=int, default=100)
    args = parser.parse_args(argv)
    if args.steps < 1 or min(args.lr) <= 0:
        parser.error("--steps must be >= 1 and every --lr > 0")
    data = data_mod.load(args.dataset, root=args.data_root)
    teacher, _ = load_teacher(args.teacher, dataset_fingerprint=data.fingerprint)
    cpu = torch.device("cpu")
    data = data.to(cpu)
    recipe = recipe_for(args.dataset)
    print(f"teacher validation accuracy: {evaluate_accuracy(teacher, data.val):.4f}; "
          f"recipe lr {recipe.lr:g}, final lr {recipe.final_lr:g}")
    print("| lr | seed | " + " | ".join(f"step {s}: params, val"
                                       for s in range(1, args.steps + 1)) + " | seconds |")
    print("|---|---|" + "---|" * (args.steps + 1))
    for lr in args.lr:
        for seed in args.seeds:
            started = time.perf_counter()
            config = PruningConfig(finetune_steps=args.finetune_steps, max_steps=args.steps,
                                   step_lr=lr)
            outcome = pruning_loop(copy.deepcopy(teacher), data, StopRule(0.0, 0), config,
                                   seed=seed, device=cpu)
            steps = " | ".join(f"{s.params:,}, {s.val_accuracy:.4f}"
                               for s in outcome.history[1:])
            print(f"| {lr:g} | {seed} | {steps} | {time.perf_counter() - started:.0f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
