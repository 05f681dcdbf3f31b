"""Which agent finds the best student on the removal MDP, at equal numbers of episodes?

REINFORCE, actor-critic, PPO, MaskablePPO and random search, each for ``--episodes``
episodes of N2NRemoval-v0 with the (instant, NOT REAL) mock evaluator, over ``--seeds``
seeds. Reports the best reward found and the mean reward of the last 50 episodes (mean
and standard deviation over seeds). Issue 5 asks for this comparison.
Run: ``python benchmarks/agents_mock.py --teacher vgg13 --episodes 600 --seeds 5``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import torch

import n2n_env  # noqa: F401  (registers the environments)
from agents import sb3
from agents.actor_critic import ActorCritic, ActorCriticConfig
from agents.random_search import RandomSearch, RandomSearchConfig
from agents.reinforce import Reinforce, ReinforceConfig

ROLLOUTS = 5


def episode_rewards(name: str, teacher: str, episodes: int, seed: int) -> list[float]:
    """Every episode's reward, in order, for one agent and seed."""
    env = gym.make("N2NRemoval-v0", teacher=teacher, evaluator="mock")
    iterations = episodes // ROLLOUTS
    rewards: list[float] = []
    if name == "random":
        search = RandomSearch(RandomSearchConfig(seed=seed))
        return [search.rollout(env)[0] for _ in range(iterations * ROLLOUTS)]
    if name in ("reinforce", "actor-critic"):
        agent = (Reinforce.for_env(env, ReinforceConfig(seed=seed)) if name == "reinforce"
                 else ActorCritic.for_env(env, ActorCriticConfig(seed=seed)))
        for _ in range(iterations):
            batch = [agent.rollout(env) for _ in range(ROLLOUTS)]
            rewards.extend(episode.reward for episode in batch)
            agent.update(batch)
        return rewards
    torch.manual_seed(seed)
    return sb3.train(sb3.make_agent(name, env, seed=seed), episodes)[:episodes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", default="vgg13")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--agents", default="reinforce,actor-critic,ppo,maskable-ppo,random")
    args = parser.parse_args()
    print(f"| agent | best reward (mean ± sd over {args.seeds} seeds) | mean reward, last 50 "
          f"episodes | seconds per run |")
    print("|---|---|---|---|")
    for name in args.agents.split(","):
        best, last, seconds = [], [], []
        for seed in range(args.seeds):
            start = time.perf_counter()
            rewards = episode_rewards(name, args.teacher, args.episodes, seed)
            seconds.append(time.perf_counter() - start)
            best.append(max(rewards))
            last.append(statistics.mean(rewards[-50:]))
        print(f"| {name} | {statistics.mean(best):.3f} ± {statistics.stdev(best):.3f} | "
              f"{statistics.mean(last):.3f} ± {statistics.stdev(last):.3f} | "
              f"{statistics.mean(seconds):.1f} |", flush=True)


if __name__ == "__main__":
    main()
