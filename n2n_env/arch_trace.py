"""Following shapes through an :class:`~n2n_env.arch.Architecture`: the order of the
forward pass, each layer's input and output shape, which producer (the input, a conv or
linear layer, a projection shortcut) feeds every layer, and where a network breaks.
Reached through the architecture's methods (``input_shapes``, ``degenerate_reason``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from n2n_env.arch import Architecture, Block, Layer, Projection

Shape = tuple[int, ...]
Slot = tuple[str, int]
"""A producer of feature channels: ("input", 0), ("layer", i) or ("projection", b)."""
INPUT_SLOT: Slot = ("input", 0)
Op = tuple[Literal["layer", "open", "close", "empty"], int]


@dataclass(frozen=True)
class Trace:
    """What following the shapes through an architecture found."""

    in_shapes: tuple[Shape | None, ...]
    out_shapes: tuple[Shape | None, ...]
    input_slots: dict[Slot, Slot]
    producer_after: tuple[Slot, ...]
    block_shapes: dict[int, tuple[Shape, Shape]]
    reason: str | None


def layer_output(layer: Layer, shape: Shape) -> Shape | str:
    """Output shape of ``layer`` for input ``shape``, or a string saying why it fails."""
    if layer.kind in ("conv", "maxpool", "avgpool"):
        if len(shape) != 3:
            return f"{layer.kind} receives a flat vector of {shape[0]} features"
        channels, height, width = shape
        sizes = [
            (s + 2 * layer.padding - layer.kernel) // layer.stride + 1 for s in (height, width)
        ]
        if min(sizes) < 1:
            return f"{layer.kind} (kernel {layer.kernel}) shrinks a {height}x{width} map below 1x1"
        if layer.depthwise and layer.out != channels:
            return f"depthwise conv outputs {layer.out} channels but receives {channels}"
        if layer.groups > 1 and (channels % layer.groups or layer.out % layer.groups):
            return (f"conv in {layer.groups} groups receives {channels} channels and outputs "
                    f"{layer.out}; both must be multiples of {layer.groups}")
        return (layer.out if layer.kind == "conv" else channels, *sizes)
    if layer.kind == "adaptive_avgpool":
        if len(shape) != 3:
            return f"{layer.kind} receives a flat vector of {shape[0]} features"
        return (shape[0], layer.output_size, layer.output_size)
    if layer.kind == "flatten":
        return (math.prod(shape),)
    if layer.kind == "linear":
        if len(shape) != 1:
            return f"linear layer receives a {len(shape)}-d feature map, not a vector"
        return (layer.out,)
    return shape


def projection_output(projection: Projection, shape: Shape) -> Shape:
    """Output shape of a projection shortcut (1x1 conv, stride) for input ``shape``."""
    return (projection.out, *((s - 1) // projection.stride + 1 for s in shape[1:]))


def execution_order(num_layers: int, blocks: Sequence[Block]) -> tuple[Op, ...]:
    """The forward pass as ops: run a layer, open/close a block, or run an empty block."""
    ops: list[Op] = []
    for position in range(num_layers + 1):
        for b, block in enumerate(blocks):
            if block.end == position and block.start < block.end:
                ops.append(("close", b))
        for b, block in enumerate(blocks):
            if block.start == position == block.end:
                ops.append(("empty", b))
        for b, block in enumerate(blocks):
            if block.start == position < block.end:
                ops.append(("open", b))
        if position < num_layers:
            ops.append(("layer", position))
    return tuple(ops)


def wiring(arch: Architecture) -> tuple[dict[Slot, Slot], tuple[Slot, ...]]:
    """Which producer feeds every layer and projection, and which one leaves each layer,
    from the structure alone: unlike :func:`trace`, this holds where widths do not fit
    yet (the removal repairs use it to make them fit)."""
    sources: dict[Slot, Slot] = {}
    after: list[Slot] = [INPUT_SLOT] * len(arch.layers)
    producer = block_source = INPUT_SLOT
    for op, index in arch.execution_order():
        if op == "layer":
            sources[("layer", index)] = producer
            if arch.layers[index].kind in ("conv", "linear"):
                producer = ("layer", index)
            after[index] = producer
        elif op == "open":
            block_source = producer
        elif arch.blocks[index].projection is not None:
            sources[("projection", index)] = producer if op == "empty" else block_source
            if op == "empty":
                producer = ("projection", index)
    return sources, tuple(after)


def trace(arch: Architecture) -> Trace:
    """Every layer's input and output shapes, which producer feeds each layer and
    projection, and the first point (if any) where the shapes stop fitting."""
    in_shapes: list[Shape | None] = [None] * len(arch.layers)
    out_shapes: list[Shape | None] = [None] * len(arch.layers)
    input_slots: dict[Slot, Slot] = {}
    producer_after: list[Slot] = [INPUT_SLOT] * len(arch.layers)
    block_shapes: dict[int, tuple[Shape, Shape]] = {}

    def stop(reason: str | None) -> Trace:
        return Trace(
            tuple(in_shapes),
            tuple(out_shapes),
            input_slots,
            tuple(producer_after),
            block_shapes,
            reason,
        )

    shape: Shape = arch.input_shape
    producer = INPUT_SLOT
    block_input: tuple[Shape, Slot] = (shape, producer)
    for op, index in arch.execution_order():
        if op == "layer":
            layer = arch.layers[index]
            in_shapes[index] = shape
            input_slots[("layer", index)] = producer
            result = layer_output(layer, shape)
            if isinstance(result, str):
                return stop(f"layer {index}: {result}")
            shape = out_shapes[index] = result
            if layer.kind in ("conv", "linear"):
                producer = ("layer", index)
            producer_after[index] = producer
            continue
        block = arch.blocks[index]
        if op == "open":
            block_input = (shape, producer)
            continue
        source_shape, source = (shape, producer) if op == "empty" else block_input
        if block.projection is not None:
            input_slots[("projection", index)] = source
            shortcut = projection_output(block.projection, source_shape)
            if op == "empty":
                producer = ("projection", index)
        else:
            shortcut = source_shape
        if shortcut != shape and op == "close":
            return stop(f"block {index}: body output {shape} != shortcut output {shortcut}")
        block_shapes[index] = (source_shape, shortcut)
        shape = shortcut
    return stop(None)
