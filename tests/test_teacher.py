"""Teacher recipes, training, checkpoints, resuming and the cache (CPU, synthetic data)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
import torch

from n2n_env import data, device, teacher, zoo

WIDTH = 0.25
EPOCHS = 3


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One torch thread: these models are tiny, and on a loaded 2-core machine two threads
    per process make every op many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def synthetic() -> data.Dataset:
    return data.load("synthetic")


@pytest.fixture(scope="module")
def arch(synthetic: data.Dataset):
    return zoo.get("conv4", input_shape=synthetic.input_shape,
                   num_classes=synthetic.num_classes, width=WIDTH)


@pytest.fixture(scope="module")
def recipe() -> teacher.Recipe:
    return teacher.recipe_for("synthetic").with_epochs(EPOCHS)


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


def _record(arch, dataset: data.Dataset, recipe: teacher.Recipe, result) -> teacher.TeacherRecord:
    return teacher.TeacherRecord(
        architecture=arch, dataset=dataset.name, dataset_fingerprint=dataset.fingerprint,
        val_accuracy=result.val_accuracy, test_accuracy=result.test_accuracy, recipe=recipe,
        model_name="conv4", width=WIDTH, seed=0, seconds=result.seconds,
    )


# ------------------------------------------------------------------ recipes


@pytest.mark.parametrize("name", ["mnist", "mnist-10k", "fashion-mnist", "digits", "synthetic"])
def test_mnist_recipe_matches_paper(name: str) -> None:
    r = teacher.recipe_for(name)
    assert (r.epochs, r.lr, r.batch_size, r.milestones, r.gamma) == (50, 0.01, 64, (30,), 0.1)
    assert (r.optimizer, r.momentum, r.weight_decay, r.augment) == ("sgd", 0.9, 5e-4, False)


@pytest.mark.parametrize(("name", "augment"),
                         [("cifar10", True), ("cifar100", True), ("cifar10-14k", True),
                          ("svhn", False)])
def test_cifar_and_svhn_recipes_match_paper(name: str, augment: bool) -> None:
    r = teacher.recipe_for(name)
    assert (r.epochs, r.lr, r.batch_size, r.milestones) == (150, 0.001, 128, (80, 120))
    assert r.gamma == 0.1
    assert r.optimizer == "adam"
    assert r.augment is augment


def test_every_dataset_has_a_recipe_and_unknown_names_are_refused() -> None:
    for name in data.names():
        assert teacher.recipe_for(name).epochs > 0
    with pytest.raises(ValueError, match=r"known: .*cifar10"):
        teacher.recipe_for("imagenet")


def test_with_epochs_rescales_milestones_proportionally() -> None:
    mnist, cifar = teacher.recipe_for("mnist"), teacher.recipe_for("cifar10")
    assert mnist.with_epochs(10).milestones == (6,)
    assert mnist.with_epochs(100).milestones == (60,)
    assert cifar.with_epochs(15) == dataclasses.replace(cifar, epochs=15, milestones=(8, 12))
    assert cifar.with_epochs(150) == cifar
    with pytest.raises(ValueError, match="epochs"):
        mnist.with_epochs(0)


def test_recipe_validates_and_round_trips_through_a_dict() -> None:
    r = teacher.recipe_for("cifar10")
    assert teacher.Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError, match="optimizer"):
        dataclasses.replace(r, optimizer="rmsprop")
    with pytest.raises(ValueError, match="lr"):
        dataclasses.replace(r, lr=0.0)


# ------------------------------------------------------------------ device helpers


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.resolve_device(None) == torch.device("cpu")
    assert device.resolve_device("auto") == torch.device("cpu")
    assert device.resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="'cuda:N'"):
        device.resolve_device("gpu")
    with pytest.raises(device.DeviceUnavailableError, match="CUDA is not available"):
        device.resolve_device("cuda:0")
    with device.autocast_context(torch.device("cpu")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert device.memory_format(torch.device("cpu")) == torch.contiguous_format


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
    recipe = teacher.recipe_for("synthetic").with_epochs(1)
    a = teacher.train_teacher(arch, synthetic, recipe, seed=5, device="cpu", progress=False)
    b = teacher.train_teacher(arch, synthetic, recipe, seed=5, device="cpu", progress=False)
    c = teacher.train_teacher(arch, synthetic, recipe, seed=6, device="cpu", progress=False)
    sa, sb, sc = (m.model.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(
    arch, synthetic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = teacher.Recipe(epochs=3, lr=0.05, batch_size=64, milestones=(2,), augment=True)
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
    one = teacher.recipe_for("synthetic").with_epochs(1)
    teacher.train_teacher(arch, synthetic, one, seed=0, device="cpu", progress=False,
                          resume_path=partial)
    assert torch.load(partial, weights_only=True)["epoch"] == 1
    other = dataclasses.replace(one, lr=0.02)
    with pytest.warns(UserWarning, match="another run"):
        teacher.train_teacher(arch, synthetic, other, seed=0, device="cpu", progress=False,
                              resume_path=partial)
    assert torch.load(partial, weights_only=True)["recipe"]["lr"] == 0.02


# ------------------------------------------------------------------ checkpoints


def test_save_load_round_trip_gives_identical_logits(
    arch, synthetic, recipe, trained, tmp_path: Path
) -> None:
    path = tmp_path / "t.pt"
    record = _record(arch, synthetic, recipe, trained)
    assert teacher.save_teacher(path, trained.model, record) == path
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw["architecture"], str) and isinstance(raw["recipe"], dict)
    assert {"state_dict", "val_accuracy", "test_accuracy", "dataset", "dataset_fingerprint",
            "format_version"} <= raw.keys()
    model, loaded = teacher.load_teacher(path, architecture=arch,
                                         dataset_fingerprint=synthetic.fingerprint)
    assert loaded == record
    assert not model.training
    assert model.architecture == arch
    with torch.no_grad():
        assert torch.equal(model(synthetic.test.x), trained.model(synthetic.test.x))


def test_load_refuses_another_architecture(arch, synthetic, recipe, trained, tmp_path) -> None:
    path = teacher.save_teacher(tmp_path / "t.pt", trained.model,
                                _record(arch, synthetic, recipe, trained))
    wider = zoo.get("conv4", input_shape=synthetic.input_shape, num_classes=10, width=0.5)
    with pytest.raises(teacher.CheckpointError) as info:
        teacher.load_teacher(path, architecture=wider)
    message = str(info.value)
    assert "architecture differs" in message
    assert wider.signature() in message and arch.signature() in message
    assert "retrain" in message and str(path) in message


def test_load_refuses_another_dataset_fingerprint(
    arch, synthetic, recipe, trained, tmp_path
) -> None:
    path = teacher.save_teacher(tmp_path / "t.pt", trained.model,
                                _record(arch, synthetic, recipe, trained))
    other = data.load("synthetic", seed=1)
    assert other.fingerprint != synthetic.fingerprint
    with pytest.raises(teacher.CheckpointError) as info:
        teacher.load_teacher(path, architecture=arch, dataset_fingerprint=other.fingerprint)
    message = str(info.value)
    assert "dataset fingerprint differs" in message
    assert other.fingerprint in message and synthetic.fingerprint in message
    assert "architecture differs" not in message


def test_load_of_missing_or_garbage_files_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pt"
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        teacher.load_teacher(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(teacher.CheckpointError, match=r"garbage\.pt"):
        teacher.load_teacher(garbage)
    not_ours = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, not_ours)
    with pytest.raises(teacher.CheckpointError, match="not an n2n teacher"):
        teacher.load_teacher(not_ours)


def test_load_never_unpickles_arbitrary_objects(tmp_path: Path) -> None:
    pickled = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a whole pickled module, not weights
    with pytest.raises(teacher.CheckpointError, match="could not read"):
        teacher.load_teacher(pickled)


# ------------------------------------------------------------------ cache


def test_n2n_home_follows_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("N2N_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert teacher.n2n_home() == tmp_path / "xdg" / "n2n"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert teacher.n2n_home() == tmp_path / "user" / ".cache" / "n2n"
    monkeypatch.setenv("N2N_HOME", str(tmp_path / "custom"))
    assert teacher.n2n_home() == tmp_path / "custom"
    path = teacher.teacher_path("conv4", "digits", 0.5, 3)
    assert path.parent == tmp_path / "custom" / "teachers"
    assert path != teacher.teacher_path("conv4", "digits", 0.5, 4)
    assert path != teacher.teacher_path("conv4", "digits", 1.0, 3)


def test_get_teacher_trains_once_then_loads_from_cache(home: Path, monkeypatch) -> None:
    model, record = teacher.get_teacher("conv4", "synthetic", width=WIDTH, epochs=1, device="cpu",
                                        progress=False)
    path = teacher.teacher_path("conv4", "synthetic", WIDTH, 0)
    assert path.is_file() and path.parent == home / "teachers"
    assert not teacher.partial_path(path).exists()
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
    path = teacher.teacher_path("conv4", "synthetic", WIDTH, 0)
    teacher.save_teacher(path, trained.model, _record(arch, stale, recipe, trained))
    with pytest.raises(teacher.CheckpointError, match="dataset fingerprint differs"):
        teacher.get_teacher("conv4", "synthetic", width=WIDTH, device="cpu", progress=False)
