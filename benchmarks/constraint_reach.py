"""How often layer removal alone meets a parameter budget, and how often shrinking can.

Table 4 bounds full-width VGG-13 on 28x28 MNIST at 20,000 parameters. Stage 1 only
removes layers; stage 2 then shrinks each remaining width by a factor of 0.1 to 1. This
script draws random keep masks (each removable layer kept with probability ``--keep``,
as a fresh removal policy or random search does), removes the layers as ``N2NRemoval-v0``
does and counts the valid students (not degenerate, appendix 11.2) that:

* meet the budget as they are (what stage 1 can report as its best student);
* could meet it after stage 2, every width at factor 0.1 (the smallest shrink).

It trains nothing, so it runs in seconds. It shows why a stage-1 search under this
budget may never see a feasible student, and why stage 2 must start from a small one.

    python benchmarks/constraint_reach.py --samples 20000
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from n2n_env import zoo
from n2n_env.action_wall import LOWEST_FACTOR
from n2n_env.arch import Architecture


@dataclass
class Reach:
    """Counts over the random students of one teacher and budget."""

    samples: int
    valid: int = 0
    """Students that are not degenerate."""
    within: int = 0
    """Valid students within the budget as they are."""
    reachable: int = 0
    """Valid students within it once every width is shrunk to factor 0.1."""
    smallest_params: int | None = None
    smallest_convs: int | None = None


def reach(teacher: Architecture, max_params: int, keep: float, samples: int,
          rng: np.random.Generator) -> Reach:
    """Count ``samples`` random removal students of ``teacher`` against the budget."""
    removable = np.array(teacher.removable())
    counts = Reach(samples)
    for _ in range(samples):
        keep_mask = ~removable | (rng.random(len(removable)) < keep)
        student = teacher.remove(keep_mask.tolist())
        if student.degenerate_reason() is not None:
            continue
        counts.valid += 1
        params = student.num_params()
        counts.within += params <= max_params
        floor = student.shrink([LOWEST_FACTOR] * len(student.shrink_variables()))
        counts.reachable += (floor.degenerate_reason() is None
                             and floor.num_params() <= max_params)
        if counts.smallest_params is None or params < counts.smallest_params:
            counts.smallest_params = params
            counts.smallest_convs = sum(layer.kind == "conv" for layer in student.layers)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="vgg13")
    parser.add_argument("--input-shape", default="1,28,28",
                        help="channels,height,width (default 1,28,28: MNIST)")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--max-params", type=int, default=20_000)
    parser.add_argument("--keep", type=float, default=0.5,
                        help="probability of keeping each removable layer (default 0.5)")
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.input_shape.split(","))
    teacher = zoo.get(args.teacher, input_shape=shape, width=args.width)
    counts = reach(teacher, args.max_params, args.keep, args.samples,
                   np.random.default_rng(args.seed))
    n = args.samples
    print(f"{args.teacher} {shape} width {args.width:g}: {teacher.num_params():,} parameters; "
          f"budget params <= {args.max_params:,}; {n:,} random keep masks "
          f"(keep {args.keep:g}, seed {args.seed})")
    print(f"  valid students:                     {counts.valid:6d} ({counts.valid / n:.1%})")
    print(f"  within the budget by removal alone: {counts.within:6d} ({counts.within / n:.2%})")
    print(f"  within it after shrinking to 0.1:   {counts.reachable:6d} "
          f"({counts.reachable / n:.1%})")
    if counts.smallest_params is not None:
        print(f"  smallest valid student: {counts.smallest_params:,} parameters, "
              f"{counts.smallest_convs} conv(s)")


if __name__ == "__main__":
    main()
