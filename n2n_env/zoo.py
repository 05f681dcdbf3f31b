"""The paper's teacher networks (appendix 10) as :class:`~n2n_env.arch.Architecture` values.

``conv4`` is a four-convolution MNIST network; ``vgg11``-``vgg19`` are the batch-norm VGGs
with a single linear classifier (the CIFAR variant the paper's parameter counts match);
``resnet18``/``resnet34`` are CIFAR-style BasicBlock ResNets with a 3x3 stem. At
``width=1.0`` the parameter counts match Table 1 within 2% (VGG-13 on MNIST 9.41M,
VGG-19 on CIFAR-10 20.04M, ResNet-18 11.17M, ResNet-34 21.28M). ``width`` scales every
channel and hidden-unit count (at least 1) for CPU-sized experiments. ``conv3`` is not the
paper's: it is N2N-Bench's teacher, small enough to train every student of both MDPs.

A 2x2 max-pool that would take a feature map below 1x1 is left out, so every teacher
accepts inputs as small as 8x8 (MNIST's 28x28 gets four of VGG's five poolings).
"""

from __future__ import annotations

from collections.abc import Callable

from n2n_env import validate
from n2n_env.arch import Architecture, Block, Layer, Projection

_VGG_STAGE_DEPTHS = {
    "vgg11": (1, 1, 2, 2, 2),
    "vgg13": (2, 2, 2, 2, 2),
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
"""Convolutions per stage; stages have 64, 128, 256, 512, 512 channels and end in a pool."""
_VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    name: tuple(
        entry
        for channels, depth in zip((64, 128, 256, 512, 512), depths)
        for entry in (*[channels] * depth, "M")
    )
    for name, depths in _VGG_STAGE_DEPTHS.items()
}
_CONV4_CONFIG: tuple[int | str, ...] = (32, "M", 64, "M", 128, 128, "M")
_CONV3_CONFIG: tuple[int | str, ...] = (16, "M", 32, "M", 32)
_CONV3_HIDDEN = 64
_RESNET_DEPTHS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


class _Builder:
    """Appends layers while tracking the spatial size, numbering each layer's origin."""

    def __init__(self, input_shape: tuple[int, int, int], width: float) -> None:
        self.layers: list[Layer] = []
        self.blocks: list[Block] = []
        self.size = min(input_shape[1:])
        self.width = width

    def channels(self, count: int) -> int:
        return max(1, round(count * self.width))

    def add(self, kind: str, **config: object) -> None:
        self.layers.append(Layer(kind, origin=len(self.layers), **config))  # type: ignore[arg-type]

    def conv_bn_relu(self, channels: int, stride: int = 1, bias: bool = True) -> None:
        self.add("conv", out=self.channels(channels), kernel=3, stride=stride, padding=1, bias=bias)
        self.add("bn")
        self.add("relu")
        self.size = (self.size - 1) // stride + 1

    def maxpool(self) -> None:
        if self.size >= 2:
            self.add("maxpool", kernel=2, stride=2)
            self.size //= 2

    def features(self, config: tuple[int | str, ...]) -> None:
        for entry in config:
            if entry == "M":
                self.maxpool()
            else:
                self.conv_bn_relu(int(entry))

    def basic_block(self, channels: int, stride: int, in_channels: int) -> None:
        start = len(self.layers)
        self.add(
            "conv", out=self.channels(channels), kernel=3, stride=stride, padding=1, bias=False
        )
        self.add("bn")
        self.add("relu")
        self.add("conv", out=self.channels(channels), kernel=3, stride=1, padding=1, bias=False)
        self.add("bn")
        projection = None
        if stride != 1 or in_channels != channels:
            projection = Projection(out=self.channels(channels), stride=stride)
        self.blocks.append(
            Block(start, len(self.layers), stride, projection, origin=len(self.blocks))
        )
        self.add("relu")
        self.size = (self.size - 1) // stride + 1

    def finish(
        self,
        name: str,
        input_shape: tuple[int, int, int],
        num_classes: int,
        hidden: int | None = None,
        dropout: bool = True,
    ) -> Architecture:
        self.add("flatten")
        if hidden is not None:
            self.add("linear", out=self.channels(hidden))
            self.add("relu")
            if dropout:
                self.add("dropout", p=0.5)
        self.add("linear", out=num_classes)
        return Architecture(
            input_shape, num_classes, tuple(self.layers), tuple(self.blocks), name=name
        )


def _conv4(
    name: str, input_shape: tuple[int, int, int], num_classes: int, width: float
) -> Architecture:
    builder = _Builder(input_shape, width)
    builder.features(_CONV4_CONFIG)
    return builder.finish(name, input_shape, num_classes, hidden=256)


def _conv3(
    name: str, input_shape: tuple[int, int, int], num_classes: int, width: float
) -> Architecture:
    """N2N-Bench's teacher (docs/rl-benchmark.md): small enough that every student of both
    MDPs can be trained on a CPU. Three conv-bn-relu stages (16, 32, 32 channels; the first
    two end in a 2x2 max-pool), then a hidden linear layer of 64 units and the classifier,
    with no dropout: 16 layers, of which 13 are removable (2^13 = 8,192 keep masks), and 4
    shrink variables (10^4 shrink vectors)."""
    builder = _Builder(input_shape, width)
    builder.features(_CONV3_CONFIG)
    return builder.finish(name, input_shape, num_classes, hidden=_CONV3_HIDDEN, dropout=False)


def _vgg(
    name: str, input_shape: tuple[int, int, int], num_classes: int, width: float
) -> Architecture:
    builder = _Builder(input_shape, width)
    builder.features(_VGG_CONFIGS[name])
    return builder.finish(name, input_shape, num_classes)


def _resnet(
    name: str, input_shape: tuple[int, int, int], num_classes: int, width: float
) -> Architecture:
    builder = _Builder(input_shape, width)
    builder.conv_bn_relu(64, bias=False)
    in_channels = 64
    for stage, depth in enumerate(_RESNET_DEPTHS[name]):
        channels = 64 * 2**stage
        for index in range(depth):
            stride = 2 if stage > 0 and index == 0 else 1
            builder.basic_block(channels, stride, in_channels)
            in_channels = channels
    builder.add("avgpool", kernel=builder.size, stride=builder.size)
    return builder.finish(name, input_shape, num_classes)


_FACTORIES: dict[str, Callable[[str, tuple[int, int, int], int, float], Architecture]] = {
    "conv4": _conv4,
    **{name: _vgg for name in _VGG_CONFIGS},
    **{name: _resnet for name in _RESNET_DEPTHS},
    "conv3": _conv3,
}


def names() -> tuple[str, ...]:
    """Names accepted by :func:`get`."""
    return tuple(_FACTORIES)


def get(
    name: str,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    width: float = 1.0,
) -> Architecture:
    """The teacher ``name`` for inputs of ``input_shape`` (C, H, W) and ``num_classes``."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown teacher {name!r}; allowed: {', '.join(names())}")
    width = validate.number("width", width, above=0)
    num_classes = validate.integer("num_classes", num_classes, minimum=1)
    try:
        given = tuple(input_shape)
    except TypeError:
        given = ()
    if len(given) != 3:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape}")
    shape = tuple(validate.integer("input_shape (C, H, W) entry", s, minimum=1) for s in given)
    return _FACTORIES[name](name, shape, num_classes, width)  # type: ignore[arg-type]
