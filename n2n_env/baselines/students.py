"""Hand-designed students trained by knowledge distillation (the paper's Table 3 baseline).

Section 4.4.2 of the N2N paper distils the teacher into three hand-designed networks of
about the size of its own students, "trained to convergence with Knowledge Distillation".
Here they are trained by the package's final fine-tuning (:func:`n2n_env.finetune.finetune`:
``CE + lambda * ||f(x) - z||^2`` on the dataset's recipe), the recipe every N2N student
gets, so that the comparison differs only in the architecture.

* **FitNet-4** (:func:`fitnet4`), as in Mishkin & Matas (2015), "All you need is a good
  init", with ReLU and Xavier initialisation (the N2N paper's words). The layer list
  follows those authors' published CIFAR-10 model definition (ReLU, Xavier variant):
  dropout 0.2 on the input; 3x3 convolutions (padding 1, bias) 32, 32, 32, 48, 48, 2x2
  max-pool, dropout 0.2; six of 80, 2x2 max-pool, dropout 0.2; six of 128, a global
  max-pool, dropout 0.2; a 500-unit linear layer, ReLU, dropout 0.2; the classifier. ReLU
  after every convolution, no batch norm. Seventeen convolutions (the paper's "17
  layers"), 1,276,806 parameters on 32x32x3 inputs with 10 classes (the paper: 1.2M).
  Weights: :func:`torch.nn.init.xavier_uniform_` (Glorot & Bengio, 2010), biases zero.
* **VGG-small** (:func:`vgg_small`). The paper says only "a reduced network based on VGG
  ... which contains 10 layers" with 1.06M parameters; this reconstruction keeps the
  zoo VGGs' conv-bn-relu stages and has 10 weight layers: 3x3 convolutions 32, 32, M, 64,
  64, M, 128, 128, M, 192, 192, M (M: 2x2 max-pool), then linear 256, ReLU, dropout 0.5
  and the classifier; 1,041,450 parameters on 32x32x3 with 10 classes (1.7% under the
  paper's count). PyTorch's default initialisation.
* **SqueezeNet 1.1** (:func:`squeezenet1_1`; Iandola et al., 2016), torchvision's
  ``squeezenet1_1`` adapted to small inputs: its stem, a 3x3 convolution of stride 2
  without padding, becomes a 3x3 convolution of stride 1 with padding 1 (and takes the
  dataset's channels), so a 32x32 image keeps its size until the first of the three 3x3
  stride-2 max-pools (ceil mode): 32 -> 16 -> 8 -> 4, then the classifier convolution and
  global average pooling. Everything else, and the parameter count, is torchvision's:
  727,626 on 32x32x3 with 10 classes, the paper's "727K parameters after adapting it to
  CIFAR-10". Fire modules concatenate branches, which an :class:`Architecture` cannot
  describe, so this student is a plain ``nn.Module``; it keeps torchvision's initialisation
  (the new stem: Kaiming-uniform, as torchvision initialises its convolutions).

Pooling that would take a feature map below 1x1 is left out (as in :mod:`n2n_env.zoo`), so
the Architecture students run on ``digits`` (16x16) and ``synthetic`` (8x8) as well.

FLOPs: the Architecture students are counted by :meth:`Architecture.flops` (multiply and
add counted separately, plus batch norm, ReLU and pooling). :func:`count_flops` counts any
module by the same rules, through forward hooks, so SqueezeNet's count is comparable
(the concatenations of its Fire modules cost nothing). PyTorch's
``torch.utils.flop_counter.FlopCounterMode`` (:func:`torch_flops`) counts only
convolutions and matrix products, at 2 FLOPs per multiply-accumulate and without biases:
for a network whose convolutions and linear layers all have biases, as SqueezeNet's do,
:func:`count_flops` equals that count plus the batch-norm, ReLU and pooling operations.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from n2n_env import data as data_mod
from n2n_env import validate
from n2n_env.arch import Architecture, Layer
from n2n_env.build import build_model
from n2n_env.finetune import DEFAULT_KD_WEIGHT, finetune
from n2n_env.progress import Progress
from n2n_env.recipes import Recipe

__all__ = ["STUDENTS", "StudentResult", "count_flops", "distill_student", "fitnet4",
           "make_student", "squeezenet1_1", "torch_flops", "vgg_small"]

Shape = tuple[int, int, int]

_FITNET4 = (32, 32, 32, 48, 48, "M", 80, 80, 80, 80, 80, 80, "M",
            128, 128, 128, 128, 128, 128, "G")
"""FitNet-4's convolutions by width; M a 2x2 max-pool, G the global max-pool."""
_VGG_SMALL = (32, 32, "M", 64, 64, "M", 128, 128, "M", 192, 192, "M")
"""VGG-small's conv-bn-relu widths; M a 2x2 max-pool."""


def _sequence(config: tuple[int | str, ...], input_shape: Shape, *, batch_norm: bool,
              dropout_after_pool: float) -> list[Layer]:
    """The layers of a plain conv network: 3x3 convolutions (padding 1), each followed by
    batch norm (if asked) and ReLU; pools that keep the feature map at least 1x1."""
    layers: list[Layer] = []
    size = min(input_shape[1:])
    for entry in config:
        if entry == "M" and size >= 2:
            layers.append(Layer("maxpool", kernel=2, stride=2))
            size //= 2
        elif entry == "G" and size >= 2:
            layers.append(Layer("maxpool", kernel=size, stride=size))
            size = 1
        elif isinstance(entry, int):
            layers.append(Layer("conv", out=entry, kernel=3, padding=1))
            layers.extend([Layer("bn")] if batch_norm else [])
            layers.append(Layer("relu"))
            continue
        else:
            continue
        if dropout_after_pool:
            layers.append(Layer("dropout", p=dropout_after_pool))
    return layers


def fitnet4(input_shape: Shape = (3, 32, 32), num_classes: int = 10) -> Architecture:
    """FitNet-4 after Mishkin & Matas (2015), ReLU variant (layer list: module docstring)."""
    layers = [Layer("dropout", p=0.2),
              *_sequence(_FITNET4, input_shape, batch_norm=False, dropout_after_pool=0.2),
              Layer("flatten"), Layer("linear", out=500), Layer("relu"),
              Layer("dropout", p=0.2), Layer("linear", out=num_classes)]
    return Architecture(input_shape, num_classes, tuple(layers), name="fitnet4")


def vgg_small(input_shape: Shape = (3, 32, 32), num_classes: int = 10) -> Architecture:
    """VGG-small: 8 conv-bn-relu layers and 2 linear layers (layer list: module docstring)."""
    layers = [*_sequence(_VGG_SMALL, input_shape, batch_norm=True, dropout_after_pool=0.0),
              Layer("flatten"), Layer("linear", out=256), Layer("relu"),
              Layer("dropout", p=0.5), Layer("linear", out=num_classes)]
    return Architecture(input_shape, num_classes, tuple(layers), name="vgg-small")


def squeezenet1_1(input_shape: Shape = (3, 32, 32), num_classes: int = 10) -> nn.Module:
    """torchvision's SqueezeNet 1.1 with a stride-1, padding-1 stem (module docstring)."""
    from torchvision.models import squeezenet1_1 as torchvision_squeezenet

    model = torchvision_squeezenet(weights=None, num_classes=num_classes)
    stem = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1)
    nn.init.kaiming_uniform_(stem.weight)
    nn.init.zeros_(stem.bias)  # type: ignore[arg-type]
    model.features[0] = stem
    return model


STUDENTS: dict[str, Callable[[Shape, int], Architecture | nn.Module]] = {
    "fitnet4": fitnet4, "vgg-small": vgg_small, "squeezenet1_1": squeezenet1_1}
"""The hand-designed students by name: each takes ``(input_shape, num_classes)``."""


def make_student(name: str, input_shape: Shape, num_classes: int, *,
                 seed: int = 0) -> nn.Module:
    """A freshly initialised student ``name`` (one of :data:`STUDENTS`), drawn from a torch
    generator seeded with ``seed`` (the global random state is left as it was). FitNet-4
    gets Xavier-uniform weights and zero biases (Mishkin & Matas's setting)."""
    if name not in STUDENTS:
        raise ValueError(f"unknown student {name!r}; allowed: {', '.join(STUDENTS)}")
    seed = validate.integer("seed", seed, minimum=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        spec = STUDENTS[name](input_shape, num_classes)
        if not isinstance(spec, Architecture):
            return spec
        model = build_model(spec)
        if name == "fitnet4":
            for module in model.modules():
                if isinstance(module, nn.Conv2d | nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.zeros_(module.bias)  # type: ignore[arg-type]
    return model


# ------------------------------------------------------------------ FLOPs


def count_flops(model: nn.Module, input_shape: Shape) -> int:
    """FLOPs of one forward pass of ``model`` on one ``input_shape`` image, by the rules of
    :meth:`Architecture.flops`: a convolution ``2 * fan_in - 1`` (+1 with a bias) per output
    element, a linear layer the same per output unit, batch norm 2 and ReLU 1 per element,
    a k x k pool k*k per output element (adaptive: its largest bin), dropout and reshapes
    free. Only these modules are seen: arithmetic outside them (a residual addition written
    in ``forward``) is not counted, so use :meth:`Architecture.flops` for an ``N2NNet``."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        elements = output[0].numel()
        if isinstance(module, nn.Conv2d):
            fan_in = module.in_channels // module.groups * math.prod(module.kernel_size)
            total += elements * (2 * fan_in - 1 + int(module.bias is not None))
        elif isinstance(module, nn.Linear):
            total += elements * (2 * module.in_features - 1 + int(module.bias is not None))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            total += 2 * elements
        elif isinstance(module, nn.ReLU | nn.ReLU6):
            total += elements
        elif isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
            kernel = module.kernel_size
            total += elements * (kernel * kernel if isinstance(kernel, int) else math.prod(kernel))
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            out_h, out_w = output.shape[-2:]
            in_h, in_w = inputs[0].shape[-2:]
            total += elements * -(-in_h // out_h) * -(-in_w // out_w)

    handles = [module.register_forward_hook(hook) for module in model.modules()]
    try:
        _probe(model, input_shape)
    finally:
        for handle in handles:
            handle.remove()
    return total


def torch_flops(model: nn.Module, input_shape: Shape) -> int:
    """PyTorch's own count (``FlopCounterMode``) for one ``input_shape`` image: 2 FLOPs per
    multiply-accumulate of convolutions and matrix products, nothing else."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        _probe(model, input_shape)
    return int(counter.get_total_flops())


def _probe(model: nn.Module, input_shape: Shape) -> None:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)


# ------------------------------------------------------------------ training


@dataclass(frozen=True)
class StudentResult:
    """A hand-designed student after knowledge distillation. Accuracies are fractions."""

    name: str
    """The student's name in :data:`STUDENTS`."""
    architecture: Architecture | None
    """Its architecture (None for SqueezeNet, which no Architecture describes)."""
    model: nn.Module
    """The trained student, in eval mode."""
    params: int
    """Trainable parameters (PyTorch's count)."""
    flops: int
    """FLOPs of one forward pass on one image (:func:`count_flops` rules)."""
    val_accuracy: float
    """Validation accuracy after training."""
    test_accuracy: float
    """Test accuracy after training."""
    seconds: float
    """Wall-clock time of the training."""
    seed: int
    """The seed of the initialisation and of the training."""
    lr: float
    """The learning rate the training ended up using (see :class:`FinetuneResult`)."""
    diverged: bool = False
    """True when every restart of the training diverged."""


def distill_student(name: str, teacher: nn.Module, data: data_mod.Dataset, *,
                    recipe: Recipe | None = None, kd_weight: float = DEFAULT_KD_WEIGHT,
                    seed: int = 0, device: str | torch.device | None = None,
                    progress: Progress = False,
                    resume_path: str | None = None) -> StudentResult:
    """Train the hand-designed student ``name`` from scratch on ``data`` by knowledge
    distillation from ``teacher``: the package's final fine-tuning, with ``recipe``
    (default: the dataset's recipe, as for N2N's own students), ``kd_weight`` and ``seed``.
    ``resume_path`` continues an interrupted training (see :func:`finetune`)."""
    started = time.perf_counter()
    student = make_student(name, data.input_shape, data.num_classes, seed=seed)
    arch = getattr(student, "architecture", None)
    trained = finetune(student, teacher, data, recipe, kd_weight=kd_weight, device=device,
                       seed=seed, progress=progress, resume_path=resume_path)
    model = trained.model
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flops = arch.flops() if isinstance(arch, Architecture) else count_flops(
        model, data.input_shape)
    return StudentResult(name, arch, model, params, flops, trained.val_accuracy,
                         trained.test_accuracy, time.perf_counter() - started, seed,
                         trained.lr, trained.diverged)
