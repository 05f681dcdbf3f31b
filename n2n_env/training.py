"""The torch training kit shared by teacher training, distillation and fine-tuning.

Teachers (:mod:`n2n_env.teacher`), the distillation evaluator (:mod:`n2n_env.distill`)
and the final fine-tuning (:mod:`n2n_env.finetune`) train networks the same way: shuffled
mini-batches of a dataset held on the device as one tensor, a forward pass under the
device's autocast, a loss, one optimizer step. This module holds what they share, so that
one rule holds in all three:

* scoring: :func:`evaluate_accuracy`;
* optimizers and learning-rate schedules: :func:`make_optimizer`, :func:`make_schedule`,
  :func:`distillation_optimizer`;
* losses: :func:`hard_label_loss` (cross-entropy on the true labels),
  :func:`soft_label_loss` (the paper's L2 logit loss, section 3.5) and their two
  weighted sums, :func:`distillation_loss` (the search's evaluator) and :func:`final_loss`
  (the final training of the chosen student);
* the teacher's logits, once per dataset or per augmented batch: :func:`teacher_logits`;
* batch-norm re-estimation after training: :func:`recalibrate_batch_norm`;
* the shared loop: :func:`shuffled_batches` / :func:`batch_stream` draw the mini-batches
  and :func:`train_steps` takes the optimizer steps, checking the loss stays finite and
  letting :mod:`n2n_env.thread_budget` rebalance the CPU threads before it starts;
* :func:`model_fingerprint`, the hash that identifies a teacher in caches and resumes.

What to train and when to stop stays with the callers: the teacher's recipe and cache, the
evaluator's step budget, the fine-tuning's restarts and resume.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from n2n_env import data as data_mod
from n2n_env import thread_budget
from n2n_env.device import (
    autocast_context,
    in_memory_format,
    inference_batch_size,
    inference_mode,
    resolve_device,
)
from n2n_env.recipes import Recipe

__all__ = [
    "StepStats",
    "batch_stream",
    "distillation_loss",
    "distillation_optimizer",
    "evaluate_accuracy",
    "final_loss",
    "hard_label_loss",
    "make_optimizer",
    "make_schedule",
    "model_fingerprint",
    "recalibrate_batch_norm",
    "shuffled_batches",
    "soft_label_loss",
    "teacher_logits",
    "train_steps",
]


# ------------------------------------------------------------------ scoring


def evaluate_accuracy(
    model: nn.Module, split: data_mod.Split, batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of ``model`` on ``split``, in batches of
    ``batch_size`` (by default the device's ``inference_batch_size``).

    Runs where the model's parameters live unless ``device`` is given (then the model is
    moved there). The model's train/eval mode is restored afterwards.
    """
    if len(split) == 0:
        raise ValueError("cannot evaluate accuracy on an empty split")
    dev = next(model.parameters()).device if device is None else resolve_device(device)
    if batch_size is None:
        batch_size = inference_batch_size(dev)
    model.to(dev)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    with inference_mode(model), autocast_context(dev):
        for start in range(0, len(split), batch_size):
            xb = split.x[start : start + batch_size].to(dev, non_blocking=True)
            yb = split.y[start : start + batch_size].to(dev, non_blocking=True)
            correct += (model(in_memory_format(xb, dev)).argmax(dim=1) == yb).sum()
    return correct.item() / len(split)


# ------------------------------------------------------------------ optimizers


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The optimizer ``recipe`` names (SGD or Adam) over all of ``model``'s parameters."""
    params, lr, wd = model.parameters(), recipe.lr, recipe.weight_decay
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(recipe.momentum, 0.999), weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, momentum=recipe.momentum, weight_decay=wd)


def make_schedule(optimizer: torch.optim.Optimizer,
                  recipe: Recipe) -> torch.optim.lr_scheduler.MultiStepLR:
    """``recipe``'s learning-rate schedule: times ``gamma`` after each milestone epoch (the
    caller steps it once per epoch)."""
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(recipe.milestones), gamma=recipe.gamma)


def distillation_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam with its default betas and no weight decay, as the search distils students.

    The fused kernel updates every tensor in one pass, which matters on the CPU for
    candidates with a large linear layer (docs/benchmarks.md)."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


# ------------------------------------------------------------------ losses


def hard_label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits`` (computed in float32) against the true ``labels``."""
    return F.cross_entropy(logits.float(), labels)


def soft_label_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """The knowledge-distillation loss of section 3.5: the mean over samples of the squared
    L2 distance ``||f(x) - z||^2`` between student and teacher logits, in float32."""
    return (student_logits.float() - teacher_logits).pow(2).sum(dim=1).mean()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      labels: torch.Tensor | None = None, ce_weight: float = 0.0) -> torch.Tensor:
    """Mean over samples of ||f(x) - z||^2 (section 3.5), plus ce_weight * cross-entropy.

    The loss the search's evaluator distils with: the soft labels lead and the hard ones
    are an optional extra (``ce_weight`` is the paper's lambda there)."""
    student_logits = student_logits.float()  # once, so both terms share one cast
    loss = soft_label_loss(student_logits, teacher_logits)
    if ce_weight > 0 and labels is not None:
        loss = loss + ce_weight * hard_label_loss(student_logits, labels)
    return loss


def final_loss(logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor,
               kd_weight: float) -> torch.Tensor:
    """``CE(f(x), y) + kd_weight * ||f(x) - z||^2``: the final training of a chosen student
    "with hard and soft labels" (section 3.5), where the hard labels lead."""
    hard = hard_label_loss(logits, labels)
    return hard + (kd_weight * soft_label_loss(logits, teacher_logits) if kd_weight else 0.0)


def teacher_logits(teacher: nn.Module, x: torch.Tensor,
                   batch_size: int | None = None) -> torch.Tensor:
    """The teacher's logits for every row of ``x``, in float32, on ``x``'s device, in batches
    of ``batch_size`` (by default the device's ``inference_batch_size``)."""
    device = x.device
    if batch_size is None:
        batch_size = inference_batch_size(device)
    outputs = []
    with inference_mode(teacher), autocast_context(device):
        for start in range(0, len(x), batch_size):
            outputs.append(teacher(in_memory_format(x[start : start + batch_size], device)).float())
    return torch.cat(outputs)


# ------------------------------------------------------------------ batch norm


def recalibrate_batch_norm(model: nn.Module, inputs: torch.Tensor,
                           batch_size: int | None = None) -> None:
    """Replace every batch norm's running statistics with their average over the batches of
    ``inputs``.

    The model's weights are untouched; it is left in eval mode. Only the batch norms run in
    training mode, so dropout is off, as it is when the model is scored. A final batch of a
    single image is skipped, since batch norm cannot normalise one sample in training mode.
    """
    model.eval()
    norms = [module for module in model.modules()
             if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if not norms or len(inputs) < 2:
        return
    device = inputs.device
    if batch_size is None:
        batch_size = inference_batch_size(device)
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: every batch counts equally
        norm.train()
    with torch.no_grad(), autocast_context(device):
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start : start + batch_size]
            if len(batch) >= 2:
                model(in_memory_format(batch, device))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
        norm.eval()


# ------------------------------------------------------------------ the training loop


def shuffled_batches(size: int, batch_size: int, generator: torch.Generator,
                     device: torch.device, *, full_only: bool = False) -> Iterator[torch.Tensor]:
    """The index tensors (on ``device``) of one shuffled pass over ``size`` samples.

    The order is drawn from ``generator`` when the first batch is asked for. A final batch
    of one sample is skipped (batch norm cannot train on it); with ``full_only``, every
    partial batch is (the evaluator counts its budget in batches of one size).
    """
    order = torch.randperm(size, generator=generator).to(device)
    stop = size - size % batch_size if full_only else size
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size]
        if index.numel() >= 2:
            yield index


def batch_stream(size: int, batch_size: int, generator: torch.Generator, device: torch.device,
                 steps: int) -> Iterator[torch.Tensor]:
    """``steps`` full batches of shuffled passes over ``size`` samples, one pass after the
    other (a fresh order each), as many passes as the budget needs."""
    if size // batch_size < 1 or batch_size < 2:
        raise ValueError(f"{size} samples hold no full batch of {batch_size} (at least 2)")
    passes = (shuffled_batches(size, batch_size, generator, device, full_only=True)
              for _ in itertools.count())
    return itertools.islice(itertools.chain.from_iterable(passes), steps)


@dataclass
class StepStats:
    """What :func:`train_steps` saw; tensors stay on the device until someone reads them."""

    steps: int
    """Optimizer steps taken."""
    samples: int
    """Training samples seen (the sum of the batch sizes)."""
    loss_sum: torch.Tensor
    """Sum over steps of the batch loss times the batch size (float32)."""
    finite: torch.Tensor
    """Whether every loss so far was finite (a boolean scalar)."""
    last_loss: torch.Tensor | None
    """The last batch's loss (detached), or None when no step was taken."""

    @property
    def mean_loss(self) -> float:
        """The sample-weighted mean training loss (0 when nothing was trained)."""
        return self.loss_sum.item() / max(self.samples, 1)


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer,
                batches: Iterable[torch.Tensor],
                batch_loss: Callable[[torch.Tensor], torch.Tensor], *,
                check_every: int = 0) -> StepStats:
    """Put ``model`` in training mode and take one optimizer step per index tensor of
    ``batches``, on the loss ``batch_loss(index)`` (forward pass included).

    Finiteness is accumulated on the device and not read back per step (a read forces a
    device sync). With ``check_every``, it is read every that many steps and the loop stops
    at the first check that finds a non-finite loss. Before the first step this process's
    share of the CPU cores is re-checked (:func:`n2n_env.thread_budget.rebalance`), so that
    n2n processes that start or finish meanwhile rebalance the machine's threads.
    """
    thread_budget.rebalance()
    device = next(model.parameters()).device
    stats = StepStats(steps=0, samples=0, loss_sum=torch.zeros((), device=device),
                      finite=torch.ones((), dtype=torch.bool, device=device), last_loss=None)
    model.train()
    for index in batches:
        loss = batch_loss(index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        detached = loss.detach()
        stats.finite &= torch.isfinite(detached)
        stats.loss_sum += detached.float() * index.numel()
        stats.last_loss = detached
        stats.steps += 1
        stats.samples += index.numel()
        if check_every and stats.steps % check_every == 0 and not bool(stats.finite):
            break
    return stats


# ------------------------------------------------------------------ identity


def model_fingerprint(model: nn.Module) -> str:
    """A hash of a model's architecture and every tensor of its state_dict: the identity
    of a teacher in the evaluator's cache key, a fine-tuning's resume file and N2N-Bench.

    A module without an ``architecture`` (a hand-designed student such as SqueezeNet,
    :mod:`n2n_env.baselines.students`) is identified by its class instead; the tensors'
    names and values pin down its shape."""
    arch = getattr(model, "architecture", None)
    head = (arch.signature() if arch is not None
            else f"{type(model).__module__}.{type(model).__qualname__}")
    digest = hashlib.sha256(head.encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
