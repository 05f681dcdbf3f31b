"""A random agent on N2NRemoval-v0: sample keep/remove decisions, respecting the action mask.

Uses ``evaluator="mock"`` (instant and NOT REAL: a made-up accuracy model), so it runs in
well under a second with no data and no training. Drop that argument for real rewards
(the first episode then trains the conv4 teacher on digits, a couple of minutes on a CPU).
Run: ``python examples/random_agent.py``.
"""

from __future__ import annotations

import gymnasium as gym

import n2n_env  # noqa: F401  (registers N2NRemoval-v0 and N2NShrink-v0)

EPISODES = 5


def main() -> None:
    env = gym.make("N2NRemoval-v0", evaluator="mock")
    env.action_space.seed(0)  # reset(seed=...) seeds the env; the action sampler has its own
    obs, info = env.reset(seed=0)
    print(f"teacher: {env.unwrapped.teacher.name}, {env.unwrapped.num_layers} layers, "
          f"{env.unwrapped.teacher.num_params():,} parameters")
    for episode in range(EPISODES):
        obs, info = env.reset()
        terminated = truncated = False
        while not (terminated or truncated):  # N2N episodes terminate, never truncate
            # fixed layers (flatten, classifier) have mask [0, 1]: they can only be kept
            action = env.action_space.sample(mask=info["action_mask"].astype("int8"))
            obs, reward, terminated, truncated, info = env.step(action)
        removed = int((obs["decisions"] < 0).sum())
        status = info["degenerate_reason"] or "ok"
        print(f"episode {episode}: removed {removed:2d} layers  reward {reward:+.3f}  "
              f"compression {info['compression']:+.3f}  accuracy {info['accuracy']:.3f}  "
              f"({status})")
    env.close()
    print(f"{EPISODES} episodes done")


if __name__ == "__main__":
    main()
