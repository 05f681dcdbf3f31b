"""Architecture: fixed layers, removal and its block repairs, degenerate cases, signatures,
immutability and FLOP counting (the JSON format is in test_arch_json.py)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from n2n_env import zoo
from n2n_env.arch import MAX_CLASSIFIER_INPUTS, Architecture, Block, Layer, Projection
from n2n_env.build import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def keep_all_but(arch: Architecture, *removed: int) -> list[bool]:
    return [i not in removed for i in range(len(arch))]


def runs(arch: Architecture) -> bool:
    model = build_model(arch).eval()
    with torch.no_grad():
        y = model(torch.zeros(2, *arch.input_shape))
    return y.shape == (2, arch.num_classes) and n_params(model) == arch.num_params()


def net(input_shape, *layers: Layer, blocks=()) -> Architecture:
    return Architecture(input_shape, layers[-1].out, layers, blocks)


# ---------------------------------------------------------------- removable / remove
@pytest.mark.parametrize("name", zoo.names())
def test_only_flatten_and_classifier_output_are_fixed(name, small_zoo):
    arch = small_zoo.arch(name)
    fixed = [i for i, removable in enumerate(arch.removable()) if not removable]
    flatten = [i for i, layer in enumerate(arch.layers) if layer.kind == "flatten"]
    assert len(flatten) == 1
    assert fixed == [flatten[0], len(arch) - 1]
    assert len(arch.removable()) == len(arch)
    if name == "conv4":  # the hidden linear layer is removable, the classifier is not
        assert arch.layers[16].kind == "linear" and arch.removable()[16]


def test_remove_rejects_bad_masks_saying_what_is_allowed(small_zoo):
    arch = small_zoo.arch("vgg11")  # 30 layers, flatten 28, classifier 29
    for length in (len(arch) - 1, len(arch) + 1, 0):
        with pytest.raises(ValueError, match=rf"{length} entries.*30 layers"):
            arch.remove([True] * length)
    for bad in (2, -1, 0.5, "yes", None, [1]):
        with pytest.raises(ValueError, match="booleans"):
            arch.remove([bad, *[True] * (len(arch) - 1)])
    for fixed in (28, 29):
        with pytest.raises(ValueError, match=rf"\[{fixed}\] are fixed.*allowed removals: \[0, 1"):
            arch.remove(keep_all_but(arch, fixed))
    with pytest.raises(ValueError, match=r"keeps nothing.*\[28, 29\]"):
        arch.remove([False] * len(arch))


def test_remove_accepts_numpy_and_integer_masks(small_zoo):
    arch = small_zoo.arch("vgg11")
    mask = keep_all_but(arch, 3, 4)
    expected = arch.remove(mask)
    assert arch.remove(np.array(mask)) == expected
    assert arch.remove([int(k) for k in mask]) == expected
    assert len(expected) == len(arch) - 2


@pytest.mark.parametrize("name", zoo.names())
def test_keeping_everything_is_the_identity(name, small_zoo):
    arch = small_zoo.arch(name)
    same = arch.remove([True] * len(arch))
    assert same == arch and same.signature() == arch.signature() and same.name == arch.name


def test_removal_recomputes_later_input_sizes():
    arch = zoo.get("vgg11", (3, 32, 32), width=0.125)
    assert [arch.layers[i].kind for i in (3, 4)] == ["maxpool", "conv"]
    student = arch.remove(keep_all_but(arch, 3))
    assert arch.input_shapes()[4] == (8, 16, 16)
    assert student.input_shapes()[3] == (8, 32, 32)
    flatten = len(student) - 2
    assert student.input_shapes()[flatten] == (64, 2, 2)
    assert student.input_shapes()[-1] == (4 * arch.input_shapes()[-1][0],)
    assert student.num_params() == arch.num_params() + 3 * 64 * 10
    assert runs(student)


# ---------------------------------------------------------------- residual blocks
def test_identity_block_with_no_layers_left_disappears(small_zoo):
    arch = small_zoo.arch("resnet18")
    student = arch.remove(keep_all_but(arch, 3, 4, 5, 6, 7))
    assert [b.origin for b in student.blocks] == [1, 2, 3, 4, 5, 6, 7]
    assert student.blocks[0].start == 4 and student.degenerate_reason() is None
    assert runs(student)


def test_projection_block_with_no_layers_left_becomes_its_shortcut(small_zoo):
    arch = small_zoo.arch("resnet18")
    student = arch.remove(keep_all_but(arch, 15, 16, 17, 18, 19))
    block = student.blocks[2]
    assert (block.origin, block.start, block.end) == (2, 15, 15)
    assert block.projection == arch.blocks[2].projection
    assert ("empty", 2) in student.execution_order()
    assert student.output_shapes()[15] == arch.output_shapes()[20] == (16, 8, 8)
    assert student.degenerate_reason() is None and runs(student)


def test_resnet_without_removable_layers_is_its_projections(small_zoo):
    arch = small_zoo.arch("resnet18")
    student = arch.remove([not r for r in arch.removable()])
    assert [layer.kind for layer in student.layers] == ["flatten", "linear"]
    assert [b.origin for b in student.blocks] == [2, 4, 6]
    assert student.degenerate_reason() is None
    projections = 3 * 16 + 16 * 32 + 32 * 64 + 2 * (16 + 32 + 64)
    assert student.num_params() == projections + 64 * 4 * 10 + 10
    assert runs(student)


def test_first_conv_left_in_a_block_carries_the_block_stride(small_zoo):
    arch = small_zoo.arch("resnet18")  # block 2 = layers 15-19, stride 2, convs 15 and 18
    assert (arch.layers[15].stride, arch.layers[18].stride) == (2, 1)
    student = arch.remove(keep_all_but(arch, 15))
    assert student.layers[17].origin == 18 and student.layers[17].stride == 2
    assert student.degenerate_reason() is None and runs(student)


def test_last_conv_of_an_identity_block_outputs_the_block_input_width(small_zoo):
    arch = small_zoo.arch("resnet18")
    narrow = arch.shrink([1.0, 0.5] + [1.0] * 10)  # block 0's first conv (3) -> 4 channels
    assert narrow.layers[3].out == 4
    student = narrow.remove(keep_all_but(narrow, 6))
    assert student.layers[3].out == 8 == student.layers[0].out
    assert student.degenerate_reason() is None and runs(student)
    stemless = arch.remove(keep_all_but(arch, 0))  # block 0 now adds onto the RGB input
    assert stemless.layers[5].origin == 6 and stemless.layers[5].out == 3
    assert runs(stemless)


def test_projection_follows_the_body_output_width(small_zoo):
    arch = small_zoo.arch("resnet18")
    factors = [0.5 if v.slots == (("layer", 15),) else 1.0 for v in arch.shrink_variables()]
    narrow = arch.shrink(factors)  # conv 15 -> 8 channels, conv 18 and projection stay 16
    student = narrow.remove(keep_all_but(narrow, 18))
    assert student.blocks[2].projection.out == 8
    assert student.layers[23].origin == 24 and student.layers[23].out == 8  # next block's out
    assert student.degenerate_reason() is None and runs(student)


def test_projection_block_whose_body_lost_its_convs_is_degenerate(small_zoo):
    arch = small_zoo.arch("resnet18")
    student = arch.remove(keep_all_but(arch, 15, 18))
    reason = student.degenerate_reason()
    assert reason is not None and re.search(r"\bblock 2\b", reason)
    with pytest.raises(ValueError, match="degenerate"):
        student.num_params()
    with pytest.raises(ValueError, match="degenerate"):
        student.flops()


# ---------------------------------------------------------------- degenerate cases
def test_empty_architecture_is_degenerate(small_zoo):
    arch = small_zoo.arch("vgg11")
    empty = arch.remove([not r for r in arch.removable()])
    assert [layer.kind for layer in empty.layers] == ["flatten", "linear"]
    assert "empty" in empty.degenerate_reason()


def test_batch_norm_in_front_of_the_classifier_is_still_empty(small_zoo):
    arch = small_zoo.arch("conv4")
    keep = [not r or i == 1 for i, r in enumerate(arch.removable())]
    student = arch.remove(keep)
    assert student.layers[0].kind == "bn"
    assert "empty" in student.degenerate_reason()
    keep[0] = True  # one conv left: a real (tiny) network
    assert arch.remove(keep).degenerate_reason() is None


def test_classifier_input_limit():
    arch = zoo.get("vgg11")  # (3, 32, 32): 512 features reach the classifier
    assert arch.input_shapes()[-1] == (512,)
    assert arch.degenerate_reason(max_classifier_inputs=512) is None
    reason = arch.degenerate_reason(max_classifier_inputs=511)
    assert reason is not None and "512" in reason and "511" in reason
    pools = [i for i, layer in enumerate(arch.layers) if layer.kind == "maxpool"]
    no_pools = arch.remove(keep_all_but(arch, *pools))
    assert str(512 * 32 * 32) in no_pools.degenerate_reason()
    assert no_pools.degenerate_reason(max_classifier_inputs=512 * 32 * 32) is None
    for size, degenerate in ((MAX_CLASSIFIER_INPUTS, False), (MAX_CLASSIFIER_INPUTS + 1, True)):
        wide = net((1, 1, size), Layer("conv", 1, 1), Layer("flatten"), Layer("linear", 2))
        assert (wide.degenerate_reason() is not None) == degenerate
        assert wide.degenerate_reason(max_classifier_inputs=size) is None


def test_shape_contract_failures_are_degenerate():
    conv, flatten, linear = Layer("conv", 4, 3, padding=1), Layer("flatten"), Layer("linear", 2)
    conv_after_flatten = net((1, 4, 4), flatten, conv, flatten, linear)
    assert "flat vector" in conv_after_flatten.degenerate_reason()
    no_flatten = net((1, 4, 4), conv, linear)
    assert "feature map" in no_flatten.degenerate_reason()
    widening = net((1, 4, 4), conv, flatten, linear, blocks=(Block(0, 1),))
    assert "block 0" in widening.degenerate_reason()
    projected = net(
        (1, 4, 4), conv, flatten, linear, blocks=(Block(0, 1, projection=Projection(4)),)
    )
    assert projected.degenerate_reason() is None and runs(projected)


def test_feature_map_below_one_pixel_is_degenerate():
    pooled = net((1, 1, 1), Layer("conv", 2, 1), Layer("maxpool", kernel=2, stride=2),
                 Layer("flatten"), Layer("linear", 2))
    assert "below 1x1" in pooled.degenerate_reason()
    assert pooled.output_shapes()[1] is None and pooled.input_shapes()[1] == (2, 1, 1)
    unpadded = net((1, 2, 2), Layer("conv", 2, 3), Layer("flatten"), Layer("linear", 2))
    assert "below 1x1" in unpadded.degenerate_reason()


# ---------------------------------------------------------------- signatures
def test_signature_is_stable_and_name_independent(small_zoo):
    arch = small_zoo.arch("resnet18")
    assert re.fullmatch(r"[0-9a-f]{16}", arch.signature())
    assert arch.signature() == arch.signature() == zoo.get("resnet18", (3, 16, 16),
                                                            width=0.125).signature()
    renamed = dataclasses.replace(arch, name="someone else")
    assert renamed == arch and renamed.signature() == arch.signature()


def test_signature_changes_with_any_layer_or_block_field(small_zoo):
    arch = small_zoo.arch("resnet18")

    def with_layer(index: int, **changes) -> Architecture:
        layers = list(arch.layers)
        layers[index] = dataclasses.replace(layers[index], **changes)
        return dataclasses.replace(arch, layers=tuple(layers))

    def with_block(index: int, **changes) -> Architecture:
        blocks = list(arch.blocks)
        blocks[index] = dataclasses.replace(blocks[index], **changes)
        return dataclasses.replace(arch, blocks=tuple(blocks))

    variants = [
        with_layer(0, out=9), with_layer(0, kernel=5), with_layer(0, stride=2),
        with_layer(0, padding=0), with_layer(0, bias=True), with_layer(0, origin=99),
        with_layer(2, p=0.1), with_layer(1, origin=5), with_block(2, stride=1),
        with_block(0, origin=5), with_block(2, projection=Projection(16, stride=1)),
        with_block(0, end=7), dataclasses.replace(arch, input_shape=(3, 16, 17)),
        arch.remove(keep_all_but(arch, 2)), arch.shrink([0.5] + [1.0] * 11),
    ]
    signatures = {v.signature() for v in variants}
    assert len(signatures) == len(variants) and arch.signature() not in signatures
    assert all(v != arch for v in variants)


def test_architectures_are_immutable_and_hashable(small_zoo):
    arch = small_zoo.arch("resnet18")
    for obj, attribute in ((arch, "num_classes"), (arch, "layers"), (arch.layers[0], "out"),
                           (arch.blocks[0], "start"), (arch.blocks[2].projection, "out")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, attribute, 1)
    twin = dataclasses.replace(zoo.get("resnet18", (3, 16, 16), width=0.125), name="twin")
    table = {arch: "resnet18", small_zoo.arch("vgg11"): "vgg11"}
    assert hash(twin) == hash(arch) and table[twin] == "resnet18"
    assert isinstance(arch.layers, tuple) and isinstance(arch.blocks, tuple)


# ---------------------------------------------------------------- FLOPs and parameters
@pytest.mark.parametrize("name", zoo.names())
def test_flops_scale_with_batch(name):
    arch = zoo.get(name)
    assert arch.flops(batch=2) == 2 * arch.flops() == 2 * arch.flops(batch=1) > 0


def test_hand_computed_flops_and_params():
    # conv 1->2 k3 p1 (bias) on 4x4: 32 outputs x (2*9 - 1 + 1); linear 32->3: 3 x (2*32)
    plain = net((1, 4, 4), Layer("conv", 2, 3, padding=1), Layer("flatten"), Layer("linear", 3))
    assert plain.flops() == 32 * 18 + 3 * 64 == 768
    assert plain.num_params() == (9 * 2 + 2) + (32 * 3 + 3) == 119
    # conv 2->4 no bias: 64 x (2*18 - 1); bn 2/elem; relu 1/elem; pool 2x2 -> 16 x 4;
    # dropout, flatten free; linear 16->5 with bias: 5 x (2*16)
    pooled = net((2, 4, 4), Layer("conv", 4, 3, padding=1, bias=False), Layer("bn"),
                 Layer("relu"), Layer("maxpool", kernel=2, stride=2), Layer("dropout", p=0.5),
                 Layer("flatten"), Layer("linear", 5))
    assert pooled.flops() == 64 * 35 + 2 * 64 + 64 + 16 * 4 + 5 * 32 == 2656
    assert pooled.num_params() == 72 + 8 + 85
    # block: conv 2->3 k3 s2 no bias (12 x 35) + bn (24) + add (12) + projection 1x1 2->3
    # with bn (12 x (2*2 - 1 + 2)); relu 12; linear 12->2 without bias: 2 x (2*12 - 1)
    residual = net((2, 4, 4), Layer("conv", 3, 3, stride=2, padding=1, bias=False),
                   Layer("bn"), Layer("relu"), Layer("flatten"), Layer("linear", 2, bias=False),
                   blocks=(Block(0, 2, stride=2, projection=Projection(3, stride=2)),))
    assert residual.flops() == 420 + 24 + 12 + 60 + 12 + 46 == 574
    assert residual.num_params() == 54 + 6 + (6 + 6) + 24 == 96
    # an empty block is just its projection: no addition
    shortcut = net((2, 4, 4), Layer("flatten"), Layer("linear", 2),
                   blocks=(Block(0, 0, stride=2, projection=Projection(3, stride=2)),))
    assert shortcut.flops() == 60 + 48
    assert shortcut.num_params() == 6 + 6 + 26
    for arch in (plain, pooled, residual, shortcut):
        assert runs(arch)
