"""Tests for the random-search baseline (agents/random_search.py) on the mock evaluator."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import n2n_env  # noqa: F401  (registers the environments)
from agents.random_search import RandomSearch, RandomSearchConfig


class Recorder(gym.Wrapper):
    """Records the mask offered before each step, the action taken and terminal infos."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.steps: list[tuple[np.ndarray, int]] = []
        self.finals: list[tuple[float, dict[str, Any]]] = []

    def step(self, action: Any) -> Any:
        self.steps.append((self.env.unwrapped.action_masks().copy(), int(action)))
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            self.finals.append((float(reward), info))
        return obs, reward, terminated, truncated, info


def search(env_id: str = "N2NRemoval-v0", seed: int = 0, iterations: int = 4
           ) -> tuple[RandomSearch, list[dict[str, float]], Recorder]:
    env = Recorder(gym.make(env_id, evaluator="mock"))
    agent = RandomSearch(RandomSearchConfig(seed=seed))
    return agent, agent.train(env, iterations), env


def test_respects_masks_and_samples_both_actions_where_allowed() -> None:
    for env_id in ("N2NRemoval-v0", "N2NShrink-v0"):
        _, _, env = search(env_id, iterations=6)
        assert all(mask[action] for mask, action in env.steps)
    _, _, env = search("N2NRemoval-v0", iterations=6)
    fixed = [action for mask, action in env.steps if not mask.all()]
    free = [action for mask, action in env.steps if mask.all()]
    assert fixed, "the removal env has fixed layers: the test must see some"
    # uniform among allowed: removable layers are removed about half the time
    assert 0.35 < np.mean(free) < 0.65


def test_history_has_reinforce_shape_and_counts_m_episodes() -> None:
    agent, history, env = search(iterations=3)
    assert [h["iteration"] for h in history] == [1.0, 2.0, 3.0]
    assert set(history[0]) == {"iteration", "mean_reward", "best_reward", "mean_accuracy",
                               "mean_compression"}
    assert agent.episodes == len(env.finals) == 15
    rewards = [reward for reward, _ in env.finals]
    for k, h in enumerate(history):
        batch = env.finals[5 * k: 5 * k + 5]
        assert np.isclose(h["mean_reward"], np.mean([r for r, _ in batch]))
        assert np.isclose(h["best_reward"], max(r for r, _ in batch))
        assert np.isclose(h["mean_accuracy"], np.mean([i["accuracy"] for _, i in batch]))
        assert np.isclose(h["mean_compression"],
                          np.mean([i["compression"] for _, i in batch]))
    assert agent.rewards == rewards


def test_best_reward_is_max_seen_with_its_architecture() -> None:
    agent, history, env = search(iterations=6)
    rewards = [reward for reward, _ in env.finals]
    best = int(np.argmax(rewards))
    assert agent.best_reward == max(rewards) == max(h["best_reward"] for h in history)
    assert agent.best_architecture == env.finals[best][1]["architecture"]
    assert isinstance(agent.best_architecture, str) and agent.best_architecture.startswith("{")
    assert agent.mean_reward == np.mean(rewards)


def test_seeded() -> None:
    first, history_a, env_a = search(seed=3)
    second, history_b, env_b = search(seed=3)
    assert history_a == history_b
    assert [a for _, a in env_a.steps] == [a for _, a in env_b.steps]
    assert first.best_architecture == second.best_architecture
    _, _, env_c = search(seed=4)
    assert [a for _, a in env_a.steps] != [a for _, a in env_c.steps]


def test_best_student_is_never_an_over_budget_one() -> None:
    env = gym.make("N2NRemoval-v0", evaluator="mock", constraints={"params": 1},
                   anneal_episodes=100)
    search = RandomSearch(RandomSearchConfig(seed=0))
    search.train(env, 3)
    assert max(search.rewards) > 0 and search.best_architecture is None


# ------------------------------------------------------------------ vector envs
def vector(num_envs: int, env_id: str = "N2NRemoval-v0") -> gym.vector.VectorEnv:
    # invalid_action="raise": a masked action would fail the step
    return gym.make_vec(env_id, num_envs=num_envs, evaluator="mock", invalid_action="raise")


def test_on_a_vector_env_an_iteration_is_one_episode_per_sub_environment() -> None:
    for env_id in ("N2NRemoval-v0", "N2NShrink-v0"):
        agent = RandomSearch(RandomSearchConfig(seed=0))
        history = agent.train(vector(5, env_id), iterations=2)
        assert [h["iteration"] for h in history] == [1.0, 2.0] and agent.episodes == 10
        assert set(history[0]) == {"iteration", "mean_reward", "best_reward",
                                   "mean_accuracy", "mean_compression"}
        assert np.isclose(history[1]["mean_reward"], np.mean(agent.rewards[5:]))
        assert max(agent.rewards) == agent.best_reward or agent.best_architecture is None
    outcomes = RandomSearch().rollouts(vector(2), 5)  # whole vector episodes: 3 x 2
    assert len(outcomes) == 6
    for reward, info in outcomes:
        assert -1.0 <= reward <= 1.0 and '"n2n-architecture"' in info["architecture"]
        assert "final_obs" not in info and "action_mask" in info


def test_vector_rollouts_are_seeded_and_sample_each_sub_environment() -> None:
    def architectures(seed: int) -> list[str]:
        agent = RandomSearch(RandomSearchConfig(seed=seed))
        return [info["architecture"] for _, info in agent.rollouts(vector(5), 10)]

    first = architectures(3)
    assert first == architectures(3) != architectures(4)
    assert len(set(first)) > 5  # the sub-environments do not all play the same actions


def test_vector_rollout_refuses_episodes_that_end_apart() -> None:
    class Uneven(gym.vector.VectorEnv):
        """Two one-action sub-environments; the first ends after 1 step, the other after 2."""

        def __init__(self) -> None:
            self.num_envs = 2
            self.t = 0

        def reset(self, *, seed: Any = None, options: Any = None) -> Any:
            self.t = 0
            return {"action_mask": np.ones((2, 1), np.float32)}, {}

        def step(self, actions: Any) -> Any:
            self.t += 1
            return ({"action_mask": np.ones((2, 1), np.float32)}, np.zeros(2),
                    np.array([True, self.t == 2]), np.zeros(2, bool), {})

    with pytest.raises(ValueError, match="different steps"):
        RandomSearch().vector_rollout(Uneven())
