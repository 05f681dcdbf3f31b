"""Filter pruning after Molchanov et al. (2016), the paper's Table 2 baseline (section 4.4.1).

"We perform pruning based on Molchanov et al. (2016), which removes filters using a greedy
criteria based approach and then finetunes the network. [...] we stop pruning when 1.
accuracy drops below 1% of the student model obtained by our method or 2. the number of
parameters is less than our method. Pruning is done 5 times to control for variance and
the best performing model is reported."

:func:`prune_filters` prunes a teacher (an ``N2NNet``) step by step. Each step:

1. **Criterion.** Torch-Pruning's :class:`~torch_pruning.pruner.importance.TaylorImportance`
   (``multivariable=True``) scores every channel of every pruning group that its
   ``DependencyGraph`` finds: the channels tied together (a convolution's filters, its
   batch norm, the next layer's input slices, and, in a ResNet, every layer joined by an
   identity shortcut) form one group and are removed together, so residual additions stay
   consistent. For each layer of the group the score of a channel is ``|sum w * dC/dw|``
   over the weights that produce (filters) or read (next layer's input slice) it; for a
   layer linear in its weights this equals ``|sum z * dC/dz|`` over the feature map ``z``
   it produces or reads (Euler's identity), the first-order Taylor estimate of the change
   of the loss ``C`` when the channel is zeroed: Molchanov's criterion. The group's score
   is the mean over its layers. ``C`` is the KD loss of the final fine-tuning
   (:func:`n2n_env.training.final_loss`). As in Molchanov et al., the absolute value is
   taken per example (``taylor_batch_size=1``; larger batches are faster, but the signed
   contributions of their examples cancel), averaged over ``taylor_examples`` training
   examples, and each layer's scores are divided by their L2 norm so that layers compare.
2. **Removal.** The ``prune_fraction`` of the teacher's prunable channels (at least one)
   with the lowest scores over the whole network are removed; every group keeps at least
   one channel. The classifier's outputs and the input channels are never pruned;
   ``hidden_units`` adds hidden linear layers to the prunable layers (Molchanov pruned
   convolution filters only). Molchanov et al. removed one filter per step; a fraction
   keeps the number of steps tractable on deep teachers (set it low to come close).
3. **Fine-tuning.** ``finetune_steps`` mini-batch updates of the KD loss with the recipe's
   optimizer and batch size (and augmentation, if the recipe has it), at ``step_lr``: by
   default the recipe's final learning rate, where the teacher's training ended. At the
   recipe's initial rate a trained network first loses accuracy, which the stopping rule
   reads as pruning damage: on full-width VGG-13 and mnist-10k, the very same step-1
   channels left 98.1-98.6% validation at lr 0.01 and 99.2-99.4% at 0.001 (seeds 0-2),
   and 3 of 4 seeds at 0.01 broke the rule within two steps
   (``benchmarks/pruning_step_lr.py``; docs/results.md, Table 2).
4. **Stopping rule** (:class:`StopRule`, the paper's two conditions, checked on the
   validation split): pruning stops at the first step whose network has fewer parameters
   than the N2N student (checked before fine-tuning) or whose validation accuracy after
   fine-tuning is below the N2N student's by more than ``accuracy_drop`` (default 0.01:
   "1%" read as one percentage point). The network returned is the last one that met
   both conditions (the teacher itself when it does not), which is why the paper's
   pruned models are never smaller than its students and never more than 1% worse.

After every step that meets the rule, the loop can hand a :class:`LoopCheckpoint` to a
callback; given back as ``resume``, it continues the loop exactly where it stopped (the
random streams included), so that an interrupted run loses at most one step.

The network kept is then trained by the package's final fine-tuning
(:func:`n2n_env.finetune.finetune`) on the same recipe as the N2N students. Its
:class:`~n2n_env.arch.Architecture` is the teacher's with smaller widths, so it is saved,
exported and counted like any student. :func:`prune_best_of` runs several seeds (the
paper: 5) and keeps the best by validation accuracy; runs are kept in a directory, per
seed, and a finished seed is read back instead of pruned again (:mod:`.runs`).

Why not Torch-Pruning's ``MetaPruner``: it prunes by a pruning-ratio schedule fixed in
advance, and a global step of it may remove every channel of a layer; the paper's rule
decides step by step. So the loop is here, and Torch-Pruning supplies the dependency
graph, the Taylor importance and the removal of channels.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from n2n_env import data as data_mod
from n2n_env import validate
from n2n_env.arch import Architecture
from n2n_env.build import N2NNet, build_model
from n2n_env.device import autocast_context, in_memory_format, prepare_model
from n2n_env.finetune import DEFAULT_KD_WEIGHT
from n2n_env.progress import Progress, progress_bar
from n2n_env.random_streams import TrainingStreams
from n2n_env.recipes import Recipe, recipe_for
from n2n_env.training import (
    batch_stream,
    evaluate_accuracy,
    final_loss,
    make_optimizer,
    teacher_logits,
    train_steps,
)

__all__ = ["LoopCheckpoint", "LoopOutcome", "PruneStep", "PruningConfig", "StopRule",
           "lowest_channels", "pruned_architecture", "pruning_loop"]

PRUNING_EXTRA = 'pip install "n2n[pruning]"'
"""How to install Torch-Pruning."""


@dataclass(frozen=True)
class StopRule:
    """The paper's stopping rule (section 4.4.1), relative to the student N2N found."""

    reference_accuracy: float
    """Validation accuracy (a fraction) of N2N's student: "the student model obtained by
    our method"."""
    reference_params: int
    """Parameters of N2N's student: pruning stops before it goes below them."""
    accuracy_drop: float = 0.01
    """How far below ``reference_accuracy`` pruning may go (0.01: one percentage point)."""

    def __post_init__(self) -> None:
        validate.number("reference_accuracy", self.reference_accuracy, at_least=0, at_most=1)
        validate.integer("reference_params", self.reference_params, minimum=0)
        validate.number("accuracy_drop", self.accuracy_drop, at_least=0, at_most=1)

    @property
    def min_accuracy(self) -> float:
        """The lowest validation accuracy a pruned network may keep."""
        return self.reference_accuracy - self.accuracy_drop

    def violation(self, accuracy: float | None, params: int) -> str | None:
        """``"params"`` if ``params`` is below the reference, else ``"accuracy"`` if
        ``accuracy`` (None: not measured) is below :attr:`min_accuracy`, else None."""
        if params < self.reference_params:
            return "params"
        if accuracy is not None and accuracy < self.min_accuracy - 1e-12:
            return "accuracy"
        return None


@dataclass(frozen=True)
class PruningConfig:
    """How :func:`prune_filters` prunes and trains; the defaults are for real runs."""

    prune_fraction: float = 0.01
    """Channels removed per step, as a fraction of the teacher's prunable channels (at
    least one channel per step)."""
    taylor_examples: int = 64
    """Training examples whose Taylor scores are averaged at every step."""
    taylor_batch_size: int = 1
    """Examples per backward pass of the criterion; 1 takes the absolute value per example,
    as Molchanov et al. do."""
    finetune_steps: int = 100
    """KD mini-batch updates after every step, before the accuracy is checked."""
    step_lr: float | None = None
    """Learning rate of those updates (None: the recipe's final one,
    :attr:`~n2n_env.recipes.Recipe.final_lr`, where the teacher's training ended)."""
    max_steps: int = 1000
    """Most pruning steps (a safety limit; the stopping rule normally ends sooner)."""
    recipe: Recipe | None = None
    """The KD recipe, between steps and for the final fine-tuning (None: the dataset's
    recipe, :func:`~n2n_env.recipes.recipe_for`, as for N2N's students)."""
    kd_weight: float = DEFAULT_KD_WEIGHT
    """lambda of the KD loss ``CE + lambda * ||f(x) - z||^2``."""
    hidden_units: bool = False
    """Also prune hidden linear layers' units (the classifier's outputs never)."""

    def __post_init__(self) -> None:
        validate.number("prune_fraction", self.prune_fraction, above=0, at_most=1)
        validate.integer("taylor_examples", self.taylor_examples, minimum=1)
        validate.integer("taylor_batch_size", self.taylor_batch_size, minimum=1)
        validate.integer("finetune_steps", self.finetune_steps, minimum=0)
        if self.step_lr is not None:
            validate.number("step_lr", self.step_lr, above=0)
        validate.integer("max_steps", self.max_steps, minimum=1)
        if self.recipe is not None and not isinstance(self.recipe, Recipe):
            raise TypeError(f"recipe must be a Recipe or None, got {self.recipe!r}")
        validate.number("kd_weight", self.kd_weight, at_least=0)
        validate.flag("hidden_units", self.hidden_units)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON-ready), as kept with a run."""
        values = dataclasses.asdict(self)
        values["recipe"] = None if self.recipe is None else self.recipe.to_dict()
        return values


@dataclass(frozen=True)
class PruneStep:
    """One pruning step as the loop saw it (step 0: the teacher)."""

    step: int
    """Step number."""
    params: int
    """Parameters after the step."""
    flops: int
    """FLOPs after the step (:meth:`Architecture.flops`)."""
    val_accuracy: float | None
    """Validation accuracy after the step's fine-tuning (None: not measured, because the
    parameter condition stopped the loop first)."""
    accepted: bool
    """Whether the network met the stopping rule's conditions."""


@dataclass(frozen=True)
class LoopOutcome:
    """What :func:`pruning_loop` hands back: the network kept, before final fine-tuning."""

    model: N2NNet
    """The last network that met the stopping rule (the teacher's copy if none did), in
    eval mode."""
    val_accuracy: float
    """Its validation accuracy, as measured in the loop."""
    steps: int
    """The pruning step that produced it (0: the teacher, unpruned)."""
    stop_reason: str
    """Why the loop ended: ``"params"`` or ``"accuracy"`` (the stopping rule),
    ``"exhausted"`` (every group is down to one channel) or ``"max_steps"``."""
    history: tuple[PruneStep, ...]
    """Every step measured, the one that stopped the loop included."""


@dataclass(frozen=True)
class LoopCheckpoint:
    """Where a pruning loop stood after a step that met the stopping rule: what it needs to
    go on as if it had never stopped."""

    architecture: Architecture
    """The network after the step (the one the loop keeps so far)."""
    state_dict: dict[str, torch.Tensor]
    """Its weights, on the CPU."""
    val_accuracy: float
    """Its validation accuracy after the step's fine-tuning."""
    history: tuple[PruneStep, ...]
    """Every step so far; the last one is this step."""
    random_state: dict[str, torch.Tensor]
    """The loop's random streams: ``shuffle``, ``augment``, ``torch`` (and ``cuda``)."""

    @property
    def step(self) -> int:
        """The step it was taken after."""
        return self.history[-1].step


def pruned_architecture(model: N2NNet, name: str | None = None) -> Architecture:
    """The architecture of ``model`` as its modules are now: its own architecture with
    every conv, linear and projection width read from the (pruned) modules."""
    arch = model.architecture
    layers = []
    for layer, module in zip(arch.layers, model.layers):
        if layer.kind == "conv":
            layer = dataclasses.replace(layer, out=module.out_channels)
        elif layer.kind == "linear":
            layer = dataclasses.replace(layer, out=module.out_features)
        layers.append(layer)
    blocks = []
    for b, block in enumerate(arch.blocks):
        if block.projection is not None:
            out = model.projections[str(b)][0].out_channels
            block = dataclasses.replace(
                block, projection=dataclasses.replace(block.projection, out=out))
        blocks.append(block)
    return Architecture(arch.input_shape, arch.num_classes, tuple(layers), tuple(blocks),
                        name=arch.name if name is None else name, root=arch.root_signature())


def _rebuild(model: N2NNet, arch: Architecture, device: torch.device) -> N2NNet:
    """A fresh ``N2NNet`` of ``arch`` holding ``model``'s weights (so that its modules are
    the ones ``build_model`` picks for those widths, and ``.architecture`` is current)."""
    return network(arch, model.state_dict(), device)


def network(arch: Architecture, state: Mapping[str, torch.Tensor],
            device: torch.device) -> N2NNet:
    """``arch`` built on ``device`` with the weights ``state``, ready to run there."""
    model = build_model(arch, device=device)
    model.load_state_dict(state)
    return prepare_model(model, device)  # type: ignore[return-value]


def _torch_pruning() -> Any:
    try:
        import torch_pruning
    except ImportError as error:
        raise ImportError(f"filter pruning needs Torch-Pruning: {PRUNING_EXTRA}") from error
    return torch_pruning


class _Pruner:
    """One pruning run's state: the teacher, the data on the device, the random streams."""

    def __init__(self, teacher: N2NNet, data: data_mod.Dataset, config: PruningConfig,
                 recipe: Recipe, seed: int, device: torch.device) -> None:
        self.tp = _torch_pruning()
        self.teacher, self.data, self.config, self.recipe = teacher, data, config, recipe
        self.device = device
        self.streams = TrainingStreams.seeded(device, seed, seed)
        self.fixed_logits = None if recipe.augment else teacher_logits(teacher, data.train.x)
        self.importance = self.tp.importance.TaylorImportance(
            group_reduction="mean", normalizer=None, multivariable=True)

    def groups(self, model: N2NNet) -> list[Any]:
        """The prunable groups of Torch-Pruning's dependency graph of ``model``: each holds
        every channel of one channel space, with the layers that produce or read it."""
        model.eval()
        example = torch.zeros(2, *model.architecture.input_shape, device=self.device)
        graph = self.tp.DependencyGraph().build_dependency(model, example_inputs=example,
                                                           verbose=False)
        roots = [nn.Conv2d, nn.Linear] if self.config.hidden_units else [nn.Conv2d]
        return list(graph.get_all_groups(ignored_layers=[model.layers[-1]],
                                         root_module_types=roots))

    def scores(self, model: N2NNet, groups: list[Any]) -> list[torch.Tensor | None]:
        """Every group's channel scores: per-example Taylor importance, averaged over the
        examples, each group's scores divided by their L2 norm."""
        config, train = self.config, self.data.train
        picks = torch.randperm(len(train), generator=self.streams.shuffle)[:config.taylor_examples]
        sums: list[torch.Tensor | None] = [None] * len(groups)
        model.eval()  # batch norm on its running statistics: batches may hold one example
        for start in range(0, len(picks), config.taylor_batch_size):
            index = picks[start:start + config.taylor_batch_size].to(self.device)
            inputs = in_memory_format(train.x[index], self.device)
            model.zero_grad(set_to_none=True)
            with autocast_context(self.device):
                logits = model(inputs)
            final_loss(logits, train.y[index], teacher_logits(self.teacher, inputs),
                       config.kd_weight).backward()
            for g, group in enumerate(groups):
                score = self.importance(group)
                if score is not None:
                    sums[g] = score if sums[g] is None else sums[g] + score
        model.zero_grad(set_to_none=True)
        return [None if s is None else s / s.norm().clamp_min(1e-30) for s in sums]

    def kd_steps(self, model: N2NNet) -> None:
        """``finetune_steps`` updates of the KD loss at ``step_lr`` with the recipe's optimizer."""
        if self.config.finetune_steps == 0:
            return
        recipe, train, dev = self.recipe, self.data.train, self.device
        step_lr = recipe.final_lr if self.config.step_lr is None else self.config.step_lr
        optimizer = make_optimizer(model, dataclasses.replace(recipe, lr=step_lr))

        def batch_loss(index: torch.Tensor) -> torch.Tensor:
            inputs = train.x[index]
            if recipe.augment:
                inputs = data_mod.random_crop_flip(inputs, generator=self.streams.augment)
            inputs = in_memory_format(inputs, dev)
            targets = (teacher_logits(self.teacher, inputs) if self.fixed_logits is None
                       else self.fixed_logits[index])
            with autocast_context(dev):
                logits = model(inputs)
            return final_loss(logits, train.y[index], targets, self.config.kd_weight)

        batch_size = min(recipe.batch_size, len(train))
        batches = batch_stream(len(train), batch_size, self.streams.shuffle, dev,
                               self.config.finetune_steps)
        train_steps(model, optimizer, batches, batch_loss)


def lowest_channels(scores: Sequence[torch.Tensor | None], count: int) -> list[list[int]]:
    """For every group, the channels to remove: the ``count`` lowest scores over all groups,
    each group keeping its best channel (ties broken by group, then channel)."""
    candidates = []
    for g, score in enumerate(scores):
        if score is None or len(score) < 2:
            continue
        values = score.detach().float().cpu()
        for channel in torch.argsort(values)[:-1].tolist():
            candidates.append((float(values[channel]), g, channel))
    candidates.sort()
    chosen: list[list[int]] = [[] for _ in scores]
    for _, g, channel in candidates[:count]:
        chosen[g].append(channel)
    return chosen


@torch.inference_mode(False)
@torch.enable_grad()
def pruning_loop(teacher: N2NNet, data: data_mod.Dataset, stop: StopRule,
                 config: PruningConfig, *, seed: int = 0, device: torch.device,
                 progress: Progress = False, resume: LoopCheckpoint | None = None,
                 on_step: Callable[[LoopCheckpoint], None] | None = None) -> LoopOutcome:
    """Steps 1-4 of the module docstring on a copy of ``teacher`` (``data`` and
    ``teacher`` already on ``device``): the network the stopping rule keeps.

    ``on_step`` receives a :class:`LoopCheckpoint` after every step that meets the rule;
    ``resume``, one such checkpoint of a loop with the same arguments, continues it."""
    if any(layer.groups > 1 for layer in teacher.architecture.layers):
        raise ValueError("filter pruning does not support grouped convolutions (groups > 1)")
    recipe = config.recipe or recipe_for(data.name)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        pruner = _Pruner(teacher, data, config, recipe, seed, device)
        name = f"{teacher.architecture.name}-pruned" if teacher.architecture.name else "pruned"
        model = _rebuild(teacher, pruned_architecture(teacher, name), device)
        channels = sum(len(group[0].idxs) for group in pruner.groups(model))
        per_step = max(1, round(config.prune_fraction * channels))
        if resume is None:
            accuracy = evaluate_accuracy(model, data.val)
            arch = model.architecture
            reason = stop.violation(accuracy, arch.num_params())
            history = [PruneStep(0, arch.num_params(), arch.flops(), accuracy, reason is None)]
            kept = (arch, copy.deepcopy(model.state_dict()), accuracy, 0)
        else:
            model = network(resume.architecture, resume.state_dict, device)
            accuracy, reason, history = resume.val_accuracy, None, list(resume.history)
            kept = (resume.architecture, resume.state_dict, accuracy, resume.step)
            pruner.streams.restore(resume.random_state)
        bar = progress_bar(progress, total=config.max_steps, desc=f"prune {name}",
                           unit="step", initial=kept[3])
        for step in range(kept[3] + 1, config.max_steps + 1):
            if reason is not None:
                break
            groups = pruner.groups(model)
            plan = lowest_channels(pruner.scores(model, groups), per_step)
            if not any(plan):
                reason = "exhausted"
                break
            for group, channels in zip(groups, plan):
                if channels:
                    group.prune(idxs=channels)
            model = _rebuild(model, pruned_architecture(model, name), device)
            arch = model.architecture
            params = arch.num_params()
            if params < stop.reference_params:
                history.append(PruneStep(step, params, arch.flops(), None, False))
                reason = "params"
                break
            pruner.kd_steps(model)
            accuracy = evaluate_accuracy(model, data.val)
            reason = stop.violation(accuracy, params)
            history.append(PruneStep(step, params, arch.flops(), accuracy, reason is None))
            bar.set_postfix(params=params, val=f"{accuracy:.4f}")
            bar.update(1)
            if reason is not None:
                break
            kept = (arch, copy.deepcopy(model.state_dict()), accuracy, step)
            if on_step is not None:
                on_step(LoopCheckpoint(arch, {k: v.detach().cpu() for k, v in kept[1].items()},
                                       accuracy, tuple(history), pruner.streams.state()))
        reason = reason or "max_steps"
        bar.close()
    arch, state, accuracy, steps = kept
    return LoopOutcome(network(arch, state, device).eval(), accuracy, steps, reason,
                       tuple(history))
