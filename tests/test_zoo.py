"""The teacher zoo: names, Table 1 parameter counts, argument checks, width and small inputs."""

from __future__ import annotations

import math

import pytest
import torch

from n2n_env import zoo
from n2n_env.build import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ("conv4", "vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet34", "conv3")
CONVS = {"conv4": 4, "vgg11": 8, "vgg13": 10, "vgg16": 13, "vgg19": 16,
         "resnet18": 17, "resnet34": 33, "conv3": 3}


def kinds(arch, kind: str) -> list[int]:
    return [i for i, layer in enumerate(arch.layers) if layer.kind == kind]


def test_names():
    assert zoo.names() == NAMES
    for name in NAMES:
        arch = zoo.get(name)
        assert arch.name == name and len(kinds(arch, "conv")) == CONVS[name]
        assert arch.degenerate_reason() is None


@pytest.mark.parametrize(
    ("name", "input_shape", "paper_params"),
    [
        ("vgg13", (1, 28, 28), 9.4e6),
        ("vgg19", (3, 32, 32), 20.2e6),
        ("resnet18", (3, 32, 32), 11.17e6),
        ("resnet34", (3, 32, 32), 21.28e6),
    ],
)
def test_parameter_counts_match_table_1(name, input_shape, paper_params):
    arch = zoo.get(name, input_shape, num_classes=10)
    assert arch.num_params() == pytest.approx(paper_params, rel=0.02)
    model = build_model(arch)
    assert arch.num_params() == sum(p.numel() for p in model.parameters())


def test_conv3_spans_the_benchmark_spaces():
    """N2N-Bench needs 2^12 to 2^14 keep masks and exactly 4 shrink variables."""
    conv3 = zoo.get("conv3", (1, 28, 28))
    assert sum(conv3.removable()) == 13
    assert len(conv3.shrink_variables()) == 4
    assert "dropout" not in [layer.kind for layer in conv3.layers]
    assert conv3.input_shapes()[12] == (32 * 7 * 7,)


def test_structure_of_the_teachers():
    resnet34 = zoo.get("resnet34")
    assert len(resnet34) == 102 and len(resnet34.blocks) == 16
    assert [b.projection is not None for b in resnet34.blocks].count(True) == 3
    resnet18 = zoo.get("resnet18")
    assert len(resnet18) == 54 and len(resnet18.blocks) == 8
    assert kinds(resnet18, "avgpool") == [51] and resnet18.input_shapes()[52] == (512, 1, 1)
    conv4 = zoo.get("conv4", (1, 28, 28))
    assert [layer.kind for layer in conv4.layers[-5:]] == [
        "flatten", "linear", "relu", "dropout", "linear"]
    assert conv4.layers[-2].p == 0.5
    for name in NAMES:  # origins number the teacher's own layers and blocks
        arch = zoo.get(name)
        assert [layer.origin for layer in arch.layers] == list(range(len(arch)))
        assert [block.origin for block in arch.blocks] == list(range(len(arch.blocks)))


def test_vgg_drops_poolings_that_would_go_below_one_pixel():
    assert len(kinds(zoo.get("vgg13", (1, 28, 28)), "maxpool")) == 4
    assert len(kinds(zoo.get("vgg13", (3, 32, 32)), "maxpool")) == 5
    assert len(kinds(zoo.get("vgg19", (3, 8, 8)), "maxpool")) == 3
    assert zoo.get("vgg13", (1, 28, 28)).input_shapes()[-1] == (512,)


def test_unknown_name_lists_the_allowed_names():
    with pytest.raises(ValueError, match="unknown teacher 'vgg12'") as error:
        zoo.get("vgg12")
    assert all(name in str(error.value) for name in NAMES)


@pytest.mark.parametrize("width", [0, -0.5, math.nan, -math.inf])
def test_bad_width_is_rejected(width):
    with pytest.raises(ValueError, match="width must be a finite number > 0"):
        zoo.get("vgg11", width=width)


@pytest.mark.parametrize("shape", [(3, 32), (3, 32, 32, 1), (0, 32, 32), (3, -1, 32), ()])
def test_bad_input_shape_is_rejected(shape):
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        zoo.get("resnet18", shape)


def test_bad_class_count_is_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        zoo.get("conv4", num_classes=0)
    assert zoo.get("conv4", num_classes=100).layers[-1].out == 100


@pytest.mark.parametrize("name", NAMES)
def test_width_scales_every_channel_count(name):
    full, half = zoo.get(name), zoo.get(name, width=0.5)
    assert len(full) == len(half) and len(full.blocks) == len(half.blocks)
    for big, small in zip(full.layers[:-1], half.layers[:-1]):
        assert small.out == round(big.out * 0.5) and small.kernel == big.kernel
    assert half.layers[-1].out == full.layers[-1].out == 10
    for big, small in zip(full.blocks, half.blocks):
        if big.projection is not None:
            assert small.projection.out == big.projection.out // 2
    assert half.num_params() < full.num_params() / 3
    tiny = zoo.get(name, width=1e-4)
    assert {layer.out for layer in tiny.layers[:-1] if layer.out} == {1}
    assert tiny.degenerate_reason() is None
    assert zoo.get(name, width=2.0).layers[0].out == 2 * full.layers[0].out
    odd = zoo.get(name, width=0.7)  # nearest whole channel count: 64 * 0.7 = 44.8 -> 45
    for big, small in zip(full.layers[:-1], odd.layers[:-1]):
        assert abs(small.out - 0.7 * big.out) <= 0.5


@pytest.mark.parametrize("name", NAMES)
def test_small_inputs_are_accepted(name):
    assert zoo.get(name, (3, 8, 8)).degenerate_reason() is None
    assert zoo.get(name, (1, 8, 12)).degenerate_reason() is None
    arch = zoo.get(name, (3, 8, 8), width=0.25)
    model = build_model(arch).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 10)


def test_get_is_deterministic():
    for name in NAMES:
        assert zoo.get(name).signature() == zoo.get(name).signature()
    assert zoo.get("vgg11") != zoo.get("vgg11", width=0.5)
