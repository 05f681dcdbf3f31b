"""How often a removal policy that has learnt nothing makes a degenerate student.

A fresh removal policy keeps each layer with probability about 0.5. The students it makes
are degenerate (appendix 11.2: reward -1, never trained) at a rate set by the teacher's
structure alone, which this script measures without training anything: for each teacher it
draws random keep masks (every removable layer kept with probability ``--keep``), removes
the layers as ``N2NRemoval-v0`` does (``Architecture.remove``) and counts the students by
``degenerate_reason()``. It explains, for example, why Table 5's scratch policies on
ResNet-34 lose half their students while those on VGG-19 lose few. Its last column is the
share that would be usable if a projection block whose body keeps no conv lost its whole
body (:func:`without_convless_bodies`, a repair the environment does not make).

    python benchmarks/degenerate_rates.py --samples 20000
"""

from __future__ import annotations

import argparse
import collections

import numpy as np

from n2n_env import zoo
from n2n_env.arch import Architecture

TEACHERS = {"vgg13 (1x28x28, width 1)": ("vgg13", (1, 28, 28), 1.0),
            "vgg11 (3x32x32, width 0.125)": ("vgg11", (3, 32, 32), 0.125),
            "vgg19 (3x32x32, width 0.125)": ("vgg19", (3, 32, 32), 0.125),
            "vgg19 (3x32x32, width 1)": ("vgg19", (3, 32, 32), 1.0),
            "resnet18 (3x32x32, width 0.125)": ("resnet18", (3, 32, 32), 0.125),
            "resnet34 (3x32x32, width 0.125)": ("resnet34", (3, 32, 32), 0.125),
            "resnet34 (3x32x32, width 1)": ("resnet34", (3, 32, 32), 1.0)}
"""The teachers of Tables 1 and 5 (their structure only: no weights are needed), and the
paper's full-width CIFAR-10 teachers of Table 5."""

KINDS = (("empty", "empty architecture"), ("classifier", "classifier input"),
         ("residual block", "body output"), ("map below 1x1", "below 1x1"))
"""Each kind of degenerate student and a phrase of ``degenerate_reason()`` that names it."""


def kind_of(reason: str) -> str:
    """The kind (first column of :data:`KINDS`) of a degenerate reason."""
    return next((kind for kind, phrase in KINDS if phrase in reason), "other")


def without_convless_bodies(teacher: Architecture, keep_mask: np.ndarray) -> np.ndarray:
    """``keep_mask`` with the whole body removed of every projection block whose body
    keeps no conv: a repair the environment does not make (such a body's batch norms and
    ReLUs cannot be added to the projection's output, so the student is degenerate), and
    which this script measures as an alternative."""
    repaired = keep_mask.copy()
    for block in teacher.blocks:
        body = range(block.start, block.end)
        if block.projection is not None and not any(
                repaired[i] and teacher.layers[i].kind == "conv" for i in body):
            repaired[block.start:block.end] = False
    return repaired


def rates(teacher: Architecture, keep: float, samples: int,
          rng: np.random.Generator) -> collections.Counter[str]:
    """Students of ``samples`` random masks, counted by kind (``usable`` if not degenerate),
    and ``usable if repaired``: those usable after :func:`without_convless_bodies`."""
    removable = np.array(teacher.removable())
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(samples):
        keep_mask = ~removable | (rng.random(len(removable)) < keep)
        reason = teacher.remove(keep_mask.tolist()).degenerate_reason()
        counts["usable" if reason is None else kind_of(reason)] += 1
        repaired = without_convless_bodies(teacher, keep_mask)
        if (repaired == keep_mask).all():
            usable = reason is None  # nothing to repair: the same student
        else:
            usable = teacher.remove(repaired.tolist()).degenerate_reason() is None
        counts["usable if repaired"] += usable
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--keep", type=float, nargs="+", default=[0.5, 0.7, 0.9],
                        help="probabilities of keeping each removable layer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    columns = ["usable", *(kind for kind, _ in KINDS), "other", "usable if repaired"]
    print(f"{args.samples} random keep masks per row, seed {args.seed}; share of students")
    print(f"| Teacher | Layers | Keep | {' | '.join(columns)} |")
    print("|" + " --- |" * (len(columns) + 3))
    for label, (name, shape, width) in TEACHERS.items():
        teacher = zoo.get(name, input_shape=shape, num_classes=10, width=width)
        for keep in args.keep:
            counts = rates(teacher, keep, args.samples, np.random.default_rng(args.seed))
            shares = " | ".join(f"{100 * counts[c] / args.samples:.1f}%" for c in columns)
            print(f"| {label} | {len(teacher.layers)} | {keep} | {shares} |")


if __name__ == "__main__":
    main()
