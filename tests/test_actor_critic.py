"""Tests for the actor-critic agent (agents/actor_critic.py) on the mock evaluator."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import n2n_env  # noqa: F401  (registers the environments)
from agents.actor_critic import (
    FORMAT,
    ActorCritic,
    ActorCriticConfig,
    RemovalActorCritic,
    ShrinkActorCritic,
)
from agents.policy_files import PolicyFileError

pytestmark = pytest.mark.usefixtures("one_thread")


def removal_env(teacher: str = "conv4") -> gym.Env:
    return gym.make("N2NRemoval-v0", teacher=teacher, evaluator="mock")


def shrink_env() -> gym.Env:
    return gym.make("N2NShrink-v0", teacher="conv4", evaluator="mock")


class Payload:
    """An arbitrary object: unpickling it would run code a checkpoint must not contain."""


def test_config_and_networks_follow_the_paper() -> None:
    removal = ActorCriticConfig().resolved("removal")
    shrink = ActorCriticConfig().resolved("shrink")
    assert (removal.learning_rate, removal.hidden_size) == (0.003, 30)
    assert (shrink.learning_rate, shrink.hidden_size) == (0.01, 50)
    assert removal.rollouts_per_update == 5 and removal.num_layers == 2
    agent = ActorCritic.for_env(shrink_env())
    assert isinstance(agent.policy, ShrinkActorCritic)
    assert agent.policy.value_head.in_features == 50 and agent.policy.value_head.out_features == 1
    assert agent.optimizer.param_groups[0]["lr"] == 0.01
    # The critic is in the optimiser, so the value head is trained at all.
    optimised = {id(p) for group in agent.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimised for p in agent.policy.value_head.parameters())
    removal_agent = ActorCritic.for_env(removal_env())
    assert isinstance(removal_agent.policy, RemovalActorCritic)
    assert removal_agent.policy.value_head.in_features == 60  # both LSTM directions


def test_removal_reward_rises_and_critic_learns_the_return() -> None:
    env = removal_env()
    agent = ActorCritic.for_env(env, ActorCriticConfig(seed=0))
    history = agent.train(env, 120)
    rewards = [stats["mean_reward"] for stats in history]
    assert np.mean(rewards[-10:]) > np.mean(rewards[:10]) + 0.2
    assert agent.best_reward == max(stats["best_reward"] for stats in history)
    assert '"n2n-architecture"' in agent.best_architecture
    assert {"mean_accuracy", "mean_compression", "value_loss", "value_error"} <= set(history[-1])
    errors = [stats["value_error"] for stats in history]
    assert np.mean(errors[-10:]) < 0.25 * np.mean(errors[:10])
    # On fresh episodes the critic predicts their return at every step.
    episode = agent.rollout(env)
    values = agent.values(episode)
    assert values.shape == episode.actions.shape
    assert torch.all((values - episode.reward).abs() < 0.3)


def test_shrink_reward_rises_and_critic_learns_the_return() -> None:
    env = shrink_env()
    agent = ActorCritic.for_env(env, ActorCriticConfig(seed=0))
    history = agent.train(env, 60)
    rewards = [stats["mean_reward"] for stats in history]
    assert np.mean(rewards[-10:]) > np.mean(rewards[:10]) + 0.02
    errors = [stats["value_error"] for stats in history]
    assert np.mean(errors[-10:]) < 0.1 * np.mean(errors[:10])


def test_update_computes_the_appendix_6_loss() -> None:
    """Actor term with R - V(s_t) per step, plus value_coef * MSE, minus the entropy bonus."""
    env = shrink_env()
    config = ActorCriticConfig(seed=4, value_coef=0.7, entropy_coef=0.05)
    agent = ActorCritic.for_env(env, config)
    episodes = [agent.rollout(env) for _ in range(3)]
    with torch.no_grad():
        actor, critic, entropy = [], [], []
        for episode in episodes:
            logits, values = agent.evaluate(episode)
            dist = torch.distributions.Categorical(logits=logits)
            actor.append(((episode.reward - values) * dist.log_prob(episode.actions)).sum())
            critic.append(((values - episode.reward) ** 2).mean())
            entropy.append(dist.entropy().sum())
    expected = (-torch.stack(actor).mean() + 0.7 * torch.stack(critic).mean()
                - 0.05 * torch.stack(entropy).mean())
    stats = agent.update(episodes)
    assert stats["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert stats["value_loss"] == pytest.approx(float(torch.stack(critic).mean()), rel=1e-5)


def test_advantage_is_detached_from_the_critic() -> None:
    """With value_coef=0 nothing may train the value head: the actor's R - V is a constant."""
    env = removal_env()
    agent = ActorCritic.for_env(env, ActorCriticConfig(seed=0, value_coef=0.0))
    head = {name: p.detach().clone() for name, p in agent.policy.value_head.named_parameters()}
    lstm = agent.policy.lstm.weight_ih_l0.detach().clone()
    agent.update([agent.rollout(env) for _ in range(5)])
    for name, parameter in agent.policy.value_head.named_parameters():
        assert parameter.grad is None or not parameter.grad.any(), name
        assert torch.equal(parameter, head[name]), name
    assert not torch.equal(agent.policy.lstm.weight_ih_l0, lstm)  # the actor did learn


@pytest.mark.parametrize("make_env", [removal_env, shrink_env])
def test_save_load_round_trip(make_env, tmp_path: Path) -> None:
    env = make_env()
    agent = ActorCritic.for_env(env, ActorCriticConfig(seed=3, entropy_coef=0.01))
    agent.train(env, 3)
    path = tmp_path / "agent.pt"
    agent.save(path)
    loaded = ActorCritic.load(path)
    assert loaded.kind == agent.kind and loaded.config == agent.config
    assert loaded.iterations == agent.iterations == 3
    assert (loaded.best_reward, loaded.best_architecture) == (agent.best_reward,
                                                             agent.best_architecture)
    episode = agent.rollout(env)
    assert torch.equal(loaded.probabilities(episode), agent.probabilities(episode))
    assert torch.equal(loaded.values(episode), agent.values(episode))
    assert torch.equal(loaded.rollout(env, greedy=True).actions,
                       agent.rollout(env, greedy=True).actions)
    # The optimiser state came along too: one more identical update keeps them identical.
    batch = [agent.rollout(env) for _ in range(2)]
    agent.update(batch)
    loaded.update(batch)
    assert torch.equal(loaded.probabilities(episode), agent.probabilities(episode))
    assert torch.equal(loaded.values(episode), agent.values(episode))


def test_removal_policy_transfers_to_deeper_teacher(tmp_path: Path) -> None:
    small = removal_env("conv4")
    agent = ActorCritic.for_env(small, ActorCriticConfig(seed=0))
    agent.train(small, 5)
    agent.save(tmp_path / "conv4.pt")
    deep = removal_env("vgg11")
    loaded = ActorCritic.load(tmp_path / "conv4.pt")
    episode = loaded.rollout(deep)
    obs, _ = deep.reset()
    num_layers = int(obs["layer_mask"].sum())
    small_layers = int(small.reset()[0]["layer_mask"].sum())
    assert num_layers > small_layers and len(episode.actions) == num_layers
    assert loaded.values(episode).shape == (num_layers,)
    assert np.isfinite(episode.reward) and "architecture" in episode.info
    history = loaded.train(deep, 2)  # and keeps training there
    assert len(history) == 2 and loaded.iterations == 7


def test_load_refuses_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": Payload()}, path)
    with pytest.raises(PolicyFileError, match="pickled objects, which n2n never loads"):
        ActorCritic.load(path)
    # A REINFORCE checkpoint (no critic) is refused by its format tag, not half-loaded.
    from agents.reinforce import Reinforce, ReinforceConfig

    env = removal_env()
    Reinforce.for_env(env, ReinforceConfig(seed=0)).save(tmp_path / "reinforce.pt")
    with pytest.raises(ValueError, match=r"is not a policy written by ActorCritic\.save"):
        ActorCritic.load(tmp_path / "reinforce.pt")
