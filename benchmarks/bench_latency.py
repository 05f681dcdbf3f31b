"""The per-layer latency estimate against whole-model timing, and the table's run-to-run noise.

For each network (a zoo teacher at a width and input shape) and a set of random students
of it (half from layer removal, half from shrinking every width), on one device:

1. the per-layer table is built twice, in two fresh files (runs A and B): every part of
   every network timed as :mod:`n2n_env.latency` does (median of ``--repeats`` samples);
2. every whole model (``build_model``) is timed twice the same way.

It prints, per network: the teacher's estimate and whole-model latency; over its
students, the ratio whole / estimate (median, min-max) and the Spearman rank correlation
between estimate and whole-model latency (the search only ranks students, so the ranking
matters more than the offset); and the noise between the two runs, as the median and 90th
percentile of |A - B| / mean(A, B) over the table's parts, over the students' estimates, and
over the whole-model timings.

Run: ``nice python benchmarks/bench_latency.py`` (about 3 minutes on 2 CPU cores at batch
size 1, one thread). Timings on a machine shared with other work are noisier than on an
idle one; say which when quoting them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import spearmanr

from n2n_env import zoo
from n2n_env.arch import Architecture
from n2n_env.latency import LatencyMeter, LatencySettings, part_key
from n2n_env.latency_timing import time_model

DEFAULT_NETWORKS = "conv4@1x28x28:0.5,vgg11@3x32x32:0.25,resnet18@3x32x32:0.25"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=DEFAULT_NETWORKS,
                        help="comma-separated NAME@CxHxW:WIDTH (default %(default)s)")
    parser.add_argument("--students", type=int, default=12,
                        help="random students per network (default 12)")
    parser.add_argument("--batch-size", type=int, default=1, help="default 1")
    parser.add_argument("--repeats", type=int, default=20, help="samples per timing")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def network(spec: str) -> Architecture:
    name, _, rest = spec.partition("@")
    shape, _, width = rest.partition(":")
    channels, height, side = (int(v) for v in shape.split("x"))
    return zoo.get(name, (channels, height, side), 10, width=float(width or 1.0))


def students(teacher: Architecture, count: int, rng: np.random.Generator) -> list[Architecture]:
    """``count`` distinct valid students: half removal (each removable layer dropped with
    probability 0.3), half shrink (every variable at a random factor)."""
    found: dict[Architecture, None] = {}
    removable = teacher.removable()
    variables = len(teacher.shrink_variables())
    for _ in range(100 * count):
        if len(found) == count:
            break
        if len(found) % 2 == 0:
            keep = [not r or rng.random() > 0.3 for r in removable]
            student = teacher.remove(keep)
        else:
            student = teacher.shrink(rng.integers(1, 11, variables) / 10)
        if student.degenerate_reason() is None and student != teacher:
            found.setdefault(student)
    return list(found)


def relative(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    x, y = np.asarray(a, float), np.asarray(b, float)
    return np.abs(x - y) / ((x + y) / 2)


def spread(values: np.ndarray) -> str:
    return f"{100 * np.median(values):.1f}% / {100 * np.quantile(values, 0.9):.1f}%"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    folder = tempfile.mkdtemp(prefix="n2n-latency-bench-")
    settings = {"device": args.device, "batch_size": args.batch_size,
                "repeats": args.repeats, "threads": args.threads}
    runs = [LatencyMeter(LatencySettings(table=os.path.join(folder, f"{run}.sqlite"),
                                         **settings)) for run in "AB"]
    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"{runs[0].conditions['device_name']}, {args.device}, batch {args.batch_size}, "
          f"{args.threads} thread(s), {args.repeats} samples per timing; "
          f"load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    rows = []
    for spec in args.networks.split(","):
        teacher = network(spec)
        group = [teacher, *students(teacher, args.students, rng)]
        started = time.perf_counter()
        estimates = [run.latencies_ms(group) for run in runs]
        wholes = [[statistics.median(time_model(arch, run.setup)) for arch in group]
                  for run in runs]
        conditions = runs[0].conditions
        medians = [{row.key: row.median_ms for row in run.table.rows()} for run in runs]
        keys = sorted({part_key(p, conditions) for arch in group for p in runs[0].parts(arch)})
        part_noise = relative([medians[0][k] for k in keys], [medians[1][k] for k in keys])
        ratio = np.asarray(wholes[0][1:]) / np.asarray(estimates[0][1:])
        rho = spearmanr(estimates[0][1:], wholes[0][1:]).statistic
        rows.append((spec, len(group) - 1, len(keys), f"{estimates[0][0]:.3f}",
                     f"{wholes[0][0]:.3f}",
                     f"{np.median(ratio):.2f} ({ratio.min():.2f}-{ratio.max():.2f})",
                     f"{rho:.2f}", spread(part_noise),
                     spread(relative(estimates[0], estimates[1])),
                     spread(relative(wholes[0], wholes[1]))))
        print(f"{spec}: {len(keys)} parts, {time.perf_counter() - started:.0f} s", flush=True)
    header = ("network", "students", "parts", "teacher est. ms", "teacher whole ms",
              "whole / est.", "Spearman", "noise: parts", "noise: estimates",
              "noise: whole models")
    print(f"load average {os.getloadavg()[0]:.2f} at the end; noise = median / 90th "
          "percentile of |A - B| / mean(A, B) between two runs")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
