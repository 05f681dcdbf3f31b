"""Import a PyTorch model as a teacher: capture it with torch.fx, describe it as an
:class:`~n2n_env.arch.Architecture`, and carry its weights over.

:func:`import_model` traces the module symbolically, walks the graph in execution order
(:mod:`n2n_env.model_graph`) and turns each operation into one paper-level layer. A fork
whose two branches meet in an addition becomes a residual :class:`~n2n_env.arch.Block`:
one branch empty (identity shortcut) or a 1x1 convolution without bias followed by batch
norm (projection shortcut, torchvision's ``downsample``), the other the block's body.
What it accepts:

=========================  ================================================================
layer                      PyTorch
=========================  ================================================================
``conv``                   ``nn.Conv2d``: square kernel and stride, symmetric padding,
                           dilation 1, zero padding mode; grouped or depthwise
``linear``                 ``nn.Linear``
``bn``                     ``nn.BatchNorm2d`` / ``nn.BatchNorm1d``, affine, running
                           statistics, eps 1e-5
``relu`` / ``relu6``       ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu`` /
                           ``nn.ReLU6``, ``F.relu6``
``maxpool`` / ``avgpool``  ``nn.MaxPool2d`` / ``nn.AvgPool2d`` (square, no ceil mode,
                           dilation 1; average over padding included)
``adaptive_avgpool``       ``nn.AdaptiveAvgPool2d``, ``F.adaptive_avg_pool2d`` (square)
``dropout``                ``nn.Dropout``
``flatten``                ``nn.Flatten``, ``torch.flatten(x, 1)``, ``Tensor.flatten(1)``
(nothing)                  ``nn.Identity``
residual addition          ``x + y``, ``torch.add``, ``out += identity``
=========================  ================================================================

This covers torchvision's VGG (with and without batch norm), ResNet-18/34/50 and
MobileNetV2, and any ``nn.Sequential`` of these layers. Anything else raises one
:class:`UnsupportedModelError` naming the graph node, its operation and what is supported.
The model must end in its linear classifier.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from n2n_env import validate
from n2n_env.arch import Architecture, Block, Layer, Projection
from n2n_env.build import N2NNet, build_model
from n2n_env.model_graph import (
    BN_EPS,
    SUPPORTED,
    UnsupportedModelError,
    linearize,
    operation,
    unsupported,
)

__all__ = ["SUPPORTED", "ImportedModel", "UnsupportedModelError", "import_model"]

_RELU_FUNCTIONS: tuple[Callable[..., Any], ...] = (F.relu, torch.relu)


@dataclass(frozen=True)
class ImportedModel:
    """A traced model: its architecture, and the weights of ``build_model(architecture)``."""

    architecture: Architecture
    state_dict: Mapping[str, torch.Tensor]
    """Keys and shapes of :class:`~n2n_env.build.N2NNet` for ``architecture``."""
    node_names: tuple[str, ...]
    """The torch.fx node each layer of ``architecture`` came from, in order."""

    def build(self, device: torch.device | str | None = None) -> N2NNet:
        """The architecture as an :class:`~n2n_env.build.N2NNet` holding the model's weights."""
        model = build_model(self.architecture, device=device)
        model.load_state_dict(dict(self.state_dict))
        return model


def import_model(module: nn.Module, input_shape: Sequence[int], *, name: str = "",
                 check: bool = True, atol: float = 1e-5) -> ImportedModel:
    """Trace ``module`` for inputs of ``input_shape`` (C, H, W) and return its architecture
    with the weights it inherits. With ``check`` (the default) the imported network is run
    beside the module in eval mode on random inputs, and a difference above ``atol`` raises.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"import_model needs an nn.Module, got {type(module).__name__}")
    shape = tuple(validate.integer("input_shape entry", s, minimum=1) for s in input_shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)!r}")
    try:
        graph_module = fx.symbolic_trace(module)
    except Exception as error:  # torch.fx raises many types for untraceable Python
        raise UnsupportedModelError(
            f"torch.fx cannot trace {type(module).__name__}: {error}. Models whose forward "
            "branches on tensor values cannot be imported; supported: " + SUPPORTED) from error
    items = linearize(graph_module.graph)
    modules = dict(graph_module.named_modules())
    layers: list[Layer] = []
    blocks: list[Block] = []
    sources: list[fx.Node] = []
    projections: dict[int, tuple[fx.Node, fx.Node]] = {}
    for item in items:
        if isinstance(item, fx.Node):
            _append(item, modules, layers, sources)
            continue
        body, shortcut = item
        start = len(layers)
        for node in body:
            _append(node, modules, layers, sources)
        stride = 1
        for layer in layers[start:]:
            stride *= layer.stride if layer.kind == "conv" else 1
        projection = None
        if shortcut:
            conv = modules[str(shortcut[0].target)]
            projection = Projection(out=conv.out_channels, stride=conv.stride[0])  # type: ignore[arg-type]
            projections[len(blocks)] = (shortcut[0], shortcut[1])
        blocks.append(Block(start, len(layers), stride=stride, projection=projection,
                            origin=len(blocks)))
    layers = [Layer(**{**vars(layer), "origin": i}) for i, layer in enumerate(layers)]
    arch = _architecture(shape, layers, blocks, sources, name or type(module).__name__)
    _check_widths(arch, sources, modules, projections)
    state = _state_dict(arch, sources, modules, projections)
    imported = ImportedModel(arch, state, tuple(node.name for node in sources))
    if check:
        _check_outputs(module, imported, shape, atol)
    return imported


# ---------------------------------------------------------------------- layers
def _append(node: fx.Node, modules: Mapping[str, nn.Module], layers: list[Layer],
            sources: list[fx.Node]) -> None:
    layer = _layer(node, modules)
    if layer is not None:
        layers.append(layer)
        sources.append(node)


def _arguments(node: fx.Node) -> list[Any]:
    return list(node.args[1:])


def _layer(node: fx.Node, modules: Mapping[str, nn.Module]) -> Layer | None:
    """The layer ``node`` computes (None for an identity), or UnsupportedModelError."""
    if node.op == "call_module":
        return _module_layer(node, modules[str(node.target)])
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        return Layer("relu")
    if node.op == "call_function" and node.target is F.relu6:
        return Layer("relu6")
    if node.op == "call_method" and node.target in ("relu", "relu_"):
        return Layer("relu")
    if (node.op == "call_function" and node.target is torch.flatten) or (
            node.op == "call_method" and node.target == "flatten"):
        start = node.kwargs.get("start_dim", _arguments(node)[0] if _arguments(node) else 0)
        end = node.kwargs.get("end_dim", _arguments(node)[1] if len(_arguments(node)) > 1
                              else -1)
        if (start, end) != (1, -1):
            raise unsupported(node, f"flatten from dim {start} to {end}; only (1, -1)")
        return Layer("flatten")
    if node.op == "call_function" and node.target is F.adaptive_avg_pool2d:
        size = node.kwargs.get("output_size", _arguments(node)[0] if _arguments(node) else None)
        return Layer("adaptive_avgpool", output_size=_square(node, "output_size", size))
    raise unsupported(node, "this operation is not supported")


def _square(node: fx.Node, what: str, value: Any) -> int:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or values[0] != values[1] or not isinstance(values[0], int):
        raise unsupported(node, f"{what} {value!r} is not square")
    return values[0]


def _module_layer(node: fx.Node, module: nn.Module) -> Layer | None:
    kind = type(module)
    if kind is nn.Identity:
        return None
    if kind is nn.Conv2d:
        return _conv_layer(node, module)  # type: ignore[arg-type]
    if kind is nn.Linear:
        return Layer("linear", out=module.out_features, bias=module.bias is not None)
    if kind in (nn.BatchNorm2d, nn.BatchNorm1d):
        if not (module.affine and module.track_running_stats) or module.eps != BN_EPS:
            raise unsupported(node, f"batch norm with affine={module.affine}, running "
                                     f"statistics={module.track_running_stats}, eps="
                                     f"{module.eps}")
        return Layer("bn")
    if kind is nn.ReLU:
        return Layer("relu")
    if kind is nn.ReLU6:
        return Layer("relu6")
    if kind in (nn.MaxPool2d, nn.AvgPool2d):
        return _pool_layer(node, module)
    if kind is nn.AdaptiveAvgPool2d:
        return Layer("adaptive_avgpool",
                     output_size=_square(node, "output_size", module.output_size))
    if kind is nn.Dropout:
        return Layer("dropout", p=float(module.p))
    if kind is nn.Flatten:
        if (module.start_dim, module.end_dim) != (1, -1):
            raise unsupported(node, f"flatten from dim {module.start_dim} to "
                                     f"{module.end_dim}; only (1, -1)")
        return Layer("flatten")
    raise unsupported(node, f"{kind.__name__} is not supported")


def _conv_layer(node: fx.Node, conv: nn.Conv2d) -> Layer:
    padding = conv.padding
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        padding = tuple((k - 1) // 2 for k in conv.kernel_size)
    if conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        raise unsupported(node, f"conv with dilation {conv.dilation} and padding mode "
                                 f"{conv.padding_mode!r}")
    kernel = _square(node, "kernel_size", conv.kernel_size)
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    return Layer("conv", out=conv.out_channels, kernel=kernel,
                 stride=_square(node, "stride", conv.stride),
                 padding=_square(node, "padding", padding), bias=conv.bias is not None,
                 groups=1 if depthwise else conv.groups, depthwise=depthwise)


def _pool_layer(node: fx.Node, pool: nn.Module) -> Layer:
    kind = "maxpool" if isinstance(pool, nn.MaxPool2d) else "avgpool"
    problems = {"ceil_mode": pool.ceil_mode}
    if kind == "maxpool":
        problems.update(dilation=pool.dilation not in (1, (1, 1)),
                           return_indices=pool.return_indices)
    else:
        problems.update(count_include_pad=not pool.count_include_pad,
                           divisor_override=pool.divisor_override is not None)
    if any(problems.values()):
        raise unsupported(node, "pooling with " + ", ".join(
            name for name, value in problems.items() if value))
    kernel = _square(node, "kernel_size", pool.kernel_size)
    stride = pool.stride if pool.stride not in (None, ()) else kernel
    return Layer(kind, kernel=kernel, stride=_square(node, "stride", stride),
                 padding=_square(node, "padding", pool.padding))


# ---------------------------------------------------------------------- weights
def _architecture(shape: tuple[int, ...], layers: list[Layer], blocks: list[Block],
                  sources: list[fx.Node], name: str) -> Architecture:
    if not layers or layers[-1].kind != "linear":
        last = sources[-1] if sources else None
        raise UnsupportedModelError(
            "the model must end in its linear classifier; it ends in "
            + (f"node {last.name!r} ({operation(last)})" if last else "no layer"))
    arch = Architecture(shape, layers[-1].out, tuple(layers), tuple(blocks),  # type: ignore[arg-type]
                        name=name)
    reason = arch.degenerate_reason(max_classifier_inputs=2**62)
    if reason is not None:
        raise UnsupportedModelError(f"the model does not run on inputs of shape {shape}: "
                                    f"{reason}")
    return arch


def _check_widths(arch: Architecture, sources: list[fx.Node], modules: Mapping[str, nn.Module],
                  projections: Mapping[int, tuple[fx.Node, fx.Node]]) -> None:
    """Every module receives the channels the architecture feeds it (a 3-channel stem on
    1-channel images fails here, naming the node)."""
    shapes = arch.input_shapes()
    for layer, node, shape in zip(arch.layers, sources, shapes):
        if node.op != "call_module" or not layer.has_params:
            continue
        module = modules[str(node.target)]
        expected = {"conv": "in_channels", "linear": "in_features", "bn": "num_features"}
        wants = getattr(module, expected[layer.kind])
        if shape is not None and wants != shape[0]:
            raise UnsupportedModelError(
                f"node {node.name!r} ({operation(node)}) expects {wants} input "
                f"{'features' if layer.kind == 'linear' else 'channels'} but receives "
                f"{shape[0]} for inputs of shape {arch.input_shape}")
    for b, (conv_node, _) in projections.items():
        conv = modules[str(conv_node.target)]
        source = arch.input_slots()[("projection", b)]
        if conv.in_channels != arch.slot_width(source):
            raise UnsupportedModelError(
                f"node {conv_node.name!r} ({operation(conv_node)}) expects "
                f"{conv.in_channels} input channels but receives {arch.slot_width(source)}")


def _state_dict(arch: Architecture, sources: list[fx.Node], modules: Mapping[str, nn.Module],
                projections: Mapping[int, tuple[fx.Node, fx.Node]]) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for i, (layer, node) in enumerate(zip(arch.layers, sources)):
        if layer.has_params:
            for key, value in modules[str(node.target)].state_dict().items():
                state[f"layers.{i}.{key}"] = value.detach().clone()
    for b, nodes in projections.items():
        for part, node in enumerate(nodes):
            for key, value in modules[str(node.target)].state_dict().items():
                state[f"projections.{b}.{part}.{key}"] = value.detach().clone()
    return state


def _check_outputs(module: nn.Module, imported: ImportedModel, shape: tuple[int, ...],
                   atol: float) -> None:
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    model = imported.build(device=device)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(4, *shape, generator=generator).to(device)
    was_training = module.training
    module.eval()
    model.eval()
    try:
        with torch.no_grad():
            difference = (module(inputs) - model(inputs)).abs().max().item()
    finally:
        module.train(was_training)
    if not difference <= atol:
        raise UnsupportedModelError(
            f"the imported {imported.architecture.name} differs from the model by "
            f"{difference:.3g} (allowed {atol:g}) on random inputs; an operation is not "
            "what it was taken for")
