"""Teacher checkpoints (save, load, refusals) and the cache directory (CPU, synthetic data)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from n2n_env import checkpoints, data, recipes, zoo
from n2n_env.build import build_model

WIDTH = 0.25


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def arch(synthetic: data.Dataset):
    return zoo.get("conv4", input_shape=synthetic.input_shape,
                   num_classes=synthetic.num_classes, width=WIDTH)


@pytest.fixture(scope="module")
def model(arch):
    """An untrained network is enough to test storage: weights are weights."""
    torch.manual_seed(0)
    return build_model(arch).eval()


def _record(arch, dataset: data.Dataset) -> checkpoints.TeacherRecord:
    return checkpoints.TeacherRecord(
        architecture=arch, dataset=dataset.name, dataset_fingerprint=dataset.fingerprint,
        val_accuracy=0.9, test_accuracy=0.8, recipe=recipes.recipe_for("synthetic"),
        model_name="conv4", width=WIDTH, seed=0, seconds=1.0,
    )


# ------------------------------------------------------------------ checkpoints


def test_save_load_round_trip_gives_identical_logits(
    arch, synthetic, model, tmp_path: Path
) -> None:
    path = tmp_path / "t.pt"
    record = _record(arch, synthetic)
    assert checkpoints.save_teacher(path, model, record) == path
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw["architecture"], str) and isinstance(raw["recipe"], dict)
    assert {"state_dict", "val_accuracy", "test_accuracy", "dataset", "dataset_fingerprint",
            "format_version"} <= raw.keys()
    model, loaded = checkpoints.load_teacher(path, architecture=arch,
                                             dataset_fingerprint=synthetic.fingerprint)
    assert loaded == record
    assert not model.training
    assert model.architecture == arch
    with torch.no_grad():
        assert torch.equal(model(synthetic.test.x), model(synthetic.test.x))


def test_load_refuses_another_architecture(arch, synthetic, model, tmp_path) -> None:
    path = checkpoints.save_teacher(tmp_path / "t.pt", model,
                                    _record(arch, synthetic))
    wider = zoo.get("conv4", input_shape=synthetic.input_shape, num_classes=10, width=0.5)
    with pytest.raises(checkpoints.CheckpointError) as info:
        checkpoints.load_teacher(path, architecture=wider)
    message = str(info.value)
    assert "architecture differs" in message
    assert wider.signature() in message and arch.signature() in message
    assert "retrain" in message and str(path) in message


def test_load_refuses_another_dataset_fingerprint(
    arch, synthetic, model, tmp_path
) -> None:
    path = checkpoints.save_teacher(tmp_path / "t.pt", model,
                                    _record(arch, synthetic))
    other = data.load("synthetic", seed=1)
    assert other.fingerprint != synthetic.fingerprint
    with pytest.raises(checkpoints.CheckpointError) as info:
        checkpoints.load_teacher(path, architecture=arch, dataset_fingerprint=other.fingerprint)
    message = str(info.value)
    assert "dataset fingerprint differs" in message
    assert other.fingerprint in message and synthetic.fingerprint in message
    assert "architecture differs" not in message


def test_load_of_missing_or_garbage_files_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pt"
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        checkpoints.load_teacher(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(checkpoints.CheckpointError, match=r"garbage\.pt"):
        checkpoints.load_teacher(garbage)
    not_ours = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, not_ours)
    with pytest.raises(checkpoints.CheckpointError, match="not an n2n teacher"):
        checkpoints.load_teacher(not_ours)


def test_load_never_unpickles_arbitrary_objects(tmp_path: Path) -> None:
    pickled = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a whole pickled module, not weights
    with pytest.raises(checkpoints.CheckpointError, match="could not read"):
        checkpoints.load_teacher(pickled)


# ------------------------------------------------------------------ cache directory


def test_n2n_home_follows_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("N2N_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert checkpoints.n2n_home() == tmp_path / "xdg" / "n2n"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert checkpoints.n2n_home() == tmp_path / "user" / ".cache" / "n2n"
    monkeypatch.setenv("N2N_HOME", str(tmp_path / "custom"))
    assert checkpoints.n2n_home() == tmp_path / "custom"
    path = checkpoints.teacher_path("conv4", "digits", 0.5, 3)
    assert path.parent == tmp_path / "custom" / "teachers"
    assert path != checkpoints.teacher_path("conv4", "digits", 0.5, 4)
    assert path != checkpoints.teacher_path("conv4", "digits", 1.0, 3)
