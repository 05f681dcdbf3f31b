"""Walking a torch.fx graph as the architecture model sees a network: a sequence of layer
nodes, in which a fork whose two branches meet in an addition is a residual block (one
branch empty: identity shortcut; a 1x1 convolution without bias followed by batch norm:
projection shortcut; the other branch: the body). Used by :mod:`n2n_env.model_import`;
anything else is an :class:`UnsupportedModelError` naming the node.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.fx as fx
from torch import nn

__all__ = ["SUPPORTED", "UnsupportedModelError", "linearize", "operation", "unsupported"]

SUPPORTED = (
    "nn.Conv2d (square kernel and stride, symmetric padding, dilation 1, zero padding; "
    "grouped or depthwise), nn.Linear, nn.BatchNorm2d/1d (affine, running statistics, eps "
    "1e-5), nn.ReLU / F.relu / torch.relu, nn.ReLU6 / F.relu6, nn.MaxPool2d and "
    "nn.AvgPool2d (square, no ceil mode), nn.AdaptiveAvgPool2d / F.adaptive_avg_pool2d "
    "(square), nn.Dropout, nn.Flatten / torch.flatten(x, 1), nn.Identity, and residual "
    "additions of a body with an identity or a 1x1-conv + batch-norm shortcut"
)
"""What :func:`import_model` accepts, as its errors say it."""

BN_EPS = 1e-5
"""The batch-norm eps of :class:`~n2n_env.build.N2NNet` (PyTorch's default)."""
_ADD_FUNCTIONS: tuple[Callable[..., Any], ...] = (operator.add, operator.iadd, torch.add)


class UnsupportedModelError(ValueError):
    """The model holds an operation or a wiring that the architecture model cannot express."""



def _is_add(node: fx.Node) -> bool:
    return ((node.op == "call_function" and node.target in _ADD_FUNCTIONS)
            or (node.op == "call_method" and node.target in ("add", "add_", "__add__")))


def unsupported(node: fx.Node, what: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"cannot import node {node.name!r} ({operation(node)}): {what}; supported: "
        + SUPPORTED)


def operation(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"call_module {node.target}"
    if node.op == "call_function":
        return f"call_function {getattr(node.target, '__name__', node.target)}"
    return f"{node.op} {node.target}"


def _tensor_inputs(node: fx.Node) -> list[fx.Node]:
    return [arg for arg in node.all_input_nodes if arg.op != "get_attr"]


def linearize(graph: fx.Graph) -> list[fx.Node | tuple[list[fx.Node], list[fx.Node]]]:
    """The graph as a sequence of layer nodes and (body, shortcut) residual blocks."""
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedModelError(
            f"the model's forward takes {len(placeholders)} inputs; import_model needs one "
            "image batch")
    items: list[fx.Node | tuple[list[fx.Node], list[fx.Node]]] = []
    position = placeholders[0]
    while True:
        users = list(position.users)
        if len(users) == 1 and users[0].op == "output":
            return items
        if len(users) == 1:
            node = users[0]
            if _is_add(node):
                raise unsupported(node, "an addition that does not close a residual block")
            _require_single_input(node, position)
            items.append(node)
            position = node
            continue
        if len(users) != 2:
            raise unsupported(position, f"its output feeds {len(users)} operations; only a "
                                         "residual fork into a body and a shortcut is allowed")
        first, join, first_end = _branch(users[0], position)
        second, other_join, second_end = _branch(users[1], position)
        if join is not other_join:
            raise unsupported(position, "a fork whose branches do not meet in one addition")
        inputs = _tensor_inputs(join)
        if set(inputs) != {first_end, second_end} or len(inputs) != 2 or len(join.args) > 2 \
                or "alpha" in join.kwargs:
            raise unsupported(join, "an addition that is not body + shortcut")
        shortcut_end = inputs[1]
        body, shortcut = _body_and_shortcut(first, second, join,
                                            first_is_added=shortcut_end is first_end)
        items.append((body, shortcut))
        position = join


def _require_single_input(node: fx.Node, source: fx.Node) -> None:
    inputs = _tensor_inputs(node)
    if inputs != [source]:
        raise unsupported(node, f"it combines {len(inputs)} tensors; only residual "
                                 "additions may")


def _branch(node: fx.Node, fork: fx.Node) -> tuple[list[fx.Node], fx.Node, fx.Node]:
    """The layer nodes from ``node`` to the addition that ends the branch (``nn.Identity``
    left out), that addition, and the node feeding it (``fork`` for an empty branch)."""
    chain: list[fx.Node] = []
    source = fork
    while not _is_add(node):
        _require_single_input(node, source)
        if len(node.users) != 1:
            raise unsupported(node, "a nested fork inside a residual body")
        if not _is_identity(node):
            chain.append(node)
        source, node = node, next(iter(node.users))
        if node.op == "output":
            raise unsupported(source, "a fork whose branch never rejoins")
    return chain, node, source


def _is_identity(node: fx.Node) -> bool:
    owner = node.graph.owning_module
    return (node.op == "call_module" and owner is not None
            and type(owner.get_submodule(str(node.target))) is nn.Identity)


def _is_projection(chain: list[fx.Node], modules: Mapping[str, nn.Module]) -> bool:
    """Whether ``chain`` is a projection shortcut: a 1x1 conv without bias (square stride),
    then a batch norm the architecture model can hold (affine, running statistics, eps 1e-5)."""
    if len(chain) != 2 or any(node.op != "call_module" for node in chain):
        return False
    conv, norm = (modules[str(node.target)] for node in chain)
    return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.bias is None
            and conv.groups == 1 and conv.padding == (0, 0)
            and conv.stride[0] == conv.stride[1] and type(norm) is nn.BatchNorm2d
            and norm.affine and norm.track_running_stats and norm.eps == BN_EPS)


def _body_and_shortcut(first: list[fx.Node], second: list[fx.Node], join: fx.Node, *,
                       first_is_added: bool) -> tuple[list[fx.Node], list[fx.Node]]:
    """Which branch is the body and which the shortcut (empty: identity). When both could
    be a projection, the shortcut is the addition's second operand (``first_is_added``:
    that is the first branch), as in torchvision's ``out += identity``."""
    if not first or not second:
        return (first or second), []
    modules = dict(join.graph.owning_module.named_modules())  # type: ignore[union-attr]
    candidates = [chain for chain in (first, second) if _is_projection(chain, modules)]
    if not candidates:
        raise unsupported(join, "a residual addition whose shortcut is neither the identity "
                                 "nor a 1x1 conv without bias followed by batch norm")
    both_fit = len(candidates) == 2
    shortcut = (first if first_is_added else second) if both_fit else candidates[0]
    return (second if shortcut is first else first), shortcut
