"""build_model: random students of every teacher build and run; weight inheritance rules."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn

from n2n_env import zoo
from n2n_env.arch import Architecture, Layer
from n2n_env.build import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def spatial(arch: Architecture) -> list[tuple[int, ...]]:
    return [shape[1:] for shape in arch.output_shapes()]  # type: ignore[index]


def convs(arch: Architecture) -> list[int]:
    return [i for i, layer in enumerate(arch.layers) if layer.kind == "conv"]


def set_row_norms(conv: nn.Module, norms: list[float], seed: int = 0) -> None:
    """Give output channel c of ``conv`` an L1 norm of ``norms[c]`` (up to float rounding)."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(conv.weight.shape, generator=generator)
    weight = weight / weight.abs().flatten(1).sum(1).view(-1, 1, 1, 1)
    with torch.no_grad():
        conv.weight.copy_(weight * torch.tensor(norms).view(-1, 1, 1, 1))


def teacher_rows(student_weight: torch.Tensor, teacher_weight: torch.Tensor) -> list[int]:
    """Which teacher output channel each student output channel is a copy of."""
    rows = []
    for row in student_weight:
        matches = [c for c, t_row in enumerate(teacher_weight) if torch.equal(row, t_row)]
        assert len(matches) == 1, "student channel is not a copy of one teacher channel"
        rows.append(matches[0])
    return rows


# ---------------------------------------------------------------- property (item 1)
@pytest.mark.parametrize("name", zoo.names())
@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_random_students_are_degenerate_with_a_reason_or_build_and_run(name, small_zoo, data):
    size = data.draw(st.sampled_from(small_zoo.sizes), label="input size")
    teacher = small_zoo.arch(name, size)
    removed = teacher.remove(data.draw(small_zoo.keep_masks(teacher), label="keep"))
    reason = removed.degenerate_reason()
    if reason is not None:
        event("degenerate after removal")
        assert isinstance(reason, str) and reason.strip()
        # Inputs this small cannot overflow the classifier limit: the reason is structural.
        with pytest.raises(ValueError, match="degenerate"):
            build_model(removed)
        return
    include_kernels = data.draw(st.booleans(), label="include_kernels")
    count = len(removed.shrink_variables(include_kernels))
    factors = data.draw(small_zoo.factor_lists(count), label="factors")
    student = removed.shrink(factors, include_kernels)
    # Shrinking keeps tied widths equal and feature-map sizes unchanged: never degenerate.
    assert student.degenerate_reason() is None
    assert spatial(student) == spatial(removed)
    assert student.num_params() <= removed.num_params()
    assert student.flops() <= removed.flops()
    for group in student.width_groups():
        assert len({student.slot_width(slot) for slot in group}) == 1, group
    event("built")
    x = small_zoo.batch(student)
    for teacher_model in (None, small_zoo.model(name, size)):
        model = build_model(student, teacher=teacher_model).eval()
        assert n_params(model) == student.num_params()
        with torch.no_grad():
            y = model(x)
        assert y.shape == (2, student.num_classes)
        assert torch.isfinite(y).all()


# ---------------------------------------------------------------- inheritance
@pytest.mark.parametrize("name", zoo.names())
def test_student_identical_to_teacher_inherits_everything(name, small_zoo):
    arch = small_zoo.arch(name)
    teacher = small_zoo.model(name)
    student = arch.remove([True] * len(arch)).shrink([1.0] * len(arch.shrink_variables()))
    model = build_model(student, teacher=teacher).eval()
    x = small_zoo.batch(arch, seed=3)
    with torch.no_grad():
        assert torch.equal(model(x), teacher(x))
    t_state = teacher.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, t_state[key]), key


def test_shrunk_conv_keeps_largest_l1_channels_and_next_conv_takes_the_slice(small_zoo):
    arch = small_zoo.arch("vgg11")
    teacher = small_zoo.random_model(arch, seed=5)
    first, second = convs(arch)[:2]
    set_row_norms(teacher.layers[first], [1, 5, 2, 8, 3, 7, 4, 6])
    student = arch.shrink([0.5] + [1.0] * (len(arch.shrink_variables()) - 1))
    assert student.layers[first].out == 4
    model = build_model(student, teacher=teacher)
    kept = torch.tensor([1, 3, 5, 7])  # norms 5, 8, 7, 6, in increasing channel order
    s_conv, t_conv = model.layers[first], teacher.layers[first]
    assert torch.equal(s_conv.weight, t_conv.weight[kept])
    assert torch.equal(s_conv.bias, t_conv.bias[kept])
    s_norm, t_norm = model.layers[first + 1], teacher.layers[first + 1]
    for buffer in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(getattr(s_norm, buffer), getattr(t_norm, buffer)[kept]), buffer
    assert torch.equal(model.layers[second].weight, teacher.layers[second].weight[:, kept])
    assert torch.equal(model.layers[second].bias, teacher.layers[second].bias)


def test_channel_choice_follows_teacher_weight_updates(small_zoo):
    arch = small_zoo.arch("vgg11")
    teacher = small_zoo.random_model(arch, seed=6)
    student = arch.shrink([0.5] + [1.0] * (len(arch.shrink_variables()) - 1))
    set_row_norms(teacher.layers[0], [8, 7, 6, 5, 1, 2, 3, 4])
    before = teacher_rows(build_model(student, teacher).layers[0].weight, teacher.layers[0].weight)
    set_row_norms(teacher.layers[0], [1, 2, 3, 4, 8, 7, 6, 5])  # "training" changes the norms
    after = teacher_rows(build_model(student, teacher).layers[0].weight, teacher.layers[0].weight)
    assert (before, after) == ([0, 1, 2, 3], [4, 5, 6, 7])


def test_identity_tied_producers_choose_channels_together(small_zoo):
    arch = small_zoo.arch("resnet18")
    teacher = small_zoo.random_model(arch, seed=7)
    group = arch.shrink_variables()[0].slots
    assert group == (("layer", 0), ("layer", 6), ("layer", 12))
    # conv 0 alone prefers channels 0-3, but the group's summed norms prefer 4-7.
    norms = {0: [4.0] * 4 + [1.0] * 4, 6: [1.0] * 4 + [3.0] * 4, 12: [1.0] * 4 + [3.0] * 4}
    for index, row_norms in norms.items():
        set_row_norms(teacher.layers[index], row_norms, seed=index)
    student = arch.shrink([0.5] + [1.0] * (len(arch.shrink_variables()) - 1))
    model = build_model(student, teacher=teacher)
    for _, index in group:
        assert teacher_rows(model.layers[index].weight, teacher.layers[index].weight) == [
            4, 5, 6, 7
        ], index


def test_identity_tied_producers_choose_together_when_tied_to_the_input(small_zoo):
    arch = small_zoo.arch("resnet18")  # input (3, 16, 16), stem conv 0 (8 channels)
    teacher = small_zoo.random_model(arch, seed=0)
    student = arch.remove([i != 0 for i in range(len(arch))])
    # Blocks 0 and 1 now add onto the 3-channel input: their last convs (teacher 6 and 12,
    # one teacher width group) shrink to 3 channels and are summed by the shortcuts.
    assert student.width_groups()[0] == (("input", 0), ("layer", 5), ("layer", 11))
    model = build_model(student, teacher=teacher)
    rows_6 = teacher_rows(model.layers[5].weight, teacher.layers[6].weight)
    rows_12 = teacher_rows(model.layers[11].weight, teacher.layers[12].weight)
    assert rows_6 == rows_12


def test_linear_after_flatten_takes_kept_channels_times_spatial_positions(small_zoo):
    arch = small_zoo.arch("conv4")  # flatten of 16 channels x 2x2 into a 32-unit linear
    teacher = small_zoo.random_model(arch, seed=8)
    assert arch.input_shapes()[16] == (64,) and arch.layers[19].kind == "linear"
    set_row_norms(teacher.layers[11], [float(c % 5 + c / 100) for c in range(16)])
    student = arch.shrink([1.0, 1.0, 1.0, 0.5, 0.5])
    model = build_model(student, teacher=teacher)
    kept = teacher_rows(model.layers[11].weight, teacher.layers[11].weight)
    assert kept == sorted(kept) and len(kept) == 8
    expected_kept = sorted(range(16), key=lambda c: -(c % 5 + c / 100))[:8]
    assert kept == sorted(expected_kept)
    columns = torch.tensor([4 * c + s for c in kept for s in range(4)])
    units = teacher_rows(model.layers[16].weight, teacher.layers[16].weight[:, columns])
    assert len(units) == 16 and units == sorted(units)
    assert torch.equal(model.layers[19].weight, teacher.layers[19].weight[:, units])


def test_layer_after_a_removed_conv_is_reinitialised_others_inherited(small_zoo):
    arch = small_zoo.arch("vgg11")
    teacher = small_zoo.random_model(arch, seed=9)
    with torch.no_grad():  # far outside PyTorch's default init range
        for index in convs(arch):
            teacher.layers[index].weight.mul_(10)
    student = arch.remove([i != 4 for i in range(len(arch))])  # conv 16 -> gone
    model = build_model(student, teacher=teacher)
    # Before the removal: inherited.
    assert torch.equal(model.layers[0].weight, teacher.layers[0].weight)
    assert torch.equal(model.layers[1].running_var, teacher.layers[1].running_var)
    # The batch norm that now follows conv 0 has fresh statistics.
    norm = model.layers[4]
    assert norm.num_features == 8 and int(norm.num_batches_tracked) == 0
    assert torch.equal(norm.running_mean, torch.zeros(8))
    assert torch.equal(norm.running_var, torch.ones(8))
    # The conv whose input changed (teacher layer 8): default PyTorch init, not a copy.
    conv, t_conv = model.layers[7], teacher.layers[8]
    assert conv.weight.shape == (32, 8, 3, 3)
    bound = 1 / math.sqrt(8 * 9)
    assert conv.weight.abs().max() <= bound and conv.bias.abs().max() <= bound
    assert conv.weight.std() > bound / 4
    assert not torch.equal(conv.weight, t_conv.weight[:, :8])
    assert not torch.equal(conv.bias, t_conv.bias)
    # Its batch norm keeps nothing of the teacher's: those scales belong to other features.
    norm, t_norm = model.layers[8], teacher.layers[9]
    assert not torch.equal(t_norm.weight, torch.ones(32))
    assert torch.equal(norm.weight, torch.ones(32)) and torch.equal(norm.bias, torch.zeros(32))
    assert torch.equal(norm.running_var, torch.ones(32)) and int(norm.num_batches_tracked) == 0
    # The conv after it sees its teacher's input channels again: inherited, with its norm.
    assert torch.equal(model.layers[10].weight, teacher.layers[11].weight)
    assert torch.equal(model.layers[11].weight, teacher.layers[12].weight)
    assert torch.equal(model.layers[11].running_mean, teacher.layers[12].running_mean)


def test_layers_fed_by_a_different_producer_of_equal_width_are_reinitialised(small_zoo):
    arch = small_zoo.arch("vgg11")  # conv 8 (16 -> 32), conv 11 (32 -> 32), conv 15 (32 -> 64)
    teacher = small_zoo.random_model(arch, seed=12)
    student = arch.remove([i != 11 for i in range(len(arch))])
    model = build_model(student, teacher=teacher)
    assert torch.equal(model.layers[8].weight, teacher.layers[8].weight)
    norm, t_norm = model.layers[11], teacher.layers[12]  # now normalises conv 8's output
    assert norm.num_features == t_norm.num_features == 32
    assert torch.equal(norm.running_mean, torch.zeros(32)) and int(norm.num_batches_tracked) == 0
    conv, t_conv = model.layers[14], teacher.layers[15]
    assert conv.weight.shape == t_conv.weight.shape
    assert not torch.equal(conv.weight, t_conv.weight)
    assert conv.weight.abs().max() <= 1 / math.sqrt(32 * 9)


def test_kernel_shrink_copies_the_kernel_centre(small_zoo):
    arch = small_zoo.arch("vgg11")
    teacher = small_zoo.random_model(arch, seed=10)
    variables = arch.shrink_variables(include_kernels=True)
    assert [v.kind for v in variables[:2]] == ["width", "kernel"]
    student = arch.shrink([1.0, 0.5] + [1.0] * (len(variables) - 2), include_kernels=True)
    assert (student.layers[0].kernel, student.layers[0].padding) == (1, 0)
    model = build_model(student, teacher=teacher).eval()
    assert torch.equal(model.layers[0].weight, teacher.layers[0].weight[:, :, 1:2, 1:2])
    assert torch.equal(model.layers[0].bias, teacher.layers[0].bias)
    assert torch.equal(model.layers[4].weight, teacher.layers[4].weight)


def test_kernel_shrink_5_to_3_copies_the_centre_and_keeps_the_classifier():
    arch = Architecture(
        (1, 6, 6),
        2,
        (
            Layer("conv", out=3, kernel=5, padding=2, origin=0),
            Layer("flatten", origin=1),
            Layer("linear", out=2, origin=2),
        ),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        teacher = build_model(arch)
    student = arch.shrink([1.0, 0.6], include_kernels=True)
    assert (student.layers[0].kernel, student.layers[0].padding) == (3, 1)
    model = build_model(student, teacher=teacher)
    assert torch.equal(model.layers[0].weight, teacher.layers[0].weight[:, :, 1:4, 1:4])
    assert torch.equal(model.layers[2].weight, teacher.layers[2].weight)


def test_building_a_degenerate_architecture_raises_value_error(small_zoo):
    vgg = small_zoo.arch("vgg11")
    empty = vgg.remove([not r for r in vgg.removable()])
    resnet = small_zoo.arch("resnet18")
    no_body_convs = resnet.remove([i not in (15, 18) for i in range(len(resnet))])
    for arch in (empty, no_body_convs):
        assert arch.degenerate_reason() is not None
        with pytest.raises(ValueError, match="degenerate"):
            build_model(arch)
        with pytest.raises(ValueError, match="degenerate"):
            build_model(arch, teacher=small_zoo.model(arch.name))


def test_teacher_without_architecture_is_a_type_error(small_zoo):
    arch = small_zoo.arch("conv4")
    for teacher in (nn.Linear(2, 2), nn.Sequential(), object()):
        with pytest.raises(TypeError, match="architecture"):
            build_model(arch, teacher=teacher)  # type: ignore[arg-type]
    impostor = nn.Linear(2, 2)
    impostor.architecture = arch.to_json()  # a string, not an Architecture
    with pytest.raises(TypeError):
        build_model(arch, teacher=impostor)


def test_state_dict_round_trips_through_json_architecture(small_zoo, tmp_path: Path):
    arch = small_zoo.arch("resnet18")
    removed = arch.remove([i not in (3, 4, 5, 30, 51) for i in range(len(arch))])
    count = len(removed.shrink_variables(include_kernels=True))
    factors = [small_zoo.levels[i % 10] for i in range(count)]
    student = removed.shrink(factors, include_kernels=True)
    assert student.degenerate_reason() is None
    model = small_zoo.random_model(student, seed=11)
    path = tmp_path / "student.pt"
    torch.save(model.state_dict(), path)
    rebuilt = build_model(Architecture.from_json(student.to_json()))
    rebuilt.load_state_dict(torch.load(path, weights_only=True), strict=True)
    rebuilt.eval()
    x = small_zoo.batch(student, size=3, seed=4)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def _hand_built() -> Architecture:
    """A teacher described by hand, with no origins given (docs/environments.md's tiny)."""
    return Architecture((1, 8, 8), 10, (Layer("conv", out=4, kernel=3, padding=1),
                                        Layer("relu"), Layer("flatten"),
                                        Layer("linear", out=32), Layer("linear", out=10)))


def test_a_hand_built_teachers_keep_everything_student_equals_it(small_zoo):
    tiny = _hand_built()
    assert [layer.origin for layer in tiny.layers] == list(range(len(tiny)))
    teacher = small_zoo.random_model(tiny, seed=3)
    student = tiny.remove([True] * len(tiny))
    assert student.root == tiny.signature()
    model = build_model(student, teacher=teacher).eval()
    for name, value in teacher.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    halved = build_model(tiny.shrink([0.5, 1.0]), teacher=teacher)
    assert torch.equal(halved.layers[4].weight, teacher.layers[4].weight)
    assert halved.layers[3].weight.shape == (32, 128)


def test_a_teacher_of_another_architecture_is_refused_naming_both(small_zoo):
    conv4 = small_zoo.arch("conv4")
    student = conv4.remove([True] * len(conv4))
    narrow = zoo.get("conv4", conv4.input_shape, 10, width=0.25)
    other_shape = zoo.get("conv4", (1, 8, 8), 10, width=0.125)
    for teacher_arch in (small_zoo.arch("vgg11"), narrow, other_shape, _hand_built()):
        with pytest.raises(ValueError, match="is not the teacher") as error:
            build_model(student, teacher=build_model(teacher_arch))
        assert teacher_arch.root_signature() in str(error.value)
        assert conv4.signature() in str(error.value) and "allowed" in str(error.value)


def test_a_teacher_derived_from_the_same_root_is_accepted(small_zoo):
    conv4 = small_zoo.arch("conv4")
    stage1 = conv4.remove([i != 3 for i in range(len(conv4))])
    teacher = small_zoo.random_model(stage1, seed=2)
    student = stage1.shrink([1.0] * len(stage1.shrink_variables()))
    model = build_model(student, teacher=teacher)
    for name, value in teacher.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


@settings(max_examples=15, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_a_teacher_described_by_hand_passes_on_what_the_zoo_one_does(small_zoo, data):
    """Any zoo teacher written out by hand (no origins) is the same root teacher: its
    students are the zoo teacher's and inherit exactly the same weights."""
    import dataclasses

    name = data.draw(st.sampled_from(("conv4", "vgg11", "resnet18")), label="teacher")
    zoo_arch = small_zoo.arch(name)
    by_hand = Architecture(
        zoo_arch.input_shape, zoo_arch.num_classes,
        tuple(dataclasses.replace(layer, origin=-1) for layer in zoo_arch.layers),
        tuple(dataclasses.replace(block, origin=-1) for block in zoo_arch.blocks))
    assert by_hand == zoo_arch and by_hand.signature() == zoo_arch.signature()
    keep = data.draw(small_zoo.keep_masks(by_hand), label="keep")
    student, zoo_student = by_hand.remove(keep), zoo_arch.remove(keep)
    assert student == zoo_student and student.root == zoo_student.root == zoo_arch.signature()
    if student.degenerate_reason() is not None:
        return
    teacher = small_zoo.model(name)
    hand_teacher = build_model(by_hand)
    hand_teacher.load_state_dict(teacher.state_dict())
    built = []
    for arch, model in ((student, hand_teacher), (zoo_student, teacher)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            built.append(build_model(arch, teacher=model).state_dict())
    for key, value in built[1].items():
        assert torch.equal(built[0][key], value), key
