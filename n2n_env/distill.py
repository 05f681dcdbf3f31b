"""Knowledge-distillation evaluator: the real reward signal of both N2N environments.

A candidate student is trained to match the teacher's logits (section 3.5: the mean
squared L2 distance between student and teacher logits, plus an optional lambda times
cross-entropy on the true labels) with Adam for a fixed budget, and scored by its
validation accuracy. This is ~99% of the method's cost, so it is built for speed:

* teacher logits are computed once per dataset and reused (no teacher forward per step);
* data stays as tensors on the training device (no DataLoader, no host copies);
* students inherit the teacher's weights by default (``init="inherit"``), so a budget of
  a third of an epoch already reaches useful accuracy; the paper's 5 epochs from scratch
  (``init="scratch"``) stay available; docs/benchmarks.md measures how well the short
  budget ranks candidates against the paper's recipe;
* many small batches rather than a few large ones, which ranks candidates better for the
  same number of samples;
* once the budget is spent, batch-norm statistics are re-estimated over a few hundred
  training images, so the score reflects the trained weights rather than running averages
  that lag behind them (the same candidate then scores more alike across seeds);
* on CUDA, bf16 autocast and channels-last; on the CPU, this process's share of the
  machine's cores (every core unless other n2n processes train too;
  :mod:`n2n_env.thread_budget`).

A student whose loss becomes NaN/inf or that runs out of memory yields an Evaluation with
``failure`` set instead of raising, so one bad candidate never kills a search.

The losses, teacher logits, batch-norm re-estimation, fingerprint and training loop come
from the kit shared with teacher training and fine-tuning (:mod:`n2n_env.training`);
``distillation_loss``, ``teacher_logits``, ``recalibrate_batch_norm`` and
``model_fingerprint`` stay importable from here.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import nn

from n2n_env import validate
from n2n_env.arch import MAX_CLASSIFIER_INPUTS, Architecture
from n2n_env.build import build_model
from n2n_env.data import Dataset
from n2n_env.device import (
    autocast_context,
    in_memory_format,
    prepare_model,
    resolve_device,
    use_all_cores,
)
from n2n_env.evaluators import Evaluation, evaluate_each, unscored
from n2n_env.training import (
    batch_stream,
    distillation_loss,
    distillation_optimizer,
    evaluate_accuracy,
    model_fingerprint,
    recalibrate_batch_norm,
    teacher_logits,
    train_steps,
)

__all__ = [
    "INITS",
    "DistillRecipe",
    "DistillationEvaluator",
    "TrainedStudent",
    "distillation_loss",
    "model_fingerprint",
    "recalibrate_batch_norm",
    "teacher_logits",
]

INITS = ("inherit", "scratch")


@dataclass(frozen=True)
class DistillRecipe:
    """How a candidate is trained before it is scored."""

    steps: int | None = 100
    """Budget in optimizer steps (exclusive with ``epochs``); 100 steps of 32 samples is the
    default search budget chosen in docs/benchmarks.md."""
    epochs: float | None = None
    """Budget in passes over the training split (exclusive with ``steps``)."""
    batch_size: int = 32
    """Mini-batch size; partial batches are skipped (batch norm needs >= 2 samples). Small
    batches give more updates for the same samples, which ranks candidates better at the
    same CPU time (docs/benchmarks.md)."""
    lr: float = 1e-3
    """Adam learning rate."""
    ce_weight: float = 0.0
    """lambda: weight of the cross-entropy term added to the L2 logit loss."""
    init: Literal["inherit", "scratch"] = "inherit"
    """Start from the teacher's weights (build_model's inheritance) or from scratch."""
    batch_norm_samples: int = 512
    """Training images over which batch-norm statistics are re-estimated once the budget is
    spent; 0 keeps the running averages. After 100 steps those averages still lag behind
    the weights (and start from scratch in fresh batch norms), which adds seed-to-seed
    noise to the score (docs/benchmarks.md)."""

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one budget: steps=N or epochs=E (the other None), "
                             f"got steps={self.steps!r}, epochs={self.epochs!r}")
        if self.steps is not None:
            validate.integer("steps", self.steps, minimum=1)
        if self.epochs is not None:
            validate.number("epochs", self.epochs, above=0)
        validate.integer("batch_size", self.batch_size, minimum=2)
        validate.number("lr", self.lr, above=0)
        validate.number("ce_weight", self.ce_weight, at_least=0)
        validate.choice("init", self.init, INITS)
        validate.integer("batch_norm_samples", self.batch_norm_samples, minimum=0)

    @classmethod
    def paper(cls) -> DistillRecipe:
        """The paper's recipe (section 4.2): 5 epochs from scratch, L2 logit loss, batch norm's
        running averages scored as they are."""
        return cls(steps=None, epochs=5.0, init="scratch", batch_norm_samples=0)

    def total_steps(self, train_size: int) -> int:
        if self.steps is not None:
            return self.steps
        assert self.epochs is not None
        return max(1, math.ceil(self.epochs * (train_size // self.batch_size)))

    def digest(self) -> str:
        """Stable hash of the recipe, part of a cache key."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class TrainedStudent:
    """A student after its distillation budget, before (or after) it is scored."""

    model: nn.Module | None
    """The trained student; None when training failed."""
    failure: str | None
    """Why training failed (non-finite loss, out of memory), or None."""
    costs: dict[str, float]
    """``wall_seconds``, ``optimizer_steps`` and ``samples_seen``, as Evaluation has them."""
    accuracies: dict[str, float] = field(default_factory=dict)
    """Scores by split name, filled in by whoever scores the student."""


class DistillationEvaluator:
    """Scores a student by validation accuracy after a short distillation from the teacher.

    ``teacher`` is a model from ``build_model`` (it carries ``.architecture``); ``data``
    supplies the training split (distillation inputs) and the validation split (the score).
    The test split is never touched. Results are deterministic for a seed on the CPU.
    """

    def __init__(self, teacher: nn.Module, data: Dataset, recipe: DistillRecipe | None = None,
                 *, teacher_accuracy: float | None = None, seed: int = 0,
                 device: str | torch.device | None = None,
                 max_classifier_inputs: int = MAX_CLASSIFIER_INPUTS) -> None:
        architecture = getattr(teacher, "architecture", None)
        if not isinstance(architecture, Architecture):
            raise TypeError("teacher must be a model from build_model (it carries .architecture)")
        if recipe is not None and not isinstance(recipe, DistillRecipe):
            raise TypeError(f"recipe must be a DistillRecipe or None, got {recipe!r}")
        seed = validate.integer("seed", seed, minimum=0)
        max_classifier_inputs = validate.integer("max_classifier_inputs",
                                                 max_classifier_inputs, minimum=1)
        if teacher_accuracy is not None:
            teacher_accuracy = validate.number("teacher_accuracy", teacher_accuracy, above=0,
                                               at_most=1)
        if data.input_shape != architecture.input_shape or (
                data.num_classes != architecture.num_classes):
            raise ValueError(f"teacher expects input {architecture.input_shape} and "
                             f"{architecture.num_classes} classes; dataset {data.name!r} has "
                             f"{data.input_shape} and {data.num_classes}")
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            use_all_cores()
        self.recipe = recipe or DistillRecipe()
        self.seed = seed
        self.max_classifier_inputs = max_classifier_inputs
        self.teacher = prepare_model(teacher, self.device).eval()
        self.teacher_architecture = architecture
        self.train = data.train.to(self.device)
        self.val = data.val.to(self.device)
        self.dataset_name, self.dataset_fingerprint = data.name, data.fingerprint
        if len(self.train) < self.recipe.batch_size:
            raise ValueError(f"training split has {len(self.train)} samples, fewer than one "
                             f"batch of {self.recipe.batch_size}")
        self.train_logits = teacher_logits(self.teacher, self.train.x)
        # Batch norms are re-estimated on the first images of the seed's first training
        # order (the images of the first batches trained on), the same for every candidate.
        first_order = torch.randperm(len(self.train),
                                     generator=torch.Generator().manual_seed(seed))
        self.batch_norm_images = (
            self.train.x[first_order[: self.recipe.batch_norm_samples].to(self.device)]
            if self.recipe.batch_norm_samples > 0 else None)
        self.teacher_accuracy = (teacher_accuracy if teacher_accuracy is not None
                                 else evaluate_accuracy(self.teacher, self.val))
        self._teacher_fingerprint = model_fingerprint(self.teacher)

    def identity(self) -> Mapping[str, str]:
        return {"evaluator": "distill", "teacher": self._teacher_fingerprint,
                "dataset": f"{self.dataset_name}:{self.dataset_fingerprint}",
                "recipe": self.recipe.digest(), "seed": str(self.seed),
                "device": self.device.type, "limit": str(self.max_classifier_inputs)}

    def evaluate_many(self, archs: Sequence[Architecture]) -> list[Evaluation]:
        return evaluate_each(self, archs)

    def evaluate(self, arch: Architecture) -> Evaluation:
        reason = arch.degenerate_reason(self.max_classifier_inputs)
        if reason is not None:
            return unscored(self.teacher_architecture, arch, reason)
        trained = self.train_student(arch)
        if trained.model is not None:
            started = time.perf_counter()
            trained.accuracies["val"] = evaluate_accuracy(trained.model, self.val)
            trained.costs["wall_seconds"] += time.perf_counter() - started
        return self.evaluation(arch, trained)

    def train_student(self, arch: Architecture) -> TrainedStudent:
        """Build ``arch`` (inheriting the teacher's weights unless the recipe says scratch),
        distil it for the recipe's budget and re-estimate its batch norms; nothing is
        scored. ``arch`` must not be degenerate. :meth:`evaluate` scores the result on
        validation; an offline benchmark may score it on other splits too."""
        started = time.perf_counter()
        steps_done, model = 0, None
        try:
            # Callers may hold autograd off (an agent's rollout under no_grad, say); training
            # needs it on, whatever the caller's mode.
            with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(
                    devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(self.seed)
                model = self._build(arch)
                steps_done, failure = self._train(model)
                if failure is None and self.batch_norm_images is not None:
                    recalibrate_batch_norm(model, self.batch_norm_images)
        except (torch.OutOfMemoryError, MemoryError) as error:
            failure = f"out of memory: {str(error).splitlines()[0] if str(error) else 'CPU'}"
            model = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        costs = {"wall_seconds": time.perf_counter() - started, "optimizer_steps": steps_done,
                 "samples_seen": steps_done * self.recipe.batch_size}
        return TrainedStudent(model=model if failure is None else None, failure=failure,
                              costs=costs)

    def evaluation(self, arch: Architecture, trained: TrainedStudent) -> Evaluation:
        """The Evaluation of a student trained by :meth:`train_student` and scored on
        validation (``trained.accuracies["val"]``)."""
        if trained.failure is not None:
            return unscored(self.teacher_architecture, arch, failure=trained.failure,
                            **trained.costs)
        params, flops = arch.num_params(), arch.flops()
        return Evaluation(
            accuracy=trained.accuracies["val"], params=params, flops=flops,
            compression=1.0 - params / self.teacher_architecture.num_params(),
            flops_compression=1.0 - flops / self.teacher_architecture.flops(),
            **trained.costs)

    def _build(self, arch: Architecture) -> nn.Module:
        teacher = self.teacher if self.recipe.init == "inherit" else None
        return prepare_model(build_model(arch, teacher, device=self.device), self.device)

    def _train(self, student: nn.Module) -> tuple[int, str | None]:
        """Run the budget; return steps taken and a failure message if the loss diverged."""
        recipe, device = self.recipe, self.device
        optimizer = distillation_optimizer(student, recipe.lr)
        order = torch.Generator().manual_seed(self.seed)
        total = recipe.total_steps(len(self.train))

        def batch_loss(index: torch.Tensor) -> torch.Tensor:
            inputs = in_memory_format(self.train.x[index], device)
            with autocast_context(device):
                logits = student(inputs)
            return distillation_loss(logits, self.train_logits[index], self.train.y[index],
                                     recipe.ce_weight)

        batches = batch_stream(len(self.train), recipe.batch_size, order, device, total)
        stats = train_steps(student, optimizer, batches, batch_loss, check_every=50)
        if not bool(stats.finite):
            return stats.steps, f"loss became non-finite by step {stats.steps}"
        return stats.steps, None
