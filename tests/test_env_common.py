"""What both environments share (n2n_env.env_common): the scorer's argument checks, lazy set
up, terminal reward and info, action validation, table padding and bar rendering."""

from __future__ import annotations

import json

import numpy as np
import pytest

from n2n_env import data, zoo
from n2n_env.arch import LAYER_KINDS, Architecture
from n2n_env.env_common import (
    EVALUATORS,
    MAX_LAYERS,
    StudentScorer,
    as_action,
    padded,
    render_bars,
    terminal_info,
)
from n2n_env.evaluators import Evaluation, MockEvaluator
from n2n_env.reward import n2n_reward

TERMINAL_KEYS = {"accuracy", "teacher_accuracy", "params", "flops", "compression", "rewards",
                 "degenerate_reason", "architecture", "eval_seconds", "cache_hit"}
DIGITS_SHAPE, DIGITS_CLASSES = data.info("digits")


@pytest.fixture(scope="module")
def conv4() -> Architecture:
    return zoo.get("conv4", DIGITS_SHAPE, DIGITS_CLASSES)


def without_convs(arch: Architecture) -> Architecture:
    """``arch`` with its last conv, bn and relu removed (a valid, smaller student)."""
    last_conv = max(i for i, layer in enumerate(arch.layers) if layer.kind == "conv")
    return arch.remove([i not in range(last_conv, last_conv + 3) for i in range(len(arch))])


# ---------------------------------------------------------------- StudentScorer arguments
def test_unknown_evaluator_name_is_refused_naming_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="evaluator") as error:
        StudentScorer(evaluator="fake")
    for name in EVALUATORS:
        assert repr(name) in str(error.value) or name in str(error.value)


def test_an_evaluator_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="evaluate"):
        StudentScorer(evaluator=42)  # type: ignore[arg-type]


@pytest.mark.parametrize("metric", ["bits", "PARAMS", ""])
def test_bad_compression_metric_is_refused(metric: str) -> None:
    with pytest.raises(ValueError, match="compression_metric") as error:
        StudentScorer(evaluator="mock", compression_metric=metric)
    assert "params" in str(error.value) and "flops" in str(error.value)


def test_an_architecture_has_no_weights_to_distil_from(conv4: Architecture) -> None:
    with pytest.raises(ValueError, match="weights"):
        StudentScorer(teacher=conv4, evaluator="distill")
    assert StudentScorer(teacher=conv4, evaluator="mock").teacher_architecture is conv4


def test_unknown_teacher_is_refused_naming_the_zoo() -> None:
    with pytest.raises(ValueError, match="unknown teacher 'resnet9000'") as error:
        StudentScorer(teacher="resnet9000", evaluator="mock")
    for name in zoo.names():
        assert name in str(error.value)


def test_unknown_dataset_is_refused_naming_the_datasets() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'") as error:
        StudentScorer(dataset="imagenet", evaluator="mock")
    for name in data.names():
        assert name in str(error.value)


def test_zoo_teacher_follows_dataset_and_width() -> None:
    scorer = StudentScorer(teacher="vgg13", dataset="synthetic", teacher_width=0.25,
                           evaluator="mock")
    shape, classes = data.info("synthetic")
    assert scorer.teacher_architecture == zoo.get("vgg13", shape, classes, width=0.25)


def test_distill_scorer_is_lazy(tmp_path, monkeypatch) -> None:
    """gym.make must be instant: no teacher is trained or loaded before the first score."""
    monkeypatch.setenv("N2N_HOME", str(tmp_path))
    scorer = StudentScorer(teacher="conv4", evaluator="distill", teacher_width=0.25)
    assert scorer.teacher_architecture == zoo.get("conv4", DIGITS_SHAPE, DIGITS_CLASSES, 0.25)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- scoring
def test_score_gives_the_paper_reward_and_the_documented_info(conv4: Architecture) -> None:
    scorer = StudentScorer(teacher=conv4, evaluator="mock",
                           evaluator_kwargs={"teacher_accuracy": 0.9})
    student = without_convs(conv4)
    reward, info = scorer.score(student)
    assert set(info) == TERMINAL_KEYS
    compression = 1 - student.num_params() / conv4.num_params()
    assert 0 < compression < 1
    assert info["compression"] == pytest.approx(compression)
    assert info["params"] == student.num_params() and info["flops"] == student.flops()
    assert info["teacher_accuracy"] == 0.9
    assert reward == pytest.approx(n2n_reward(compression, info["accuracy"], 0.9))
    assert info["rewards"]["reward"] == reward
    assert Architecture.from_json(info["architecture"]) == student
    assert info["degenerate_reason"] is None and info["cache_hit"] is False


def test_score_steps_the_epsilon_schedule_once_per_student(conv4: Architecture) -> None:
    scorer = StudentScorer(teacher=conv4, evaluator="mock", constraints={"params": 1},
                           anneal_episodes=2)
    epsilons = [scorer.score(conv4)[1]["rewards"]["epsilon"] for _ in range(4)]
    assert epsilons == [1.0, 0.5, 0.0, 0.0]


def test_flops_metric_scores_flops_compression(conv4: Architecture) -> None:
    student = without_convs(conv4)
    _, by_params = StudentScorer(teacher=conv4, evaluator="mock").score(student)
    _, by_flops = StudentScorer(teacher=conv4, evaluator="mock",
                                compression_metric="flops").score(student)
    assert by_params["compression"] == pytest.approx(1 - student.num_params() / conv4.num_params())
    assert by_flops["compression"] == pytest.approx(1 - student.flops() / conv4.flops())
    assert by_flops["compression"] != pytest.approx(by_params["compression"])


class FailingEvaluator:
    """An evaluator whose every training diverges."""

    def __init__(self, teacher: Architecture) -> None:
        self.teacher_architecture, self.teacher_accuracy = teacher, 0.8

    def identity(self) -> dict[str, str]:
        return {"evaluator": "failing"}

    def evaluate(self, arch: Architecture) -> Evaluation:
        return Evaluation(0.0, arch.num_params(), arch.flops(), 0.5, 0.5,
                          failure="loss became nan")


def test_a_given_evaluator_is_used_and_failures_score_minus_one(conv4: Architecture) -> None:
    scorer = StudentScorer(teacher="vgg19", evaluator=FailingEvaluator(conv4))
    assert scorer.teacher_architecture is conv4  # the evaluator's teacher wins
    reward, info = scorer.score(conv4)
    assert reward == -1.0
    assert info["degenerate_reason"] == "training failed: loss became nan"
    assert info["teacher_accuracy"] == 0.8


def test_cache_also_wraps_a_given_evaluator(conv4: Architecture, tmp_path) -> None:
    scorer = StudentScorer(evaluator=MockEvaluator(conv4), cache=tmp_path / "c.sqlite")
    student = without_convs(conv4)
    first, second = scorer.score(student)[1], scorer.score(student)[1]
    assert (first["cache_hit"], second["cache_hit"]) == (False, True)
    assert first["accuracy"] == second["accuracy"]
    assert (tmp_path / "c.sqlite").is_file()


def test_terminal_info_of_a_degenerate_student(conv4: Architecture) -> None:
    empty = conv4.remove([not removable for removable in conv4.removable()])
    evaluation = MockEvaluator(conv4).evaluate(empty)
    info = terminal_info(evaluation, 0.99, 0.0, {"reward": -1.0}, empty)
    assert set(info) == TERMINAL_KEYS
    assert "empty" in info["degenerate_reason"]
    assert json.loads(info["architecture"])["layers"][-1]["kind"] == "linear"


# ---------------------------------------------------------------- as_action
@pytest.mark.parametrize("action, expected", [
    (0, 0), (1, 1), (np.int64(1), 1), (np.uint8(0), 0), (np.array(1), 1), (np.array([0]), 0),
])
def test_as_action_accepts_integers(action, expected: int) -> None:
    value = as_action(action, 2, "0 or 1")
    assert value == expected and type(value) is int


@pytest.mark.parametrize("action", [
    2, -1, 0.5, 1.0, "x", "1", True, False, np.True_, None, np.float32(1), np.array([0, 1]),
    np.array([True]),
])
def test_as_action_refuses_everything_else_saying_what_is_allowed(action) -> None:
    with pytest.raises(ValueError, match=r"invalid action .*; allowed: 0 \(remove\) or 1"):
        as_action(action, 2, "0 (remove) or 1 (keep)")


def test_as_action_upper_bound_is_the_count() -> None:
    assert as_action(9, 10, "0-9") == 9
    with pytest.raises(ValueError, match="0-9"):
        as_action(10, 10, "0-9")


# ---------------------------------------------------------------- padded
def test_padded_pads_with_zero_rows_in_float32() -> None:
    rows = np.arange(6, dtype=np.float64).reshape(3, 2) + 1
    table = padded(rows, 5)
    assert table.shape == (5, 2) and table.dtype == np.float32
    np.testing.assert_array_equal(table[:3], rows)
    assert not table[3:].any()
    table[0, 0] = -7  # a copy: the input is untouched
    assert rows[0, 0] == 1


def test_padded_vectors_and_exact_fit() -> None:
    np.testing.assert_array_equal(padded(np.ones(3), 4), [1, 1, 1, 0])
    assert padded(np.ones((4, 2)), 4).shape == (4, 2)


def test_padded_refuses_too_many_rows_naming_max_layers() -> None:
    with pytest.raises(ValueError, match="5 rows exceed max_layers=4"):
        padded(np.ones((5, 2)), 4)
    assert MAX_LAYERS >= 102  # resnet34 at the paper's granularity


# ---------------------------------------------------------------- render_bars
def test_render_bars_shape_dtype_and_marks() -> None:
    kinds = ["conv", "conv", "conv", "linear"]
    state, position = [1, -1, 0, 1], 2
    image = render_bars([32, 32, 32, 10], kinds, state, position)
    assert image.shape == (160, 4 * 8 + 2, 3) and image.dtype == np.uint8
    assert (image[0] == 255).all()  # white above the bars

    def colour(index: int) -> np.ndarray:  # the bottom pixel of a bar, above the underline
        return image[160 - 9, 2 + index * 8 + 3].astype(int)

    kept, removed, undecided = colour(0), colour(1), colour(2)
    assert removed.tolist() == [200, 200, 200]
    assert kept.tolist() not in ([200, 200, 200], [255, 255, 255])
    assert (undecided > kept).all() and (undecided < 255).all()  # same kind, paler
    assert colour(3).tolist() != kept.tolist()  # another kind, another colour
    for index in range(4):
        underline = image[160 - 5 : 160 - 2, 2 + index * 8 : 2 + index * 8 + 6]
        assert (underline == (220, 0, 0)).all() == (index == position)


def test_render_bars_height_grows_with_width() -> None:
    image = render_bars([4, 512], ["conv", "conv"], [1, 1], position=-1, height=100)
    assert image.shape == (100, 2 * 8 + 2, 3)
    heights = [int((image[:, 2 + i * 8 + 3] != 255).any(axis=1).sum()) for i in range(2)]
    assert heights[0] < heights[1]


def test_render_bars_knows_every_layer_kind() -> None:
    image = render_bars([8] * len(LAYER_KINDS), list(LAYER_KINDS), [1] * len(LAYER_KINDS), 0)
    colours = {tuple(image[150, 2 + i * 8 + 3]) for i in range(len(LAYER_KINDS))}
    assert len(colours) == len(LAYER_KINDS)
    with pytest.raises(ValueError):
        render_bars([8], ["transformer"], [1], 0)


def test_unknown_distill_kwargs_fail_at_construction_not_after_teacher_training() -> None:
    with pytest.raises(ValueError, match=r"unknown evaluator_kwargs.*stesp"):
        StudentScorer(teacher="conv4", dataset="digits", evaluator="distill",
                      evaluator_kwargs={"stesp": 5})
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        StudentScorer(teacher="conv4", dataset="digits", evaluator="distill",
                      evaluator_kwargs={"steps": 0})


@pytest.mark.parametrize("shown", [True, False])
def test_teacher_progress_bar_can_be_hidden(tmp_path, monkeypatch, capsys, shown) -> None:
    monkeypatch.setenv("N2N_HOME", str(tmp_path))
    scorer = StudentScorer(teacher="conv4", dataset="synthetic", evaluator="distill",
                           teacher_width=0.25, teacher_progress=shown,
                           evaluator_kwargs={"steps": 1})
    scorer.score(scorer.teacher_architecture)
    assert ("teacher conv4/synthetic" in capsys.readouterr().err) is shown
