"""Network architectures derived from a teacher, at the granularity of the N2N paper.

An :class:`Architecture` is an immutable, pure-Python description of a convolutional
network: a flat tuple of :class:`Layer` records (one per paper-level layer: conv,
batchnorm, relu, maxpool, avgpool, dropout, flatten, linear, relu6, adaptive_avgpool;
a conv may be grouped or depthwise) plus residual
:class:`Block` spans over that tuple. It knows nothing about weights; ``build_model``
turns it into a PyTorch module. The two transitions of the paper's MDP are
:meth:`Architecture.remove` (stage 1, section 3.2.1) and :meth:`Architecture.shrink`
(stage 2, section 3.2.2).

Rules (each is tested):

* Fixed layers (never removable): the classifier output layer (the last linear layer,
  whose outputs are the classes) and ``flatten`` (a parameter-free reshape the
  classifier needs; removing it would not change capacity, only break the network).
* A residual block computes ``body(x) + shortcut(x)``. The ReLU after the addition is
  an ordinary layer that follows the block, so it can be removed like any other.
* Repairs applied by :meth:`~Architecture.remove` so that a block's shape contract holds:
  the block's stride stays on the convolution that carries it while that one is kept
  (ResNet-50's bottleneck strides its 3x3, the middle one); once it is removed, the
  first convolution left in the body carries it; the last convolution left in the body
  of an identity block that is not depthwise outputs the block's input width; a
  projection shortcut outputs the body's output width. A block whose body is
  removed entirely becomes its shortcut (an identity block disappears). Anything these
  rules cannot fix (a projection block whose body lost all convolutions but must
  downsample) is reported by :meth:`~Architecture.degenerate_reason`.
* A depthwise convolution (``depthwise=True``: one filter per channel, as in
  MobileNetV2) outputs as many channels as it receives: after a removal its width
  follows its new input, and for stage 2 its width is tied to its input's (one shrink
  variable). A grouped convolution (``groups > 1``) needs its input and output widths
  to be multiples of ``groups``; a removal or shrink that breaks this gives a degenerate
  student, named by :meth:`~Architecture.degenerate_reason`.
* ``relu6`` clips at 6 (MobileNetV2); ``adaptive_avgpool`` averages each channel down to
  ``output_size`` x ``output_size`` whatever its input size (torchvision's heads). For
  the observations they count as ``relu`` and ``avgpool`` (:data:`FEATURE_KIND`).
* Widths tied through identity shortcuts form one shrink variable; the classifier output
  width and widths tied to the network input are fixed.
* A shrink factor ``a/10`` maps width ``w`` to ``ceil(w * a / 10)`` (never below 1);
  kernel ``k`` to the largest odd number not above ``ceil(k * a / 10)``, with padding
  reduced by half the kernel reduction (never below 0), which keeps the feature-map size when
  the padding allows (it does for every zoo conv: 3x3 with padding 1).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from n2n_env import validate
from n2n_env.arch_trace import INPUT_SLOT, Op, Shape, Slot, Trace, execution_order, trace

if TYPE_CHECKING:
    from n2n_env.transitions import ShrinkVariable

__all__ = ["FEATURE_KIND", "INPUT_SLOT", "LAYER_KINDS", "MAX_CLASSIFIER_INPUTS", "PAPER_KINDS",
           "Architecture", "Block", "Layer", "Op", "Projection", "Shape", "Slot"]
PAPER_KINDS = ("conv", "bn", "relu", "maxpool", "avgpool", "dropout", "flatten", "linear")
"""The layer types of the paper's observations x_t (one-hot columns, render colours)."""
LAYER_KINDS = (*PAPER_KINDS, "relu6", "adaptive_avgpool")
FEATURE_KIND = {**{kind: kind for kind in PAPER_KINDS}, "relu6": "relu",
                "adaptive_avgpool": "avgpool"}
"""The paper type each layer kind is observed as, so that the observation space stays the
same for every teacher (a policy trained on a zoo VGG runs on an imported MobileNetV2)."""
MAX_CLASSIFIER_INPUTS = 32_768
"""Default limit on the flattened features entering the first linear layer (appendix 11.2:
a student that removed too many downsampling layers has an impractically large FC input)."""


@dataclass(frozen=True)
class Layer:
    """One paper-level layer. ``out`` is the output channels (conv) or units (linear)."""

    kind: str
    out: int = 0
    kernel: int = 0
    stride: int = 1
    padding: int = 0
    bias: bool = True
    p: float = 0.0
    origin: int = -1
    """Index of the layer in the root teacher; build_model inherits weights through it."""
    groups: int = 1
    """Groups of a conv: each output channel sees ``in / groups`` input channels."""
    depthwise: bool = False
    """A conv with one filter per input channel (groups = input channels = out)."""
    output_size: int = 0
    """Output height and width of an ``adaptive_avgpool``."""

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise ValueError(f"unknown layer kind {self.kind!r}; allowed: {LAYER_KINDS}")
        for name in ("out", "kernel", "stride", "padding", "origin", "groups", "output_size"):
            value = getattr(self, name)
            if type(value) is not int:
                object.__setattr__(self, name, validate.integer(f"layer {name}", value))
        if type(self.p) is not float:
            object.__setattr__(self, "p", validate.number("dropout p", self.p))
        if self.kind in ("conv", "linear") and self.out < 1:
            raise ValueError(f"{self.kind} layer needs out >= 1, got {self.out}")
        if self.kind in ("conv", "maxpool", "avgpool") and (self.kernel < 1 or self.stride < 1):
            raise ValueError(f"{self.kind} layer needs kernel >= 1 and stride >= 1")
        if self.padding < 0 or not 0.0 <= self.p < 1.0:
            raise ValueError("padding must be >= 0 and dropout p in [0, 1)")
        if not isinstance(self.depthwise, bool):
            raise ValueError(f"depthwise must be True or False, got {self.depthwise!r}")
        if self.groups < 1 or (self.kind != "conv" and (self.groups != 1 or self.depthwise)):
            raise ValueError("groups (>= 1) and depthwise belong to conv layers only")
        if self.depthwise and self.groups != 1:
            raise ValueError("a depthwise conv has one group per channel; leave groups at 1")
        if (self.kind == "adaptive_avgpool") != (self.output_size > 0):
            raise ValueError("adaptive_avgpool needs output_size >= 1; other kinds have none")

    @property
    def has_params(self) -> bool:
        return self.kind in ("conv", "bn", "linear")

    def inputs_per_filter(self, channels: int) -> int:
        """Input channels each output channel of this conv sees, given ``channels`` in."""
        return 1 if self.depthwise else channels // self.groups


@dataclass(frozen=True)
class Projection:
    """Projection shortcut of a residual block: 1x1 conv (no bias) then batch norm."""

    out: int
    stride: int = 1


@dataclass(frozen=True)
class Block:
    """Residual block over ``layers[start:end]``: output = body(x) + shortcut(x)."""

    start: int
    end: int
    stride: int = 1
    projection: Projection | None = None
    origin: int = -1


@dataclass(frozen=True)
class Architecture:
    """An immutable network description: input shape, classes, layers and residual blocks."""

    input_shape: tuple[int, int, int]
    num_classes: int
    layers: tuple[Layer, ...]
    blocks: tuple[Block, ...] = ()
    name: str = field(default="", compare=False)
    root: str = field(default="", compare=False)
    """Signature of the root teacher whose layer indices the origins refer to ("" for a
    root: a teacher, from the zoo or described by hand). ``remove`` and ``shrink`` set it,
    and ``build_model`` refuses to inherit from any other teacher."""

    def __post_init__(self) -> None:
        try:
            shape = tuple(self.input_shape)
        except TypeError:
            shape = ()
        if len(shape) != 3:
            raise ValueError(
                f"input_shape must be (C, H, W) of positive ints, got {self.input_shape!r}"
            )
        object.__setattr__(self, "input_shape", tuple(
            validate.integer("input_shape (C, H, W) entry", s, minimum=1) for s in shape))
        object.__setattr__(self, "num_classes",
                           validate.integer("num_classes", self.num_classes, minimum=1))
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "blocks", tuple(self.blocks))
        if not isinstance(self.root, str) or (self.root and len(self.root) != 16):
            raise ValueError(f"root must be '' or a 16-hex-digit signature, got {self.root!r}")
        if all(layer.origin == -1 for layer in self.layers) and all(
            block.origin == -1 for block in self.blocks
        ):
            # Described by hand: it is its own root, so number its layers and blocks, which
            # is what lets its students inherit its weights.
            object.__setattr__(self, "layers", tuple(
                dataclasses.replace(layer, origin=i) for i, layer in enumerate(self.layers)))
            object.__setattr__(self, "blocks", tuple(
                dataclasses.replace(block, origin=b) for b, block in enumerate(self.blocks)))
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(
                f"input_shape must be (C, H, W) of positive ints, got {self.input_shape}"
            )
        if not self.layers or self.layers[-1].kind != "linear":
            raise ValueError("the last layer must be the linear classifier output layer")
        if self.layers[-1].out != self.num_classes:
            raise ValueError(
                f"classifier outputs {self.layers[-1].out} != {self.num_classes} classes"
            )
        previous_end = 0
        for block in self.blocks:
            if not previous_end <= block.start <= block.end <= len(self.layers) - 1:
                raise ValueError(f"block {block} overlaps another or leaves the layer range")
            previous_end = block.end

    def __len__(self) -> int:
        return len(self.layers)

    # ------------------------------------------------------------------ structure
    def execution_order(self) -> tuple[Op, ...]:
        """The forward pass as ops: run a layer, open/close a block, or run an empty block."""
        return self._ops

    @cached_property
    def _ops(self) -> tuple[Op, ...]:
        return execution_order(len(self.layers), self.blocks)

    @cached_property
    def _trace(self) -> Trace:
        return trace(self)

    @cached_property
    def _derived(self) -> dict[tuple[Any, ...], Any]:
        """What :mod:`n2n_env.transitions` has derived from this architecture (students by
        their decisions, shrink variables), so that an environment replaying an episode does
        not rebuild its student. Bounded by ``transitions.MAX_DERIVED``; never pickled."""
        return {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_derived", None)
        return state

    def input_shapes(self) -> tuple[Shape | None, ...]:
        """Input shape of every layer (None after the point where the network breaks)."""
        return self._trace.in_shapes

    def output_shapes(self) -> tuple[Shape | None, ...]:
        """Output shape of every layer (None after the point where the network breaks)."""
        return self._trace.out_shapes

    def input_slots(self) -> dict[Slot, Slot]:
        """For every layer and projection, the producer whose channels it receives."""
        return self._trace.input_slots

    def block_of(self) -> tuple[int | None, ...]:
        """Index of the block each layer's body belongs to, or None."""
        owner: list[int | None] = [None] * len(self.layers)
        for b, block in enumerate(self.blocks):
            owner[block.start : block.end] = [b] * (block.end - block.start)
        return tuple(owner)

    def removable(self) -> tuple[bool, ...]:
        """Which layers stage 1 may remove: all but flatten and the classifier output."""
        last = len(self.layers) - 1
        return tuple(layer.kind != "flatten" and i != last for i, layer in enumerate(self.layers))

    # ------------------------------------------------------------------ measures
    def degenerate_reason(self, max_classifier_inputs: int = MAX_CLASSIFIER_INPUTS) -> str | None:
        """Why this architecture is degenerate (appendix 11.2), or None if it is usable."""
        if not any(layer.kind in ("conv", "linear") for layer in self.layers[:-1]) and not any(
            block.projection for block in self.blocks
        ):
            return "empty architecture: no conv or hidden linear layer is left"
        trace = self._trace
        if trace.reason is not None:
            return trace.reason
        first_linear = next(i for i, layer in enumerate(self.layers) if layer.kind == "linear")
        features = trace.in_shapes[first_linear][0]  # type: ignore[index]
        if features > max_classifier_inputs:
            return (
                f"classifier input of {features} features exceeds the limit of "
                f"{max_classifier_inputs} (too many downsampling layers removed)"
            )
        return None

    def _require_valid(self) -> Trace:
        reason = self._trace.reason
        if reason is not None:
            raise ValueError(f"architecture is degenerate: {reason}")
        return self._trace

    def num_params(self) -> int:
        """Trainable parameters; equals PyTorch's count for ``build_model(self)``."""
        return sum(self.layer_params()) + sum(self.projection_params().values())

    def layer_params(self) -> tuple[int, ...]:
        """Trainable parameters of each layer (projection shortcuts not included)."""
        trace = self._require_valid()
        counts = []
        for layer, shape in zip(self.layers, trace.in_shapes):
            assert shape is not None
            bias = layer.out if layer.bias else 0
            if layer.kind == "conv":
                counts.append(layer.inputs_per_filter(shape[0]) * layer.out * layer.kernel**2
                              + bias)
            elif layer.kind == "linear":
                counts.append(shape[0] * layer.out + bias)
            else:
                counts.append(2 * shape[0] if layer.kind == "bn" else 0)
        return tuple(counts)

    def projection_params(self) -> dict[int, int]:
        """Trainable parameters of each projection shortcut, by block index."""
        trace = self._require_valid()
        return {b: trace.block_shapes[b][0][0] * block.projection.out + 2 * block.projection.out
                for b, block in enumerate(self.blocks) if block.projection is not None}

    def flops(self, batch: int = 1) -> int:
        """Inference FLOPs: multiply and add counted separately; bn 2, relu/relu6/add 1 per
        element, pooling k*k per output element (adaptive: the largest bin's size), dropout
        and flatten free."""
        trace = self._require_valid()
        total = 0
        for layer, shape_in, shape_out in zip(self.layers, trace.in_shapes, trace.out_shapes):
            assert shape_in is not None and shape_out is not None
            elements = math.prod(shape_out)
            if layer.kind == "conv":
                fan_in = layer.inputs_per_filter(shape_in[0]) * layer.kernel**2
                total += elements * (2 * fan_in - 1 + int(layer.bias))
            elif layer.kind == "linear":
                total += layer.out * (2 * shape_in[0] - 1 + int(layer.bias))
            elif layer.kind == "bn":
                total += 2 * elements
            elif layer.kind in ("relu", "relu6"):
                total += elements
            elif layer.kind in ("maxpool", "avgpool"):
                total += elements * layer.kernel**2
            elif layer.kind == "adaptive_avgpool":
                total += elements * math.prod(-(-s // layer.output_size) for s in shape_in[1:])
        for b, block in enumerate(self.blocks):
            in_shape, out_shape = trace.block_shapes[b]
            elements = math.prod(out_shape)
            if block.start < block.end:
                total += elements
            if block.projection is not None:
                total += elements * (2 * in_shape[0] + 1)
        return total * batch

    def slot_width(self, slot: Slot) -> int:
        """Channels (or units) produced by ``slot``."""
        name, index = slot
        if name == "input":
            return self.input_shape[0]
        if name == "layer":
            return self.layers[index].out
        projection = self.blocks[index].projection
        assert projection is not None
        return projection.out

    def producer_after(self) -> tuple[Slot, ...]:
        """For every layer, the producer whose channels leave it."""
        return self._trace.producer_after

    def slot_order(self) -> tuple[Slot, ...]:
        """Every producer in the order the forward pass meets it, the input first."""
        order: list[Slot] = [INPUT_SLOT]
        for op, index in self._ops:
            if op == "layer" and self.layers[index].kind in ("conv", "linear"):
                order.append(("layer", index))
            elif op in ("open", "empty") and self.blocks[index].projection is not None:
                order.append(("projection", index))
        return tuple(order)

    # ------------------------------------------------------------------ transitions
    def features(self, normalized: bool = False) -> np.ndarray:
        """Per-layer observations x_t, shape (L, F); see :func:`n2n_env.features.layer_features`."""
        from n2n_env.features import layer_features

        return layer_features(self, normalized)

    def remove(self, keep: Sequence[bool]) -> Architecture:
        """Stage-1 transition; see :func:`n2n_env.transitions.remove`."""
        from n2n_env.transitions import remove

        return remove(self, keep)

    def width_groups(self) -> tuple[tuple[Slot, ...], ...]:
        """Producers whose widths are tied; see :func:`n2n_env.transitions.width_groups`."""
        from n2n_env.transitions import width_groups

        return width_groups(self)

    def shrink_variables(self, include_kernels: bool = False) -> tuple[ShrinkVariable, ...]:
        """Stage-2 decisions; see :func:`n2n_env.transitions.shrink_variables`."""
        from n2n_env.transitions import shrink_variables

        return shrink_variables(self, include_kernels)

    def shrink(self, factors: Sequence[float], include_kernels: bool = False) -> Architecture:
        """Stage-2 transition; see :func:`n2n_env.transitions.shrink`."""
        from n2n_env.transitions import shrink

        return shrink(self, factors, include_kernels)

    # ------------------------------------------------------------------ identity
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict in the architecture format; see :mod:`n2n_env.arch_json`."""
        from n2n_env.arch_json import architecture_to_dict

        return architecture_to_dict(self)

    def to_json(self, indent: int | None = None) -> str:
        if indent is None:
            return self._json
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @cached_property
    def _json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        """The architecture a :meth:`to_dict` dict describes; ValueError for anything else."""
        from n2n_env.arch_json import architecture_from_dict

        return architecture_from_dict(data)

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"architecture JSON does not parse: {error}") from error
        return cls.from_dict(data)

    def signature(self) -> str:
        """Stable 16-hex-digit hash of everything but the name and the root (origins
        included, since they decide which teacher weights a student inherits)."""
        return self._signature

    @cached_property
    def _signature(self) -> str:
        data = self.to_dict()
        data.pop("name")
        data.pop("root", None)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def root_signature(self) -> str:
        """Signature of the root teacher this architecture derives from (its own for a
        root): two architectures share origins exactly when these agree."""
        return self.root or self.signature()

    def summary(self) -> str:
        """A plain-text table of the layers; see :func:`n2n_env.features.describe`."""
        from n2n_env.features import describe

        return describe(self)
