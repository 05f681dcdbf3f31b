"""How fast are the N2N-Bench environments? (issue 12 target: >= 50,000 steps per second
with a random policy)

Plays uniformly random episodes (actions drawn among the allowed ones, as random search
does) on N2NRemovalBench-v0 and N2NShrinkBench-v0, through ``gym.make``'s wrappers and on
the raw environment, and prints steps and episodes per second: first from a fresh
environment ("cold": most students are built for the first time), then after a warm-up
that has built nearly every student of the space once ("warm", the steady state of a long
run; an environment remembers the students it has built). Uses the shipped tables, or
``--removal-table`` / ``--shrink-table`` files.

Run: ``python benchmarks/bench_env_speed.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import platform
import time

import gymnasium as gym
import numpy as np

import n2n_env  # noqa: F401  (registers the environments)

TARGET = 50_000


def measure(env: gym.Env, seconds: float, seed: int = 0) -> tuple[float, float]:
    """(steps per second, episodes per second) of random episodes on ``env``: each action
    is drawn uniformly among the allowed ones. The uniform numbers are drawn in blocks, so
    that the policy costs about a microsecond a step and the time measured is the
    environment's (``rng.integers`` per step would cost several)."""
    rng = np.random.default_rng(seed)
    uniforms: list[float] = []
    _, info = env.reset(seed=seed)
    steps = episodes = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        if not uniforms:
            uniforms = rng.random(1 << 16).tolist()
        allowed = info["action_mask"].nonzero()[0]
        action = int(allowed[int(uniforms.pop() * len(allowed))])
        _, _, terminated, _, info = env.step(action)
        steps += 1
        if terminated:
            episodes += 1
            _, info = env.reset()
    elapsed = time.perf_counter() - started
    return steps / elapsed, episodes / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--removal-table", help="table file (default: the shipped one)")
    parser.add_argument("--shrink-table", help="table file (default: the shipped one)")
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of warm-up")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, Python {platform.python_version()}")
    print("| environment | state | wrappers | steps/s | episodes/s | target |")
    print("|---|---|---|---|---|---|")
    for env_id, table in (("N2NRemovalBench-v0", args.removal_table),
                          ("N2NShrinkBench-v0", args.shrink_table)):
        made = gym.make(env_id, table=table)
        rows = [("cold", "gym.make", made, args.seconds)]
        measure(made, args.warmup, seed=1)
        rows += [("warm", "gym.make", made, args.seconds),
                 ("warm", "raw", made.unwrapped, args.seconds)]
        for state, label, env, seconds in rows:
            steps, episodes = measure(env, seconds, seed=2)
            verdict = "met" if steps >= TARGET else "NOT met"
            print(f"| {env_id} | {state} | {label} | {steps:,.0f} | {episodes:,.0f} | "
                  f"{verdict} |")


if __name__ == "__main__":
    main()
