"""What both environments share (n2n_env.env_common): the terminal reward and info, action
validation, table padding and bar rendering."""

from __future__ import annotations

import json

import numpy as np
import pytest

from n2n_env import data, zoo
from n2n_env.arch import LAYER_KINDS, PAPER_KINDS, Architecture
from n2n_env.env_common import (
    MAX_LAYERS,
    RememberedStudents,
    TerminalReward,
    as_action,
    padded,
    render_bars,
    terminal_info,
)
from n2n_env.evaluators import Evaluation, MockEvaluator
from n2n_env.removal_env import N2NRemovalEnv
from n2n_env.reward import n2n_reward
from n2n_env.shrink_env import N2NShrinkEnv

TERMINAL_KEYS = {"accuracy", "teacher_accuracy", "params", "flops", "compression", "rewards",
                 "degenerate_reason", "architecture", "eval_seconds", "cache_hit", "trained"}
DIGITS_SHAPE, DIGITS_CLASSES = data.info("digits")


@pytest.fixture(scope="module")
def conv4() -> Architecture:
    return zoo.get("conv4", DIGITS_SHAPE, DIGITS_CLASSES)


def without_convs(arch: Architecture) -> Architecture:
    """``arch`` with its last conv, bn and relu removed (a valid, smaller student)."""
    last_conv = max(i for i, layer in enumerate(arch.layers) if layer.kind == "conv")
    return arch.remove([i not in range(last_conv, last_conv + 3) for i in range(len(arch))])


# ---------------------------------------------------------------- scoring
def test_score_gives_the_paper_reward_and_the_documented_info(conv4: Architecture) -> None:
    student = without_convs(conv4)
    evaluation = MockEvaluator(conv4, teacher_accuracy=0.9).evaluate(student)
    reward, info = TerminalReward().score(student, evaluation, 0.9)
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
    scorer = TerminalReward(constraints={"params": 1}, anneal_episodes=2)
    evaluation = MockEvaluator(conv4).evaluate(conv4)
    epsilons = [scorer.score(conv4, evaluation, 0.99)[1]["rewards"]["epsilon"]
                for _ in range(4)]
    assert epsilons == [1.0, 0.5, 0.0, 0.0]


def test_episodes_played_continues_the_annealing_of_a_resumed_search(
        conv4: Architecture) -> None:
    scorer = TerminalReward(constraints={"params": 1}, anneal_episodes=4, episodes_played=2)
    evaluation = MockEvaluator(conv4).evaluate(conv4)
    assert scorer.score(conv4, evaluation, 0.99)[1]["rewards"]["epsilon"] == 0.5
    with pytest.raises(ValueError, match="episodes_played"):
        TerminalReward(episodes_played=-1)


@pytest.mark.parametrize("metric", ["bits", "PARAMS", ""])
def test_bad_compression_metric_is_refused(metric: str) -> None:
    with pytest.raises(ValueError, match="compression_metric") as error:
        TerminalReward(compression_metric=metric)
    assert "params" in str(error.value) and "flops" in str(error.value)


def test_flops_metric_scores_flops_compression(conv4: Architecture) -> None:
    student = without_convs(conv4)
    evaluation = MockEvaluator(conv4).evaluate(student)
    _, by_params = TerminalReward().score(student, evaluation, 0.99)
    _, by_flops = TerminalReward(compression_metric="flops").score(student, evaluation, 0.99)
    assert by_params["compression"] == pytest.approx(1 - student.num_params() / conv4.num_params())
    assert by_flops["compression"] == pytest.approx(1 - student.flops() / conv4.flops())
    assert by_flops["compression"] != pytest.approx(by_params["compression"])


def test_a_failed_training_scores_minus_one_and_says_why(conv4: Architecture) -> None:
    failed = Evaluation(0.0, conv4.num_params(), conv4.flops(), 0.5, 0.5,
                        failure="loss became nan")
    reward, info = TerminalReward().score(conv4, failed, 0.8)
    assert reward == -1.0
    assert info["degenerate_reason"] == "training failed: loss became nan"
    assert info["teacher_accuracy"] == 0.8


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
    colours = {kind: tuple(image[150, 2 + i * 8 + 3]) for i, kind in enumerate(LAYER_KINDS)}
    assert len({colours[kind] for kind in PAPER_KINDS}) == len(PAPER_KINDS)
    assert colours["relu6"] == colours["relu"]  # drawn as the kind they are observed as
    assert colours["adaptive_avgpool"] == colours["avgpool"]
    with pytest.raises(ValueError):
        render_bars([8], ["transformer"], [1], 0)




@pytest.mark.parametrize("env_class", [N2NRemovalEnv, N2NShrinkEnv])
def test_the_environments_take_a_ready_evaluator_and_refuse_anything_else(
        env_class: type) -> None:
    teacher = zoo.get("conv4", (1, 8, 8), 10)
    env = env_class(MockEvaluator(teacher))
    assert env.teacher_architecture == teacher
    with pytest.raises(TypeError, match=r"n2n evaluator.*str lacks"):
        env_class("mock")


def larger_than_teacher(arch: Architecture) -> Architecture:
    """``arch`` without its last maxpool: a bigger classifier, more params than ``arch``."""
    last_pool = max(i for i, layer in enumerate(arch.layers) if layer.kind == "maxpool")
    student = arch.remove([i != last_pool for i in range(len(arch))])
    assert student.num_params() > arch.num_params()
    return student


def test_a_student_larger_than_its_teacher_is_scored_without_training(
        conv4: Architecture) -> None:
    student = larger_than_teacher(conv4)
    evaluation = TerminalReward().untrained(student, conv4, max_classifier_inputs=32_768)
    assert evaluation is not None and not evaluation.trained and not evaluation.ok
    assert (evaluation.params, evaluation.flops) == (student.num_params(), student.flops())
    assert evaluation.compression < 0
    reward, info = TerminalReward().score(student, evaluation, teacher_accuracy=0.9)
    assert reward == 0.0 and info["trained"] is False and info["degenerate_reason"] is None
    trained = MockEvaluator(conv4).evaluate(student)
    assert trained.accuracy > 0.5  # the reward ignores it:
    assert TerminalReward().score(student, trained, teacher_accuracy=0.9)[0] == 0.0


def test_a_constraint_on_params_keeps_its_relaxed_reward_without_training(
        conv4: Architecture) -> None:
    student = larger_than_teacher(conv4)
    rule = TerminalReward({"params": 1000}, anneal_episodes=10)
    evaluation = rule.untrained(student, conv4, max_classifier_inputs=32_768)
    assert evaluation is not None
    trained = MockEvaluator(conv4).evaluate(student)
    untrained_reward = rule.score(student, evaluation, 0.9)[0]
    assert untrained_reward == TerminalReward({"params": 1000}, anneal_episodes=10).score(
        student, trained, 0.9)[0] == 0.0  # eps_0 = 1: eps * (0 + 1) - 1


@pytest.mark.parametrize("rule", [
    TerminalReward({"accuracy": 0.99}),  # a bound on the accuracy needs it measured
    TerminalReward(compression_metric="latency"),
])
def test_students_are_trained_whenever_the_reward_reads_more_than_the_architecture(
        conv4: Architecture, rule: TerminalReward) -> None:
    assert rule.untrained(larger_than_teacher(conv4), conv4, max_classifier_inputs=32_768) is None


def test_smaller_degenerate_or_unknown_limit_students_are_trained(conv4: Architecture) -> None:
    rule = TerminalReward()
    student = larger_than_teacher(conv4)
    assert rule.untrained(without_convs(conv4), conv4, max_classifier_inputs=32_768) is None
    assert rule.untrained(student, conv4, max_classifier_inputs=None) is None
    features = student.input_shapes()[next(
        i for i, layer in enumerate(student.layers) if layer.kind == "linear")][0]
    assert rule.untrained(student, conv4, max_classifier_inputs=features - 1) is None  # -1


def test_the_flops_metric_compares_flops(conv4: Architecture) -> None:
    student = larger_than_teacher(conv4)
    by_flops = TerminalReward(compression_metric="flops").untrained(student, conv4, 32_768)
    assert (by_flops is not None) == (student.flops() > conv4.flops())


def test_remembered_students_build_once_and_start_over_past_their_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import n2n_env.env_common as env_common

    monkeypatch.setattr(env_common, "MAX_DERIVED_LAYERS", 30)
    teacher = zoo.get("conv3", (1, 16, 16))
    built: list[tuple[bool, ...]] = []

    def build(mask: tuple[bool, ...]) -> Architecture:
        built.append(mask)
        return teacher.remove(mask)

    memory = RememberedStudents(len(teacher.layers))  # 15 layers: room for two students
    masks = [tuple(i != j for i in range(len(teacher.layers))) for j in (0, 1, 2)]
    first = memory.get(masks[0], lambda: build(masks[0]))
    assert memory.get(masks[0], lambda: build(masks[0])) is first
    memory.get(masks[1], lambda: build(masks[1]))
    assert built == masks[:2]
    memory.get(masks[2], lambda: build(masks[2]))  # full: starts over
    assert memory.get(masks[0], lambda: build(masks[0])) == first
    assert built == [*masks, masks[0]]


@pytest.mark.parametrize("env_class", [N2NRemovalEnv, N2NShrinkEnv])
@pytest.mark.parametrize("action_wall", [False, True])
def test_every_finished_student_is_the_one_its_actions_make(env_class, action_wall) -> None:
    """Repeated episodes reuse remembered students; each must still be its own actions'
    (with the action wall too, whose masks the actions follow)."""
    teacher = zoo.get("conv3", DIGITS_SHAPE, num_classes=DIGITS_CLASSES)
    constraints = {"params": teacher.num_params() // 4} if action_wall else None
    env = env_class(MockEvaluator(teacher), action_wall=action_wall, constraints=constraints)
    rng = np.random.default_rng(0)
    played: list[list[int]] = []
    for episode in range(60):
        replay = played[rng.integers(len(played))] if played and episode % 2 else None
        _, info = env.reset(seed=episode)
        actions, done = [], False
        while not done:
            allowed = np.flatnonzero(info["action_mask"])
            actions.append(replay[len(actions)] if replay else
                           int(allowed[rng.integers(len(allowed))]))
            _, _, done, _, info = env.step(actions[-1])
        played.append(actions)
        expected = (teacher.remove([a == 1 for a in actions]) if env_class is N2NRemovalEnv
                    else teacher.shrink([(a + 1) / 10 for a in actions]))
        assert info["architecture"] == expected.to_json()
