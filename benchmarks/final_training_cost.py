"""What does a final training cost? Seconds per epoch of ``n2n_env.finetune`` for students
of one teacher, and the recipe's whole training extrapolated from them.

The final training of each student (cross-entropy plus the L2 loss on the teacher's
logits, on the dataset's teacher recipe) is the one cost of a paper-table unit that the
GPU session of docs/results.md did not reach. Neither weights nor pixels change its
cost, so the teacher's weights and the images are random, in the dataset's shape and
split sizes: the script needs no data files and no trained teacher, and runs anywhere.

Students: the teacher's own architecture (an upper bound: no student is larger), and,
with ``--cache RUN/rewards.sqlite``, the search's trained students with the most and the
median FLOPs. Each trains twice, for 1 and for ``--epochs`` epochs; the difference, per
epoch, leaves out what does not grow with the epochs (building the student, the teacher's
fixed logits, the final test). One untimed epoch of the first student comes before them:
without it the first 1-epoch run also pays the device's warm-up (on CUDA, its first
kernels and allocations), which can make it slower than the longer run.

Run: ``python benchmarks/final_training_cost.py --device cuda --cache
benchmarks/paper-cuda-cifar10/carry/compress-resnet18-w1-cifar10-14k-reinforce-seed1/rewards.sqlite``
(ResNet-18 at full width on cifar10-14k's shape by default).
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from n2n_env import data, zoo
from n2n_env.arch import Architecture
from n2n_env.build import build_model
from n2n_env.cache import stored_evaluations
from n2n_env.finetune import finetune
from n2n_env.recipes import recipe_for


def random_dataset(name: str, sizes: tuple[int, int, int], seed: int = 0) -> data.Dataset:
    """Random images and labels in the shape of dataset ``name``, with ``sizes`` (train,
    validation, test) images."""
    shape, classes = data.info(name)
    generator = torch.Generator().manual_seed(seed)

    def split(count: int) -> data.Split:
        return data.Split(torch.randn(count, *shape, generator=generator),
                          torch.randint(classes, (count,), generator=generator))

    channels = shape[0]
    return data.Dataset(name, *(split(count) for count in sizes), shape, classes,
                        (0.0,) * channels, (1.0,) * channels, recipe_for(name).augment,
                        f"random-{seed}")


def students(teacher: Architecture, cache: str | None) -> list[tuple[str, Architecture]]:
    """The teacher's own architecture, then the cache's trained students with the most and
    the median FLOPs."""
    chosen = [("teacher-sized", teacher)]
    if cache is not None:
        trained = sorted((entry for entry in stored_evaluations(cache)
                          if entry.evaluation.params > 0),
                         key=lambda entry: entry.evaluation.flops)
        if trained:
            chosen += [("most FLOPs", trained[-1].architecture),
                       ("median FLOPs", trained[len(trained) // 2].architecture)]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="resnet18", help="zoo teacher (default resnet18)")
    parser.add_argument("--width", type=float, default=1.0, help="its width (default 1)")
    parser.add_argument("--dataset", default="cifar10-14k",
                        help="whose shape and recipe (default cifar10-14k)")
    parser.add_argument("--sizes", default="10000,1000,3000",
                        help="train,validation,test images (default cifar10-14k's)")
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs of the longer of the two trainings (default 4)")
    parser.add_argument("--cache", default=None,
                        help="a search's rewards.sqlite, for its students")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error(f"--epochs must be at least 2, got {args.epochs}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    parts = args.sizes.split(",")
    if len(parts) != 3 or not all(part.strip().isdigit() and int(part) >= 2 for part in parts):
        parser.error(f"--sizes takes three counts of at least 2, got {args.sizes!r}")
    sizes = tuple(int(part) for part in parts)
    shape, classes = data.info(args.dataset)
    teacher_arch = zoo.get(args.teacher, shape, classes, width=args.width)
    teacher = build_model(teacher_arch)
    dataset = random_dataset(args.dataset, sizes)
    recipe = recipe_for(args.dataset)
    print(f"teacher {args.teacher} at width {args.width:g} ({teacher_arch.num_params():,} "
          f"parameters), random data in {args.dataset}'s shape {shape}, {sizes[0]:,} training "
          f"images, batch {recipe.batch_size}; recipe: {recipe.epochs} epochs; device "
          f"{args.device}")
    chosen = students(teacher_arch, args.cache)
    warm_up = dataclasses.replace(recipe, epochs=1, milestones=())
    finetune(chosen[0][1], teacher, dataset, warm_up, device=args.device, progress=False)
    for label, arch in chosen:
        seconds = {}
        for epochs in (1, args.epochs):
            short = dataclasses.replace(recipe, epochs=epochs, milestones=())
            seconds[epochs] = finetune(arch, teacher, dataset, short, device=args.device,
                                       progress=False).seconds
        per_epoch = max(seconds[args.epochs] - seconds[1], 0.0) / (args.epochs - 1)
        whole = seconds[1] + per_epoch * (recipe.epochs - 1)
        print(f"{label}: {arch.num_params():,} parameters; {per_epoch:.2f} s per epoch "
              f"({args.epochs} epochs in {seconds[args.epochs]:.1f} s, 1 in "
              f"{seconds[1]:.1f} s); {recipe.epochs} epochs = {whole / 60:.1f} min")


if __name__ == "__main__":
    main()
