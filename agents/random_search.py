"""Random search for N2N: the honest baseline every learning agent must beat.

Each episode picks every action uniformly among the allowed ones (`info["action_mask"]`),
through the public Gymnasium interface only. Episodes are grouped in iterations of m = 5,
and `RandomSearch.train` returns one statistics dict per iteration in the same shape as
`agents.reinforce.Reinforce.train`, so a learning curve and this baseline line up at the
same number of evaluated candidates (students are the expensive part: each one is trained)::

    env = gym.make("N2NRemoval-v0", teacher="conv4", evaluator="mock")
    search = RandomSearch(RandomSearchConfig(seed=0))
    stats = search.train(env, iterations=100)
    print(search.best_reward, search.best_architecture)

On a Gymnasium vector env (``gym.make_vec("N2NRemoval-v0", num_envs=5, ...)``) the
episodes of an iteration run side by side, their students evaluated as one batch: see
`RandomSearch.rollouts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from agents.observations import worker_info
from agents.search import EPISODES_PER_UPDATE, BestStudent

Outcome = tuple[float, dict[str, Any]]
"""One episode's reward (the sum of its step rewards) and terminal info."""


@dataclass
class RandomSearchConfig:
    """Settings of the random search (it has no hyperparameters to tune, only bookkeeping)."""

    rollouts_per_update: int = EPISODES_PER_UPDATE
    """Episodes per iteration: m = 5 as in `ReinforceConfig`, so iterations compare 1:1."""
    seed: int = 0
    """Seeds the action sampling and the first env reset."""


class RandomSearch:
    """Uniform sampling among allowed actions, and the best student found so far."""

    def __init__(self, config: RandomSearchConfig | None = None) -> None:
        self.config = config or RandomSearchConfig()
        self.rng = np.random.default_rng(self.config.seed)
        self.iterations = 0
        self.episodes = 0
        self.rewards: list[float] = []
        """The reward of every episode so far, in order."""
        self.best = BestStudent()
        """The best feasible student found so far."""
        self._reset_seed: int | None = self.config.seed

    @property
    def best_reward(self) -> float:
        """The best feasible student's reward (-inf before the first)."""
        return self.best.reward

    @property
    def best_architecture(self) -> str | None:
        """The best feasible student's architecture JSON (None before the first)."""
        return self.best.architecture

    @property
    def mean_reward(self) -> float:
        """Mean reward over all episodes so far (NaN before the first)."""
        return float(np.mean(self.rewards)) if self.rewards else float("nan")

    def act(self, action_mask: np.ndarray) -> int:
        """An action drawn uniformly among those the mask allows."""
        allowed = np.flatnonzero(np.asarray(action_mask) > 0)
        if allowed.size == 0:
            raise ValueError("the action mask allows no action")
        return int(self.rng.choice(allowed))

    def rollout(self, env: gym.Env) -> Outcome:
        """Play one episode; return its reward (the sum of step rewards) and terminal info."""
        _, info = env.reset(seed=self._reset_seed)
        self._reset_seed = None  # seed once, then let the env's RNG run on
        terminated = truncated = False
        reward = 0.0
        while not (terminated or truncated):
            _, step_reward, terminated, truncated, info = env.step(
                self.act(info["action_mask"]))
            reward += float(step_reward)
        self._record(reward, info)
        return reward, info

    def vector_rollout(self, envs: gym.vector.VectorEnv) -> list[Outcome]:
        """Play one episode in each sub-environment of a Gymnasium vector env at once (its
        autoreset mode SAME_STEP, as ``N2NVectorEnv``'s, or NEXT_STEP: the step that ends
        the episodes is the last one taken either way); one outcome per sub-environment, in
        order.

        Actions are drawn sub-environment by sub-environment from the masks of the
        observation. The sub-environments must end their episodes on the same step, which
        N2N episodes of one teacher do; otherwise a ValueError says so.
        """
        observation, _ = envs.reset(seed=self._reset_seed)
        self._reset_seed = None
        rewards = np.zeros(envs.num_envs)
        while True:
            masks = np.asarray(observation["action_mask"])
            actions = np.array([self.act(mask) for mask in masks])
            observation, step_rewards, terminated, truncated, info = envs.step(actions)
            rewards += np.asarray(step_rewards, np.float64)
            done = np.logical_or(terminated, truncated)
            if done.any():
                if not done.all():
                    raise ValueError("the vector env's sub-environments ended their "
                                     "episodes on different steps; use one teacher for all")
                break
        # Under SAME_STEP autoreset the terminal infos are under "final_info" (the top
        # level already describes the next episode's reset).
        terminal = info.get("final_info", info)
        outcomes = []
        for index in range(envs.num_envs):
            outcome = (float(rewards[index]), worker_info(terminal, index))
            self._record(*outcome)
            outcomes.append(outcome)
        return outcomes

    def rollouts(self, env: gym.Env | gym.vector.VectorEnv, count: int) -> list[Outcome]:
        """At least `count` episodes: one after another on a plain env, or `num_envs` at a
        time on a Gymnasium vector env (whole vector episodes, so with 2 sub-environments
        and count=5 this plays 6)."""
        if not isinstance(env, gym.vector.VectorEnv):
            return [self.rollout(env) for _ in range(count)]
        outcomes: list[Outcome] = []
        while len(outcomes) < count:
            outcomes.extend(self.vector_rollout(env))
        return outcomes

    def _record(self, reward: float, info: dict[str, Any]) -> None:
        self.episodes += 1
        self.rewards.append(reward)
        self.best.offer(reward, info)

    def train(self, env: gym.Env | gym.vector.VectorEnv,
              iterations: int) -> list[dict[str, float]]:
        """Run `iterations` batches of m episodes (on a vector env, whole vector episodes:
        at least m); one statistics dict per iteration.

        Each dict has `iteration`, `mean_reward`, `best_reward` (of this batch),
        `mean_accuracy` and `mean_compression`, as `Reinforce.train` (without its update
        statistics: nothing is learned). The best over all episodes is in `best_reward` and
        `best_architecture`. "train" keeps the name interchangeable with the learning agents.
        """
        history = []
        for _ in range(iterations):
            results = self.rollouts(env, self.config.rollouts_per_update)
            self.iterations += 1
            rewards = [reward for reward, _ in results]
            history.append({
                "iteration": float(self.iterations),
                "mean_reward": float(np.mean(rewards)),
                "best_reward": float(np.max(rewards)),
                "mean_accuracy": float(np.mean([info.get("accuracy", 0.0)
                                                for _, info in results])),
                "mean_compression": float(np.mean([info.get("compression", 0.0)
                                                   for _, info in results])),
            })
        return history
