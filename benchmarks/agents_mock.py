"""Which agent finds the best student on the removal MDP, at equal numbers of episodes?

Each agent of `agents.registry` (REINFORCE, actor-critic, PPO, A2C, MaskablePPO,
RecurrentPPO and random search by default) for ``--episodes``
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

import n2n_env  # noqa: F401  (registers the environments)
from agents import registry


def episode_rewards(name: str, teacher: str, episodes: int, seed: int) -> list[float]:
    """Every episode's reward, in order, for one agent and seed: the agent's iterations of
    5 episodes through `agents.registry`, as `n2n compress` drives it."""
    env = gym.make("N2NRemoval-v0", teacher=teacher, evaluator="mock")
    agent = registry.make(name, env, seed=seed)
    rewards: list[float] = []
    while len(rewards) < episodes:
        rewards.extend(reward for reward, _ in agent.iterate(env))
    return rewards[:episodes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teacher", default="vgg13")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--agents", default=",".join(registry.AGENT_NAMES))
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
