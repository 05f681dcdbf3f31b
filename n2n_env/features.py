"""Per-layer observations of an architecture: the paper's x_t and a normalised variant.

The paper (section 3.2.1) describes layer t by x_t = (type, kernel, stride, padding,
outputs, s_start, s_end). :func:`layer_features` returns exactly that, and a normalised
variant for policy networks whose every column means the same for a 10-layer and a
90-layer teacher: one-hot type, log2-scaled sizes divided by fixed constants (never by
statistics of one teacher), block position as fractions, and relative depth.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from n2n_env.arch import FEATURE_KIND, LAYER_KINDS, PAPER_KINDS

if TYPE_CHECKING:
    from n2n_env.arch import Architecture

FEATURE_NAMES = ("type", "kernel", "stride", "padding", "outputs", "s_start", "s_end")
NORMALIZED_FEATURE_NAMES = (
    *(f"is_{kind}" for kind in PAPER_KINDS),
    "log_kernel",
    "log_stride",
    "log_padding",
    "log_outputs",
    "log_input_size",
    "in_block",
    "s_start_fraction",
    "s_end_fraction",
    "relative_depth",
    "removable",
)


def layer_features(arch: Architecture, normalized: bool = False) -> np.ndarray:
    """Per-layer observations x_t (section 3.2.1), shape (L, F), float32.

    Raw: the paper's (type, kernel, stride, padding, outputs, s_start, s_end); type is
    the index in ``LAYER_KINDS``; s_start counts the layers of the block up to and
    including this one, s_end those from this one to the block's end (0 outside blocks).
    Normalized (``NORMALIZED_FEATURE_NAMES``): one-hot type, log2-scaled sizes divided by
    fixed constants, block position as fractions and relative depth, so a feature means
    the same thing for a 10-layer and a 90-layer teacher.
    """
    owner = arch.block_of()
    raw = np.zeros((len(arch.layers), len(FEATURE_NAMES)), dtype=np.float32)
    normalized_rows = np.zeros((len(arch.layers), len(NORMALIZED_FEATURE_NAMES)), np.float32)
    removable = arch.removable()
    depth_scale = max(len(arch.layers) - 1, 1)
    for i, layer in enumerate(arch.layers):
        spatial = layer.kind in ("conv", "maxpool", "avgpool")
        out_shape = arch.output_shapes()[i]
        in_shape = arch.input_shapes()[i]
        outputs = layer.out if layer.out else (out_shape[0] if out_shape else 0)
        s_start = s_end = length = 0
        if owner[i] is not None:
            block = arch.blocks[owner[i]]  # type: ignore[index]
            s_start, s_end, length = i - block.start + 1, block.end - i, block.end - block.start
        kernel, stride = (layer.kernel, layer.stride) if spatial else (0, 0)
        padding = layer.padding if spatial else 0
        raw[i] = (LAYER_KINDS.index(layer.kind), kernel, stride, padding, outputs, s_start, s_end)
        input_size = in_shape[-1] if in_shape and len(in_shape) == 3 else 0
        normalized_rows[i, PAPER_KINDS.index(FEATURE_KIND[layer.kind])] = 1.0
        normalized_rows[i, len(PAPER_KINDS) :] = (
            math.log2(1 + kernel) / 4,
            math.log2(1 + stride) / 2,
            math.log2(1 + padding) / 3,
            math.log2(1 + outputs) / 12,
            math.log2(1 + input_size) / 8,
            float(length > 0),
            s_start / length if length else 0.0,
            s_end / length if length else 0.0,
            i / depth_scale,
            float(removable[i]),
        )
    return normalized_rows if normalized else raw


def describe(arch: Architecture) -> str:
    """A plain-text table of the layers with their output shapes, for people and logs."""
    owner = arch.block_of()
    lines = [f"{arch.name or 'architecture'}: input {arch.input_shape}, {arch.num_classes} classes"]
    for i, (layer, shape) in enumerate(zip(arch.layers, arch.output_shapes())):
        detail = f"k{layer.kernel} s{layer.stride} p{layer.padding}" if layer.kernel else ""
        block = f"block {owner[i]}" if owner[i] is not None else ""
        lines.append(f"{i:>4} {layer.kind:<8} {detail:<12} {block:<9} -> {shape}")
    reason = arch.degenerate_reason()
    lines.append(
        f"degenerate: {reason}"
        if reason
        else f"params {arch.num_params():,}  flops {arch.flops():,}"
    )
    return "\n".join(lines)
