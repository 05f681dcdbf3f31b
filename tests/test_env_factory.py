"""gym.make's keyword arguments to a ready evaluator (n2n_env.env_factory): argument checks
before any training, laziness, given evaluators and the cache."""

from __future__ import annotations

import gymnasium as gym
import pytest

import n2n_env  # noqa: F401  (registers the environments)
from n2n_env import data, zoo
from n2n_env.arch import Architecture
from n2n_env.env_factory import make_evaluator
from n2n_env.evaluators import Evaluation, MockEvaluator
from n2n_env.stack import EVALUATORS, LazyEvaluator

DIGITS_SHAPE, DIGITS_CLASSES = data.info("digits")


@pytest.fixture(scope="module")
def conv4() -> Architecture:
    return zoo.get("conv4", DIGITS_SHAPE, DIGITS_CLASSES)


def without_convs(arch: Architecture) -> Architecture:
    """``arch`` with its last conv, bn and relu removed (a valid, smaller student)."""
    last_conv = max(i for i, layer in enumerate(arch.layers) if layer.kind == "conv")
    return arch.remove([i not in range(last_conv, last_conv + 3) for i in range(len(arch))])


def play(env: gym.Env, student_keep: list[bool] | None = None) -> tuple[float, dict]:
    """One episode keeping every layer (or as ``student_keep`` says)."""
    env.reset(seed=0)
    done, t = False, 0
    while not done:
        action = 1 if student_keep is None else int(student_keep[t])
        _, reward, done, _, info = env.step(action)
        t += 1
    return float(reward), info


# ---------------------------------------------------------------- argument checks
def test_unknown_evaluator_name_is_refused_naming_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="evaluator") as error:
        make_evaluator(evaluator="fake")
    for name in EVALUATORS:
        assert repr(name) in str(error.value) or name in str(error.value)


def test_an_evaluator_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="evaluate"):
        make_evaluator(evaluator=42)  # type: ignore[arg-type]


@pytest.mark.parametrize("metric", ["bits", "PARAMS", ""])
def test_bad_compression_metric_is_refused(metric: str) -> None:
    with pytest.raises(ValueError, match="compression_metric") as error:
        gym.make("N2NRemoval-v0", evaluator="mock", compression_metric=metric)
    assert "params" in str(error.value) and "flops" in str(error.value)


def test_an_architecture_has_no_weights_to_distil_from(conv4: Architecture) -> None:
    with pytest.raises(ValueError, match="weights"):
        make_evaluator(teacher=conv4, evaluator="distill")
    assert make_evaluator(teacher=conv4, evaluator="mock").teacher_architecture is conv4


def test_unknown_teacher_is_refused_naming_the_zoo() -> None:
    with pytest.raises(ValueError, match="unknown teacher 'resnet9000'") as error:
        make_evaluator(teacher="resnet9000", evaluator="mock")
    for name in zoo.names():
        assert name in str(error.value)


def test_unknown_dataset_is_refused_naming_the_datasets() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'") as error:
        make_evaluator(dataset="imagenet", evaluator="mock")
    for name in data.names():
        assert name in str(error.value)


def test_zoo_teacher_follows_dataset_and_width() -> None:
    scorer = make_evaluator(teacher="vgg13", dataset="synthetic", teacher_width=0.25,
                           evaluator="mock")
    shape, classes = data.info("synthetic")
    assert scorer.teacher_architecture == zoo.get("vgg13", shape, classes, width=0.25)


def test_distill_stack_is_lazy(tmp_path, monkeypatch) -> None:
    """gym.make must be instant: no teacher is trained or loaded before the first score."""
    monkeypatch.setenv("N2N_HOME", str(tmp_path))
    evaluator = make_evaluator(teacher="conv4", evaluator="distill", teacher_width=0.25)
    assert isinstance(evaluator, LazyEvaluator) and not evaluator.built
    assert evaluator.teacher_architecture == zoo.get("conv4", DIGITS_SHAPE, DIGITS_CLASSES,
                                                     0.25)
    env = gym.make("N2NRemoval-v0", teacher="conv4", teacher_width=0.25)
    assert not env.unwrapped.evaluator.built
    assert list(tmp_path.iterdir()) == []


class FailingEvaluator:
    """An evaluator whose every training diverges."""

    def __init__(self, teacher: Architecture) -> None:
        self.teacher_architecture, self.teacher_accuracy = teacher, 0.8

    def identity(self) -> dict[str, str]:
        return {"evaluator": "failing"}

    def evaluate(self, arch: Architecture) -> Evaluation:
        return Evaluation(0.0, arch.num_params(), arch.flops(), 0.5, 0.5,
                          failure="loss became nan")


def test_a_given_evaluator_is_used_even_without_evaluate_many(conv4: Architecture) -> None:
    env = gym.make("N2NRemoval-v0", teacher="vgg19", evaluator=FailingEvaluator(conv4))
    assert env.unwrapped.teacher_architecture is conv4  # the evaluator's teacher wins
    reward, info = play(env)
    assert reward == -1.0
    assert info["degenerate_reason"] == "training failed: loss became nan"
    assert info["teacher_accuracy"] == 0.8


def test_cache_also_wraps_a_given_evaluator(conv4: Architecture, tmp_path) -> None:
    evaluator = make_evaluator(evaluator=MockEvaluator(conv4), cache=tmp_path / "c.sqlite")
    student = without_convs(conv4)
    first, second = evaluator.evaluate(student), evaluator.evaluate(student)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert first.accuracy == second.accuracy
    assert (tmp_path / "c.sqlite").is_file()
    evaluator.close()


def test_a_given_evaluator_cannot_go_to_workers(conv4: Architecture) -> None:
    with pytest.raises(ValueError, match="named evaluator"):
        make_evaluator(evaluator=MockEvaluator(conv4), backend="processes", workers=2)


def test_unknown_distill_kwargs_fail_at_construction_not_after_teacher_training() -> None:
    with pytest.raises(ValueError, match=r"unknown evaluator_kwargs.*stesp"):
        make_evaluator(teacher="conv4", dataset="digits", evaluator="distill",
                      evaluator_kwargs={"stesp": 5})
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        make_evaluator(teacher="conv4", dataset="digits", evaluator="distill",
                      evaluator_kwargs={"steps": 0})


@pytest.mark.parametrize("shown", [True, False])
def test_teacher_progress_bar_can_be_hidden(tmp_path, monkeypatch, capsys, shown) -> None:
    monkeypatch.setenv("N2N_HOME", str(tmp_path))
    evaluator = make_evaluator(teacher="conv4", dataset="synthetic", evaluator="distill",
                               teacher_width=0.25, teacher_progress=shown,
                               evaluator_kwargs={"steps": 1})
    evaluator.evaluate(evaluator.teacher_architecture)
    assert ("teacher conv4/synthetic" in capsys.readouterr().err) is shown


def test_constraints_on_quantities_the_evaluator_does_not_measure_are_refused() -> None:
    with pytest.raises(ValueError, match=r"bounds \['latency'\].*allowed: accuracy, flops"):
        gym.make("N2NRemoval-v0", evaluator="mock", constraints={"latency": 3})


def test_unknown_backend_and_misplaced_worker_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        make_evaluator(evaluator="mock", backend="threads")
    with pytest.raises(ValueError, match="workers=2 needs backend"):
        make_evaluator(evaluator="mock", workers=2)
    with pytest.raises(ValueError, match="apply to backend 'ray' only"):
        make_evaluator(evaluator="mock", backend="processes", ray_address="auto")


def test_mock_evaluator_kwargs_are_checked_now() -> None:
    with pytest.raises(ValueError, match="capacity_scale"):
        make_evaluator(evaluator="mock", evaluator_kwargs={"capacity_scale": -1})
    with pytest.raises(ValueError, match="steps"):
        make_evaluator(evaluator="mock", evaluator_kwargs={"steps": 5})
