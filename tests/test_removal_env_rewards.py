"""N2NRemoval-v0's rewards and terminal info (paper sections 3.3 and 3.3.1).

Everything but ``test_real_distillation_episodes`` uses the instant mock evaluator.
"""

from __future__ import annotations

import json
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from removal_episodes import (
    DIGITS,
    ENV_ID,
    TERMINAL_KEYS,
    keep_all,
    make,
    random_actions,
    run,
)

import n2n_env  # noqa: F401  (registers the environments)
from n2n_env import zoo
from n2n_env.arch import Architecture
from n2n_env.env_common import TerminalReward
from n2n_env.evaluators import MockEvaluator


# ---------------------------------------------------------------- rewards and terminal info
def test_keep_everything_gives_zero_compression_and_the_teachers_size() -> None:
    env = make()
    teacher = env.unwrapped.teacher
    obs, reward, terminated, truncated, info = run(env, keep_all)[-1]
    assert (terminated, truncated) == (True, False)
    assert set(info) >= TERMINAL_KEYS
    assert info["compression"] == 0.0 and reward == 0.0
    assert info["params"] == teacher.num_params() and info["flops"] == teacher.flops()
    assert info["accuracy"] == pytest.approx(info["teacher_accuracy"]) == pytest.approx(0.99)
    assert Architecture.from_json(info["architecture"]) == teacher
    assert info["degenerate_reason"] is None and info["cache_hit"] is False
    assert info["rewards"]["reward"] == reward and info["rewards"]["violated"] == ()
    assert obs["position"][0] == 1.0 and obs["params_kept"][0] == 1.0


def test_removing_a_conv_earns_the_paper_reward() -> None:
    env = make()
    teacher = env.unwrapped.teacher
    convs = [i for i, layer in enumerate(teacher.layers) if layer.kind == "conv"]
    *_, reward, _, _, info = run(env, [int(i != convs[-1]) for i in range(len(teacher))])[-1]
    student = Architecture.from_json(info["architecture"])
    assert len(student) == len(teacher) - 1
    compression = 1 - student.num_params() / teacher.num_params()
    assert info["compression"] == pytest.approx(compression) and 0 < compression < 1
    assert reward == pytest.approx(compression * (2 - compression) * info["accuracy"]
                                   / info["teacher_accuracy"])


def test_keeping_only_fixed_layers_is_degenerate() -> None:
    env = make()
    fixed = [not removable for removable in env.unwrapped.teacher.removable()]
    *_, reward, terminated, _, info = run(env, [int(f) for f in fixed])[-1]
    assert terminated and reward == -1.0
    assert isinstance(info["degenerate_reason"], str) and "empty" in info["degenerate_reason"]
    assert info["rewards"]["degenerate"] is True
    assert [layer["kind"] for layer in json.loads(info["architecture"])["layers"]] == [
        "flatten", "linear"]


def test_constraints_are_annealed_from_free_to_minus_one() -> None:
    anneal = 4
    env = make(constraints={"params": 1}, anneal_episodes=anneal)  # every student violates
    actions = [0 if i == 11 else 1 for i in range(20)]  # conv4: remove the 4th conv
    rewards, epsilons = [], []
    for _ in range(anneal + 2):
        *_, reward, _, _, info = run(env, actions)[-1]
        breakdown = info["rewards"]
        assert breakdown["violated"] == ("params <= 1",)
        unconstrained = breakdown["unconstrained"]
        assert unconstrained > 0
        assert reward == pytest.approx(breakdown["epsilon"] * (unconstrained + 1) - 1)
        rewards.append(reward)
        epsilons.append(breakdown["epsilon"])
    assert epsilons == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert rewards[0] == pytest.approx(unconstrained)  # eps_0 = 1: no penalty yet
    assert rewards[-2:] == [-1.0, -1.0]
    assert rewards == sorted(rewards, reverse=True)


def test_satisfied_constraints_leave_the_reward_alone() -> None:
    env = make(constraints={"params": 10**9}, anneal_episodes=3)
    *_, reward, _, _, info = run(env, [0 if i == 11 else 1 for i in range(20)])[-1]
    assert info["rewards"]["violated"] == () and reward == info["rewards"]["unconstrained"] > 0


def test_flops_compression_metric() -> None:
    actions = [0 if i == 11 else 1 for i in range(20)]  # conv4: remove the 4th conv
    *_, by_params = run(make(), actions)[-1]
    *_, reward, _, _, by_flops = run(make(compression_metric="flops"), actions)[-1]
    teacher = zoo.get("conv4", *DIGITS)
    student = Architecture.from_json(by_flops["architecture"])
    flops_c = 1 - student.flops() / teacher.flops()
    assert by_flops["compression"] == pytest.approx(flops_c)
    assert by_params["compression"] == pytest.approx(
        1 - student.num_params() / teacher.num_params())
    assert abs(flops_c - by_params["compression"]) > 0.05
    assert reward == pytest.approx(flops_c * (2 - flops_c) * by_flops["accuracy"] / 0.99)


def test_a_student_larger_than_its_teacher_earns_zero() -> None:
    """Removing a pool enlarges the classifier: C < 0 is reported, the reward clips it."""
    for metric in ("params", "flops"):
        *_, reward, _, _, info = run(make(compression_metric=metric),
                                     [0 if i == 3 else 1 for i in range(20)])[-1]
        assert info["compression"] < 0 and reward == 0.0 and info["degenerate_reason"] is None


def test_cache_hit_on_the_second_identical_episode(tmp_path) -> None:
    env = make(cache=tmp_path / "c.sqlite")
    actions = random_actions(env, seed=4)
    first = run(env, actions)[-1]
    second = run(env, actions)[-1]
    assert (first[4]["cache_hit"], second[4]["cache_hit"]) == (False, True)
    assert first[1] == second[1] and first[4]["accuracy"] == second[4]["accuracy"]
    # a second environment (another process, say) reads the same file
    third = run(make(cache=tmp_path / "c.sqlite"), actions)[-1]
    assert third[4]["cache_hit"] is True
    other = run(env, [1] * 20)[-1]
    assert other[4]["cache_hit"] is False
    copy = pickle.loads(pickle.dumps(env))  # the copy reopens the file
    assert run(copy, actions)[-1][4]["cache_hit"] is True


def test_close_releases_the_cache(tmp_path) -> None:
    env = make(cache=tmp_path / "c.sqlite")
    run(env, keep_all)
    assert (tmp_path / "c.sqlite-wal").exists()  # WAL mode while a connection is open
    env.close()
    # SQLite removes the WAL file when the last connection to the database closes
    assert not (tmp_path / "c.sqlite-wal").exists()


def test_a_full_episode_through_gym_make_warns_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the passive checker warns about bad obs/infos
        env = make(teacher="resnet18", render_mode="ansi")
        run(env, random_actions(env, seed=8))
        env.render()
        env.close()


def test_an_architecture_teacher_with_the_mock_evaluator() -> None:
    arch = zoo.get("vgg11", (3, 32, 32), 100, width=0.25)
    env = make(teacher=arch)
    assert env.unwrapped.teacher is arch
    info = run(env, keep_all)[-1][4]
    assert info["params"] == arch.num_params()

# ---------------------------------------------------------------- real distillation
@pytest.mark.slow
def test_real_distillation_episodes(tmp_path, monkeypatch) -> None:
    """End to end with the real evaluator: trains a tiny teacher on digits, then scores a
    keep-everything removal episode, a removal and a shrink episode by distillation."""
    monkeypatch.setenv("N2N_HOME", str(tmp_path))
    kwargs = {"teacher": "conv4", "teacher_width": 0.25, "dataset": "digits",
              "evaluator_kwargs": {"steps": 5}}
    env = gym.make(ENV_ID, **kwargs)
    assert list(tmp_path.iterdir()) == []  # lazy: nothing trained yet
    *_, reward, terminated, _, info = run(env, keep_all)[-1]
    assert terminated and set(info) >= TERMINAL_KEYS
    assert list((tmp_path / "teachers").glob("*.pt"))  # the teacher was trained fresh
    teacher = zoo.get("conv4", *DIGITS, width=0.25)
    assert info["params"] == teacher.num_params() and info["compression"] == 0.0
    assert Architecture.from_json(info["architecture"]) == teacher
    assert info["accuracy"] > 0.5 > 1 / 10  # far above chance
    assert info["teacher_accuracy"] > 0.5
    assert info["eval_seconds"] > 0 and info["cache_hit"] is False
    assert info["degenerate_reason"] is None and reward == 0.0
    assert run(env, keep_all)[-1][4]["accuracy"] == info["accuracy"]  # seeded training

    convs = [i for i, layer in enumerate(teacher.layers) if layer.kind == "conv"]
    actions = [int(i not in range(convs[-1], convs[-1] + 3)) for i in range(len(teacher))]
    *_, reward, _, _, removed = run(env, actions)[-1]
    assert 0 < removed["compression"] < 1 and 0 <= removed["accuracy"] <= 1
    assert reward == pytest.approx(removed["rewards"]["unconstrained"])

    shrink = gym.make("N2NShrink-v0", **kwargs)  # the cached teacher is reused
    shrink.reset(seed=0)
    for _ in range(shrink.unwrapped.num_variables):
        *_, reward, terminated, _, info = shrink.step(4)
    assert terminated and set(info) >= TERMINAL_KEYS
    assert 0.5 < info["compression"] < 1 and info["accuracy"] > 1 / 10
    assert len(list((tmp_path / "teachers").glob("*.pt"))) == 1


# ------------------------------------------- students that cannot earn a reward: not trained
@settings(max_examples=60, deadline=None)
@given(keep=st.lists(st.booleans(), min_size=20, max_size=20))
def test_skipping_the_training_of_unrewardable_students_changes_no_reward(
        keep: list[bool]) -> None:
    """For every keep mask of conv4: the environment's reward equals the reward of the
    student trained (the mock evaluator's accuracy), and it trains exactly the students no
    larger than the teacher (a larger one has C < 0, so R = 0 whatever its accuracy)."""
    env = make(teacher="conv4")
    teacher = env.unwrapped.teacher
    actions = [int(k or not free) for k, free in zip(keep, teacher.removable())]
    asked: list[Architecture] = []
    inner = env.unwrapped.evaluator
    spy = inner.evaluate
    inner.evaluate = lambda arch: asked.append(arch) or spy(arch)  # type: ignore[method-assign]
    *_, reward, _, _, info = run(env, actions)[-1]
    student = Architecture.from_json(info["architecture"])
    trained = MockEvaluator(teacher, teacher_accuracy=0.99).evaluate(student)
    expected = TerminalReward().score(student, trained, 0.99)[0]
    assert reward == expected
    larger = student.degenerate_reason() is None and student.num_params() > teacher.num_params()
    assert info["trained"] is (not larger)
    assert asked == ([] if larger else [student])
    if larger:
        assert (info["accuracy"], info["eval_seconds"], reward) == (0.0, 0.0, 0.0)


def test_a_vector_env_trains_no_student_larger_than_the_teacher() -> None:
    envs = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="vector_entry_point",
                        evaluator="mock", teacher="conv4")
    teacher = envs.envs[0].teacher
    batches: list[list[Architecture]] = []
    evaluator = envs.envs[0].evaluator
    spy = evaluator.evaluate_many
    evaluator.evaluate_many = lambda archs: batches.append(list(archs)) or spy(archs)  # type: ignore[method-assign]
    rng = np.random.default_rng(0)
    envs.reset(seed=0)
    untrained = trained = 0
    for _ in range(40 * len(teacher.layers)):
        _, rewards, terminated, _, info = envs.step(rng.integers(0, 2, 3))
        for index in np.flatnonzero(terminated):
            if info["final_info"]["trained"][index]:
                trained += 1
            else:
                untrained += 1
                assert rewards[index] == 0.0
    asked = [arch for batch in batches for arch in batch]
    assert untrained > 0 and len(asked) == trained
    assert all(arch.num_params() <= teacher.num_params() or arch.degenerate_reason()
               for arch in asked)
    envs.close()
