"""Tests for the Stable-Baselines3 adapters (agents/sb3.py) on the mock evaluator."""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import VecMonitor

import n2n_env  # noqa: F401  (registers the environments)
from agents.random_search import RandomSearch
from agents.sb3 import (
    AGENTS,
    MaskedActionFallback,
    VecMaskedActionFallback,
    episode_length,
    make_agent,
    monitor,
    rollout_steps,
    train,
)
from agents.vec_adapter import GymnasiumVecEnv

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


# ------------------------------------------------------------------ vector envs
def make_vector(num_envs: int, env_id: str = "N2NRemoval-v0", **kwargs: Any
                ) -> gym.vector.VectorEnv:
    return gym.make_vec(env_id, num_envs=num_envs, evaluator="mock", **kwargs)


def test_n_steps_on_a_vector_env_holds_whole_episodes_of_every_sub_environment() -> None:
    assert [rollout_steps(20, n) for n in (1, 2, 3, 4, 5, 7)] == [100, 60, 40, 40, 20, 20]
    five, two = make_vector(5), make_vector(2)
    assert episode_length(five) == 20
    agent = make_agent("ppo", five)
    assert agent.n_steps == 20 and agent.batch_size == 100 and agent.n_envs == 5
    agent = make_agent("maskable-ppo", two)
    assert agent.n_steps == 60 and agent.batch_size == 120
    assert make_agent("a2c", make_vector(5, "N2NShrink-v0")).n_steps == (
        make_env("N2NShrink-v0").unwrapped.num_variables)


def test_the_adapter_speaks_sb3s_vec_env_interface() -> None:
    envs = make_vector(3, "N2NShrink-v0")
    adapter = GymnasiumVecEnv(envs)
    assert adapter.num_envs == 3 and adapter.observation_space == envs.single_observation_space
    adapter.seed(7)
    observation = adapter.reset()
    assert [int(seed) for seed in adapter.get_attr("np_random_seed")] == [7, 8, 9]
    assert observation["action_mask"].shape == (3, 10)
    assert all("action_mask" in info for info in adapter.reset_infos)
    masks = adapter.env_method("action_masks")
    assert len(masks) == 3 and np.array_equal(np.stack(masks), envs.action_masks())
    assert adapter.env_method("action_masks", indices=[1])[0].shape == (10,)
    assert adapter.has_attr("action_masks") and not adapter.has_attr("no_such_attribute")
    adapter.set_attr("invalid_action", "raise", indices=[2])
    assert adapter.get_attr("invalid_action") == ["replace", "replace", "raise"]
    assert adapter.env_is_wrapped(gym.Wrapper) == [False] * 3
    length = episode_length(adapter)
    for t in range(length):
        observation, rewards, dones, infos = adapter.step(np.array([4, 5, 6]))
        assert rewards.dtype == np.float32 and len(infos) == 3
        assert all(info["TimeLimit.truncated"] is False for info in infos)
        assert dones.all() == (t == length - 1)
    for info in infos:
        assert {"terminal_observation", "accuracy", "architecture"} <= set(info)
        assert info["terminal_observation"]["position"] == pytest.approx([1.0])
    assert observation["position"] == pytest.approx(np.zeros((3, 1)))  # the next episode
    adapter.close()


def test_the_adapter_wants_same_step_autoreset() -> None:
    from gymnasium.vector import AutoresetMode

    def make() -> gym.Env:
        return gym.make("N2NRemoval-v0", evaluator="mock")

    with pytest.raises(ValueError, match="SAME_STEP"):
        GymnasiumVecEnv(gym.vector.SyncVectorEnv([make, make]))
    synced = GymnasiumVecEnv(gym.vector.SyncVectorEnv(
        [make, make], autoreset_mode=AutoresetMode.SAME_STEP))
    synced.reset()
    for _ in range(20):
        _, _, dones, infos = synced.step(np.array([1, 0]))
    assert dones.all() and all("terminal_observation" in info for info in infos)


def test_plain_ppo_and_maskable_ppo_learn_through_the_adapter() -> None:
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import PPO

    model = PPO("MultiInputPolicy", GymnasiumVecEnv(make_vector(2)), n_steps=20,
                batch_size=40, n_epochs=1, seed=0, device="cpu")
    model.learn(40)
    assert model.num_timesteps == 40
    # invalid_action="raise": one masked action and the step fails
    masked = GymnasiumVecEnv(make_vector(2, invalid_action="raise"))
    model = MaskablePPO("MultiInputPolicy", masked, n_steps=20, batch_size=40, n_epochs=1,
                        seed=0, device="cpu")
    model.learn(80)
    assert model.num_timesteps == 80


@pytest.mark.parametrize("name", AGENTS)
def test_every_agent_trains_on_a_vector_env_without_masked_actions(name: str) -> None:
    envs = make_vector(5, invalid_action="raise")  # unmasked agents go through the fallback
    overrides = {"n_epochs": 2} if name == "recurrent-ppo" else {}
    agent = make_agent(name, envs, seed=0, **overrides)
    assert isinstance(agent.get_env(), VecMonitor)
    rewards = train(agent, 10)
    assert len(rewards) == 10 and np.all(np.isfinite(rewards))
    assert agent.num_timesteps == 10 * 20
    with pytest.raises(ValueError, match="VecMonitor"):
        monitor(agent)


def test_vec_fallback_maps_each_masked_action_to_its_nearest_allowed() -> None:
    envs = make_vector(2, invalid_action="raise")
    fallback = VecMaskedActionFallback(GymnasiumVecEnv(envs))
    fallback.reset()
    fixed = ~np.array(envs.envs[0].teacher.removable())
    length = envs.envs[0].num_layers
    assert fixed[:-1].any()
    for index in range(length - 1):  # the last step shows the next episode's observation
        observation, _, _, _ = fallback.step(np.array([0, 1]))
        assert observation["decisions"][0][index] == (1.0 if fixed[index] else -1.0)
        assert observation["decisions"][1][index] == 1.0
