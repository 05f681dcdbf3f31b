"""How the learning rate of a student's final training decides whether it trains at all.

The final training (``n2n_env.finetune``) reuses the teacher's recipe: for MNIST, SGD at
0.01 with momentum 0.9. A search's student keeps the teacher's layers it did not remove,
but its classifier is re-initialised when its input changed. A stage-1 student that keeps
two convs and no pooling after them feeds that classifier thousands of non-negative
features (6,272 for Table 4's 138,892-parameter student), and a learning rate that suits
the teacher's 512 makes it oscillate instead of learn, without the non-finite loss that
would restart the training at a tenth of the rate.

This script trains one student from the teacher's weights, as the final training does
(the recipe's optimizer, batch size, weight decay and loss, no learning-rate decay), at
each ``--lr``, and prints the mean training loss before any update, then every epoch's
mean training loss and validation accuracy. The student is a stage's of an ``n2n
compress`` run folder (its best, or the valid student it handed on when it found none),
or the final student of an ``n2n paper`` unit file (``WORK/units/*.json``, whose teacher
is in ``WORK/teachers/``), or an architecture file (``--architecture``) with the teacher
and data of either. ``--pruned`` takes instead the network a Table 2 pruning run kept
(``seed-K.pruned.pt``), trained from its own weights, as that table's final training
does; the positional argument then only gives the teacher and data.

    python benchmarks/final_training_lr.py \\
        benchmarks/paper/units/compress-vgg13-w1-mnist-10k-reinforce-params20000-seed0.json \\
        --architecture benchmarks/results/table-4-seed0-stage1-student.json \\
        --data-root ../shared/datasets --lr 0.01 0.001 --epochs 1

(That student: about 5 minutes per epoch on one core beside another training process.)

    python benchmarks/final_training_lr.py \
        benchmarks/paper/units/compress-vgg13-w1-mnist-10k-reinforce-seed1.json \
        --data-root ../shared/datasets --lr 0.01 --epochs 1

    python benchmarks/final_training_lr.py \
        benchmarks/paper/units/compress-vgg13-w1-mnist-10k-reinforce-seed1.json \
        --pruned benchmarks/paper/carry/prune-vgg13-w1-mnist-10k-best-of-5/seed-0.pruned.pt \
        --data-root ../shared/datasets --lr 0.01 0.001 --epochs 1
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import torch

from n2n_env import data as data_mod
from n2n_env.arch import Architecture
from n2n_env.build import build_model
from n2n_env.checkpoints import load_teacher
from n2n_env.finetune import DEFAULT_KD_WEIGHT
from n2n_env.paper.units import teacher_file
from n2n_env.recipes import recipe_for
from n2n_env.training import (
    evaluate_accuracy,
    final_loss,
    make_optimizer,
    shuffled_batches,
    teacher_logits,
)


def stage_student(state: dict, stage: str) -> Architecture:
    """The student a stage of a run's ``state.json`` hands on: its best, else the valid
    student nearest to the constraints (as ``n2n_env.pipeline`` does)."""
    saved = state["stages"].get(stage)
    if saved is None:
        raise SystemExit(f"the run has no stage {stage!r}; it has {sorted(state['stages'])}")
    if saved.get("best_architecture"):
        return Architecture.from_json(saved["best_architecture"])
    if saved.get("nearest"):
        return Architecture.from_json(saved["nearest"]["architecture"])
    raise SystemExit(f"stage {stage!r} has no student yet")


def student_and_teacher(source: Path, stage: str) -> tuple[Architecture, str, str, str | None]:
    """The student, its teacher checkpoint, its dataset and data root, from a run folder
    (a stage's student) or an ``n2n paper`` unit file (its final student)."""
    if source.is_dir():
        state = json.loads((source / "state.json").read_text())
        config = state["config"]
        return (stage_student(state, stage), config["teacher"], config["dataset"],
                config["data_root"])
    unit = json.loads(source.read_text())
    if unit.get("kind") != "compress" or "result" not in unit:
        raise SystemExit(f"{source} is not a finished n2n paper search unit")
    teacher = teacher_file(source.parent.parent, unit["needs"][0])
    return (Architecture.from_json(unit["result"]["student"]), str(teacher),
            unit["spec"]["dataset"], None)


def pruned_network(path: Path) -> tuple[Architecture, dict[str, torch.Tensor]]:
    """The architecture and weights a pruning run's loop kept (``seed-K.pruned.pt``)."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("kind") != "n2n-pruned":
        raise SystemExit(f"{path} is not a pruning run's seed-K.pruned.pt")
    return Architecture.from_json(saved["architecture"]), saved["state_dict"]


def loss_before_training(student: torch.nn.Module, data: data_mod.Dataset,
                         targets: torch.Tensor, batch_size: int) -> float:
    """The mean final-training loss over the training split in training mode (batch
    statistics, as the training sees them), taken on a copy so nothing changes."""
    probe = copy.deepcopy(student).train()
    total, batches = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(data.train), batch_size):
            index = torch.arange(start, min(start + batch_size, len(data.train)))
            if len(index) < 2:
                continue
            total += final_loss(probe(data.train.x[index]), data.train.y[index],
                                targets[index], DEFAULT_KD_WEIGHT).item()
            batches += 1
    return total / batches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an n2n compress run folder (its state.json) "
                        "or an n2n paper unit file")
    parser.add_argument("--stage", default="removal", help="for a run folder")
    parser.add_argument("--architecture", type=Path, default=None,
                        help="an architecture JSON file: this student instead")
    parser.add_argument("--pruned", type=Path, default=None,
                        help="a pruning run's seed-K.pruned.pt: this network, from its own "
                        "weights, instead")
    parser.add_argument("--data-root", default=None, help="default: the run's own")
    parser.add_argument("--lr", type=float, nargs="+", default=[0.01, 0.001])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs < 1 or min(args.lr) <= 0:
        parser.error("--epochs must be >= 1 and every --lr > 0")
    if args.pruned is not None and args.architecture is not None:
        parser.error("give --architecture or --pruned, not both")
    arch, teacher_path, dataset, data_root = student_and_teacher(args.run, args.stage)
    data = data_mod.load(dataset, root=args.data_root or data_root)
    data = data.to(torch.device("cpu"))
    teacher, _ = load_teacher(teacher_path, dataset_fingerprint=data.fingerprint)
    targets = teacher_logits(teacher, data.train.x)
    which = f"stage {args.stage}" if args.run.is_dir() else "the unit's final student"
    if args.architecture is not None:
        arch, which = Architecture.from_json(args.architecture.read_text()), args.architecture.name
    weights = None
    if args.pruned is not None:
        (arch, weights), which = pruned_network(args.pruned), f"pruned, {args.pruned.name}"

    def student_to_train() -> torch.nn.Module:
        if weights is None:
            return build_model(arch, teacher)
        student = build_model(arch)
        student.load_state_dict(weights)
        return student

    print(f"student: {arch.num_params():,} parameters, {which}; "
          f"teacher validation accuracy {evaluate_accuracy(teacher, data.val):.4f}")
    recipe = dataclasses.replace(recipe_for(dataset), milestones=())
    torch.manual_seed(args.seed)
    start = loss_before_training(student_to_train(), data, targets, recipe.batch_size)
    print(f"mean training loss before any update: {start:.3f}")
    print("| lr | epoch | mean training loss | validation accuracy | seconds |")
    print("|---|---|---|---|---|")
    for lr in args.lr:
        torch.manual_seed(args.seed)
        student = student_to_train()
        optimizer = make_optimizer(student, dataclasses.replace(recipe, lr=lr))
        shuffle = torch.Generator().manual_seed(args.seed)
        for epoch in range(1, args.epochs + 1):
            started, total, steps = time.perf_counter(), 0.0, 0
            student.train()
            for index in shuffled_batches(len(data.train), recipe.batch_size, shuffle,
                                          torch.device("cpu")):
                loss = final_loss(student(data.train.x[index]), data.train.y[index],
                                  targets[index], DEFAULT_KD_WEIGHT)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total, steps = total + loss.item(), steps + 1
            print(f"| {lr:g} | {epoch} | {total / steps:.3f} | "
                  f"{evaluate_accuracy(student, data.val):.4f} | "
                  f"{time.perf_counter() - started:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
