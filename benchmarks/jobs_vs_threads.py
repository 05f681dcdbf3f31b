"""Two one-thread processes against one two-thread process: what ``n2n paper --jobs`` buys.

For each teacher of the paper's tables at the width we run it, one SGD step of a batch of
32 (the candidates' distillation batch) is timed three ways: one process with 1 thread,
one with ``--threads`` threads, and ``--threads`` one-thread processes at once. The last
line per model is the throughput of the processes against the threaded one. Pause other
work first (``pkill -STOP -f "n2n paper"``, then ``-CONT``):

    python benchmarks/jobs_vs_threads.py [--threads 2] [--steps 60]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

MODELS = (("resnet34", 0.125, (3, 32, 32)), ("vgg19", 0.125, (3, 32, 32)),
          ("vgg13", 0.5, (1, 28, 28)))
"""Table 5's teachers, and a full-width VGG-13 candidate's size (half the teacher)."""


def step_ms(model: str, width: float, shape: tuple[int, int, int], steps: int) -> float:
    """Milliseconds per SGD step of ``model`` in this process (its thread count)."""
    import torch

    from n2n_env import zoo
    from n2n_env.build import build_model

    net = build_model(zoo.get(model, input_shape=shape, num_classes=10, width=width))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(32, *shape), torch.randint(0, 10, (32,))
    for index in range(steps + 5):
        if index == 5:
            started = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps * 1000


def _measure(threads: int, processes: int, model: str, width: float,
             shape: tuple[int, int, int], steps: int) -> list[float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "N2N_THREADS": str(threads)}
    command = [sys.executable, __file__, "--one", model, str(width),
               ",".join(map(str, shape)), str(steps)]
    workers = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
               for _ in range(processes)]
    return [float(worker.communicate()[0]) for worker in workers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        model, width, shape, steps = args.one
        print(step_ms(model, float(width), tuple(int(s) for s in shape.split(",")),
                      int(steps)))
        return
    for model, width, shape in MODELS:
        alone = _measure(1, 1, model, width, shape, args.steps)[0]
        threaded = _measure(args.threads, 1, model, width, shape, args.steps)[0]
        side_by_side = _measure(1, args.threads, model, width, shape, args.steps)
        each = sum(side_by_side) / len(side_by_side)
        print(f"{model} width {width}: 1 thread {alone:.1f} ms/step; {args.threads} threads "
              f"{threaded:.1f} ms/step; {args.threads} one-thread processes {each:.1f} "
              f"ms/step each: {threaded * args.threads / each:.2f}x the threaded throughput",
              flush=True)


if __name__ == "__main__":
    main()
