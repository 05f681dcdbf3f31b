"""Teacher training, resuming and the cached teacher (CPU, synthetic data)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
import torch

from n2n_env import checkpoints, data, recipes, teacher, zoo

WIDTH = 0.25
EPOCHS = 3


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def arch(synthetic: data.Dataset):
    return zoo.get("conv4", input_shape=synthetic.input_shape,
                   num_classes=synthetic.num_classes, width=WIDTH)


@pytest.fixture(scope="module")
def recipe() -> recipes.Recipe:
    return recipes.recipe_for("synthetic").with_epochs(EPOCHS)


@pytest.fixture(scope="module")
def trained(arch, synthetic, recipe) -> teacher.TrainedTeacher:
    rng_before = torch.get_rng_state()
    result = teacher.train_teacher(arch, synthetic, recipe, device="cpu", seed=0, progress=False)
    assert torch.equal(torch.get_rng_state(), rng_before), "training changed the global RNG"
    return result


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("N2N_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _record(
    arch, dataset: data.Dataset, recipe: recipes.Recipe, result
) -> checkpoints.TeacherRecord:
    return checkpoints.TeacherRecord(
        architecture=arch, dataset=dataset.name, dataset_fingerprint=dataset.fingerprint,
        val_accuracy=result.val_accuracy, test_accuracy=result.test_accuracy, recipe=recipe,
        model_name="conv4", width=WIDTH, seed=0, seconds=result.seconds,
    )


# ------------------------------------------------------------------ device helpers



# ------------------------------------------------------------------ training


def test_training_beats_chance_by_a_wide_margin(trained, synthetic) -> None:
    assert trained.val_accuracy >= 0.4 and trained.test_accuracy >= 0.4  # chance is 0.1
    assert trained.epochs == EPOCHS and trained.seconds > 0
    assert not trained.model.training
    assert teacher.evaluate_accuracy(trained.model, synthetic.test) == trained.test_accuracy


def test_evaluate_accuracy_counts_across_batches(synthetic) -> None:
    class ConstantClass(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.logits = torch.nn.Parameter(torch.eye(10)[3])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.logits.expand(x.shape[0], 10)

    model = ConstantClass().train()
    expected = (synthetic.val.y == 3).float().mean().item()
    assert teacher.evaluate_accuracy(model, synthetic.val, batch_size=7) == pytest.approx(expected)
    assert model.training, "evaluate_accuracy must restore the train/eval mode"


def test_training_is_reproducible_for_a_seed(arch, synthetic, trained) -> None:
    recipe = recipes.recipe_for("synthetic").with_epochs(1)
    a = teacher.train_teacher(arch, synthetic, recipe, seed=5, device="cpu", progress=False)
    b = teacher.train_teacher(arch, synthetic, recipe, seed=5, device="cpu", progress=False)
    c = teacher.train_teacher(arch, synthetic, recipe, seed=6, device="cpu", progress=False)
    sa, sb, sc = (m.model.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(
    arch, synthetic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = recipes.Recipe(epochs=3, lr=0.05, batch_size=64, milestones=(2,), augment=True)
    full = teacher.train_teacher(arch, synthetic, recipe, seed=1, device="cpu", progress=False)
    partial = tmp_path / "run.pt.partial"
    real_eval, epochs_run = teacher.evaluate_accuracy, []

    def interrupt_in_second_epoch(model, split, *args, **kwargs):
        if len(epochs_run) == 2:
            raise KeyboardInterrupt
        return real_eval(model, split, *args, **kwargs)

    real_epoch = teacher._train_epoch

    def counting_epoch(*args, **kwargs):
        epochs_run.append(1)
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(teacher, "_train_epoch", counting_epoch)
    with monkeypatch.context() as m:
        m.setattr(teacher, "evaluate_accuracy", interrupt_in_second_epoch)
        with pytest.raises(KeyboardInterrupt):
            teacher.train_teacher(arch, synthetic, recipe, seed=1, device="cpu", progress=False,
                                  resume_path=partial)
    saved = torch.load(partial, weights_only=True)
    assert saved["epoch"] == 1
    epochs_run.clear()
    resumed = teacher.train_teacher(arch, synthetic, recipe, seed=1, device="cpu", progress=False,
                                    resume_path=partial)
    assert len(epochs_run) == 2, "the resumed run should train only the remaining epochs"
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.test_accuracy == full.test_accuracy


def test_a_partial_checkpoint_from_another_run_is_ignored(
    arch, synthetic, tmp_path: Path
) -> None:
    partial = tmp_path / "run.pt.partial"
    one = recipes.recipe_for("synthetic").with_epochs(1)
    teacher.train_teacher(arch, synthetic, one, seed=0, device="cpu", progress=False,
                          resume_path=partial)
    assert torch.load(partial, weights_only=True)["epoch"] == 1
    other = dataclasses.replace(one, lr=0.02)
    with pytest.warns(UserWarning, match="another run"):
        teacher.train_teacher(arch, synthetic, other, seed=0, device="cpu", progress=False,
                              resume_path=partial)
    assert torch.load(partial, weights_only=True)["recipe"]["lr"] == 0.02


# ------------------------------------------------------------------ cache


def test_get_teacher_trains_once_then_loads_from_cache(home: Path, monkeypatch) -> None:
    model, record = teacher.get_teacher("conv4", "synthetic", width=WIDTH, epochs=1, device="cpu",
                                        progress=False)
    path = checkpoints.teacher_path("conv4", "synthetic", WIDTH, 0)
    assert path.is_file() and path.parent == home / "teachers"
    assert not checkpoints.partial_path(path).exists()
    assert record.recipe.epochs == 1 and record.dataset == "synthetic"

    def must_not_train(*args, **kwargs):
        raise AssertionError("get_teacher retrained a cached teacher")

    monkeypatch.setattr(teacher, "train_teacher", must_not_train)
    started = time.perf_counter()
    again, record_again = teacher.get_teacher("conv4", "synthetic", width=WIDTH, device="cpu",
                                              progress=False)
    assert time.perf_counter() - started < 10
    assert record_again == record
    x = data.load("synthetic").test.x
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    with pytest.raises(FileNotFoundError, match="n2n teacher train"):
        teacher.get_teacher("conv4", "synthetic", width=WIDTH, seed=9, train_if_missing=False)


def test_get_teacher_refuses_a_stale_cache_entry(home: Path, arch, trained, recipe) -> None:
    stale = data.load("synthetic", seed=1)
    path = checkpoints.teacher_path("conv4", "synthetic", WIDTH, 0)
    checkpoints.save_teacher(path, trained.model, _record(arch, stale, recipe, trained))
    with pytest.raises(checkpoints.CheckpointError, match="dataset fingerprint differs"):
        teacher.get_teacher("conv4", "synthetic", width=WIDTH, device="cpu", progress=False)
