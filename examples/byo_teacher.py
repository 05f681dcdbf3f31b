"""Bring your own teacher: compress a torchvision ResNet-18 and take the student away.

Three steps:

1. ``n2n_env.import_model`` traces ``torchvision.models.resnet18`` with torch.fx into an
   architecture (55 layers, 8 residual blocks) whose network computes the same function as
   the original (checked on random inputs), with the original's weights.
2. ``n2n_env.pipeline.compress`` runs both stages on it. The teacher is named
   ``torchvision:resnet18``; here it has no weights, so it is trained with the dataset's
   teacher recipe at a quarter of its width (``teacher_width=0.25``, 0.7M parameters) so
   these CPUs can train it. With weights of your own, pass ``teacher_weights=PATH`` (a
   state_dict of the full-width model) instead; nothing is downloaded either way.
3. ``n2n_env.export.export_student`` writes the student as ONNX (checked with onnxruntime
   when the ``n2n[export]`` extra is installed; TorchScript otherwise), and
   ``n2n_env.load_student`` loads it back as an ``nn.Module`` in one line.

Run: ``python examples/byo_teacher.py --data-root ../shared/datasets`` (cifar10-14k). The
same run from the command line is ``n2n compress --teacher torchvision:resnet18
--teacher-width 0.25 --dataset cifar10-14k --data-root ../shared/datasets --teacher-epochs 15
--iterations 10 --finetune-epochs 10``; its result on these 2 CPU cores is in
docs/results.md. ``--evaluator mock --dataset synthetic`` runs in seconds, with rewards that
are NOT REAL.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch
import torchvision

import n2n_env
from n2n_env import data
from n2n_env.export import export_student
from n2n_env.pipeline import compress
from n2n_env.run_config import RunConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", help="torchvision model (resnet18)")
    parser.add_argument("--dataset", default="cifar10-14k", help="dataset (cifar10-14k)")
    parser.add_argument("--data-root", default=None, help="folder holding the dataset files")
    parser.add_argument("--teacher-width", type=float, default=0.25,
                        help="width of the teacher trained here (default 0.25)")
    parser.add_argument("--teacher-epochs", type=int, default=15,
                        help="epochs of teacher training (default 15)")
    parser.add_argument("--iterations", type=int, default=10,
                        help="policy updates of 5 students per stage (default 10)")
    parser.add_argument("--finetune-epochs", type=int, default=10,
                        help="epochs of the final training (default 10)")
    parser.add_argument("--evaluator", choices=("distill", "mock"), default="distill",
                        help="distill (default, real training) or mock (instant, NOT REAL)")
    parser.add_argument("--out", default="n2n-runs/byo-teacher", help="run directory")
    parser.add_argument("--no-progress", action="store_true", help="one line per step")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    shape, classes = data.info(args.dataset)

    original = torchvision.models.get_model(args.model, weights=None, num_classes=classes)
    imported = n2n_env.import_model(original, shape)  # raises if the outputs differ
    arch = imported.architecture
    print(f"imported {args.model}: {len(arch)} layers, {len(arch.blocks)} residual blocks, "
          f"{arch.num_params():,} parameters, same outputs as torchvision's")

    config = RunConfig(teacher=f"torchvision:{args.model}", teacher_width=args.teacher_width,
                       dataset=args.dataset, data_root=args.data_root,
                       evaluator=args.evaluator, iterations=args.iterations,
                       teacher_epochs=args.teacher_epochs,
                       finetune_epochs=args.finetune_epochs)
    if args.evaluator == "mock":
        print("MOCK evaluator: the rewards below are NOT REAL")
    result = compress(config, out=args.out, progress="lines" if args.no_progress else True)
    print(result.table())

    onnx_ready = all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime"))
    exported = export_student(result.out, "onnx" if onnx_ready else "torchscript")
    print(f"exported {exported.path} (max difference {exported.max_abs_diff:.1e})")
    student = n2n_env.load_student(result.out)
    logits = student.eval()(torch.zeros(1, *shape))
    params = sum(p.numel() for p in student.parameters())
    print(f"load_student: {type(student).__name__} with {params:,} parameters, output "
          f"{tuple(logits.shape)}")
    print(f"run dir: {Path(result.out)}")


if __name__ == "__main__":
    main()
