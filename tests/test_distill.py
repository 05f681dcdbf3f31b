"""Real distillation on the generated ``synthetic`` data (CPU, a few seconds)."""

from __future__ import annotations

import pytest
import torch

from n2n_env import distill
from n2n_env.distill import (
    DistillationEvaluator,
    DistillRecipe,
    distillation_loss,
    recalibrate_batch_norm,
)


@pytest.fixture(scope="module")
def teacher(synthetic_teacher):
    return synthetic_teacher


def _student(teacher):
    arch = teacher.architecture
    keep = [not (layer.kind == "conv" and i > 0) or i == 4 for i, layer in
            enumerate(arch.layers)]
    return arch.remove(keep)


def test_distillation_from_scratch_beats_chance_by_a_wide_margin(teacher, synthetic) -> None:
    recipe = DistillRecipe(steps=150, batch_size=128, init="scratch")
    evaluator = DistillationEvaluator(teacher, synthetic, recipe, device="cpu")
    result = evaluator.evaluate(_student(teacher))
    assert result.ok
    assert result.accuracy > 0.6  # chance is 0.1
    assert result.optimizer_steps == 150
    assert result.samples_seen == 150 * 128
    assert 0 < result.compression < 1


def test_same_seed_same_accuracy_on_cpu(teacher, synthetic) -> None:
    recipe = DistillRecipe(steps=20)
    first = DistillationEvaluator(teacher, synthetic, recipe, seed=3, device="cpu")
    second = DistillationEvaluator(teacher, synthetic, recipe, seed=3, device="cpu")
    student = _student(teacher)
    assert first.evaluate(student).accuracy == second.evaluate(student).accuracy
    assert first.identity() == second.identity()
    assert first.identity() != DistillationEvaluator(teacher, synthetic, recipe, seed=4,
                                                     device="cpu").identity()


def test_inherited_teacher_copy_keeps_teacher_accuracy(teacher, synthetic) -> None:
    evaluator = DistillationEvaluator(teacher, synthetic, DistillRecipe(steps=5), device="cpu")
    result = evaluator.evaluate(teacher.architecture)
    assert result.accuracy == pytest.approx(evaluator.teacher_accuracy, abs=0.05)
    assert result.compression == pytest.approx(0.0)


def test_degenerate_candidate_is_not_trained(teacher, synthetic) -> None:
    evaluator = DistillationEvaluator(teacher, synthetic, DistillRecipe(steps=5), device="cpu")
    arch = teacher.architecture
    result = evaluator.evaluate(arch.remove([not r for r in arch.removable()]))
    assert result.degenerate_reason is not None and result.optimizer_steps == 0


def test_non_finite_loss_is_reported_not_raised(teacher, synthetic) -> None:
    evaluator = DistillationEvaluator(teacher, synthetic, DistillRecipe(steps=5), device="cpu")
    evaluator.train_logits[:] = float("nan")
    result = evaluator.evaluate(_student(teacher))
    assert result.failure is not None and "non-finite" in result.failure
    assert not result.ok and result.accuracy == 0.0


def test_out_of_memory_is_reported_not_raised(teacher, synthetic, monkeypatch) -> None:
    evaluator = DistillationEvaluator(teacher, synthetic, DistillRecipe(steps=5), device="cpu")

    def explode(student):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 TiB")

    monkeypatch.setattr(evaluator, "_train", explode)
    result = evaluator.evaluate(_student(teacher))
    assert result.failure is not None and result.failure.startswith("out of memory")


def test_distillation_loss_is_mean_squared_l2_plus_weighted_ce() -> None:
    student = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    target = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    assert distillation_loss(student, target).item() == pytest.approx((1.0 + 4.0) / 2)
    labels = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy(student, labels).item()
    assert distillation_loss(student, target, labels, 0.5).item() == pytest.approx(2.5 + 0.5 * ce)


def test_recipe_validation() -> None:
    with pytest.raises(ValueError, match="exactly one budget"):
        DistillRecipe(steps=10, epochs=1.0)
    with pytest.raises(ValueError, match="init"):
        DistillRecipe(init="random")  # type: ignore[arg-type]
    assert DistillRecipe.paper().init == "scratch"
    assert DistillRecipe.paper().batch_norm_samples == 0
    assert DistillRecipe(steps=None, epochs=2.0, batch_size=100).total_steps(1050) == 20
    assert DistillRecipe(steps=7).digest() != DistillRecipe(steps=8).digest()
    with pytest.raises(ValueError, match="batch_norm_samples must be an integer >= 0"):
        DistillRecipe(batch_norm_samples=-1)
    # Re-estimated statistics change the score, so they must change the cache key too.
    assert DistillRecipe().digest() != DistillRecipe(batch_norm_samples=0).digest()


def test_recalibrated_batch_norm_holds_the_statistics_of_the_given_inputs() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3),
                                torch.nn.ReLU(), torch.nn.Linear(3, 2))
    norm = model[1]
    # Stale statistics from a long training: without a reset they would dominate the average.
    norm.running_mean.fill_(5.0)
    norm.num_batches_tracked.fill_(100)
    weights = {name: value.clone() for name, value in model.state_dict().items()
               if "running" not in name and "num_batches" not in name}
    inputs = torch.randn(8, 4) * 3 + 1
    recalibrate_batch_norm(model, inputs, batch_size=4)
    with torch.no_grad():
        features = model[0](inputs)
    # Two equal batches of 4: the cumulative average of their means is the overall mean.
    torch.testing.assert_close(norm.running_mean, features.mean(0))
    halves = features.view(2, 4, 3)
    torch.testing.assert_close(norm.running_var, halves.var(1, unbiased=True).mean(0))
    assert norm.momentum == 0.1 and not model.training
    for name, value in weights.items():
        assert torch.equal(model.state_dict()[name], value), name


def test_recalibration_runs_without_dropout_as_scoring_does() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.9),
                                torch.nn.BatchNorm1d(3))
    inputs = torch.randn(64, 4)
    recalibrate_batch_norm(model, inputs, batch_size=64)
    with torch.no_grad():
        features = model[0](inputs)
    torch.testing.assert_close(model[2].running_var, features.var(0, unbiased=True))
    assert not model[1].training


def test_recalibration_skips_a_final_single_image_batch() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    recalibrate_batch_norm(model, torch.randn(5, 4), batch_size=2)  # batches of 2, 2 and 1
    assert int(model[1].num_batches_tracked) == 2


def test_evaluator_recalibrates_on_the_recipes_number_of_training_images(
        teacher, synthetic, monkeypatch) -> None:
    seen: list[torch.Tensor] = []
    real = distill.recalibrate_batch_norm
    monkeypatch.setattr(distill, "recalibrate_batch_norm",
                        lambda model, inputs: (seen.append(inputs), real(model, inputs)))
    student = _student(teacher)
    DistillationEvaluator(teacher, synthetic, DistillRecipe(steps=3, batch_norm_samples=96),
                          device="cpu").evaluate(student)
    assert [len(inputs) for inputs in seen] == [96]
    train_rows = {tuple(row.flatten().tolist()) for row in synthetic.train.x}
    assert all(tuple(row.flatten().tolist()) in train_rows for row in seen[0])
    DistillationEvaluator(teacher, synthetic, DistillRecipe(steps=3, batch_norm_samples=0),
                          device="cpu").evaluate(student)
    assert len(seen) == 1


def test_evaluates_even_when_the_caller_disabled_autograd(teacher, synthetic) -> None:
    evaluator = DistillationEvaluator(teacher, synthetic, DistillRecipe(steps=3), device="cpu")
    with torch.no_grad():
        under_no_grad = evaluator.evaluate(_student(teacher))
    with torch.inference_mode():
        under_inference = evaluator.evaluate(_student(teacher))
    assert under_no_grad.ok and under_no_grad.optimizer_steps == 3
    assert under_inference.accuracy == under_no_grad.accuracy
