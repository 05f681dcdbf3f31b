"""MaskablePPO (sb3-contrib) on N2NRemoval-v0, with the action masks and a tiny budget.

Uses ``evaluator="mock"`` (instant and NOT REAL: a made-up accuracy model), so it runs in
a few seconds. The agent's settings (gamma=1, gae_lambda=1, rollouts of 5 whole episodes)
are explained in ``agents.sb3.make_agent``. Run: ``python examples/sb3_ppo.py``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import n2n_env  # noqa: F401  (registers N2NRemoval-v0 and N2NShrink-v0)
from agents.sb3 import make_agent, monitor, train

EPISODES = 50


def main() -> None:
    env = gym.make("N2NRemoval-v0", evaluator="mock")
    agent = make_agent("maskable-ppo", env, seed=0)
    rewards = train(agent, EPISODES)
    for start in range(0, len(rewards), 10):
        print(f"episodes {start:3d}-{start + 9:3d}: mean reward "
              f"{np.mean(rewards[start:start + 10]):+.3f}")
    log = monitor(agent)
    best = int(np.argmax(rewards))
    print(f"best reward {rewards[best]:+.3f} (accuracy and compression logged per episode: "
          f"{sorted(log.info_keywords)})")
    env.close()
    print(f"sb3 done: {len(rewards)} episodes, {agent.num_timesteps} steps")


if __name__ == "__main__":
    main()
