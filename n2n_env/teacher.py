"""Teacher networks: training with the paper's recipes, resuming, and the cached teacher.

N2N compresses a trained *teacher*; every student is judged relative to it. This module
trains teachers with the recipes of the paper's appendix 10.2 (:mod:`n2n_env.recipes`)
and, through :func:`get_teacher`, caches them as checkpoints (:mod:`n2n_env.checkpoints`).
The training loop, optimizer and accuracy come from the kit shared with distillation and
fine-tuning (:mod:`n2n_env.training`); ``evaluate_accuracy`` and ``make_optimizer`` stay
importable from here.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from n2n_env import data as data_mod
from n2n_env import validate, zoo
from n2n_env.arch import Architecture
from n2n_env.build import build_model
from n2n_env.checkpoints import (
    FORMAT_VERSION,
    CheckpointError,
    TeacherRecord,
    _atomic_save,
    _cpu_state,
    _read_checkpoint,
    load_teacher,
    partial_path,
    save_teacher,
    teacher_path,
)
from n2n_env.device import autocast_context, in_memory_format, prepare_model, resolve_device
from n2n_env.progress import Progress, progress_bar
from n2n_env.progress import check as check_progress
from n2n_env.random_streams import STREAMS, TrainingStreams
from n2n_env.recipes import Recipe, recipe_for
from n2n_env.teacher_spec import TeacherSpec, cache_name, parse_teacher_spec
from n2n_env.training import (
    evaluate_accuracy,
    hard_label_loss,
    make_optimizer,
    make_schedule,
    shuffled_batches,
    train_steps,
)

__all__ = [
    "TrainedTeacher",
    "TrainingDivergedError",
    "evaluate_accuracy",
    "get_teacher",
    "make_optimizer",
    "train_teacher",
]


class TrainingDivergedError(RuntimeError):
    """Teacher training reached a non-finite loss (an expected failure: a bad learning rate
    for this network, reported on one line by the ``n2n`` command)."""


@dataclass(frozen=True)
class TrainedTeacher:
    """Result of :func:`train_teacher`. Accuracies are fractions in [0, 1]."""

    model: torch.nn.Module
    val_accuracy: float
    test_accuracy: float
    epochs: int
    seconds: float


@torch.inference_mode(False)
@torch.enable_grad()
def train_teacher(
    arch: Architecture, data: data_mod.Dataset, recipe: Recipe, *,
    device: str | torch.device | None = None, seed: int = 0, progress: Progress = True,
    resume_path: str | os.PathLike[str] | None = None,
) -> TrainedTeacher:
    """Train a fresh network of architecture ``arch`` on ``data.train`` with ``recipe``.

    The training split stays on the device as one tensor and is shuffled by a seeded
    generator: much faster than a DataLoader for these small datasets, and reproducible.
    With ``resume_path``, a partial checkpoint (weights, optimizer, scheduler, epoch and
    RNG states) is written after every epoch, and training continues from an existing one
    that matches this architecture, dataset, recipe and seed; on CPU (at one thread
    count) the result is bit-identical to an uninterrupted run. The caller deletes the
    partial file after saving the final checkpoint. The global torch RNG is left as it was
    found, and so is torch's CPU thread count, unless this process claimed its share of
    the machine's cores (the ``n2n`` command does, through ``use_all_cores``): that share
    is then rebalanced before every epoch as other n2n processes start and finish
    (:mod:`n2n_env.thread_budget`).
    """
    if not isinstance(arch, Architecture):
        raise TypeError(f"arch must be an Architecture, got {type(arch).__name__}")
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a Recipe, got {recipe!r}")
    seed = validate.integer("seed", seed, minimum=0)
    progress = check_progress(progress)
    if recipe.batch_size < 2 or len(data.train) < 2:
        raise ValueError(
            f"batch_size must be >= 2 with at least 2 training samples, got batch_size "
            f"{recipe.batch_size} and {len(data.train)} samples: one-sample batches are "
            "skipped (batch norm cannot train on them), so training would take zero steps"
        )
    dev = resolve_device(device)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        model = prepare_model(build_model(arch), dev)
        optimizer = make_optimizer(model, recipe)
        scheduler = make_schedule(optimizer, recipe)
        streams = TrainingStreams.seeded(dev, seed, seed + 1)
        identity = {"architecture": arch.signature(), "dataset_fingerprint": data.fingerprint,
                    "recipe": recipe.to_dict(), "seed": seed}
        start_epoch, val_acc = 0, float("nan")
        partial = Path(resume_path) if resume_path is not None else None
        state = _load_partial(partial, identity) if partial is not None else None
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            streams.restore({name: state[f"{name}_rng"] for name in STREAMS
                             if f"{name}_rng" in state})
            start_epoch, val_acc = state["epoch"], state["val_accuracy"]
            started -= state["seconds"]

        train = data.train.to(dev)
        bar = progress_bar(progress, range(start_epoch, recipe.epochs), total=recipe.epochs,
                           initial=start_epoch, desc=f"teacher {arch.name}/{data.name}",
                           unit="epoch")
        for epoch in bar:  # the bar closes itself when the loop ends
            loss = _train_epoch(model, optimizer, train, recipe, streams.shuffle, streams.augment)
            scheduler.step()
            val_acc = evaluate_accuracy(model, data.val)
            bar.set_postfix(loss=f"{loss:.4f}", val_acc=f"{val_acc:.4f}")
            if not math.isfinite(loss):
                raise TrainingDivergedError(
                    f"teacher training diverged at epoch {epoch + 1} (loss {loss}) with "
                    f"learning rate {recipe.lr:g}; try a smaller one (--lr)")
            if partial is not None:
                snapshot = {
                    "kind": "n2n-teacher-partial", "format_version": FORMAT_VERSION, **identity,
                    "epoch": epoch + 1, "val_accuracy": val_acc,
                    "seconds": time.perf_counter() - started,
                    "model": _cpu_state(model.state_dict()),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    **{f"{name}_rng": tensor for name, tensor in streams.state().items()},
                }
                _atomic_save(snapshot, partial)
    test_acc = evaluate_accuracy(model, data.test)
    return TrainedTeacher(model=model.eval(), val_accuracy=val_acc, test_accuracy=test_acc,
                          epochs=recipe.epochs, seconds=time.perf_counter() - started)


def _train_epoch(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, train: data_mod.Split,
    recipe: Recipe, shuffle: torch.Generator, augment_rng: torch.Generator,
) -> float:
    """One pass over ``train`` in shuffled mini-batches, on the cross-entropy of the true
    labels; returns the mean training loss."""
    dev = train.x.device

    def batch_loss(index: torch.Tensor) -> torch.Tensor:
        xb = train.x[index]
        if recipe.augment:
            xb = data_mod.random_crop_flip(xb, generator=augment_rng)
        with autocast_context(dev):
            return hard_label_loss(model(in_memory_format(xb, dev)), train.y[index])

    batches = shuffled_batches(len(train), recipe.batch_size, shuffle, dev)
    return train_steps(model, optimizer, batches, batch_loss).mean_loss


def _load_partial(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The partial checkpoint at ``path`` if it exists and belongs to this run."""
    if not path.exists():
        return None
    try:
        state = _read_checkpoint(path, "cpu")
    except CheckpointError as exc:
        warnings.warn(f"ignoring partial checkpoint: {exc}", stacklevel=3)
        return None
    if state.get("kind") != "n2n-teacher-partial" or any(
        state.get(key) != value for key, value in identity.items()
    ):
        warnings.warn(f"ignoring partial checkpoint {path}: it belongs to another run "
                      "(architecture, dataset, recipe or seed differ)", stacklevel=3)
        return None
    return state


def get_teacher(
    model_name: str, dataset_name: str, *, width: float = 1.0, seed: int = 0,
    data_root: str | os.PathLike[str] | None = None, device: str | torch.device | None = None,
    epochs: int | None = None, train_if_missing: bool = True, progress: Progress = True,
    data: data_mod.Dataset | None = None, weights: str | os.PathLike[str] | None = None,
    resume_path: str | os.PathLike[str] | None = None,
) -> tuple[torch.nn.Module, TeacherRecord]:
    """The cached teacher for ``model_name`` on ``dataset_name``, training it on first use.

    ``model_name`` is a zoo name or an imported model (``torchvision:NAME``,
    ``file.py:FUNCTION``; see :mod:`n2n_env.teacher_spec`). An imported model with
    ``weights`` (its state_dict) is not trained: its accuracies are measured and it is
    cached like a trained one.

    The cached checkpoint must match the zoo architecture and the fingerprint of the
    dataset as loaded now; otherwise :class:`CheckpointError` explains how to fix it.
    ``epochs`` shortens the recipe and only matters when the teacher has to be trained.
    An interrupted first training resumes where it stopped on the next call, from its
    per-epoch state in ``resume_path`` (default: beside the cache entry; a driver that
    commits its work, as ``n2n paper`` does, keeps it there so that another machine
    continues the training). ``data`` is
    ``dataset_name`` already loaded (by a driver that also needs it), so it is not loaded
    twice.
    """
    if data is not None and data.name != dataset_name:
        raise ValueError(f"data holds {data.name!r}, not {dataset_name!r}")
    dataset = data if data is not None else data_mod.load(dataset_name, root=data_root)
    shape, classes = dataset.input_shape, dataset.num_classes
    spec = parse_teacher_spec(model_name)
    if weights is not None and (spec is None or width != 1.0):
        raise ValueError("teacher weights belong to an imported model (torchvision:NAME or "
                         "file.py:FUNCTION) at width 1; a zoo teacher is trained here")
    arch = teacher_architecture(model_name, shape, classes, width)
    path = teacher_path(cache_name(model_name, None if weights is None else os.fspath(weights)),
                        dataset_name, width, seed)
    if not path.exists() and not train_if_missing:
        raise FileNotFoundError(
            f"no cached teacher at {path}; train it with: n2n teacher train --model "
            f"{model_name} --dataset {dataset_name} --width {width:g} --seed {seed}"
        )
    if path.exists():
        return load_teacher(path, architecture=arch, dataset_fingerprint=dataset.fingerprint,
                            device=resolve_device(device))
    recipe = recipe_for(dataset_name)
    if weights is not None:
        assert spec is not None
        return _measured_teacher(spec, dataset, weights, path, recipe, seed, device)
    if epochs is not None:
        recipe = recipe.with_epochs(epochs)
    resume = partial_path(path) if resume_path is None else Path(resume_path)
    trained = train_teacher(arch, dataset, recipe, device=device, seed=seed, progress=progress,
                            resume_path=resume)
    record = TeacherRecord(
        architecture=arch, dataset=dataset_name, dataset_fingerprint=dataset.fingerprint,
        val_accuracy=trained.val_accuracy, test_accuracy=trained.test_accuracy,
        recipe=recipe, model_name=model_name, width=width, seed=seed, seconds=trained.seconds,
    )
    save_teacher(path, trained.model, record)
    resume.unlink(missing_ok=True)
    return trained.model, record


def teacher_architecture(model_name: str, input_shape: tuple[int, int, int], num_classes: int,
                         width: float = 1.0) -> Architecture:
    """The architecture a teacher name gives: a zoo teacher's, or an imported model's."""
    spec = parse_teacher_spec(model_name)
    if spec is None:
        return zoo.get(model_name, input_shape=input_shape, num_classes=num_classes,
                       width=width)
    from n2n_env.imported_teachers import imported_architecture

    return imported_architecture(spec, input_shape, num_classes, width)


def _measured_teacher(spec: TeacherSpec, dataset: data_mod.Dataset,
                      weights: str | os.PathLike[str], path: Path, recipe: Recipe, seed: int,
                      device: str | torch.device | None) -> tuple[torch.nn.Module, TeacherRecord]:
    """An imported model with its own weights: measured on the dataset and cached."""
    from n2n_env.imported_teachers import load_weighted_teacher

    started = time.perf_counter()
    model = load_weighted_teacher(spec, dataset.input_shape, dataset.num_classes, weights,
                                  device=resolve_device(device)).eval()
    record = TeacherRecord(
        architecture=model.architecture, dataset=dataset.name,
        dataset_fingerprint=dataset.fingerprint,
        val_accuracy=evaluate_accuracy(model, dataset.val),
        test_accuracy=evaluate_accuracy(model, dataset.test), recipe=recipe,
        model_name=spec.text, width=1.0, seed=seed, seconds=time.perf_counter() - started)
    save_teacher(path, model, record)
    return model, record
