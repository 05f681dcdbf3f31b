"""A tour of the architecture model: remove layers, shrink widths, inherit weights.

Run: ``python examples/architecture_tour.py`` (CPU, a few seconds, no data needed).
"""

from __future__ import annotations

import torch

from n2n_env import zoo
from n2n_env.build import build_model


def main() -> None:
    teacher_arch = zoo.get("resnet18", input_shape=(3, 32, 32), num_classes=10, width=0.25)
    teacher = build_model(teacher_arch)
    print(f"teacher: {len(teacher_arch)} layers, {teacher_arch.num_params():,} parameters")

    # Stage 1: keep or remove each layer. Fixed layers (flatten, classifier) must be kept.
    keep = [True] * len(teacher_arch)
    for index, layer in enumerate(teacher_arch.layers):
        in_block = teacher_arch.block_of()[index] is not None
        if in_block and layer.kind == "relu":
            keep[index] = False  # the paper notes students often drop ReLUs inside blocks
    stage1 = teacher_arch.remove(keep)
    print(f"stage 1: {len(stage1)} layers, {stage1.num_params():,} parameters, "
          f"degenerate: {stage1.degenerate_reason()}")

    # Stage 2: one factor in {0.1, ..., 1.0} per shrink variable (tied widths share one).
    variables = stage1.shrink_variables()
    stage2 = stage1.shrink([0.5] * len(variables))
    compression = 1 - stage2.num_params() / teacher_arch.num_params()
    print(f"stage 2: {len(variables)} variables, {stage2.num_params():,} parameters, "
          f"compression C = {compression:.3f}")

    # The student inherits the teacher's strongest channels and runs.
    student = build_model(stage2, teacher=teacher).eval()
    logits = student(torch.randn(2, 3, 32, 32))
    print(f"student output {tuple(logits.shape)}; signature {stage2.signature()}")
    print(stage2.features(normalized=True).shape, "normalised per-layer features")


if __name__ == "__main__":
    main()
