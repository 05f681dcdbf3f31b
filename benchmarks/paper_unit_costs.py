"""What do the paper tables' long units cost on this machine? (docs/paper.md's estimates)

Measures the two costs every estimate of ``n2n paper`` rests on, for one teacher at full
size on real data:

* teacher training: seconds per SGD step of the dataset recipe's batch, times the
  recipe's steps (epochs x training images / batch);
* candidate distillation: seconds to distil and score stage-1 candidates (random keep
  masks, as random search draws them, degenerate ones skipped) with the default
  ``DistillRecipe``, and what a stage of 200 such candidates costs.

The teacher's weights are random: neither cost depends on them. Students inherit the
weights and are trained exactly as the environments' evaluator trains them.

Run: ``python benchmarks/paper_unit_costs.py --data-root ../shared/datasets`` (up to 10
minutes on 2 cores; ``--teacher vgg13 --width 1 --dataset mnist-10k`` by default).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from n2n_env import data, zoo
from n2n_env.build import build_model
from n2n_env.distill import DistillationEvaluator
from n2n_env.recipes import recipe_for


def teacher_step_seconds(model: torch.nn.Module, dataset: data.Dataset, batch: int,
                         steps: int) -> float:
    """Median seconds of one SGD step on ``batch`` training images (after one warm-up)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = dataset.train.x[:batch], dataset.train.y[:batch]
    model.train()
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return float(np.median(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="vgg13")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--dataset", default="mnist-10k")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--candidates", type=int, default=8,
                        help="stage-1 candidates to distil (default 8)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's, all cores)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dataset = data.load(args.dataset, args.data_root)
    architecture = zoo.get(args.teacher, dataset.input_shape, dataset.num_classes, args.width)
    recipe = recipe_for(args.dataset)
    torch.manual_seed(0)
    teacher = build_model(architecture)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads; "
          f"{args.teacher} (width {args.width:g}) on {args.dataset}: "
          f"{architecture.num_params():,} params, {architecture.flops() / 1e6:.0f} MFLOPs/image")

    step = teacher_step_seconds(teacher, dataset, recipe.batch_size, steps=5)
    steps = recipe.epochs * -(-len(dataset.train) // recipe.batch_size)
    print(f"teacher: {step:.3f} s per step of {recipe.batch_size}; {recipe.epochs} epochs = "
          f"{steps:,} steps = {step * steps / 60:.0f} min")

    evaluator = DistillationEvaluator(teacher, dataset, seed=0)
    rng = np.random.default_rng(0)
    removable = architecture.removable()
    seconds, sizes = [], []
    while len(seconds) < args.candidates:
        draws = rng.integers(0, 2, len(architecture.layers)) == 1
        student = architecture.remove([bool(keep) or not free
                                       for keep, free in zip(draws, removable)])
        if student.degenerate_reason() is not None:
            continue
        started = time.perf_counter()
        evaluator.evaluate(student)
        seconds.append(time.perf_counter() - started)
        sizes.append(student.num_params())
    per = np.array(seconds)
    print(f"candidates: {len(per)} random keep masks, {min(sizes):,}-{max(sizes):,} params; "
          f"seconds each: mean {per.mean():.1f}, median {np.median(per):.1f}, "
          f"max {per.max():.1f}")
    print(f"a stage of 200 such candidates: {200 * per.mean() / 60:.0f} min")


if __name__ == "__main__":
    main()
