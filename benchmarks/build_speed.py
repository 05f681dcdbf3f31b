"""Time ``build_model`` for a zoo teacher, fresh and inheriting from the teacher.

Target (issue 2): build + inherit of resnet34 (CIFAR-10 shape, width 1.0) under 50 ms on a
2-core CPU. Run: ``python benchmarks/build_speed.py --model resnet34``.
Median of ``--repeats`` runs after one warm-up; also reports a shrunk student, whose
inheritance has to rank channels by L1 norm.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from n2n_env import zoo
from n2n_env.build import build_model


def median_ms(action: Callable[[], object], repeats: int) -> float:
    action()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet34", choices=zoo.names())
    parser.add_argument("--input-shape", default="3,32,32")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.input_shape.split(","))
    arch = zoo.get(args.model, shape, 10, args.width)  # type: ignore[arg-type]
    teacher = build_model(arch)
    half = arch.shrink([0.5] * len(arch.shrink_variables()))
    rows = [
        ("build (fresh init)", lambda: build_model(arch)),
        ("build + inherit (same architecture)", lambda: build_model(arch, teacher)),
        ("build + inherit (all widths x0.5)", lambda: build_model(half, teacher)),
    ]
    print(
        f"{args.model} {shape} width {args.width}: {arch.num_params():,} params, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for label, action in rows:
        print(f"  {label:<38} {median_ms(action, args.repeats):8.1f} ms (median)")


if __name__ == "__main__":
    main()
