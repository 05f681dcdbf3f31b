"""Final CE + lambda*KD training of a chosen student."""

from __future__ import annotations

import re

import pytest
import torch

from n2n_env.build import build_model
from n2n_env.finetune import finetune
from n2n_env.recipes import Recipe


@pytest.fixture(scope="module")
def teacher(synthetic_teacher):
    return synthetic_teacher


def test_finetune_inherits_and_reports_test_accuracy(teacher, synthetic) -> None:
    arch = teacher.architecture.shrink([0.5] * len(teacher.architecture.shrink_variables()))
    result = finetune(arch, teacher, synthetic, Recipe(epochs=3, lr=0.01, batch_size=64),
                      device="cpu", progress=False)
    assert result.test_accuracy > 0.7 and result.val_accuracy > 0.7  # chance is 0.1
    assert result.model.architecture == arch and not result.model.training
    assert result.epochs == 3


def test_finetune_from_scratch_learns(teacher, synthetic) -> None:
    result = finetune(teacher.architecture, teacher, synthetic,
                      Recipe(epochs=6, lr=0.01, batch_size=32), inherit=False, device="cpu",
                      progress=False)
    assert result.test_accuracy > 0.5


def test_finetune_with_augmentation_runs_teacher_per_batch(teacher, synthetic) -> None:
    recipe = Recipe(epochs=1, lr=0.001, batch_size=64, optimizer="adam", augment=True)
    result = finetune(teacher.architecture, teacher, synthetic, recipe, device="cpu",
                      progress=False)
    assert 0.0 <= result.test_accuracy <= 1.0


def test_finetune_is_seeded(teacher, synthetic) -> None:
    recipe = Recipe(epochs=1, lr=0.01, batch_size=64)
    arch = teacher.architecture
    first = finetune(arch, teacher, synthetic, recipe, device="cpu", progress=False, seed=1)
    second = finetune(arch, teacher, synthetic, recipe, device="cpu", progress=False, seed=1)
    assert first.test_accuracy == second.test_accuracy


def test_negative_kd_weight_is_rejected(teacher, synthetic) -> None:
    with pytest.raises(ValueError, match="kd_weight"):
        finetune(build_model(teacher.architecture).architecture, teacher, synthetic,
                 kd_weight=-1.0, progress=False)


def test_finetune_trains_even_when_the_caller_disabled_autograd(teacher, synthetic) -> None:
    import torch

    recipe = Recipe(epochs=1, lr=0.01, batch_size=64)
    with torch.no_grad():
        result = finetune(teacher.architecture, teacher, synthetic, recipe, device="cpu",
                          progress=False, seed=1)
    free = finetune(teacher.architecture, teacher, synthetic, recipe, device="cpu",
                    progress=False, seed=1)
    assert result.test_accuracy == free.test_accuracy


def _all_finite(model) -> bool:
    return all(bool(torch.isfinite(tensor).all()) for tensor in model.state_dict().values()
               if tensor.is_floating_point())


def test_a_diverging_finetune_restarts_from_the_start_at_a_tenth_of_the_lr(
        teacher, synthetic) -> None:
    # lr 30 turns the loss NaN within the first epoch; whether the restart at 3 settles
    # depends on the CPU's floating point (3 diverged on the machine this test was first
    # written on, not on a later one), so the test follows the restarts to where they end
    recipe = Recipe(epochs=2, lr=30.0, batch_size=64)
    with pytest.warns(RuntimeWarning) as caught:
        result = finetune(teacher.architecture, teacher, synthetic, recipe, device="cpu",
                          progress=False)
    messages = [str(warning.message) for warning in caught]
    assert re.search(r"diverged .* at lr 30; restarting at lr 3$", messages[0]), messages
    assert all("restarting at lr" in message for message in messages)
    assert result.lr < 30 and not result.diverged
    assert _all_finite(result.model) and result.epochs == 2
    fresh = finetune(teacher.architecture, teacher, synthetic,
                     Recipe(epochs=2, lr=result.lr, batch_size=64), device="cpu", progress=False)
    assert (fresh.val_accuracy, fresh.test_accuracy) == (result.val_accuracy, result.test_accuracy)
    for name, tensor in fresh.model.state_dict().items():
        assert torch.equal(tensor, result.model.state_dict()[name]), name


def test_a_finetune_that_always_diverges_is_reported_not_raised(teacher, synthetic) -> None:
    recipe = Recipe(epochs=1, lr=1e5, batch_size=64)
    with pytest.warns(RuntimeWarning) as caught:
        result = finetune(teacher.architecture, teacher, synthetic, recipe, device="cpu",
                          progress=False)
    messages = [str(warning.message) for warning in caught]
    assert sum("restarting" in message for message in messages) == 3
    assert any("every learning rate from 100000 down to 100" in m for m in messages)
    assert result.diverged and result.lr == pytest.approx(100.0)
    assert 0.0 <= result.test_accuracy <= 1.0


def test_a_stable_finetune_keeps_the_recipe_learning_rate(teacher, synthetic) -> None:
    result = finetune(teacher.architecture, teacher, synthetic,
                      Recipe(epochs=1, lr=0.01, batch_size=64), device="cpu", progress=False)
    assert result.lr == 0.01 and not result.diverged and _all_finite(result.model)


def test_an_interrupted_finetune_resumes_per_epoch_and_equals_an_unbroken_one(
        teacher, synthetic, tmp_path, monkeypatch) -> None:
    import n2n_env.finetune as module

    arch = teacher.architecture.shrink([0.5] * len(teacher.architecture.shrink_variables()))
    recipe = Recipe(epochs=3, lr=0.01, batch_size=64)
    kwargs = {"device": "cpu", "progress": False, "seed": 2}
    unbroken = finetune(arch, teacher, synthetic, recipe, **kwargs)
    partial = tmp_path / "student.partial"
    original, calls = module.evaluate_accuracy, []

    def interrupted(*args, **kw):
        calls.append(1)
        if len(calls) == 3:  # during epoch 3's validation: epochs 1 and 2 were saved
            raise KeyboardInterrupt
        return original(*args, **kw)

    monkeypatch.setattr(module, "evaluate_accuracy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finetune(arch, teacher, synthetic, recipe, resume_path=partial, **kwargs)
    assert torch.load(partial, weights_only=True)["epoch"] == 2
    calls.clear()
    monkeypatch.setattr(module, "evaluate_accuracy",
                        lambda *args, **kw: calls.append(1) or original(*args, **kw))
    resumed = finetune(arch, teacher, synthetic, recipe, resume_path=partial, **kwargs)
    assert len(calls) == 2  # epoch 3's validation and the test split: epochs 1-2 not redone
    assert resumed.test_accuracy == unbroken.test_accuracy
    for name, value in unbroken.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
