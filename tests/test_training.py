"""The shared torch training kit (CPU, synthetic data, one thread).

Besides the pieces on their own (losses against hand-computed values, batch-norm
re-estimation, accuracy of a known model, the batches), the three trainings that use the kit
are each compared, bit for bit, with a straightforward reference written out here: the
loop they ran before the kit existed, step by step. A change to the kit that changes any
weight of a teacher, a distilled student or a fine-tuned one fails these tests.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from n2n_env import data as data_mod
from n2n_env import distill, finetune, teacher, training, zoo
from n2n_env.build import build_model
from n2n_env.device import prepare_model
from n2n_env.distill import DistillationEvaluator, DistillRecipe
from n2n_env.recipes import Recipe

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small(synthetic: data_mod.Dataset) -> data_mod.Dataset:
    """``synthetic`` with 129 training samples, so batches of 64 end with one that is skipped."""
    return dataclasses.replace(synthetic, train=data_mod.Split(synthetic.train.x[:129],
                                                               synthetic.train.y[:129]))


@pytest.fixture(scope="module")
def arch(synthetic: data_mod.Dataset):
    return zoo.get("conv4", synthetic.input_shape, synthetic.num_classes, width=0.25)


def _assert_same_weights(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    expected = reference.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


# ------------------------------------------------------------------ losses


def test_losses_equal_hand_computed_values() -> None:
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    labels = torch.tensor([0, 1])
    # softmax gives 3/4 to the right class of the first row and 1/2 to that of the second
    ce = (math.log(4 / 3) + math.log(2)) / 2
    assert training.hard_label_loss(logits, labels).item() == pytest.approx(ce, rel=1e-6)
    student = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    target = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    assert training.soft_label_loss(student, target).item() == 2.5  # (1 + 4) / 2
    assert training.distillation_loss(student, target).item() == 2.5
    assert training.distillation_loss(student, target, None, 0.5).item() == 2.5  # no labels
    student_ce = F.cross_entropy(student, labels).item()
    assert training.distillation_loss(student, target, labels, 0.5).item() == pytest.approx(
        2.5 + 0.5 * student_ce, rel=1e-6)
    assert training.final_loss(student, labels, target, 0.1).item() == pytest.approx(
        student_ce + 0.1 * 2.5, rel=1e-6)
    assert torch.equal(training.final_loss(student, labels, target, 0.0),
                       F.cross_entropy(student, labels))


def test_losses_are_computed_in_float32_from_half_precision_logits() -> None:
    student = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.bfloat16)
    target = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1])
    for loss in (training.hard_label_loss(student, labels),
                 training.soft_label_loss(student, target),
                 training.distillation_loss(student, target, labels, 1.0),
                 training.final_loss(student, labels, target, 1.0)):
        assert loss.dtype == torch.float32


# ------------------------------------------------------------------ batch norm, accuracy


def test_batch_norm_re_estimation_sets_running_stats_to_the_batch_statistics() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3),
                                torch.nn.ReLU())
    norm = model[1]
    norm.running_mean.fill_(7.0)
    norm.running_var.fill_(9.0)
    inputs = torch.randn(6, 2, 5, 5) * 2 + 1
    training.recalibrate_batch_norm(model, inputs, batch_size=6)  # one batch
    with torch.no_grad():
        features = model[0](inputs).transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(norm.running_mean, features.mean(1))
    torch.testing.assert_close(norm.running_var, features.var(1, unbiased=True))
    assert int(norm.num_batches_tracked) == 1 and norm.momentum == 0.1
    assert not model.training and not norm.training


def test_accuracy_of_a_known_tiny_model_across_batches() -> None:
    class FirstFeatureIsTheClass(torch.nn.Module):
        """Predicts the class whose one-hot pattern the image's first pixels hold."""

        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.scale * x.flatten(1)[:, :3]

    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    x = torch.zeros(7, 1, 2, 2)
    x.flatten(1)[torch.arange(7), labels] = 1.0
    wrong = torch.tensor([1, 1, 0, 0, 2, 2, 1])  # right at indices 1, 3, 5: 3 of 7
    model = FirstFeatureIsTheClass().train()
    split = data_mod.Split(x, wrong)
    assert training.evaluate_accuracy(model, split, batch_size=2) == 3 / 7
    assert training.evaluate_accuracy(model, data_mod.Split(x, labels), batch_size=3) == 1.0
    assert model.training  # its mode is restored
    with pytest.raises(ValueError, match="empty split"):
        training.evaluate_accuracy(model, data_mod.Split(x[:0], labels[:0]))


# ------------------------------------------------------------------ batches and steps


def test_shuffled_batches_cover_each_sample_once_and_skip_a_final_single_sample() -> None:
    generator = torch.Generator().manual_seed(0)
    batches = list(training.shuffled_batches(9, 4, generator, CPU))
    assert [len(batch) for batch in batches] == [4, 4]  # the ninth sample alone is skipped
    assert len(set(torch.cat(batches).tolist())) == 8
    generator = torch.Generator().manual_seed(0)
    assert [len(b) for b in training.shuffled_batches(11, 4, generator, CPU)] == [4, 4, 3]
    generator = torch.Generator().manual_seed(0)
    assert [len(b) for b in training.shuffled_batches(11, 4, generator, CPU,
                                                      full_only=True)] == [4, 4]


def test_batch_stream_draws_a_fresh_order_per_pass_for_the_whole_budget() -> None:
    generator = torch.Generator().manual_seed(1)
    batches = list(training.batch_stream(10, 4, generator, CPU, steps=5))
    assert [len(batch) for batch in batches] == [4] * 5
    replay = torch.Generator().manual_seed(1)
    for first in range(0, 5, 2):  # passes of two full batches each, each its own order
        order = torch.randperm(10, generator=replay)
        assert torch.equal(torch.cat(batches[first : first + 2]), order[: 4 * len(
            batches[first : first + 2])])
    with pytest.raises(ValueError, match="no full batch"):
        training.batch_stream(3, 4, generator, CPU, steps=1)


def test_train_steps_counts_and_stops_at_the_first_check_of_a_non_finite_loss() -> None:
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    losses = iter([1.0, 3.0, float("nan"), 1.0, 1.0, 1.0, 1.0])

    def batch_loss(index: torch.Tensor) -> torch.Tensor:
        return model.weight.sum() * 0 + next(losses)

    batches = [torch.arange(2)] * 7
    stats = training.train_steps(model, optimizer, batches, batch_loss, check_every=2)
    assert stats.steps == 4 and stats.samples == 8 and not bool(stats.finite)
    finite = training.train_steps(model, optimizer, [torch.arange(2), torch.arange(3)],
                                  lambda index: model.weight.sum() * 0 + len(index))
    assert finite.mean_loss == (2 * 2 + 3 * 3) / 5 and bool(finite.finite)
    assert finite.last_loss is not None and finite.last_loss.item() == 3


def test_the_old_import_paths_name_the_kit() -> None:
    assert teacher.evaluate_accuracy is training.evaluate_accuracy
    assert teacher.make_optimizer is training.make_optimizer
    for name in ("distillation_loss", "teacher_logits", "recalibrate_batch_norm",
                 "model_fingerprint"):
        assert getattr(distill, name) is getattr(training, name), name


# ------------------------------------------------------------------ the three trainings


@pytest.mark.parametrize("recipe", [
    Recipe(epochs=2, lr=0.01, batch_size=64, milestones=(1,)),
    Recipe(epochs=1, lr=0.001, batch_size=64, optimizer="adam", weight_decay=0.0,
           augment=True),
], ids=["sgd", "adam-augment"])
def test_teacher_training_equals_the_reference_loop(arch, small, recipe) -> None:
    trained = teacher.train_teacher(arch, small, recipe, device="cpu", seed=3, progress=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = prepare_model(build_model(arch), CPU)
        if recipe.optimizer == "adam":
            optimizer: torch.optim.Optimizer = torch.optim.Adam(
                model.parameters(), lr=recipe.lr, betas=(recipe.momentum, 0.999),
                weight_decay=recipe.weight_decay)
        else:
            optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr,
                                        momentum=recipe.momentum,
                                        weight_decay=recipe.weight_decay)
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(recipe.milestones),
                                                         recipe.gamma)
        shuffle = torch.Generator().manual_seed(3)
        augment = torch.Generator().manual_seed(4)
        for _ in range(recipe.epochs):
            model.train()
            order = torch.randperm(len(small.train), generator=shuffle)
            for start in range(0, len(order), recipe.batch_size):
                index = order[start : start + recipe.batch_size]
                if len(index) < 2:
                    continue
                x = small.train.x[index]
                if recipe.augment:
                    x = data_mod.random_crop_flip(x, generator=augment)
                x = x.contiguous(memory_format=torch.channels_last)
                loss = F.cross_entropy(model(x), small.train.y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            schedule.step()
    _assert_same_weights(trained.model, model)
    assert trained.val_accuracy == training.evaluate_accuracy(model, small.val)


def test_distillation_equals_the_reference_loop(synthetic_teacher, synthetic) -> None:
    # 18 steps of 64 over 1,000 samples: 15 per pass, so the budget crosses into a second
    recipe = DistillRecipe(steps=18, batch_size=64, ce_weight=0.5, batch_norm_samples=100)
    evaluator = DistillationEvaluator(synthetic_teacher, synthetic, recipe, seed=5,
                                      device="cpu")
    torch.set_num_threads(1)  # the evaluator took every core; the reference runs on one too
    student_arch = synthetic_teacher.architecture.shrink(
        [0.5] * len(synthetic_teacher.architecture.shrink_variables()))
    trained = evaluator.train_student(student_arch)
    assert trained.failure is None and trained.costs["optimizer_steps"] == 18
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        student = prepare_model(build_model(student_arch, synthetic_teacher, device=CPU), CPU)
        optimizer = torch.optim.Adam(student.parameters(), lr=recipe.lr, fused=True)
        order = torch.Generator().manual_seed(5)
        x, y, logits = synthetic.train.x, synthetic.train.y, evaluator.train_logits
        student.train()
        step, per_pass = 0, len(x) // recipe.batch_size
        while step < 18:
            permutation = torch.randperm(len(x), generator=order)
            for batch in range(min(per_pass, 18 - step)):
                index = permutation[batch * 64 : (batch + 1) * 64]
                out = student(x[index].contiguous(memory_format=torch.channels_last))
                loss = ((out - logits[index]).pow(2).sum(1).mean()
                        + 0.5 * F.cross_entropy(out, y[index]))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
        first = torch.randperm(len(x), generator=torch.Generator().manual_seed(5))[:100]
        norms = [m for m in student.modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        student.eval()
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None
            norm.train()
        with torch.no_grad():
            student(x[first].contiguous(memory_format=torch.channels_last))
        for norm in norms:
            norm.momentum = 0.1
            norm.eval()
    _assert_same_weights(trained.model, student)


def test_fine_tuning_equals_the_reference_loop(synthetic_teacher, small) -> None:
    recipe = Recipe(epochs=2, lr=0.01, batch_size=64, milestones=(1,))
    student_arch = synthetic_teacher.architecture.shrink(
        [0.5] * len(synthetic_teacher.architecture.shrink_variables()))
    result = finetune.finetune(student_arch, synthetic_teacher, small, recipe, kd_weight=0.3,
                               device="cpu", seed=6, progress=False)
    torch.manual_seed(6)
    student = prepare_model(build_model(student_arch, synthetic_teacher, device=CPU), CPU)
    with torch.no_grad():  # in batches of 128, as the CPU scores
        targets = torch.cat([synthetic_teacher.eval()(chunk.contiguous(
            memory_format=torch.channels_last)) for chunk in small.train.x.split(128)])
    with torch.random.fork_rng(devices=[]):
        optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9,
                                    weight_decay=5e-4)
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, [1], 0.1)
        shuffle = torch.Generator().manual_seed(6)
        for _ in range(recipe.epochs):
            student.train()
            order = torch.randperm(len(small.train), generator=shuffle)
            for start in range(0, len(order) - 1, 64):
                index = order[start : start + 64]
                out = student(small.train.x[index].contiguous(memory_format=torch.channels_last))
                loss = F.cross_entropy(out, small.train.y[index]) + 0.3 * (
                    (out - targets[index]).pow(2).sum(1).mean())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            schedule.step()
    _assert_same_weights(result.model, student)
    assert result.val_accuracy == training.evaluate_accuracy(student, small.val)
    assert result.test_accuracy == training.evaluate_accuracy(student, small.test)
