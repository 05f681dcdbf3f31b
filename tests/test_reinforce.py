"""Tests for the REINFORCE agent (agents/reinforce.py) on the mock evaluator (instant rewards)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import n2n_env  # noqa: F401  (registers the environments)
from agents.actor_critic import ActorCritic, ActorCriticConfig
from agents.advantages import advantages, risk_seeking_advantages, update_baseline
from agents.policies import IndependentShrinkPolicy, ShrinkPolicy
from agents.policy_files import PolicyFileError
from agents.reinforce import (
    FORMAT,
    Episode,
    Reinforce,
    ReinforceConfig,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def removal_env(teacher: str = "conv4") -> gym.Env:
    return gym.make("N2NRemoval-v0", teacher=teacher, evaluator="mock")


def shrink_env() -> gym.Env:
    return gym.make("N2NShrink-v0", teacher="conv4", evaluator="mock")


class Payload:
    """An arbitrary object: unpickling it would run code a checkpoint must not contain."""


def test_config_follows_the_paper_on_removal_and_n2n_bench_on_shrink() -> None:
    removal, shrink = ReinforceConfig().resolved("removal"), ReinforceConfig().resolved("shrink")
    assert (removal.learning_rate, removal.hidden_size, removal.risk_seeking) == (0.003, 30, 0)
    assert removal.rollouts_per_update == 5 and removal.num_layers == 2
    assert (shrink.shrink_policy, shrink.learning_rate, shrink.risk_seeking) == (
        "independent", 0.1, 0.1)
    paper = ReinforceConfig(shrink_policy="lstm", risk_seeking=0).resolved("shrink")
    assert (paper.learning_rate, paper.hidden_size, paper.risk_seeking) == (0.01, 50, 0)
    assert ReinforceConfig(learning_rate=0.3).resolved("shrink").learning_rate == 0.3
    assert isinstance(Reinforce.for_env(shrink_env()).policy, IndependentShrinkPolicy)
    agent = Reinforce.for_env(shrink_env(), ReinforceConfig(shrink_policy="lstm"))
    assert agent.kind == "shrink" and isinstance(agent.policy, ShrinkPolicy)
    assert agent.policy.lstm.num_layers == 2 and agent.policy.lstm.hidden_size == 50


def test_risk_seeking_zero_is_the_moving_average_baseline() -> None:
    env = shrink_env()
    agent = Reinforce.for_env(env, ReinforceConfig(seed=0, shrink_policy="lstm",
                                                   risk_seeking=0))
    first = [agent.rollout(env) for _ in range(5)]
    agent.update(first)
    assert agent.recent_rewards == []  # the risk-seeking window is never filled
    assert agent.baseline == pytest.approx(np.mean([e.reward for e in first]))
    default = Reinforce.for_env(env, ReinforceConfig(seed=0))
    default.update([default.rollout(env) for _ in range(5)])
    assert len(default.recent_rewards) == 5


def test_files_saved_before_the_shrink_settings_load_with_the_papers_policy(
        tmp_path: Path) -> None:
    """A shrink policy saved without `shrink_policy` and `risk_seeking` (or with
    risk_seeking None, then "off") is the paper's LSTM with its moving-average baseline."""
    env = shrink_env()
    agent = Reinforce.for_env(env, ReinforceConfig(seed=0, shrink_policy="lstm",
                                                   risk_seeking=0))
    agent.train(env, 2)
    path = tmp_path / "old.pt"
    agent.save(path)
    data = torch.load(path, weights_only=True)
    del data["config"]["shrink_policy"], data["config"]["risk_seeking"]
    torch.save(data, path)
    loaded = Reinforce.load(path)
    assert isinstance(loaded.policy, ShrinkPolicy)
    assert (loaded.config.shrink_policy, loaded.config.risk_seeking) == ("lstm", 0.0)
    data["config"]["shrink_policy"], data["config"]["risk_seeking"] = "lstm", None
    torch.save(data, path)
    assert Reinforce.load(path).config.risk_seeking == 0.0


def test_removal_reward_rises() -> None:
    env = removal_env()
    agent = Reinforce.for_env(env, ReinforceConfig(seed=0))
    history = agent.train(env, 120)
    rewards = [stats["mean_reward"] for stats in history]
    assert np.mean(rewards[-10:]) > np.mean(rewards[:10]) + 0.2
    assert agent.best_reward == max(stats["best_reward"] for stats in history)
    assert '"n2n-architecture"' in agent.best_architecture
    assert {"mean_accuracy", "mean_compression", "baseline"} <= set(history[-1])
    assert history[-1]["mean_compression"] > history[0]["mean_compression"]


def test_shrink_reward_rises() -> None:
    env = shrink_env()
    agent = Reinforce.for_env(env, ReinforceConfig(seed=0))
    history = agent.train(env, 40)
    rewards = [stats["mean_reward"] for stats in history]
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.05


@pytest.mark.parametrize("agent_class, config_class", [(Reinforce, ReinforceConfig),
                                                       (ActorCritic, ActorCriticConfig)])
def test_masks_respected(agent_class: type[Reinforce], config_class: type) -> None:
    """For both recurrent agents (actor-critic acts through Reinforce's code)."""
    env = removal_env("vgg11")
    agent = agent_class.for_env(env, config_class(seed=1))
    with torch.no_grad():  # make the policy want to remove everything
        agent.policy.head.bias.copy_(torch.tensor([20.0, -20.0]))
    for greedy in (True, False, False):
        episode = agent.rollout(env, greedy=greedy)  # a masked action would raise ValueError
        fixed = ~episode.masks[:, 0]
        assert 0 < int(fixed.sum()) < len(fixed)
        assert torch.all(episode.actions[fixed] == 1)
        assert torch.all(episode.actions[~fixed] == 0)
        probabilities = agent.probabilities(episode)
        assert torch.all(probabilities[fixed, 0] == 0.0)
        assert torch.allclose(probabilities.sum(dim=1), torch.ones(len(fixed)))
    agent.update([agent.rollout(env) for _ in range(3)])  # masked log-probs stay finite
    assert all(torch.isfinite(p).all() for p in agent.policy.parameters())


@pytest.mark.parametrize("make_env", [removal_env, shrink_env])
def test_save_load_round_trip(make_env, tmp_path: Path) -> None:
    env = make_env()
    agent = Reinforce.for_env(env, ReinforceConfig(seed=3, entropy_coef=0.01))
    agent.train(env, 3)
    path = tmp_path / "agent.pt"
    agent.save(path)
    loaded = Reinforce.load(path)
    assert loaded.kind == agent.kind and loaded.config == agent.config
    assert (loaded.baseline, loaded.iterations) == (agent.baseline, agent.iterations)
    assert (loaded.best_reward, loaded.best_architecture) == (agent.best_reward,
                                                             agent.best_architecture)
    episode = agent.rollout(env)
    assert torch.equal(loaded.probabilities(episode), agent.probabilities(episode))
    assert torch.equal(loaded.rollout(env, greedy=True).actions,
                       agent.rollout(env, greedy=True).actions)
    # The optimiser state came along too: one more identical update keeps them identical.
    batch = [agent.rollout(env) for _ in range(2)]
    agent.update(batch)
    loaded.update(batch)
    assert torch.equal(loaded.probabilities(episode), agent.probabilities(episode))


@pytest.mark.parametrize("teacher", ["vgg11", "resnet18"])
def test_removal_policy_transfers_to_deeper_teacher(teacher: str, tmp_path: Path) -> None:
    small = removal_env("conv4")
    agent = Reinforce.for_env(small, ReinforceConfig(seed=0))
    agent.train(small, 5)
    agent.save(tmp_path / "conv4.pt")
    deep = removal_env(teacher)
    loaded = Reinforce.load(tmp_path / "conv4.pt")
    episode = loaded.rollout(deep)
    obs, _ = deep.reset()
    num_layers = int(obs["layer_mask"].sum())
    assert num_layers > 20 and len(episode.actions) == num_layers
    assert np.isfinite(episode.reward) and "architecture" in episode.info
    history = loaded.train(deep, 2)  # and keeps training there
    assert len(history) == 2 and loaded.iterations == 7


def test_baseline_is_an_ema_of_earlier_batches() -> None:
    assert update_baseline(None, [1.0, 2.0, 3.0], 0.9) == pytest.approx(2.0)
    assert update_baseline(2.0, [4.0, 6.0], 0.9) == pytest.approx(0.9 * 2.0 + 0.1 * 5.0)
    np.testing.assert_allclose(advantages([3.0, 5.0], 2.0), [1.0, 3.0])
    # First batch: leave-one-out means, so no rollout is scored against its own reward.
    np.testing.assert_allclose(advantages([1.0, 2.0, 6.0], None), [-3.0, -1.5, 4.5])
    env = removal_env()
    agent = Reinforce.for_env(env, ReinforceConfig(seed=0, baseline_decay=0.8))
    history = agent.train(env, 4)
    expected = None
    for stats in history:
        expected = update_baseline(expected, [stats["mean_reward"]], 0.8)
        assert stats["baseline"] == pytest.approx(expected)


def test_update_scores_a_batch_against_the_previous_baseline() -> None:
    env = removal_env()
    agent = Reinforce.for_env(env, ReinforceConfig(seed=0))
    episodes = [agent.rollout(env) for _ in range(5)]
    agent.baseline = 0.1
    with torch.no_grad():
        log_probs = torch.stack([
            torch.distributions.Categorical(logits=agent.sequence_logits(e))
            .log_prob(e.actions).sum() for e in episodes])
    rewards = torch.tensor([e.reward for e in episodes], dtype=torch.float32)
    expected = -((rewards - 0.1) * log_probs).mean()
    stats = agent.update(episodes)
    assert stats["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert agent.baseline == pytest.approx(0.9 * 0.1 + 0.1 * float(rewards.mean()))


def test_shrink_lstm_is_trained() -> None:
    env = shrink_env()
    agent = Reinforce.for_env(env, ReinforceConfig(seed=0))
    before = {name: p.detach().clone() for name, p in agent.policy.named_parameters()}
    agent.update([agent.rollout(env) for _ in range(5)])
    for name, parameter in agent.policy.named_parameters():
        assert not torch.equal(parameter, before[name]), f"{name} was not updated"


def test_shrink_replay_matches_acting() -> None:
    """The teacher-forced replay used by the loss gives the distributions acting used."""
    env = shrink_env()
    agent = Reinforce.for_env(env, ReinforceConfig(seed=2, shrink_policy="lstm"))
    episode: Episode = agent.rollout(env)
    policy = agent.policy
    assert isinstance(policy, ShrinkPolicy)
    state, previous, stepped = None, None, []
    with torch.no_grad():
        for t, action in enumerate(episode.actions):
            logits, state = policy.step(episode.table[t], previous, state)
            stepped.append(torch.softmax(logits, dim=-1))
            previous = action
    assert len(set(episode.actions.tolist())) > 1  # the previous action actually varies
    torch.testing.assert_close(agent.probabilities(episode), torch.stack(stepped))


def test_load_refuses_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": Payload()}, path)
    with pytest.raises(PolicyFileError, match="pickled objects, which n2n never loads"):
        Reinforce.load(path)
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"is not a policy written by Reinforce\.save"):
        Reinforce.load(tmp_path / "other.pt")


def vector_env(count: int, teachers: tuple[str, ...] = ("conv4",),
               env_id: str = "N2NRemoval-v0",
               autoreset: gym.vector.AutoresetMode = gym.vector.AutoresetMode.NEXT_STEP
               ) -> gym.vector.VectorEnv:
    def maker(teacher: str):
        return lambda: gym.make(env_id, teacher=teacher, evaluator="mock")

    return gym.vector.SyncVectorEnv([maker(teachers[i % len(teachers)]) for i in range(count)],
                                    autoreset_mode=autoreset)


@pytest.mark.parametrize("autoreset", list(gym.vector.AutoresetMode))
@pytest.mark.parametrize("env_id", ["N2NRemoval-v0", "N2NShrink-v0"])
def test_vector_rollout_matches_replaying_its_actions(
        env_id: str, autoreset: gym.vector.AutoresetMode) -> None:
    envs = vector_env(3, env_id=env_id, autoreset=autoreset)
    agent = Reinforce.for_env(envs, ReinforceConfig(seed=3))
    episodes = agent.vector_rollout(envs)
    assert len(episodes) == 3
    single = gym.make(env_id, teacher="conv4", evaluator="mock")
    for episode in episodes:
        single.reset()
        for action, mask in zip(episode.actions.tolist(), episode.masks):
            assert mask[action]
            _, reward, terminated, _, info = single.step(action)
        assert terminated and episode.reward == pytest.approx(reward)
        assert episode.info["architecture"] == info["architecture"]
        assert episode.info["accuracy"] == pytest.approx(info["accuracy"])
        assert isinstance(episode.info["rewards"], dict)
    assert agent.best_reward == max(e.reward for e in episodes)


def test_vector_env_training_plays_whole_batches_and_learns() -> None:
    envs = vector_env(5)
    agent = Reinforce.for_env(envs, ReinforceConfig(seed=0))
    assert len(agent.rollouts(vector_env(2), 5)) == 6  # three batches of two workers
    history = agent.train(envs, 60)
    rewards = [stats["mean_reward"] for stats in history]
    assert np.mean(rewards[-10:]) > np.mean(rewards[:10]) + 0.2
    assert agent.iterations == 60


def test_vector_env_in_worker_processes() -> None:
    makers = [lambda: gym.make("N2NRemoval-v0", evaluator="mock") for _ in range(2)]
    envs = gym.vector.AsyncVectorEnv(makers)
    try:
        agent = Reinforce.for_env(envs, ReinforceConfig(seed=1))
        history = agent.train(envs, 2)
    finally:
        envs.close()
    assert len(history) == 2 and agent.best_architecture is not None


def test_vector_env_workers_must_end_together() -> None:
    envs = vector_env(2, teachers=("conv4", "vgg11"))
    agent = Reinforce.for_env(envs)
    with pytest.raises(ValueError, match="different steps"):
        agent.vector_rollout(envs)


def test_forget_rewards_keeps_the_policy(tmp_path: Path) -> None:
    env = removal_env()
    agent = Reinforce.for_env(env, ReinforceConfig(seed=0))
    agent.train(env, 2)
    agent.save(tmp_path / "policy.pt")
    loaded = Reinforce.load(tmp_path / "policy.pt")
    loaded.forget_rewards()
    assert loaded.baseline is None and loaded.best_architecture is None
    assert loaded.best_reward == float("-inf") and loaded.iterations == 2
    for name, value in agent.policy.state_dict().items():
        assert torch.equal(value, loaded.policy.state_dict()[name])


def test_best_student_is_never_an_over_budget_one() -> None:
    env = gym.make("N2NRemoval-v0", evaluator="mock", constraints={"params": 1},
                   anneal_episodes=100)  # eps near 1: violators still earn rewards
    agent = Reinforce.for_env(env, ReinforceConfig(seed=0))
    history = agent.train(env, 3)
    assert max(stats["best_reward"] for stats in history) > 0
    assert agent.best_architecture is None and agent.best_reward == float("-inf")


def test_risk_seeking_reinforces_only_the_episodes_above_the_recent_quantile() -> None:
    recent = [0.1, 0.2, 0.3, 0.4, 0.5]
    advantage = risk_seeking_advantages([0.2, 0.45, 0.5], recent, epsilon=0.25)
    np.testing.assert_allclose(advantage, [0.0, 0.05, 0.1])  # q = 0.4, the 75th percentile
    agent = Reinforce.for_env(shrink_env(), ReinforceConfig(seed=0, risk_seeking=0.2,
                                                            risk_seeking_window=7))
    env = shrink_env()
    for _ in range(2):
        batch = [agent.rollout(env) for _ in range(5)]
        agent.update(batch)
    assert len(agent.recent_rewards) == 7  # the window holds the last 7 of 10 rewards
    assert agent.recent_rewards[-5:] == [e.reward for e in batch]


def test_independent_shrink_policy_gives_each_variable_its_own_distribution(
        tmp_path: Path) -> None:
    """Its logits at step t are its own parameters, whatever the features and the earlier
    actions; training moves them, and they survive a save and load."""
    env = shrink_env()
    agent = Reinforce.for_env(env, ReinforceConfig(seed=1, shrink_policy="independent",
                                                   risk_seeking=0.2, learning_rate=0.1))
    assert isinstance(agent.policy, IndependentShrinkPolicy)
    with torch.no_grad():
        agent.policy.logits[1, 7] = 5.0
    episode = agent.rollout(env)
    probabilities = agent.probabilities(episode)
    expected = torch.softmax(agent.policy.logits[:len(episode.actions)], dim=-1)
    torch.testing.assert_close(probabilities, expected)
    other = Episode(torch.rand_like(episode.table), torch.zeros_like(episode.actions),
                    episode.masks, 0.0)
    torch.testing.assert_close(agent.probabilities(other), expected)
    before = agent.policy.logits.detach().clone()
    agent.train(env, 4)
    assert not torch.equal(agent.policy.logits, before)
    path = tmp_path / "independent.pt"
    agent.save(path)
    loaded = Reinforce.load(path)
    assert loaded.config.shrink_policy == "independent"
    assert loaded.recent_rewards == agent.recent_rewards
    assert torch.equal(loaded.policy.logits, agent.policy.logits)


def test_independent_shrink_policy_learns_the_best_widths_of_the_mock_reward() -> None:
    env = shrink_env()
    agent = Reinforce.for_env(env, ReinforceConfig(seed=0, shrink_policy="independent",
                                                   risk_seeking=0.2, learning_rate=0.1))
    history = agent.train(env, 40)
    rewards = [stats["mean_reward"] for stats in history]
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.05
