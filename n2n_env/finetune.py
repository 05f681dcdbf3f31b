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
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from n2n_env import data as data_mod
from n2n_env.arch import Architecture
from n2n_env.build import build_model
from n2n_env.device import autocast_context, in_memory_format, prepare_model, resolve_device
from n2n_env.distill import distillation_loss, teacher_logits
from n2n_env.recipes import Recipe, recipe_for
from n2n_env.teacher import evaluate_accuracy, make_optimizer

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
def finetune(arch: Architecture, teacher: nn.Module, data: data_mod.Dataset,
             recipe: Recipe | None = None, *, kd_weight: float = DEFAULT_KD_WEIGHT,
             inherit: bool = True, device: str | torch.device | None = None, seed: int = 0,
             progress: bool = True) -> FinetuneResult:
    """Train ``arch`` (inheriting ``teacher``'s weights unless ``inherit=False``) with
    cross-entropy plus ``kd_weight`` times the L2 logit loss, on ``recipe`` (default: the
    teacher recipe for ``data``)."""
    if kd_weight < 0:
        raise ValueError(f"kd_weight must be >= 0, got {kd_weight}")
    recipe = recipe or recipe_for(data.name)
    dev = resolve_device(device)
    started = time.perf_counter()
    teacher = prepare_model(teacher, dev).eval()
    data = data.to(dev)
    torch.manual_seed(seed)
    student = prepare_model(build_model(arch, teacher if inherit else None, device=dev), dev)
    start_state = {name: tensor.clone() for name, tensor in student.state_dict().items()}
    fixed_logits = None if recipe.augment else teacher_logits(teacher, data.train.x)
    attempt = recipe
    for restart in range(MAX_RESTARTS + 1):
        student.load_state_dict(start_state)
        # Every attempt draws (dropout) from the same random state, so a restart equals a
        # fresh run at its learning rate.
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            val_accuracy = _train(student, teacher, data, attempt, kd_weight, fixed_logits,
                                  seed, desc=f"finetune {arch.name or 'student'}",
                                  progress=progress)
        if val_accuracy is not None:
            break
        if restart < MAX_RESTARTS:
            warnings.warn(f"fine-tuning {arch.name or 'the student'} diverged (non-finite loss) "
                          f"at lr {attempt.lr:g}; restarting at lr {attempt.lr / 10:g}",
                          RuntimeWarning, stacklevel=4)
            attempt = dataclasses.replace(attempt, lr=attempt.lr / 10)
    else:
        warnings.warn(f"fine-tuning {arch.name or 'the student'} diverged at every learning "
                      f"rate from {recipe.lr:g} down to {attempt.lr:g}; its accuracy is "
                      "reported as measured", RuntimeWarning, stacklevel=4)
    diverged = val_accuracy is None
    return FinetuneResult(
        student.eval(), evaluate_accuracy(student, data.val) if diverged else val_accuracy,
        evaluate_accuracy(student, data.test), recipe.epochs, time.perf_counter() - started,
        lr=attempt.lr, diverged=diverged)


def _train(student: nn.Module, teacher: nn.Module, data: data_mod.Dataset, recipe: Recipe,
           kd_weight: float, fixed_logits: torch.Tensor | None, seed: int, *, desc: str,
           progress: bool) -> float | None:
    """Train ``student`` in place for the whole recipe; its final validation accuracy, or
    None as soon as an epoch ends with a non-finite loss."""
    dev = next(student.parameters()).device
    optimizer = make_optimizer(student, recipe)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(recipe.milestones),
                                                     recipe.gamma)
    shuffle = torch.Generator().manual_seed(seed)
    augment_rng = torch.Generator(device=dev).manual_seed(seed)
    bar = tqdm(range(recipe.epochs), desc=desc, disable=not progress, unit="epoch")
    val_accuracy = 0.0
    for _ in bar:
        student.train()
        finite = torch.ones((), dtype=torch.bool, device=dev)
        order = torch.randperm(len(data.train), generator=shuffle).to(dev)
        for start in range(0, len(order) - 1, recipe.batch_size):
            index = order[start : start + recipe.batch_size]
            if len(index) < 2:
                continue
            inputs = data.train.x[index]
            if recipe.augment:
                inputs = data_mod.random_crop_flip(inputs, generator=augment_rng)
            inputs = in_memory_format(inputs, dev)
            targets = (teacher_logits(teacher, inputs) if fixed_logits is None
                       else fixed_logits[index])
            with autocast_context(dev):
                logits = student(inputs)
            loss = F.cross_entropy(logits.float(), data.train.y[index]) + (
                kd_weight * distillation_loss(logits, targets) if kd_weight else 0.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            finite &= torch.isfinite(loss.detach())
        if not bool(finite):
            bar.close()
            return None
        schedule.step()
        val_accuracy = evaluate_accuracy(student, data.val)
        bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{val_accuracy:.4f}")
    return val_accuracy
