"""Tests for the Stable-Baselines3 adapters (agents/sb3.py) on the mock evaluator."""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import n2n_env  # noqa: F401  (registers the environments)
from agents.random_search import RandomSearch
from agents.sb3 import AGENTS, MaskedActionFallback, episode_length, make_agent, monitor, train

pytestmark = pytest.mark.usefixtures("one_thread")

ENVS = ("N2NRemoval-v0", "N2NShrink-v0")


class Recorder(gym.Wrapper):
    """Records the mask offered and the action received at each step, and terminal infos."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.steps: list[tuple[np.ndarray, int]] = []
        self.finals: list[dict[str, Any]] = []

    def step(self, action: Any) -> Any:
        self.steps.append((self.env.unwrapped.action_masks().copy(), int(action)))
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            self.finals.append(info)
        return obs, reward, terminated, truncated, info


def make_env(env_id: str = "N2NRemoval-v0") -> Recorder:
    return Recorder(gym.make(env_id, evaluator="mock"))


def test_episode_length_and_n_steps() -> None:
    removal, shrink = make_env("N2NRemoval-v0"), make_env("N2NShrink-v0")
    assert episode_length(removal) == removal.unwrapped.num_layers == 20
    assert episode_length(shrink) == shrink.unwrapped.num_variables
    agent = make_agent("ppo", removal)
    assert agent.n_steps == 5 * 20 and agent.batch_size == 100
    assert agent.gamma == 1.0 and agent.gae_lambda == 1.0
    assert make_agent("a2c", shrink).n_steps == 5 * shrink.unwrapped.num_variables
    assert make_agent("ppo", removal, learning_rate=0.5).learning_rate == 0.5


@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize("name", AGENTS)
def test_trains_a_few_hundred_steps(name: str, env_id: str) -> None:
    env = make_env(env_id)
    length = episode_length(env)
    episodes = max(10, 200 // length)  # 200 steps: two rollouts on either env
    overrides = {"n_epochs": 2} if name == "recurrent-ppo" else {}  # its LSTM is slow on CPU
    agent = make_agent(name, env, seed=0, **overrides)
    rewards = train(agent, episodes)
    assert len(rewards) == episodes == len(env.finals)
    assert np.all(np.isfinite(rewards))
    assert monitor(agent).get_episode_lengths() == [length] * episodes
    # whatever the agent sampled, the env only ever received allowed actions
    assert all(mask[action] for mask, action in env.steps)
    assert agent.num_timesteps == episodes * length
    # a second call returns only its own episodes
    assert len(train(agent, 5)) == 5


@pytest.mark.parametrize("env_id", ENVS)
def test_maskable_ppo_never_samples_a_masked_action(env_id: str) -> None:
    # No fallback wrapper for MaskablePPO: the action the env receives is the one sampled.
    env = make_env(env_id)
    agent = make_agent("maskable-ppo", env, seed=0)
    assert not any(isinstance(e, MaskedActionFallback) for e in _chain(agent))
    train(agent, 20)
    assert all(mask[action] for mask, action in env.steps)
    if env_id == "N2NRemoval-v0":
        assert any(not mask.all() for mask, _ in env.steps), "no fixed layer was seen"
        fixed = ~np.array(env.unwrapped.teacher.removable())
        kinds = [layer.kind for layer, f in zip(env.unwrapped.teacher.layers, fixed) if f]
        for info in env.finals:  # the fixed layers survive in every student
            layers = json.loads(info["architecture"])["layers"]
            student_kinds = [layer["kind"] for layer in layers]
            for kind in set(kinds):
                assert student_kinds.count(kind) >= kinds.count(kind)


def _chain(agent: Any) -> list[gym.Env]:
    env, chain = agent.get_env().envs[0], []
    while isinstance(env, gym.Wrapper):
        chain.append(env)
        env = env.env
    return chain


def test_fallback_maps_masked_actions_to_nearest_allowed() -> None:
    env = MaskedActionFallback(gym.make("N2NRemoval-v0", evaluator="mock"))
    env.reset(seed=0)
    fixed = ~np.array(env.unwrapped.teacher.removable())
    for index in range(env.unwrapped.num_layers):
        assert env.action(0) == (1 if fixed[index] else 0)
        assert env.action(1) == 1
        env.step(0)


def test_monitor_logs_accuracy_and_compression() -> None:
    env = make_env()
    agent = make_agent("ppo", env, seed=0)
    rewards = train(agent, 10)
    logged = list(agent.ep_info_buffer)
    assert len(logged) == 10
    for entry, info, reward in zip(logged, env.finals, rewards):
        assert entry["accuracy"] == info["accuracy"]
        assert entry["compression"] == info["compression"]
        assert entry["r"] == pytest.approx(reward, abs=1e-6)
    assert len({entry["compression"] for entry in logged}) > 1


def test_ppo_improves_on_removal() -> None:
    # Seed 0, 200 episodes: mean reward per 50 episodes went 0.25, 0.45, 0.42, 0.57 (seeds 1-3
    # behaved alike); random search averages about 0.35 on this teacher.
    agent = make_agent("ppo", make_env(), seed=0)
    rewards = np.array(train(agent, 200))
    baseline = RandomSearch().train(make_env(), iterations=20)
    random_mean = float(np.mean([h["mean_reward"] for h in baseline]))
    assert rewards[-50:].mean() > rewards[:50].mean() + 0.15
    assert rewards[-50:].mean() > random_mean + 0.1


def test_unknown_agent_name() -> None:
    with pytest.raises(ValueError, match="unknown agent 'dqn'") as error:
        make_agent("dqn", make_env())
    for name in AGENTS:
        assert name in str(error.value)


@pytest.mark.parametrize("verbose", [0, 1])
def test_learning_leaves_no_folders_behind(verbose: int, tmp_path: Any, monkeypatch: Any,
                                           capsys: Any) -> None:
    # SB3's own logger makes an empty SB3-<date> folder in the temp dir on every `learn`.
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    agent = make_agent("ppo", make_env(), seed=0, verbose=verbose)
    train(agent, 5)
    train(agent, 5)
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith("SB3-")] == []
    assert ("total_timesteps" in capsys.readouterr().out) == (verbose == 1)


def test_tensorboard_log_still_writes_runs(tmp_path: Any) -> None:
    agent = make_agent("ppo", make_env(), seed=0, tensorboard_log=str(tmp_path))
    train(agent, 5)
    runs = [path for path in tmp_path.iterdir()]
    assert len(runs) == 1 and runs[0].name.startswith("PPO_")
    assert any(runs[0].iterdir())  # SB3's tensorboard event file


@pytest.mark.parametrize("env_id", ENVS)
def test_a_plain_ppo_without_masks_learns_on_both_environments(env_id: str) -> None:
    from stable_baselines3 import PPO

    env = gym.make(env_id, evaluator="mock")
    PPO("MultiInputPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0).learn(128)
