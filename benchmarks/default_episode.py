"""Wall time of the default ``gym.make("N2NRemoval-v0")`` with random masked actions.

Issue 4's target: the first episode, including training the conv4 teacher on digits from
nothing, under 2 minutes on a 2-core CPU; later episodes (teacher cached) in seconds.
Uses a fresh temporary ``N2N_HOME`` so the teacher really is trained.
Run: ``python benchmarks/default_episode.py --episodes 4``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["N2N_HOME"] = home
        started = time.perf_counter()
        import gymnasium as gym

        import n2n_env  # noqa: F401  (registers the environments)

        env = gym.make("N2NRemoval-v0")
        print(f"import + gym.make: {time.perf_counter() - started:.1f} s")
        rng = np.random.default_rng(0)
        for episode in range(args.episodes):
            start = time.perf_counter()
            _, info = env.reset(seed=episode)
            terminated = False
            while not terminated:
                action = int(rng.choice(np.flatnonzero(info["action_mask"])))
                _, reward, terminated, _, info = env.step(action)
            note = " (includes training the teacher)" if episode == 0 else ""
            print(f"episode {episode}: {time.perf_counter() - start:.1f} s{note}, reward "
                  f"{reward:+.3f}, accuracy {info['accuracy']:.3f}, compression "
                  f"{info['compression']:+.3f}, degenerate: {info['degenerate_reason']}")
        env.close()


if __name__ == "__main__":
    main()
