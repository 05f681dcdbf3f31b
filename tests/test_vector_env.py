"""N2NVectorEnv (n2n_env/vector_env.py) and gym.make_vec's vector entry points: one batched
evaluation per finishing step, the same episodes as the sub-environments alone, Gymnasium's
vector conventions, seeding, and the N2N-Bench twins."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from bench_tables import fake_table
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space
from observations_equal import same

import n2n_env  # noqa: F401  (registers the environments)
from agents.observations import worker_info
from n2n_env import zoo
from n2n_env.arch import Architecture
from n2n_env.evaluators import Evaluation, MockEvaluator, evaluate_each
from n2n_env.removal_env import N2NRemovalEnv
from n2n_env.shrink_env import N2NShrinkEnv
from n2n_env.vector_env import N2NVectorEnv

ENV_IDS = ("N2NRemoval-v0", "N2NShrink-v0")
BENCH_IDS = {"removal": "N2NRemovalBench-v0", "shrink": "N2NShrinkBench-v0"}


class CountingEvaluator(MockEvaluator):
    """The mock evaluator, counting its batches and the students it actually evaluates."""

    def __init__(self, teacher: Architecture) -> None:
        super().__init__(teacher)
        self.batches: list[list[Architecture]] = []
        self.evaluated: list[Architecture] = []
        self.closed = 0

    def evaluate_many(self, archs: Sequence[Architecture]) -> list[Evaluation]:
        self.batches.append(list(archs))
        return evaluate_each(self, archs)

    def evaluate(self, arch: Architecture) -> Evaluation:
        self.evaluated.append(arch)
        return super().evaluate(arch)

    def close(self) -> None:
        self.closed += 1


@pytest.fixture()
def conv4() -> Architecture:
    return zoo.get("conv4", (1, 8, 8), 10)


def episode_actions(env: gym.Env | gym.vector.VectorEnv, count: int, seed: int
                    ) -> list[list[int]]:
    """``count`` random allowed-action sequences for the episodes of ``env``'s MDP: each a
    list of one action per step (removal: keep the fixed layers)."""
    base = env.envs[0] if isinstance(env, N2NVectorEnv) else env.unwrapped
    rng = np.random.default_rng(seed)
    if isinstance(base, N2NRemovalEnv):
        fixed = ~np.array(base.teacher.removable())
        return [[1 if f else int(rng.integers(2)) for f in fixed] for _ in range(count)]
    return [rng.integers(10, size=base.num_variables).tolist() for _ in range(count)]


def play_vector(vec: N2NVectorEnv, episodes: list[list[list[int]]], seed: int | None = 0
                ) -> list[list[tuple[float, dict[str, Any]]]]:
    """Play vector episodes (each a list of per-sub-env action sequences); per vector
    episode, each sub-environment's (reward, terminal info)."""
    observation, _ = vec.reset(seed=seed)
    results = []
    for actions in episodes:
        for t in range(len(actions[0])):
            assert vec.observation_space.contains(observation)
            observation, rewards, terminated, truncated, info = vec.step(
                np.array([sequence[t] for sequence in actions]))
            assert not truncated.any()
            if t < len(actions[0]) - 1:
                assert not terminated.any() and not rewards.any()
        assert terminated.all() and info["_final_info"].all() and info["_final_obs"].all()
        results.append([(float(rewards[i]), worker_info(info["final_info"], i))
                        for i in range(vec.num_envs)])
    return results


def play_plain(env: gym.Env, sequences: list[list[int]], seed: int | None = 0
               ) -> list[tuple[float, dict[str, Any]]]:
    """Each action sequence as one episode of a plain env (seeded at the first reset)."""
    outcomes = []
    for index, actions in enumerate(sequences):
        env.reset(seed=seed if index == 0 else None)
        for action in actions:
            _, reward, terminated, _, info = env.step(action)
        assert terminated
        outcomes.append((float(reward), info))
    return outcomes


def without(info: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k.lstrip("_") not in keys}


def same_outcomes(first: list[list[tuple[float, dict[str, Any]]]],
                  second: list[list[tuple[float, dict[str, Any]]]]) -> bool:
    return len(first) == len(second) and all(
        len(a) == len(b) and all(ra == rb and same(ia, ib) for (ra, ia), (rb, ib) in zip(a, b))
        for a, b in zip(first, second))


# ------------------------------------------------------------------ batched evaluation
def test_one_batch_per_finishing_step_with_the_students_in_order(conv4: Architecture) -> None:
    evaluator = CountingEvaluator(conv4)
    vec = gym.make_vec("N2NRemoval-v0", num_envs=3, vectorization_mode="vector_entry_point",
                       evaluator=evaluator)
    [first, second] = episode_actions(vec, 2, seed=1)
    # sub-environments 0 and 2 build the same student: it is trained once
    results = play_vector(vec, [[first, second, first], [second, second, second]])
    assert len(evaluator.batches) == 2
    students = [Architecture.from_json(info["architecture"]) for _, info in results[0]]
    assert evaluator.batches[0] == students
    assert students[0] == students[2] != students[1]
    assert [info["cache_hit"] for _, info in results[0]] == [False, False, True]
    assert [info["cache_hit"] for _, info in results[1]] == [False, True, True]
    assert len(evaluator.evaluated) == 2 + 1
    assert results[0][0][0] == results[0][2][0]


def test_sub_environments_with_their_own_evaluators_get_one_batch_each(
        conv4: Architecture) -> None:
    shared, own = CountingEvaluator(conv4), CountingEvaluator(conv4)
    vec = N2NVectorEnv([N2NRemovalEnv(shared), N2NRemovalEnv(own), N2NRemovalEnv(shared)])
    assert vec.evaluators == [shared, own]
    [actions] = episode_actions(vec, 1, seed=2)
    play_vector(vec, [[actions] * 3])
    assert [len(batch) for batch in shared.batches] == [2] and len(own.batches) == 1
    vec.close()
    vec.close()
    assert (shared.closed, own.closed) == (1, 1)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_episodes_equal_those_of_the_sub_environments_alone(env_id: str) -> None:
    vec = gym.make_vec(env_id, num_envs=3, evaluator="mock")
    sequences = episode_actions(vec, 6, seed=3)
    episodes = [sequences[0:3], sequences[3:6]]
    results = play_vector(vec, episodes, seed=7)
    for index in range(3):
        alone = play_plain(gym.make(env_id, evaluator="mock").unwrapped,
                           [episode[index] for episode in episodes], seed=7 + index)
        for (reward, info), (plain_reward, plain_info) in zip(
                [vector[index] for vector in results], alone):
            assert reward == plain_reward
            assert same(without(info, "cache_hit"), without(plain_info, "cache_hit"))


def test_observations_and_step_infos_equal_the_sub_environments(conv4: Architecture) -> None:
    vec = N2NVectorEnv([N2NShrinkEnv(MockEvaluator(conv4)) for _ in range(2)])
    plain = [N2NShrinkEnv(MockEvaluator(conv4)) for _ in range(2)]
    observation, info = vec.reset(seed=0)
    singles = [env.reset(seed=i) for i, env in enumerate(plain)]
    actions = episode_actions(vec, 2, seed=4)
    for t in range(len(actions[0]) + 2):  # on into the next episode
        for index, (single_observation, single_info) in enumerate(singles):
            assert same({k: v[index] for k, v in observation.items()}, single_observation)
            assert same(worker_info(without(info, "final_obs", "final_info"), index),
                        single_info)
        assert np.array_equal(vec.action_masks(), np.stack([e.action_masks() for e in plain]))
        step = [actions[i][t % len(actions[i])] for i in range(2)]
        observation, _, terminated, _, info = vec.step(np.array(step))
        singles = []
        for env, action in zip(plain, step):
            single_observation, _, done, _, single_info = env.step(action)
            if done:
                single_observation, single_info = env.reset()
            singles.append((single_observation, single_info))
        if terminated.all():
            assert {"final_obs", "final_info"} <= set(info)


def test_annealing_counts_the_episodes_of_all_sub_environments(conv4: Architecture) -> None:
    # sub-environments share one terminal reward: 3 vector episodes are scored as 6
    # episodes of one env, in sub-environment order
    options = {"constraints": {"params": 1000}, "anneal_episodes": 4}
    vec = gym.make_vec("N2NRemoval-v0", num_envs=2, teacher=conv4, evaluator="mock",
                       **options)
    sequences = episode_actions(vec, 6, seed=5)
    results = play_vector(vec, [sequences[0:2], sequences[2:4], sequences[4:6]])
    flat = [outcome for vector in results for outcome in vector]
    alone = play_plain(gym.make("N2NRemoval-v0", teacher=conv4, evaluator="mock", **options),
                       sequences)
    assert [info["rewards"]["epsilon"] for _, info in flat] == [1.0, 0.75, 0.5, 0.25, 0, 0]
    assert [reward for reward, _ in flat] == [reward for reward, _ in alone]
    with pytest.raises(ValueError, match="other constraints"):
        N2NVectorEnv([N2NRemovalEnv(MockEvaluator(conv4)),
                      N2NRemovalEnv(MockEvaluator(conv4), anneal_episodes=3)])


# ------------------------------------------------------------------ Gymnasium conventions
@pytest.mark.parametrize("env_id", [*ENV_IDS, *BENCH_IDS.values()])
def test_make_vec_builds_one_vector_env_on_one_evaluator(env_id: str) -> None:
    kwargs: dict[str, Any] = (
        {"table": fake_table("removal" if "Removal" in env_id else "shrink")}
        if "Bench" in env_id else {"evaluator": "mock"})
    vec = gym.make_vec(env_id, num_envs=4, vectorization_mode="vector_entry_point", **kwargs)
    assert type(vec) is N2NVectorEnv and vec.num_envs == 4
    assert len({id(env.evaluator) for env in vec.envs}) == 1 and len(vec.evaluators) == 1
    assert len({id(env) for env in vec.envs}) == 4
    assert vec.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    assert vec.spec is not None and vec.spec.id == env_id
    assert vec.spec.kwargs["num_envs"] == 4
    single = gym.make(env_id, **kwargs)
    assert vec.single_observation_space == single.observation_space
    assert vec.single_action_space == single.action_space
    assert vec.observation_space == batch_space(single.observation_space, 4)
    assert vec.action_space == gym.spaces.MultiDiscrete([single.action_space.n] * 4)
    observation, info = vec.reset(seed=0)
    assert vec.observation_space.contains(observation)
    assert info["action_mask"].shape == (4, single.action_space.n) and info["_action_mask"].all()
    assert vec.action_masks().shape == (4, single.action_space.n)
    assert vec.get_attr("render_mode") == (None,) * 4
    # without a mode, make_vec uses the vector entry point too
    assert type(gym.make_vec(env_id, num_envs=2, **kwargs)) is N2NVectorEnv
    vec.close()


def test_reset_seeds_sub_environment_i_with_seed_plus_i() -> None:
    vec = gym.make_vec("N2NShrink-v0", num_envs=3, evaluator="mock")
    vec.reset(seed=10)
    assert [env.np_random_seed for env in vec.envs] == [10, 11, 12]
    vec.reset(seed=[4, None, 6])
    assert [env.np_random_seed for env in vec.envs] == [4, 11, 6]
    with pytest.raises(ValueError, match="2 seeds for 3"):
        vec.reset(seed=[1, 2])


def test_bad_actions_are_refused_before_any_sub_environment_moves() -> None:
    vec = gym.make_vec("N2NRemoval-v0", num_envs=2, evaluator="mock", invalid_action="raise")
    observation, _ = vec.reset(seed=0)
    fixed = int(np.flatnonzero(~np.array(vec.envs[0].teacher.removable()))[0])
    for _ in range(fixed):
        observation, *_ = vec.step(np.array([1, 1]))
    with pytest.raises(ValueError, match="expected 2 actions"):
        vec.step(np.array([1, 1, 1]))
    with pytest.raises(ValueError, match="invalid action"):
        vec.step(np.array([1, 2]))
    with pytest.raises(ValueError, match="masked in sub-environment 1"):
        vec.step(np.array([1, 0]))
    observation, *_ = vec.step(np.array([1, 1]))  # both sub-environments moved on together
    assert observation["position"][0] == observation["position"][1] == pytest.approx(
        (fixed + 1) / vec.envs[0].num_layers)


def test_episodes_of_different_lengths_raise_instead_of_desynchronising(
        conv4: Architecture) -> None:
    last_conv = max(i for i, layer in enumerate(conv4.layers) if layer.kind == "conv")
    shorter = conv4.remove([i not in range(last_conv, last_conv + 3) for i in range(len(conv4))])
    vec = N2NVectorEnv([N2NShrinkEnv(MockEvaluator(conv4)),
                        N2NShrinkEnv(MockEvaluator(conv4), start=shorter)])
    vec.reset(seed=0)
    steps = min(env.num_variables for env in vec.envs)
    assert vec.envs[0].num_variables != vec.envs[1].num_variables
    with pytest.raises(RuntimeError, match="ended their episodes and the others did not"):
        for _ in range(steps):
            vec.step(np.array([9, 9]))
    with pytest.raises(RuntimeError, match="reset"):
        vec.step(np.array([9, 9]))
    vec.reset()
    vec.step(np.array([9, 9]))


def test_sub_environments_must_be_unwrapped_and_alike(conv4: Architecture) -> None:
    with pytest.raises(TypeError, match="wrapper"):
        N2NVectorEnv([gym.make("N2NRemoval-v0", evaluator="mock")])
    with pytest.raises(ValueError, match="same MDP"):
        N2NVectorEnv([N2NRemovalEnv(MockEvaluator(conv4)), N2NShrinkEnv(MockEvaluator(conv4))])
    other = zoo.get("conv3", (1, 16, 16), 10)
    with pytest.raises(ValueError, match="another teacher"):
        N2NVectorEnv([N2NRemovalEnv(MockEvaluator(conv4)), N2NRemovalEnv(MockEvaluator(other))])
    with pytest.raises(ValueError, match="at least one"):
        N2NVectorEnv([])
    with pytest.raises(RuntimeError, match="reset"):
        N2NVectorEnv([N2NRemovalEnv(MockEvaluator(conv4))]).step(np.array([1]))


def test_info_keys_whose_type_differs_between_sub_environments_merge(
        conv4: Architecture) -> None:
    vec = N2NVectorEnv([N2NRemovalEnv(MockEvaluator(conv4)) for _ in range(3)])
    merged: dict[str, Any] = {}
    # e.g. table_seed: an int, but None for a degenerate bench student
    for index, (seed, count) in enumerate([(3, 1), (None, 2.5), (2, 3)]):
        merged = vec._add_info(merged, {"seed": seed, "count": count}, index)
    assert [worker_info(merged, i)["seed"] for i in range(3)] == [3, None, 2]
    assert merged["count"].tolist() == [1.0, 2.5, 3.0] and merged["_seed"].all()


def test_render_returns_each_sub_environments_frame() -> None:
    vec = gym.make_vec("N2NRemoval-v0", num_envs=2, evaluator="mock", render_mode="ansi")
    vec.reset(seed=0)
    frames = vec.render()
    assert isinstance(frames, tuple) and len(frames) == 2 and frames[0].startswith("N2NRemoval")


# ------------------------------------------------------------------ N2N-Bench
@pytest.mark.parametrize("space", ["removal", "shrink"])
def test_bench_vector_env_repeats_a_seed_and_equals_the_envs_alone(space: str) -> None:
    table = fake_table(space)
    vec = gym.make_vec(BENCH_IDS[space], num_envs=3, table=table)
    sequences = episode_actions(vec, 12, seed=6)
    episodes = [sequences[i:i + 3] for i in range(0, 12, 3)]

    def run(seed: int) -> list[list[tuple[float, dict[str, Any]]]]:
        return play_vector(gym.make_vec(BENCH_IDS[space], num_envs=3, table=table), episodes,
                           seed=seed)

    first = run(5)
    assert same_outcomes(first, run(5))
    assert [r for v in first for r, _ in v] != [r for v in run(6) for r, _ in v]
    for index in range(3):
        alone = play_plain(gym.make(BENCH_IDS[space], table=table),
                           [episode[index] for episode in episodes], seed=5 + index)
        for (reward, info), (plain_reward, plain_info) in zip(
                [vector[index] for vector in first], alone):
            assert reward == plain_reward
            assert info["table_seed"] == plain_info["table_seed"]
            assert info["simulated_seconds_total"] == plain_info["simulated_seconds_total"]
