"""Stage-2 transition: width groups, shrink variables, factor rounding, kernel shrinking."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from n2n_env import zoo
from n2n_env.arch import Architecture, Layer
from n2n_env.transitions import SHRINK_LEVELS, ShrinkVariable

pytestmark = pytest.mark.usefixtures("one_thread")


def conv_net(width: int, kernel: int = 3, size: int = 9) -> Architecture:
    """conv(width, kernel, 'same' padding) -> flatten -> linear(2) on a 1-channel map."""
    conv = Layer("conv", out=width, kernel=kernel, padding=(kernel - 1) // 2, origin=0)
    return Architecture((1, size, size), 2, (conv, Layer("flatten"), Layer("linear", out=2)))


def ceil_tenths(value: int, level: int) -> int:
    return math.ceil(Fraction(value * level, 10))


# ---------------------------------------------------------------- shrink variables
def test_resnet18_shrink_variables_follow_the_identity_shortcuts():
    arch = zoo.get("resnet18")
    layer = lambda *indices: tuple(("layer", i) for i in indices)  # noqa: E731
    expected = [
        (layer(0, 6, 12), 64),  # stem + both identity blocks of stage 1
        (layer(3), 64),
        (layer(9), 64),
        ((("projection", 2), *layer(18, 24)), 128),  # projection + the stage's block outputs
        (layer(15), 128),
        (layer(21), 128),
        ((("projection", 4), *layer(30, 36)), 256),
        (layer(27), 256),
        (layer(33), 256),
        ((("projection", 6), *layer(42, 48)), 512),
        (layer(39), 512),
        (layer(45), 512),
    ]
    variables = arch.shrink_variables()
    assert [(v.slots, v.value) for v in variables] == expected
    assert {v.kind for v in variables} == {"width"}
    classifier = ("layer", len(arch) - 1)
    assert all(classifier not in v.slots and ("input", 0) not in v.slots for v in variables)
    assert [v.layer for v in variables[:4]] == [0, 3, 9, 18]


def test_resnet34_has_one_variable_per_block_plus_one_per_stage():
    variables = zoo.get("resnet34").shrink_variables()
    assert len(variables) == 16 + 4  # 16 blocks' first convs, 4 tied stage widths
    assert sum(len(v.slots) for v in variables) == 33 + 3  # every conv and projection once


def test_conv4_includes_its_hidden_linear_and_kernels_follow_their_conv():
    arch = zoo.get("conv4", (1, 28, 28))
    variables = arch.shrink_variables()
    assert [(v.slots, v.value) for v in variables] == [
        ((("layer", 0),), 32), ((("layer", 4),), 64), ((("layer", 8),), 128),
        ((("layer", 11),), 128), ((("layer", 16),), 256),
    ]
    with_kernels = arch.shrink_variables(include_kernels=True)
    assert [(v.kind, v.layer, v.value) for v in with_kernels] == [
        ("width", 0, 32), ("kernel", 0, 3), ("width", 4, 64), ("kernel", 4, 3),
        ("width", 8, 128), ("kernel", 8, 3), ("width", 11, 128), ("kernel", 11, 3),
        ("width", 16, 256),
    ]
    assert arch.shrink([1.0] * 4 + [0.3]).layers[16].out == 77  # ceil(76.8)


def test_vgg_has_one_variable_per_conv_and_no_classifier():
    for name, count in (("vgg11", 8), ("vgg13", 10), ("vgg16", 13), ("vgg19", 16)):
        arch = zoo.get(name)
        variables = arch.shrink_variables()
        convs = [("layer", i) for i, layer in enumerate(arch.layers) if layer.kind == "conv"]
        assert [v.slots for v in variables] == [(slot,) for slot in convs]
        assert len(convs) == count


def test_shrink_variable_layer_property():
    assert ShrinkVariable("width", (("projection", 2), ("layer", 18)), 16).layer == 18
    assert ShrinkVariable("width", (("projection", 2),), 16).layer is None


# ---------------------------------------------------------------- shrink
@pytest.mark.parametrize("name", zoo.names())
def test_shrinking_by_one_is_the_identity(name, small_zoo):
    arch = small_zoo.arch(name)
    for include_kernels in (False, True):
        same = arch.shrink([1.0] * len(arch.shrink_variables(include_kernels)), include_kernels)
        assert same == arch and same.signature() == arch.signature()


def test_width_rounding_is_exact_ceiling_of_tenths():
    for width in range(1, 101):
        arch = conv_net(width)
        for level in SHRINK_LEVELS:
            out = arch.shrink([level / 10]).layers[0].out
            assert out == max(1, ceil_tenths(width, level)), (width, level)
    for width, factor, expected in ((10, 0.3, 3), (64, 0.3, 20), (10, 0.7, 7), (20, 0.1, 2),
                                    (1, 0.1, 1), (7, 0.1, 1), (512, 0.9, 461), (3, 0.6, 2)):
        assert conv_net(width).shrink([factor]).layers[0].out == expected


def test_tied_widths_stay_equal_after_shrink(small_zoo):
    arch = small_zoo.arch("resnet34")
    variables = arch.shrink_variables()
    factors = [small_zoo.levels[(3 * i + 1) % 10] for i in range(len(variables))]
    student = arch.shrink(factors)
    for variable, factor in zip(variables, factors):
        widths = {student.slot_width(slot) for slot in variable.slots}
        assert widths == {max(1, ceil_tenths(variable.value, round(factor * 10)))}
    assert student.degenerate_reason() is None and student != arch


@pytest.mark.parametrize("bad", [0.15, 0, 0.0, 1.1, -0.5, 0.05, 10, 2.0])
def test_invalid_factor_is_rejected_naming_the_allowed_set(bad, small_zoo):
    arch = small_zoo.arch("vgg11")
    with pytest.raises(ValueError, match=r"0\.1, 0\.2, \.\.\., 1\.0"):
        arch.shrink([bad] + [1.0] * (len(arch.shrink_variables()) - 1))


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_non_finite_factor_is_rejected_naming_the_allowed_set(bad, small_zoo):
    arch = small_zoo.arch("vgg11")
    with pytest.raises(ValueError, match=r"0\.1, 0\.2, \.\.\., 1\.0"):
        arch.shrink([bad] + [1.0] * (len(arch.shrink_variables()) - 1))


def test_wrong_factor_count_is_rejected(small_zoo):
    arch = small_zoo.arch("vgg11")
    count = len(arch.shrink_variables())
    cases = ((count - 1, False), (count + 1, False), (count, True), (0, False))
    for wrong, include_kernels in cases:
        with pytest.raises(ValueError, match=rf"expected \d+ shrink factors.*got {wrong}"):
            arch.shrink([1.0] * wrong, include_kernels)


def test_accepts_decimal_spellings_of_the_levels():
    arch = conv_net(10)
    assert arch.shrink([0.1 + 0.2]).layers[0].out == 3
    assert arch.shrink([3 / 10]).layers[0].out == arch.shrink([0.3]).layers[0].out == 3


# ---------------------------------------------------------------- kernels
@pytest.mark.parametrize("level", SHRINK_LEVELS)
def test_kernel_3_becomes_1_with_no_padding_at_or_below_0_6(level, small_zoo):
    arch = small_zoo.arch("vgg11")
    variables = arch.shrink_variables(include_kernels=True)
    factors = [level / 10 if v.kind == "kernel" else 1.0 for v in variables]
    student = arch.shrink(factors, include_kernels=True)
    expected = (1, 0) if level <= 6 else (3, 1)
    for i, layer in enumerate(student.layers):
        if layer.kind == "conv":
            assert (layer.kernel, layer.padding) == expected, i
            assert layer.out == arch.layers[i].out and layer.stride == arch.layers[i].stride
    assert [s[1:] for s in student.output_shapes()] == [s[1:] for s in arch.output_shapes()]
    assert student.num_params() < arch.num_params() or level > 6


@pytest.mark.parametrize("kernel", [3, 5, 7, 9, 11])
def test_kernel_becomes_largest_odd_not_above_ceiling_keeping_the_map_size(kernel):
    arch = conv_net(4, kernel=kernel, size=13)
    for level in SHRINK_LEVELS:
        student = arch.shrink([1.0, level / 10], include_kernels=True)
        ceiling = ceil_tenths(kernel, level)
        expected = ceiling if ceiling % 2 else ceiling - 1
        layer = student.layers[0]
        assert layer.kernel == max(1, expected), (kernel, level)
        assert layer.padding == (layer.kernel - 1) // 2
        assert student.output_shapes()[0] == arch.output_shapes()[0] == (4, 13, 13)


# ---------------------------------------------------------------- property
@pytest.mark.parametrize("name", zoo.names())
@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_width_groups_of_valid_students_share_one_width(name, small_zoo, data):
    student = small_zoo.arch(name).remove(data.draw(small_zoo.keep_masks(small_zoo.arch(name))))
    if student.degenerate_reason() is not None:
        return
    for shrunk in (False, True):
        if shrunk:
            count = len(student.shrink_variables())
            student = student.shrink(data.draw(small_zoo.factor_lists(count)))
        groups = student.width_groups()
        members = [slot for group in groups for slot in group]
        assert len(members) == len(set(members)) == len(student.slot_order())
        for group in groups:
            assert len({student.slot_width(slot) for slot in group}) == 1, group
        variables = student.shrink_variables()
        fixed = [g for g in groups if ("input", 0) in g or ("layer", len(student) - 1) in g]
        assert sorted(v.slots for v in variables) == sorted(g for g in groups if g not in fixed)


def test_a_repeated_decision_returns_the_remembered_student(monkeypatch):
    """Environments replay episodes: the same decisions give the very same student, built
    once; invalid decisions still raise; the memory is bounded and never pickled."""
    import pickle

    from n2n_env import transitions, zoo

    teacher = zoo.get("conv3", (1, 16, 16))
    keep = [True] * len(teacher.layers)
    keep[5] = False
    first = teacher.remove(keep)
    assert teacher.remove(list(keep)) is first
    assert teacher.shrink([0.5] * 4) is teacher.shrink([0.5, 0.5, 0.5, 0.5])
    assert first.to_json() == json.dumps(first.to_dict(), sort_keys=True)
    with pytest.raises(ValueError, match="fixed"):
        teacher.remove([*keep[:-1], False])
    with pytest.raises(ValueError, match="not allowed"):
        teacher.shrink([0.55, 0.5, 0.5, 0.5])
    restored = pickle.loads(pickle.dumps(teacher))
    assert restored == teacher and "_derived" not in restored.__dict__
    monkeypatch.setattr(transitions, "MAX_DERIVED_LAYERS", 3 * 14)
    fresh = zoo.get("conv3", (1, 16, 16))
    for index in range(6):  # students of 14 layers: three fit
        mask = [True] * len(fresh.layers)
        mask[index] = False
        fresh.remove(mask)
        assert len([key for key in fresh._derived if key[0] == "remove"]) <= 3
