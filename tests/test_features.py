"""Per-layer observations: the paper's raw x_t and the normalised variant."""

from __future__ import annotations

import numpy as np
import pytest

from n2n_env import zoo
from n2n_env.arch import LAYER_KINDS, PAPER_KINDS
from n2n_env.features import FEATURE_NAMES, NORMALIZED_FEATURE_NAMES, layer_features

KIND = {kind: index for index, kind in enumerate(LAYER_KINDS)}
COLUMN = {name: index for index, name in enumerate(FEATURE_NAMES)}
NORM = {name: index for index, name in enumerate(NORMALIZED_FEATURE_NAMES)}


def width_one(name: str):
    shape = (1, 28, 28) if name in ("conv4", "vgg13") else (3, 32, 32)
    return zoo.get(name, shape)


def test_feature_names():
    assert FEATURE_NAMES == ("type", "kernel", "stride", "padding", "outputs", "s_start", "s_end")
    assert NORMALIZED_FEATURE_NAMES[: len(PAPER_KINDS)] == tuple(f"is_{k}" for k in PAPER_KINDS)
    assert len(NORMALIZED_FEATURE_NAMES) == 18  # observation spaces do not grow with new kinds
    assert len(set(NORMALIZED_FEATURE_NAMES)) == len(NORMALIZED_FEATURE_NAMES)


@pytest.mark.parametrize("name", zoo.names())
def test_raw_features_describe_each_layer(name):
    arch = width_one(name)
    raw = arch.features()
    assert raw.shape == (len(arch), 7) and raw.dtype == np.float32
    assert np.array_equal(raw, layer_features(arch))
    for i, (layer, out_shape) in enumerate(zip(arch.layers, arch.output_shapes())):
        row = dict(zip(FEATURE_NAMES, raw[i].tolist()))
        assert row["type"] == KIND[layer.kind], i
        if layer.kind in ("conv", "maxpool", "avgpool"):
            expected = (layer.kernel, layer.stride, layer.padding)
        else:
            expected = (0, 0, 0)
        assert (row["kernel"], row["stride"], row["padding"]) == expected, i
        if layer.kind in ("conv", "linear"):
            assert row["outputs"] == layer.out, i
        else:  # channels of a feature map, features of a flat vector
            assert row["outputs"] == out_shape[0], i


def test_conv_row_of_a_strided_resnet_conv():
    arch = zoo.get("resnet18")
    row = arch.features()[15]  # first conv of stage 2: 128 filters, 3x3, stride 2, pad 1
    assert arch.layers[15].kind == "conv"
    assert row.tolist() == [KIND["conv"], 3, 2, 1, 128, 1, 5]
    assert arch.features()[-1].tolist() == [KIND["linear"], 0, 0, 0, 10, 0, 0]
    flatten = arch.features()[-2]
    assert flatten[COLUMN["type"]] == KIND["flatten"] and flatten[COLUMN["outputs"]] == 512


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "vgg11"])
def test_block_position_columns(name, small_zoo):
    for arch in (width_one(name), small_zoo.arch(name).remove(
            [i not in (3, 4, 16) for i in range(len(small_zoo.arch(name)))])):
        raw = arch.features()
        owner = arch.block_of()
        s_start, s_end = raw[:, COLUMN["s_start"]], raw[:, COLUMN["s_end"]]
        inside = np.array([b is not None for b in owner])
        assert np.array_equal(s_start > 0, inside) and np.array_equal(s_end > 0, inside)
        for i, b in enumerate(owner):
            if b is not None:
                block = arch.blocks[b]
                assert s_start[i] == i - block.start + 1
                assert s_start[i] + s_end[i] == block.end - block.start + 1
        assert inside.any() == bool(arch.blocks) == name.startswith("resnet")


@pytest.mark.parametrize("name", zoo.names())
def test_normalized_features_are_bounded_and_consistent(name):
    arch = width_one(name)
    norm = arch.features(normalized=True)
    assert norm.shape == (len(arch), len(NORMALIZED_FEATURE_NAMES)) and norm.dtype == np.float32
    assert np.isfinite(norm).all()
    assert norm.min() >= 0.0 and norm.max() <= 1.5
    one_hot = norm[:, : len(PAPER_KINDS)]
    assert np.array_equal(one_hot.sum(axis=1), np.ones(len(arch)))
    assert one_hot.argmax(axis=1).tolist() == [KIND[layer.kind] for layer in arch.layers]
    depth = norm[:, NORM["relative_depth"]]
    assert depth[0] == 0.0 and depth[-1] == 1.0 and (np.diff(depth) > 0).all()
    assert norm[:, NORM["removable"]].tolist() == [float(r) for r in arch.removable()]
    in_block = norm[:, NORM["in_block"]]
    assert in_block.tolist() == [float(b is not None) for b in arch.block_of()]
    fractions = norm[:, [NORM["s_start_fraction"], NORM["s_end_fraction"]]]
    assert (fractions[in_block == 0] == 0).all()
    assert (fractions[in_block == 1] > 0).all() and (fractions <= 1).all()
    if name == "resnet34":
        assert len(arch) == 102


def test_normalized_sizes_grow_with_the_raw_sizes():
    arch = zoo.get("vgg19")
    raw, norm = arch.features(), arch.features(normalized=True)
    convs = [i for i, layer in enumerate(arch.layers) if layer.kind == "conv"]
    order = sorted(convs, key=lambda i: raw[i, COLUMN["outputs"]])
    logs = norm[order, NORM["log_outputs"]]
    assert (np.diff(logs) >= 0).all() and logs[-1] > logs[0] > 0
    # The same layer type and size means the same numbers in a 10- or 90-layer network.
    small = zoo.get("vgg11").features(normalized=True)
    assert np.array_equal(small[0, : NORM["in_block"]], norm[0, : NORM["in_block"]])
