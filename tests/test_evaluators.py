"""Evaluation records and the mock evaluator (labelled not real)."""

from __future__ import annotations

import pytest

from n2n_env import zoo
from n2n_env.evaluators import Evaluation, Evaluator, MockEvaluator


@pytest.fixture(scope="module")
def teacher_arch():
    return zoo.get("resnet18", (3, 16, 16), 10, width=0.125)


def test_mock_is_an_evaluator_and_deterministic(teacher_arch) -> None:
    mock = MockEvaluator(teacher_arch, teacher_accuracy=0.9)
    assert isinstance(mock, Evaluator)
    first, second = mock.evaluate(teacher_arch), mock.evaluate(teacher_arch)
    assert first == second
    assert first.compression == pytest.approx(0.0)
    assert first.accuracy == pytest.approx(0.9, abs=1e-6)


def test_mock_accuracy_rises_with_capacity(teacher_arch) -> None:
    mock = MockEvaluator(teacher_arch, teacher_accuracy=0.9)
    variables = teacher_arch.shrink_variables()
    accuracies = [mock.evaluate(teacher_arch.shrink([f / 10] * len(variables))).accuracy
                  for f in (1, 3, 6, 10)]
    assert accuracies == sorted(accuracies)
    assert accuracies[0] < accuracies[-1]
    assert all(0.1 <= a <= 0.9 for a in accuracies)


def test_mock_reports_degenerate_without_accuracy() -> None:
    conv4 = zoo.get("conv4", (1, 16, 16), 10, width=0.25)
    empty = conv4.remove([not r for r in conv4.removable()])
    evaluation = MockEvaluator(conv4).evaluate(empty)
    assert evaluation.degenerate_reason is not None and "empty" in evaluation.degenerate_reason
    assert not evaluation.ok and evaluation.accuracy == 0.0


def test_identity_changes_with_settings(teacher_arch) -> None:
    assert (MockEvaluator(teacher_arch, 0.9).identity()
            != MockEvaluator(teacher_arch, 0.8).identity())


def test_evaluation_dict_round_trip() -> None:
    evaluation = Evaluation(0.5, 10, 20, 0.1, 0.2, wall_seconds=1.5, extra={"latency": 3.0})
    assert Evaluation.from_dict(evaluation.to_dict()) == evaluation
    assert evaluation.measured() == {"params": 10.0, "flops": 20.0, "accuracy": 0.5,
                                     "latency": 3.0}


def test_mock_rejects_bad_settings(teacher_arch) -> None:
    with pytest.raises(ValueError, match="teacher_accuracy"):
        MockEvaluator(teacher_arch, teacher_accuracy=0.0)
