"""Teachers named torchvision:NAME or file.py:FUNCTION: parsing, building, scaling, training
or loading with the user's weights, and the errors where those names enter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from n2n_env import cli
from n2n_env.imported_teachers import build_module, imported_architecture, scale_widths
from n2n_env.stack import EvaluatorSettings
from n2n_env.teacher import get_teacher
from n2n_env.teacher_spec import cache_name, parse_teacher_spec

USER_FILE = """
from torch import nn


def make_model(num_classes, input_shape):
    channels = input_shape[0]
    return nn.Sequential(nn.Conv2d(channels, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 16, num_classes))
"""


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(USER_FILE)
    return path


def test_names_are_parsed_where_they_enter(user_file: Path):
    assert parse_teacher_spec("conv4") is None and parse_teacher_spec("t.pt") is None
    spec = parse_teacher_spec("torchvision:resnet18")
    assert (spec.source, spec.name, spec.slug()) == ("torchvision", "resnet18",
                                                     "torchvision-resnet18")
    spec = parse_teacher_spec(f"{user_file}:make_model")
    assert spec.path == user_file and spec.text == f"{user_file}:make_model"
    for bad, words in ((f"{user_file}:2fast", "not a function name"),
                       ("nowhere/models.py:make", "no Python file"),
                       ("torchvision:res-net", "not a torchvision model name")):
        with pytest.raises(ValueError, match=words):
            parse_teacher_spec(bad)


def test_editing_the_file_makes_a_new_teacher(user_file: Path):
    before = cache_name(f"{user_file}:make_model")
    user_file.write_text(USER_FILE + "\n# a change\n")
    assert cache_name(f"{user_file}:make_model") != before
    assert cache_name("conv4") == "conv4"


def test_the_users_function_gets_the_dataset_shape_and_classes(user_file: Path):
    model = build_module(parse_teacher_spec(f"{user_file}:make_model"), (3, 8, 8), 7)
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 7)
    with pytest.raises(ValueError, match="has no function 'make'; it defines: make_model"):
        build_module(parse_teacher_spec(f"{user_file}:make"), (3, 8, 8), 7)
    with pytest.raises(ValueError, match="unknown torchvision classification model 'vgg1'"):
        build_module(parse_teacher_spec("torchvision:vgg1"), (3, 8, 8), 7)


def test_scaling_keeps_the_input_and_the_classes_and_ties():
    arch = imported_architecture(parse_teacher_spec("torchvision:resnet18"), (3, 32, 32), 10)
    narrow = scale_widths(arch, 0.25)
    assert narrow.input_shape == arch.input_shape and narrow.layers[-1].out == 10
    assert narrow.layers[0].out == 16 and narrow.degenerate_reason() is None
    assert narrow.root == "" and narrow.signature() != arch.signature()
    for group in narrow.width_groups():
        assert len({narrow.slot_width(slot) for slot in group}) == 1
    assert scale_widths(arch, 1.0) is arch


@pytest.mark.usefixtures("one_thread")
def test_a_teacher_with_the_users_weights_is_measured_not_trained(
        user_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("N2N_HOME", str(tmp_path / "home"))
    spec = f"{user_file}:make_model"
    torch.manual_seed(3)
    original = build_module(parse_teacher_spec(spec), (3, 8, 8), 10)
    weights = tmp_path / "weights.pt"
    torch.save(original.state_dict(), weights)
    model, record = get_teacher(spec, "synthetic", weights=weights, progress=False)
    x = torch.randn(4, 3, 8, 8)
    assert torch.allclose(model.eval()(x), original.eval()(x), atol=1e-6)
    assert record.seconds < 30 and record.model_name == spec
    again, _ = get_teacher(spec, "synthetic", weights=weights, progress=False)  # cached
    assert torch.allclose(again.eval()(x), model(x), atol=1e-6)
    settings = EvaluatorSettings(teacher=spec, dataset="synthetic", teacher_weights=str(weights))
    assert settings.checkpoint.exists()
    torch.save({"0.weight": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="does not fit"):
        get_teacher(spec, "synthetic", weights=tmp_path / "foreign.pt", progress=False)


@pytest.mark.usefixtures("one_thread")
def test_a_torchvision_teacher_without_weights_is_trained_at_its_width(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("N2N_HOME", str(tmp_path / "home"))
    model, record = get_teacher("torchvision:resnet18", "synthetic", width=0.125, epochs=1,
                                progress=False)
    expected = imported_architecture(parse_teacher_spec("torchvision:resnet18"), (3, 8, 8),
                                     10, 0.125)
    assert record.architecture == expected == model.architecture
    assert (tmp_path / "home" / "teachers" / "torchvision-resnet18-synthetic-w0.125-s0.pt"
            ).exists()


@pytest.mark.parametrize("argv, words", [
    (["--teacher", "conv4", "--teacher-weights", "w.pt"], "apply to an imported teacher"),
    (["--teacher", "torchvision:resnet18", "--teacher-weights", "missing.pt"],
     "no teacher weights file"),
    (["--teacher", "torchvision:resnet18", "--teacher-width", "0.5", "--teacher-weights",
      "w.pt"], "at width 1"),
    (["--teacher", "nowhere.py:make"], "no Python file"),
    (["--teacher", "vgg"], "torchvision:NAME"),
])
def test_cli_refuses_bad_teachers_before_any_work(argv, words, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.pt").write_bytes(b"")
    assert cli.main(["compress", *argv, "--evaluator", "mock"]) == 2
    assert words in capsys.readouterr().err


@pytest.mark.usefixtures("one_thread")
def test_teacher_train_accepts_an_imported_model(user_file: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("N2N_HOME", str(tmp_path / "home"))
    spec = f"{user_file}:make_model"
    assert cli.main(["teacher", "train", "--model", spec, "--dataset", "synthetic",
                     "--epochs", "1", "--no-progress"]) == 0
    assert f"checkpoint: {tmp_path / 'home' / 'teachers' / cache_name(spec)}" in \
        capsys.readouterr().out
    _, record = get_teacher(spec, "synthetic", train_if_missing=False)  # the same cache
    assert record.model_name == spec


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_worker_processes_train_students_of_a_teacher_with_the_users_weights(
        user_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from n2n_env.stack import BackendSettings, assemble

    monkeypatch.setenv("N2N_HOME", str(tmp_path / "home"))
    spec = f"{user_file}:make_model"
    weights = tmp_path / "weights.pt"
    torch.save(build_module(parse_teacher_spec(spec), (3, 8, 8), 10).state_dict(), weights)
    settings = EvaluatorSettings(teacher=spec, dataset="synthetic", teacher_weights=str(weights),
                                 backend=BackendSettings("processes", 1))
    evaluator = assemble(settings)
    try:
        teacher = evaluator.teacher_architecture
        (evaluation,) = evaluator.evaluate_many([teacher.remove([True] * len(teacher))])
    finally:
        evaluator.close()
    assert evaluation.ok and 0.0 <= evaluation.accuracy <= 1.0


def test_scaling_keeps_grouped_convs_buildable():
    from torch import nn

    from n2n_env.model_import import import_model

    model = nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1,
                          groups=4), nn.ReLU(), nn.Flatten(), nn.Linear(1024, 10))
    arch = import_model(model, (3, 8, 8)).architecture
    for width in (0.3, 0.6, 0.9):
        scaled = scale_widths(arch, width)
        assert scaled.degenerate_reason() is None
        assert scaled.layers[0].out % 4 == 0 and scaled.layers[2].out % 4 == 0


def test_a_run_stores_the_files_it_names_absolute(user_file: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    from n2n_env.run_config import RunConfig

    monkeypatch.chdir(user_file.parent)
    (user_file.parent / "w.pt").write_bytes(b"")
    config = RunConfig(teacher="my_models.py:make_model", teacher_weights="w.pt",
                       evaluator="mock")
    assert config.teacher == f"{user_file}:make_model"
    assert config.teacher_weights == str(user_file.parent / "w.pt")
    assert RunConfig.from_dict(config.to_dict()) == config
