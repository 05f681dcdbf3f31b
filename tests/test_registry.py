"""Tests for agents/registry.py: every agent behind one interface, on the mock evaluator."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import n2n_env  # noqa: F401  (registers the environments)
from agents import registry
from agents.reinforce import Reinforce

pytestmark = pytest.mark.usefixtures("one_thread")


def removal_env(teacher: str = "conv4") -> gym.Env:
    return gym.make("N2NRemoval-v0", teacher=teacher, evaluator="mock")


@pytest.mark.parametrize("name", registry.AGENT_NAMES)
def test_an_iteration_is_five_scored_episodes(name: str) -> None:
    env = removal_env()
    agent = registry.make(name, env, seed=0)
    agent.reseed(11)
    outcomes = agent.iterate(env)
    assert len(outcomes) == 5 and agent.iterations == 1
    for reward, info in outcomes:
        assert isinstance(reward, float) and -1.0 <= reward <= 1.0
        assert '"n2n-architecture"' in info["architecture"]
        assert set(info) >= {"accuracy", "compression", "cache_hit", "degenerate_reason"}
        assert "terminal_observation" not in info


@pytest.mark.parametrize("name", ["reinforce", "actor-critic", "ppo", "maskable-ppo",
                                  "recurrent-ppo"])  # a2c: its 5 episodes here are all -1,
def test_save_and_restore_continue_where_it_stopped(name: str, tmp_path: Path) -> None:
    env = removal_env()
    agent = registry.make(name, env, seed=0)
    for iteration in range(2):
        agent.reseed(iteration)
        agent.iterate(env)
    agent.save(tmp_path / "policy.pt")
    restored = registry.restore(name, removal_env(), tmp_path / "policy.pt", seed=0)
    assert restored.iterations == 2
    agent.reseed(7)  # SB3 samples from torch's global generator: reseed just before use
    ahead = [reward for reward, _ in agent.iterate(env)]
    restored.reseed(7)
    again = [reward for reward, _ in restored.iterate(removal_env())]
    assert again == pytest.approx(ahead)


def test_sb3_policy_file_loads_without_unpickling(tmp_path: Path) -> None:
    env = removal_env()
    agent = registry.make("ppo", env, seed=0)
    agent.save(tmp_path / "policy.pt")
    saved = torch.load(tmp_path / "policy.pt", weights_only=True)
    assert saved["format"] == registry.SB3_FORMAT and saved["name"] == "ppo"
    with pytest.raises(ValueError, match="holds a ppo policy, not a2c"):
        registry.restore("a2c", env, tmp_path / "policy.pt")
    Reinforce.for_env(env).save(tmp_path / "reinforce.pt")
    with pytest.raises(ValueError, match="not an SB3 policy"):
        registry.restore("ppo", env, tmp_path / "reinforce.pt")


def test_random_search_saves_nothing(tmp_path: Path) -> None:
    agent = registry.make("random", removal_env(), seed=0)
    agent.save(tmp_path / "policy.pt")
    assert not (tmp_path / "policy.pt").exists()


def test_reseeding_repeats_the_sampled_episodes() -> None:
    for name in ("reinforce", "random", "ppo"):
        env = removal_env()
        agent = registry.make(name, env, seed=0)
        agent.reseed(5)
        first = [info["architecture"] for _, info in agent.iterate(env)]
        fresh = registry.make(name, removal_env(), seed=0)
        fresh.reseed(5)
        second = [info["architecture"] for _, info in fresh.iterate(removal_env())]
        assert first == second, name


def test_policy_init_transfers_a_removal_policy_only(tmp_path: Path) -> None:
    trained = registry.make("reinforce", removal_env(), seed=0)
    trained.iterate(removal_env())
    trained.save(tmp_path / "removal.pt")
    deeper = removal_env("vgg11")
    agent = registry.make("reinforce", deeper, policy_init=tmp_path / "removal.pt")
    assert agent.iterations == 0 and agent.learner.baseline is None
    assert torch.equal(agent.learner.policy.head.weight, trained.learner.policy.head.weight)
    assert len(agent.iterate(deeper)[0][1]["action_mask"]) == 2
    shrink = gym.make("N2NShrink-v0", teacher="conv4", evaluator="mock")
    registry.make("reinforce", shrink, seed=0).save(tmp_path / "shrink.pt")
    with pytest.raises(ValueError, match="shrink policy"):
        registry.make("reinforce", deeper, policy_init=tmp_path / "shrink.pt")
    with pytest.raises(ValueError, match="policy_init needs one of reinforce, actor-critic"):
        registry.make("ppo", deeper, policy_init=tmp_path / "removal.pt")


def test_unknown_names_and_a_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="allowed: reinforce, actor-critic, ppo, a2c"):
        registry.make("dqn", removal_env())
    monkeypatch.setitem(sys.modules, "agents.sb3", None)
    with pytest.raises(ValueError, match=r'pip install "n2n\[sb3\]"'):
        registry.make("ppo", removal_env())
    with pytest.raises(ValueError, match=r'pip install "n2n\[sb3\]"'):
        registry.check_available("maskable-ppo")
    registry.check_available("actor-critic")
    assert isinstance(registry.make("reinforce", removal_env()), registry.PolicyGradientAgent)


def test_every_episode_of_an_sb3_iteration_is_reported_once() -> None:
    env = removal_env()
    agent = registry.make("maskable-ppo", env, seed=0)
    outcomes = [agent.iterate(env) for _ in range(3)]
    assert [len(batch) for batch in outcomes] == [5, 5, 5]
    monitor_rewards = np.asarray(agent.model.get_env().envs[0].get_episode_rewards())
    assert np.allclose(monitor_rewards, [r for batch in outcomes for r, _ in batch])


def test_restore_refuses_a_missing_file(tmp_path: Path) -> None:
    for name in ("reinforce", "ppo"):
        with pytest.raises(FileNotFoundError, match="no saved"):
            registry.restore(name, removal_env(), tmp_path / "missing.pt")
    assert registry.restore("random", removal_env(), tmp_path / "missing.pt").iterations == 0


def test_policy_init_samples_with_the_given_seed(tmp_path: Path) -> None:
    registry.make("reinforce", removal_env(), seed=0).save(tmp_path / "removal.pt")
    runs = []
    for seed in (3, 3, 4):
        agent = registry.make("reinforce", removal_env(), seed=seed,
                              policy_init=tmp_path / "removal.pt")
        runs.append([info["architecture"] for _, info in agent.iterate(removal_env())])
    assert runs[0] == runs[1] != runs[2]


# ------------------------------------------------------------------ vector envs
class BatchCounter:
    """The mock evaluator (given as an evaluator instance), recording each batch's size."""

    def __init__(self) -> None:
        from n2n_env import data, zoo
        from n2n_env.evaluators import MockEvaluator

        shape, classes = data.info("digits")
        self.mock = MockEvaluator(zoo.get("conv4", shape, classes))
        self.teacher_architecture = self.mock.teacher_architecture
        self.teacher_accuracy = self.mock.teacher_accuracy
        self.batches: list[int] = []

    def identity(self) -> dict[str, str]:
        return dict(self.mock.identity())

    def evaluate(self, arch: Any) -> Any:
        return self.mock.evaluate(arch)

    def evaluate_many(self, archs: Any) -> Any:
        self.batches.append(len(archs))
        return self.mock.evaluate_many(archs)


def removal_vector(num_envs: int = 5, **kwargs: Any) -> gym.vector.VectorEnv:
    kwargs.setdefault("evaluator", "mock")
    return gym.make_vec("N2NRemoval-v0", num_envs=num_envs, **kwargs)


@pytest.mark.parametrize("name", registry.AGENT_NAMES)
def test_on_a_vector_env_an_iteration_is_one_batch_of_five_episodes(name: str) -> None:
    counter = BatchCounter()
    env = removal_vector(evaluator=counter)
    agent = registry.make(name, env, seed=0)
    agent.reseed(11)
    outcomes = agent.iterate(env)
    assert len(outcomes) == 5 and agent.iterations == 1
    assert counter.batches == [5]  # the five students were evaluated together
    for reward, info in outcomes:
        assert isinstance(reward, float) and -1.0 <= reward <= 1.0
        assert '"n2n-architecture"' in info["architecture"]
        assert set(info) >= {"accuracy", "compression", "cache_hit", "degenerate_reason"}
        assert not set(info) & {"terminal_observation", "final_obs", "final_info", "episode"}
    assert len(agent.iterate(env)) == 5 and agent.iterations == 2


@pytest.mark.parametrize("name", ["reinforce", "random", "ppo"])
def test_two_sub_environments_play_whole_vector_episodes(name: str) -> None:
    env = removal_vector(2)
    agent = registry.make(name, env, seed=0)
    assert len(agent.iterate(env)) == 6 and agent.iterations == 1


@pytest.mark.parametrize("name", ["reinforce", "maskable-ppo"])
def test_save_and_restore_on_a_vector_env(name: str, tmp_path: Path) -> None:
    env = removal_vector()
    agent = registry.make(name, env, seed=0)
    agent.iterate(env)
    agent.save(tmp_path / "policy.pt")
    fresh = removal_vector()
    restored = registry.restore(name, fresh, tmp_path / "policy.pt", seed=0)
    assert restored.iterations == 1
    agent.reseed(7)
    ahead = [reward for reward, _ in agent.iterate(env)]
    restored.reseed(7)
    assert [reward for reward, _ in restored.iterate(fresh)] == pytest.approx(ahead)
