"""N2NRemovalBench-v0 and N2NShrinkBench-v0: the real MDPs with looked-up rewards."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from bench_tables import fake_table
from gymnasium.utils.env_checker import check_env

import n2n_env  # noqa: F401  (registers the environments)
from n2n_env.bench.spaces import make_space
from n2n_env.reward import n2n_reward

ENV_IDS = {"removal": "N2NRemovalBench-v0", "shrink": "N2NShrinkBench-v0"}
REAL_IDS = {"removal": "N2NRemoval-v0", "shrink": "N2NShrink-v0"}


@pytest.fixture(scope="module", params=["removal", "shrink"])
def table(request):
    return fake_table(request.param)


def play(env, actions, seed=None):
    env.reset(seed=seed)
    for action in actions:
        _, reward, terminated, truncated, info = env.step(action)
    assert terminated and not truncated
    return reward, info


def test_gymnasium_checker_passes(table):
    env = gym.make(ENV_IDS[table.header.space], table=table)
    check_env(env.unwrapped, skip_render_check=True)


def test_sb3_checker_passes(table):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    sb3_check_env(gym.make(ENV_IDS[table.header.space], table=table).unwrapped, warn=True)


def test_spaces_and_info_keys_equal_the_real_environment(table):
    space = table.header.space
    bench = gym.make(ENV_IDS[space], table=table).unwrapped
    teacher = table.header.teacher_architecture()
    kwargs = {"start": table.header.space_object().start} if space == "shrink" else {}
    real = gym.make(REAL_IDS[space], teacher=teacher, evaluator="mock", **kwargs).unwrapped
    assert bench.observation_space == real.observation_space
    assert bench.action_space == real.action_space
    actions = table.header.space_object().actions(table.num_episodes - 1)
    _, bench_info = play(bench, actions, seed=0)
    _, real_info = play(real, actions, seed=0)
    assert set(bench_info) == set(real_info) | {
        "simulated_seconds", "simulated_seconds_total", "table_seed"}
    np.testing.assert_array_equal(bench_info["action_mask"], real_info["action_mask"])


def charged(table, student: int, seconds: float) -> float:
    """The simulated seconds of ``student``: the table's, but 0 for a student larger than
    the teacher, which the real environments score without training."""
    larger = table.params[student] > table.header.teacher_architecture().num_params()
    return 0.0 if larger else seconds


def test_lookups_equal_the_stored_values(table):
    env = gym.make(ENV_IDS[table.header.space], table=table).unwrapped
    space = make_space(table.header.space, table.header.teacher_architecture(),
                       table.header.space_object().start
                       if table.header.space == "shrink" else None)
    teacher_accuracy = table.header.teacher_accuracy
    compression = table.compression()
    for episode in range(0, table.num_episodes, 7):
        reward, info = play(env, space.actions(episode), seed=episode)
        student = table.student_of(episode)
        if table.reason(student) is not None:
            assert reward == -1.0 and info["degenerate_reason"] == table.reason(student)
            assert info["simulated_seconds"] == 0.0
            continue
        # the drawn seed is one of the stored ones, with its own seconds; a student larger
        # than the teacher is scored untrained, as the real environments do
        column = table.header.seeds.index(info["table_seed"])
        larger = charged(table, student, 1.0) == 0.0
        assert info["trained"] is not larger
        assert np.float32(info["accuracy"]) == (
            0.0 if larger else table.val_accuracy[student, column])
        assert info["simulated_seconds"] == pytest.approx(
            charged(table, student, float(table.seconds[student, column])))
        assert info["params"] == table.params[student]
        assert info["compression"] == pytest.approx(compression[student])
        assert reward == pytest.approx(
            n2n_reward(compression[student], info["accuracy"], teacher_accuracy))


def test_mean_reward_seed_averages_the_seeds(table):
    env = gym.make(ENV_IDS[table.header.space], table=table, reward_seed="mean").unwrapped
    space = table.header.space_object()
    episode = max(e for e in range(table.num_episodes)  # a student that is trained
                  if charged(table, table.student_of(e), 1.0) > 0
                  and table.reason(table.student_of(e)) is None)
    _, info = play(env, space.actions(episode), seed=3)
    student = table.student_of(episode)
    assert info["accuracy"] == pytest.approx(float(np.mean(table.val_accuracy[student])))
    assert info["simulated_seconds"] == pytest.approx(
        charged(table, student, float(np.mean(table.seconds[student]))))


def test_identical_seeds_give_identical_episodes(table):
    space = table.header.space_object()
    rng = np.random.default_rng(1)
    episodes = rng.integers(0, table.num_episodes, 30)

    def run(seed):
        env = gym.make(ENV_IDS[table.header.space], table=table)
        env.reset(seed=seed)
        outcomes = []
        for episode in episodes:
            reward, info = play(env, space.actions(int(episode)))
            outcomes.append((reward, info["accuracy"], info["simulated_seconds_total"]))
        return outcomes

    assert run(5) == run(5)
    assert run(5) != run(6)  # other seeds draw other stored trainings


def test_simulated_seconds_accumulate_across_resets(table):
    env = gym.make(ENV_IDS[table.header.space], table=table).unwrapped
    space = table.header.space_object()
    total = 0.0
    paid = [episode for episode in range(table.num_episodes)
            if table.reason(table.student_of(episode)) is None
            and charged(table, table.student_of(episode), 1.0) > 0]
    for episode in (paid[-1], paid[-2], paid[-1]):
        _, info = play(env, space.actions(episode), seed=episode)
        total += info["simulated_seconds"]
        assert info["simulated_seconds_total"] == pytest.approx(total)
    assert total > 0


def test_a_table_of_the_other_space_is_refused():
    with pytest.raises(ValueError, match="needs a shrink table"):
        gym.make("N2NShrinkBench-v0", table=fake_table("removal"))


def test_reward_seed_is_checked_at_make(table):
    with pytest.raises(ValueError, match="reward_seed must be one of"):
        gym.make(ENV_IDS[table.header.space], table=table, reward_seed="median")


def test_a_table_file_path_is_accepted(table, tmp_path):
    path = table.save(tmp_path / "table.npz")
    env = gym.make(ENV_IDS[table.header.space], table=str(path))
    assert env.unwrapped._evaluator.table.num_episodes == table.num_episodes


def test_a_missing_shipped_table_says_how_to_build_it(monkeypatch, tmp_path):
    from n2n_env.bench import lookup
    from n2n_env.bench.table import BenchTableError

    monkeypatch.setattr(lookup, "shipped_table_path", lambda space: tmp_path / "absent.npz")
    with pytest.raises(BenchTableError, match="n2n bench build removal"):
        gym.make("N2NRemovalBench-v0")


def test_a_student_larger_than_the_teacher_is_scored_untrained_as_in_the_real_env():
    """The real environments score it 0 without training it, whatever its accuracy, so the
    benchmark charges it nothing and serves no accuracy, even where a stored seed diverged
    (a trained student's divergence gets -1); the harness's true reward agrees."""
    from n2n_env.bench.rl import true_rewards

    table = fake_table("shrink")
    teacher_params = table.header.teacher_architecture().num_params()
    space = table.header.space_object()
    larger = [episode for episode in range(table.num_episodes)
              if table.params[table.student_of(episode)] > teacher_params]
    smaller = [episode for episode in range(table.num_episodes)
               if 0 < table.params[table.student_of(episode)] < teacher_params]
    assert larger and smaller
    diverged = table.val_accuracy.copy()
    for episode in (larger[0], smaller[0]):
        diverged[table.student_of(episode)] = np.nan  # at every seed
    table = dataclasses.replace(table, val_accuracy=diverged)
    env = gym.make("N2NShrinkBench-v0", table=table).unwrapped
    reward, info = play(env, space.actions(larger[0]), seed=0)
    assert reward == 0.0 and info["simulated_seconds"] == 0.0
    assert info["accuracy"] == 0.0 and info["trained"] is False
    assert info["degenerate_reason"] is None and info["table_seed"] is not None
    reward, info = play(env, space.actions(smaller[0]), seed=0)
    assert reward == -1.0 and info["degenerate_reason"].startswith("training failed")
    assert info["trained"] is True and info["simulated_seconds"] > 0
    rewards = true_rewards(table)
    assert rewards[table.student_of(larger[0])] == 0.0
    assert rewards[table.student_of(smaller[0])] == -1.0
