"""import_model: torchvision models and Sequentials become architectures that compute the
same function, the new layer kinds follow the removal and shrink rules, and what cannot be
imported is refused naming the node."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

import n2n_env
from n2n_env.arch import Architecture, Layer
from n2n_env.build import N2NNet, SubsampledConv2d, build_model
from n2n_env.model_import import UnsupportedModelError, import_model

SHAPE = (3, 32, 32)


def _randomize_norms(model: nn.Module) -> nn.Module:
    """Running statistics and scales away from 0/1, so eval-mode batch norm matters."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            size = module.num_features
            module.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(size, generator=generator) - 0.5)
    return model


def _max_difference(model: nn.Module, imported: N2NNet, shape=SHAPE) -> float:
    model.eval()
    imported.eval()
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return (model(x) - imported(x)).abs().max().item()


@pytest.mark.parametrize("name, options, blocks", [
    ("resnet18", {}, 8), ("resnet34", {}, 16), ("resnet50", {}, 16),
    ("mobilenet_v2", {"width_mult": 0.5}, 10),
])
def test_torchvision_models_import_with_equal_outputs(name, options, blocks):
    torch.manual_seed(0)
    model = _randomize_norms(torchvision.models.get_model(name, num_classes=10, **options))
    imported = import_model(model, SHAPE, check=False)
    arch = imported.architecture
    assert len(arch.blocks) == blocks
    assert arch.num_params() == sum(p.numel() for p in model.parameters())
    assert _max_difference(model, imported.build()) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg11", "vgg11_bn"])
def test_torchvision_vgg_imports_with_equal_outputs(name):
    torch.manual_seed(0)  # torchvision's vgg11(_bn) without its second, slow initialisation
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["A"],
                                                  batch_norm=name.endswith("_bn"))
    model = _randomize_norms(torchvision.models.VGG(features, num_classes=10,
                                                    init_weights=False))
    imported = import_model(model, SHAPE, check=False)
    kinds = [layer.kind for layer in imported.architecture.layers]
    assert kinds.count("bn") == (8 if name.endswith("_bn") else 0)
    assert "adaptive_avgpool" in kinds
    assert _max_difference(model, imported.build()) <= 1e-5


def test_resnet50_bottleneck_keeps_its_stride_on_the_3x3_until_that_is_removed():
    arch = import_model(torchvision.models.resnet50(num_classes=10), SHAPE).architecture
    block = next(b for b in arch.blocks if b.stride == 2)
    convs = [i for i in range(block.start, block.end) if arch.layers[i].kind == "conv"]
    assert [arch.layers[i].stride for i in convs] == [1, 2, 1]
    assert arch.remove([True] * len(arch)).layers == arch.layers
    keep = [i != convs[1] for i in range(len(arch))]
    student = arch.remove(keep)
    shifted = [i if i < convs[1] else i - 1 for i in (convs[0], convs[2])]
    assert [student.layers[i].stride for i in shifted] == [2, 1]
    assert student.degenerate_reason() is None


def test_mobilenet_depthwise_width_follows_its_input():
    arch = import_model(torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.5),
                        SHAPE).architecture
    depthwise = [i for i, layer in enumerate(arch.layers) if layer.depthwise]
    assert len(depthwise) == 17
    target = depthwise[3]
    expand = max(i for i in range(target) if arch.layers[i].kind == "conv")
    student = arch.remove([i != expand for i in range(len(arch))])
    source = student.input_slots()[("layer", target - 1)]
    assert student.layers[target - 1].out == student.slot_width(source)
    assert student.degenerate_reason() is None
    tied = [group for group in arch.width_groups() if ("layer", target) in group]
    assert ("layer", expand) in tied[0]


def _narrow(name: str, **options) -> Architecture:
    torch.manual_seed(0)
    arch = import_model(torchvision.models.get_model(name, num_classes=10, **options),
                        (3, 16, 16)).architecture
    return arch.shrink([0.1] * len(arch.shrink_variables()))


NARROW = {name: _narrow(name, **options) for name, options in
          (("resnet50", {}), ("mobilenet_v2", {"width_mult": 0.25}))}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(NARROW)), data=st.data())
def test_every_removal_and_shrink_is_degenerate_or_counts_its_params(name, data):
    teacher = NARROW[name]
    drop = data.draw(st.floats(0.0, 1.0))
    keep = [(not removable) or data.draw(st.floats(0, 1)) >= drop
            for removable in teacher.removable()]
    student = teacher.remove(keep)
    if student.degenerate_reason() is None and data.draw(st.booleans()):
        levels = data.draw(st.lists(st.integers(1, 10), min_size=len(
            student.shrink_variables()), max_size=len(student.shrink_variables())))
        student = student.shrink([level / 10 for level in levels])
    if student.degenerate_reason() is not None:
        return
    model = build_model(student, build_model(teacher))
    assert sum(p.numel() for p in model.parameters()) == student.num_params()
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_a_student_that_keeps_everything_computes_the_imported_teacher():
    teacher = build_model(NARROW["mobilenet_v2"])
    _randomize_norms(teacher)
    student = build_model(NARROW["mobilenet_v2"].remove([True] * len(NARROW["mobilenet_v2"])),
                          teacher)
    assert _max_difference(teacher, student, (3, 16, 16)) == 0.0


class _Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding="same", groups=2)
        self.fc = nn.Linear(8 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.conv(x))
        x = torch.relu(self.grouped(x)) + x
        x = F.adaptive_avg_pool2d(x, 2)
        return self.fc(torch.flatten(x, 1))


def test_sequentials_and_functional_calls_import():
    sequential = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                               nn.AvgPool2d(2, 1), nn.Dropout(0.25), nn.Flatten(), nn.Linear(64, 3))
    imported = import_model(_randomize_norms(sequential), (1, 12, 12))
    assert [layer.kind for layer in imported.architecture.layers] == [
        "conv", "bn", "relu", "maxpool", "avgpool", "dropout", "flatten", "linear"]
    assert imported.architecture.layers[5].p == 0.25
    functional = import_model(_Functional(), (3, 8, 8)).architecture
    assert [layer.kind for layer in functional.layers] == [
        "conv", "relu6", "conv", "relu", "adaptive_avgpool", "flatten", "linear"]
    assert functional.layers[2].groups == 2 and len(functional.blocks) == 1
    assert n2n_env.import_model is import_model


def test_grouped_conv_widths_that_break_the_groups_are_degenerate():
    arch = import_model(_Functional(), (3, 8, 8)).architecture
    (variable,) = arch.shrink_variables()  # the shortcut ties the grouped conv to the first
    assert variable.slots == (("layer", 0), ("layer", 2))
    assert arch.shrink([0.4]).degenerate_reason() is None  # 8 -> ceil(3.2) = 4
    assert "multiples of 2" in arch.shrink([0.3]).degenerate_reason()  # 8 -> ceil(2.4) = 3


class _Concatenates(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(8 * 36, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.fc(torch.flatten(torch.cat([y, y], 1), 1))


class _Residual(nn.Module):
    """conv -> (body conv + shortcut) -> relu -> linear; the shortcut is nn.Identity, or a
    1x1 conv followed by ``norm``; ``alpha`` scales the shortcut through torch.add."""

    def __init__(self, norm: nn.Module | None, alpha: float | None = None) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)
        self.shortcut = (nn.Identity() if norm is None
                         else nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), norm))
        self.alpha = alpha
        self.fc = nn.Linear(4 * 64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.alpha is None:
            x = self.body(x) + self.shortcut(x)
        else:
            x = torch.add(self.body(x), self.shortcut(x), alpha=self.alpha)
        return self.fc(torch.flatten(F.relu(x), 1))


def test_an_identity_module_is_an_identity_shortcut():
    arch = import_model(_Residual(None), (3, 8, 8)).architecture
    (block,) = arch.blocks
    assert block.projection is None and [arch.layers[i].kind for i in range(
        block.start, block.end)] == ["conv"]
    projected = import_model(_Residual(nn.BatchNorm2d(4)), (3, 8, 8)).architecture
    assert projected.blocks[0].projection is not None


@pytest.mark.parametrize("model, shape, words", [
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(4 * 36, 2)),
     (3, 8, 8), ["'_1'", "GELU", "supported: nn.Conv2d"]),
    (_Concatenates(), (3, 8, 8), ["'cat'", "call_function cat", "supported:"]),
    (nn.Sequential(nn.Conv2d(3, 4, 3, dilation=2), nn.Flatten(), nn.Linear(16, 2)), (3, 8, 8),
     ["dilation (2, 2)"]),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 2), nn.Softmax(1)),
     (3, 8, 8), ["Softmax"]),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 2)), (1, 8, 8),
     ["node '_0'", "expects 3 input channels but receives 1"]),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(),
                   nn.Linear(4 * 9, 2)), (3, 8, 8), ["node '_1'", "pooling with ceil_mode"]),
    (_Residual(nn.BatchNorm2d(4, eps=1e-3)), (3, 8, 8), ["neither the identity nor a 1x1"]),
    (_Residual(None, alpha=2.0), (3, 8, 8), ["not body + shortcut"]),
])
def test_unsupported_models_are_refused_naming_the_node(model, shape, words):
    with pytest.raises(UnsupportedModelError) as error:
        import_model(model, shape)
    assert all(word in str(error.value) for word in words), str(error.value)


def test_narrow_strided_1x1_convs_use_the_safe_subsampling_kernel():
    arch = Architecture((3, 8, 8), 2, (Layer("conv", out=4, kernel=1, stride=2),
                                       Layer("flatten"), Layer("linear", out=2)))
    model = build_model(arch)
    assert type(model.layers[0]) is SubsampledConv2d
    x = torch.randn(5, 3, 8, 8)
    reference = F.conv2d(x, model.layers[0].weight, model.layers[0].bias, 2)
    assert torch.allclose(model.layers[0](x), reference, atol=1e-6)
    wide = dataclasses.replace(arch, input_shape=(8, 8, 8))
    assert type(build_model(wide).layers[0]) is nn.Conv2d


def test_new_layer_fields_round_trip_and_leave_old_signatures_alone():
    layer = Layer("conv", out=4, kernel=3, padding=1)
    assert "groups" not in Architecture(
        (3, 8, 8), 2, (layer, Layer("flatten"), Layer("linear", out=2))).to_dict()["layers"][0]
    arch = import_model(torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25),
                        SHAPE).architecture
    again = Architecture.from_json(arch.to_json())
    assert again == arch and again.signature() == arch.signature()
    with pytest.raises(ValueError, match="adaptive_avgpool needs output_size"):
        Layer("adaptive_avgpool")
    with pytest.raises(ValueError, match="conv layers only"):
        Layer("linear", out=3, groups=2)
