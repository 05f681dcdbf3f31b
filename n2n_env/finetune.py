"""Final training of a chosen student (section 3.5): hard labels plus distillation.

After the search picks a student, the paper trains it "to convergence with hard and soft
labels": ``L = CE(f(x), y) + lambda * L_KD(f(x), z)``, with ``L_KD`` the mean squared L2
distance to the teacher's logits ``z``. We reuse the teacher's recipe for the dataset
(epochs, learning-rate schedule, augmentation) and report validation and test accuracy;
the test split is touched here and nowhere in the search.

The teacher's recipe was tuned for the teacher. A student that lost the batch norm in front
of a re-initialised classifier, say, can diverge at that learning rate within one epoch
and would end at chance accuracy. A loss that becomes NaN/inf therefore restarts the
training from the same initial weights at a tenth of the learning rate (at most
``MAX_RESTARTS`` times), with a warning; the result records the learning rate that worked.

The loss, optimizer, schedule, teacher logits and training loop come from the kit shared
with teacher training and distillation (:mod:`n2n_env.training`).

The student is usually an :class:`~n2n_env.arch.Architecture`, built here and inheriting the
teacher's weights. It may also be a ready ``nn.Module`` (a copy of it is trained, its own
weights as the start): the baselines of :mod:`n2n_env.baselines` train a pruned teacher and
hand-designed students, one of which (SqueezeNet) no Architecture can describe, by this same
recipe.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from n2n_env import data as data_mod
from n2n_env import validate
from n2n_env.arch import Architecture
from n2n_env.build import build_model
from n2n_env.checkpoints import CheckpointError, _atomic_save, _cpu_state, _read_checkpoint
from n2n_env.device import autocast_context, in_memory_format, prepare_model, resolve_device
from n2n_env.progress import Progress, progress_bar
from n2n_env.progress import check as check_progress
from n2n_env.random_streams import TrainingStreams
from n2n_env.recipes import Recipe, recipe_for
from n2n_env.training import (
    evaluate_accuracy,
    final_loss,
    make_optimizer,
    make_schedule,
    model_fingerprint,
    shuffled_batches,
    teacher_logits,
    train_steps,
)

DEFAULT_KD_WEIGHT = 0.1
"""lambda of the final loss; the paper does not state its value."""
MAX_RESTARTS = 3
"""How many times a diverged fine-tuning restarts at a tenth of the learning rate."""


@dataclass(frozen=True)
class FinetuneResult:
    """A trained student and its accuracies (fractions in [0, 1])."""

    model: nn.Module
    val_accuracy: float
    test_accuracy: float
    epochs: int
    seconds: float
    lr: float
    """The initial learning rate of the training that produced ``model``: the recipe's,
    or a tenth of it per restart after a divergence."""
    diverged: bool = False
    """True when even the last restart diverged; ``model`` is then that run's (useless)
    result, reported rather than raised so a finished search is never lost."""


@torch.inference_mode(False)
@torch.enable_grad()
def finetune(arch: Architecture | nn.Module, teacher: nn.Module, data: data_mod.Dataset,
             recipe: Recipe | None = None, *, kd_weight: float = DEFAULT_KD_WEIGHT,
             inherit: bool = True, device: str | torch.device | None = None, seed: int = 0,
             progress: Progress = True,
             resume_path: str | os.PathLike[str] | None = None) -> FinetuneResult:
    """Train ``arch`` (inheriting ``teacher``'s weights unless ``inherit=False``) with
    cross-entropy plus ``kd_weight`` times the L2 logit loss, on ``recipe`` (default: the
    teacher recipe for ``data``).

    ``arch`` may instead be an ``nn.Module``: a copy of it, with its weights as they are,
    is trained (``inherit`` does not apply) and returned; the module itself is untouched.

    With ``resume_path``, the training state (weights, optimizer, schedule, random states,
    learning rate of the current attempt) is written there after every epoch, and a
    training that matches this student, teacher, data, recipe and seed continues from it,
    as teacher training does; on the CPU the result equals an unbroken run's. The caller
    deletes the file once the result is kept.
    """
    kd_weight = validate.number("kd_weight", kd_weight, at_least=0)
    seed = validate.integer("seed", seed, minimum=0)
    validate.flag("inherit", inherit)
    progress = check_progress(progress)
    if recipe is not None and not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a Recipe or None, got {recipe!r}")
    if not isinstance(arch, Architecture | nn.Module):
        raise TypeError(f"the student must be an Architecture or an nn.Module, got {arch!r}")
    recipe = recipe or recipe_for(data.name)
    if recipe.batch_size < 2:
        raise ValueError(f"batch_size must be >= 2, got {recipe.batch_size}: one-sample "
                         "batches are skipped, so fine-tuning would take zero steps")
    dev = resolve_device(device)
    started = time.perf_counter()
    teacher = prepare_model(teacher, dev).eval()
    data = data.to(dev)
    torch.manual_seed(seed)
    if isinstance(arch, Architecture):
        label, identity = arch.name, arch.signature()
        student = prepare_model(build_model(arch, teacher if inherit else None, device=dev), dev)
    else:
        own = getattr(arch, "architecture", None)
        label = getattr(own, "name", "") or type(arch).__name__
        identity = model_fingerprint(arch)
        student = prepare_model(copy.deepcopy(arch), dev)
    start_state = {name: tensor.clone() for name, tensor in student.state_dict().items()}
    fixed_logits = None if recipe.augment else teacher_logits(teacher, data.train.x)
    resume = None if resume_path is None else _Resume(
        Path(resume_path), {"student": identity, "teacher": model_fingerprint(teacher),
                            "data": data.fingerprint, "recipe": recipe.to_dict(), "seed": seed,
                            "kd_weight": kd_weight, "inherit": inherit})
    saved = resume.load() if resume is not None else None
    attempt, first = recipe, 0
    if saved is not None:
        first = saved["restart"]
        for _ in range(first):  # the same divisions as the restarts made, so the same lr
            attempt = dataclasses.replace(attempt, lr=attempt.lr / 10)
        started -= saved["seconds"]
    for restart in range(first, MAX_RESTARTS + 1):
        student.load_state_dict(start_state)
        # Every attempt draws (dropout) from the same random state, so a restart equals a
        # fresh run at its learning rate.
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            val_accuracy = _train(student, teacher, data, attempt, kd_weight, fixed_logits,
                                  seed, desc=f"finetune {label or 'student'}",
                                  progress=progress, resume=resume, restart=restart,
                                  saved=saved if restart == first else None,
                                  started=started)
        if val_accuracy is not None:
            break
        if restart < MAX_RESTARTS:
            warnings.warn(f"fine-tuning {label or 'the student'} diverged (non-finite loss) "
                          f"at lr {attempt.lr:g}; restarting at lr {attempt.lr / 10:g}",
                          RuntimeWarning, stacklevel=4)
            attempt = dataclasses.replace(attempt, lr=attempt.lr / 10)
    else:
        warnings.warn(f"fine-tuning {label or 'the student'} diverged at every learning "
                      f"rate from {recipe.lr:g} down to {attempt.lr:g}; its accuracy is "
                      "reported as measured", RuntimeWarning, stacklevel=4)
    diverged = val_accuracy is None
    return FinetuneResult(
        student.eval(), evaluate_accuracy(student, data.val) if diverged else val_accuracy,
        evaluate_accuracy(student, data.test), recipe.epochs, time.perf_counter() - started,
        lr=attempt.lr, diverged=diverged)


def _train(student: nn.Module, teacher: nn.Module, data: data_mod.Dataset, recipe: Recipe,
           kd_weight: float, fixed_logits: torch.Tensor | None, seed: int, *, desc: str,
           progress: Progress, resume: _Resume | None = None, restart: int = 0,
           saved: dict[str, Any] | None = None, started: float = 0.0) -> float | None:
    """Train ``student`` in place for the whole recipe; its final validation accuracy, or
    None as soon as an epoch ends with a non-finite loss. With ``resume``, the state after
    each epoch is saved; ``saved`` is a state to continue from."""
    dev = next(student.parameters()).device
    optimizer = make_optimizer(student, recipe)
    schedule = make_schedule(optimizer, recipe)
    streams = TrainingStreams.seeded(dev, seed, seed)
    val_accuracy, first = 0.0, 0
    if saved is not None:
        student.load_state_dict(saved["student"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        streams.restore(saved)
        first, val_accuracy = saved["epoch"], saved["val_accuracy"]
    bar = progress_bar(progress, range(first, recipe.epochs), total=recipe.epochs, desc=desc,
                       unit="epoch", initial=first)

    def batch_loss(index: torch.Tensor) -> torch.Tensor:
        inputs = data.train.x[index]
        if recipe.augment:
            inputs = data_mod.random_crop_flip(inputs, generator=streams.augment)
        inputs = in_memory_format(inputs, dev)
        targets = teacher_logits(teacher, inputs) if fixed_logits is None else fixed_logits[index]
        with autocast_context(dev):
            logits = student(inputs)
        return final_loss(logits, data.train.y[index], targets, kd_weight)

    for epoch in bar:
        batches = shuffled_batches(len(data.train), recipe.batch_size, streams.shuffle, dev)
        stats = train_steps(student, optimizer, batches, batch_loss)
        if not bool(stats.finite):
            bar.close()
            return None
        schedule.step()
        val_accuracy = evaluate_accuracy(student, data.val)
        last = stats.last_loss.item() if stats.last_loss is not None else float("nan")
        bar.set_postfix(loss=f"{last:.3f}", val=f"{val_accuracy:.4f}")
        if resume is not None:
            resume.save({
                "restart": restart, "epoch": epoch + 1, "val_accuracy": val_accuracy,
                "seconds": time.perf_counter() - started,
                "student": _cpu_state(student.state_dict()),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                **streams.state()})
    return val_accuracy


class _Resume:
    """The per-epoch state of one fine-tuning, kept in one file (tensors and plain values,
    read with ``weights_only=True``) with the identity of the training it belongs to."""

    def __init__(self, path: Path, identity: dict[str, Any]) -> None:
        self.path, self.identity = path, identity

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            state = _read_checkpoint(self.path, "cpu")
        except CheckpointError as exc:
            warnings.warn(f"ignoring fine-tuning state: {exc}", stacklevel=4)
            return None
        if state.get("kind") != "n2n-finetune-partial" or state.get("identity") != self.identity:
            warnings.warn(f"ignoring fine-tuning state {self.path}: it belongs to another "
                          "training (student, teacher, data, recipe or seed differ)",
                          stacklevel=4)
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        _atomic_save({"kind": "n2n-finetune-partial", "identity": self.identity, **state},
                     self.path)
