"""The two transitions of the N2N MDP on architectures: layer removal and layer shrinkage.

See :mod:`n2n_env.arch` for the rules (fixed layers, block repairs, tied widths, rounding).
These functions are reached through :meth:`Architecture.remove`,
:meth:`Architecture.width_groups`, :meth:`Architecture.shrink_variables` and
:meth:`Architecture.shrink`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from n2n_env.arch import INPUT_SLOT, Architecture, Block, Layer, Slot
from n2n_env.arch_trace import wiring

_T = TypeVar("_T")

SHRINK_LEVELS = tuple(range(1, 11))
"""Shrink factors in tenths: level ``a`` means factor ``a / 10``."""


@dataclass(frozen=True)
class ShrinkVariable:
    """One decision of the shrink MDP: a width shared by ``slots``, or one conv's kernel."""

    kind: Literal["width", "kernel"]
    slots: tuple[Slot, ...]
    value: int

    @property
    def layer(self) -> int | None:
        """Index of the first main layer this variable controls (None: projection only)."""
        return next((index for name, index in self.slots if name == "layer"), None)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Slot, Slot] = {}

    def find(self, slot: Slot) -> Slot:
        self.parent.setdefault(slot, slot)
        while self.parent[slot] != slot:
            self.parent[slot] = self.parent[self.parent[slot]]
            slot = self.parent[slot]
        return slot

    def union(self, first: Slot, second: Slot) -> None:
        self.parent[self.find(first)] = self.find(second)


def scaled_value(kind: str, value: int, level: int) -> int:
    """A width (``ceil(value * level / 10)``, at least 1) or a kernel (the largest odd
    number not above that) after shrink level ``level`` in 1..10, in exact integers."""
    scaled = max(1, (value * level + 9) // 10)
    return scaled - (1 - scaled % 2) if kind == "kernel" else scaled


def _tenths(factor: float) -> int:
    """The level a of a factor a/10, refusing anything outside {0.1, 0.2, ..., 1.0}."""
    allowed = "use one of 0.1, 0.2, ..., 1.0"
    if isinstance(factor, bool) or not isinstance(factor, (int, float, np.number)):
        raise ValueError(f"shrink factor {factor!r} is not a number; {allowed}")
    if not math.isfinite(float(factor)):
        raise ValueError(f"shrink factor {factor!r} not allowed; {allowed}")
    level = round(float(factor) * 10)
    if level not in SHRINK_LEVELS or abs(float(factor) * 10 - level) > 1e-6:
        raise ValueError(f"shrink factor {factor!r} not allowed; {allowed}")
    return level


def remove(arch: Architecture, keep: Sequence[bool]) -> Architecture:
    """Stage-1 transition: keep the layers where ``keep`` is true, remove the others."""
    mask = _as_mask(keep, len(arch.layers))
    if not any(mask):
        raise ValueError(
            "keep mask keeps nothing; keep at least the fixed layers "
            f"{[i for i, r in enumerate(arch.removable()) if not r]}"
        )
    fixed_removed = [i for i, (k, r) in enumerate(zip(mask, arch.removable())) if not k and not r]
    if fixed_removed:
        raise ValueError(
            f"layers {fixed_removed} are fixed (flatten, classifier output) and "
            "cannot be removed; allowed removals: "
            f"{[i for i, r in enumerate(arch.removable()) if r]}"
        )
    key = ("remove", tuple(mask))
    known = arch._derived.get(key)
    if known is not None:
        return known
    kept_before = np.concatenate([[0], np.cumsum(mask)]).astype(int)
    layers = [layer for layer, k in zip(arch.layers, mask) if k]
    blocks = []
    for block in arch.blocks:
        start, end = int(kept_before[block.start]), int(kept_before[block.end])
        if start == end and block.projection is None:
            continue
        blocks.append(dataclasses.replace(block, start=start, end=end))
    return _remember(arch, key, _repair(dataclasses.replace(
        arch, layers=tuple(layers), blocks=tuple(blocks), root=arch.root_signature())))


def width_groups(arch: Architecture) -> tuple[tuple[Slot, ...], ...]:
    """Channel producers whose widths must be equal (tied by shortcuts), in network order."""
    union = _UnionFind()
    union.find(INPUT_SLOT)
    slots = arch.input_slots()
    producer_after = arch.producer_after()
    for i, layer in enumerate(arch.layers):
        if layer.kind in ("conv", "linear"):
            union.find(("layer", i))
    for i, layer in enumerate(arch.layers):
        if layer.depthwise:
            union.union(("layer", i), slots.get(("layer", i), INPUT_SLOT))
    for b, block in enumerate(arch.blocks):
        source = (
            slots.get(("layer", block.start), INPUT_SLOT)
            if block.start < block.end
            else slots.get(("projection", b), INPUT_SLOT)
        )
        body_out = producer_after[block.end - 1] if block.start < block.end else source
        if block.projection is not None:
            union.find(("projection", b))
            if block.start < block.end:
                union.union(("projection", b), body_out)
        else:
            union.union(source, body_out)
    order = {slot: rank for rank, slot in enumerate(arch.slot_order())}
    groups: dict[Slot, list[Slot]] = {}
    for slot in sorted(union.parent, key=order.__getitem__):
        groups.setdefault(union.find(slot), []).append(slot)
    return tuple(tuple(members) for members in groups.values())


def shrink_variables(
    arch: Architecture, include_kernels: bool = False
) -> tuple[ShrinkVariable, ...]:
    """The configurable variables of stage 2, one decision each, in network order:
    each tied width group (conv filters, hidden linear units), then optionally each
    conv kernel larger than 1 (ordered right after the conv's width)."""
    classifier = ("layer", len(arch.layers) - 1)
    variables: list[tuple[int, ShrinkVariable]] = []
    order = {slot: rank for rank, slot in enumerate(arch.slot_order())}
    for group in arch.width_groups():
        if INPUT_SLOT in group or classifier in group:
            continue
        variables.append(
            (order[group[0]], ShrinkVariable("width", group, arch.slot_width(group[0])))
        )
    if include_kernels:
        for i, layer in enumerate(arch.layers):
            if layer.kind == "conv" and layer.kernel > 1:
                slot = ("layer", i)
                variables.append((order[slot], ShrinkVariable("kernel", (slot,), layer.kernel)))
    variables.sort(key=lambda item: (item[0], item[1].kind == "kernel"))
    return tuple(variable for _, variable in variables)


def shrink(
    arch: Architecture, factors: Sequence[float], include_kernels: bool = False
) -> Architecture:
    """Stage-2 transition: scale each shrink variable by its factor in {0.1, ..., 1.0}."""
    variables = arch._derived.get(("variables", include_kernels))
    if variables is None:
        variables = _remember(arch, ("variables", include_kernels),
                              shrink_variables(arch, include_kernels))
    if len(factors) != len(variables):
        raise ValueError(
            f"expected {len(variables)} shrink factors (one per variable of "
            f"shrink_variables(include_kernels={include_kernels})), got {len(factors)}"
        )
    levels = tuple(_tenths(factor) for factor in factors)
    key = ("shrink", levels, include_kernels)
    known = arch._derived.get(key)
    if known is not None:
        return known
    layers = list(arch.layers)
    blocks = list(arch.blocks)
    for variable, level in zip(variables, levels):
        if variable.kind == "kernel":
            _, index = variable.slots[0]
            layer = layers[index]
            kernel = scaled_value(variable.kind, layer.kernel, level)
            padding = max(0, layer.padding - (layer.kernel - kernel) // 2)
            layers[index] = dataclasses.replace(layer, kernel=kernel, padding=padding)
            continue
        set_width(layers, blocks, variable.slots,
                  scaled_value(variable.kind, variable.value, level))
    return _remember(arch, key, dataclasses.replace(
        arch, layers=tuple(layers), blocks=tuple(blocks), root=arch.root_signature()))


def set_width(layers: list[Layer], blocks: list[Block], slots: Sequence[Slot],
              width: int) -> None:
    """Give every producer in ``slots`` (layers and projections, edited in place in these
    lists) ``width`` output channels."""
    for name, index in slots:
        if name == "layer":
            layers[index] = dataclasses.replace(layers[index], out=width)
        else:
            projection = dataclasses.replace(blocks[index].projection, out=width)
            blocks[index] = dataclasses.replace(blocks[index], projection=projection)


MAX_DERIVED_LAYERS = 2**18
"""Layers of the students remembered per architecture (each about 0.4 KiB); past this the
memory is cleared, so a long search keeps a bounded footprint: every student of N2N-Bench's
spaces fits, and about 2,600 of ResNet-34's (100 MB)."""
_WEIGHT = ("layers remembered",)


def _remember(arch: Architecture, key: tuple[Any, ...], value: _T) -> _T:
    """Store ``value`` as derived from ``arch`` under ``key``; return it."""
    derived = arch._derived
    weight = len(value.layers) if isinstance(value, Architecture) else 1
    if key not in derived:
        if derived.get(_WEIGHT, 0) + weight > MAX_DERIVED_LAYERS:
            derived.clear()
        derived[_WEIGHT] = derived.get(_WEIGHT, 0) + weight
    derived[key] = value
    return value


def _as_mask(keep: Sequence[bool], length: int) -> list[bool]:
    # an environment's boolean array: plain Python bools, checked below in microseconds
    values = keep.tolist() if isinstance(keep, np.ndarray) else list(keep)
    if len(values) != length:
        raise ValueError(
            f"keep mask has {len(values)} entries; this architecture has {length} "
            "layers (one entry per layer)"
        )
    for value in values:
        if value not in (0, 1) or (isinstance(value, float) and not float(value).is_integer()):
            raise ValueError(f"keep mask entries must be booleans (or 0/1), got {value!r}")
    return [bool(value) for value in values]


def _repair(arch: Architecture) -> Architecture:
    """Apply the documented repairs (block strides, block widths, depthwise widths) after
    a removal."""
    layers = list(arch.layers)
    blocks = list(arch.blocks)
    for block in blocks:
        convs = [i for i in range(block.start, block.end) if layers[i].kind == "conv"]
        if convs and block.stride > 1 and all(layers[i].stride == 1 for i in convs):
            layers[convs[0]] = dataclasses.replace(layers[convs[0]], stride=block.stride)
    sources, after = wiring(arch)

    def width(slot: Slot) -> int:
        name, index = slot
        if name == "input":
            return arch.input_shape[0]
        if name == "layer":
            return layers[index].out
        return blocks[index].projection.out  # type: ignore[union-attr]

    # Every repair copies a width from upstream, so passes settle in at most one per layer.
    for _ in range(len(layers) + len(blocks) + 1):
        changed = False
        for i, layer in enumerate(layers):
            if layer.depthwise and layer.out != width(sources[("layer", i)]):
                layers[i] = dataclasses.replace(layer, out=width(sources[("layer", i)]))
                changed = True
        for b, block in enumerate(blocks):
            if block.start == block.end:
                continue
            if block.projection is None:
                convs = [i for i in range(block.start, block.end)
                         if layers[i].kind == "conv" and not layers[i].depthwise]
                source_width = width(sources[("layer", block.start)])
                if convs and layers[convs[-1]].out != source_width:
                    layers[convs[-1]] = dataclasses.replace(layers[convs[-1]], out=source_width)
                    changed = True
            elif block.projection.out != width(after[block.end - 1]):
                projection = dataclasses.replace(block.projection, out=width(after[block.end - 1]))
                blocks[b] = dataclasses.replace(block, projection=projection)
                changed = True
        if not changed:
            break
    return dataclasses.replace(arch, layers=tuple(layers), blocks=tuple(blocks))
