"""How fast are the environments themselves? (issue 4 benchmark)

Measures, with the instant mock evaluator (so only the MDP's own cost is timed):

a. the median time of a NON-terminal ``step`` of N2NRemoval-v0 and N2NShrink-v0, in
   microseconds, on the raw environment (``env.unwrapped``) and through ``gym.make``'s
   wrappers (order enforcing and the passive checker); target: at most 50 us;
b. the median terminal step (builds the student, scores it with the mock, fills ``info``)
   and full episodes per second (reset and every step), on the raw environment.

for the conv4 and resnet34 teachers (digits shapes, width 1.0). Prints a markdown table.
Run: ``python benchmarks/env_step.py`` (CPU, about half a minute);
``--profile`` adds a cProfile of the non-terminal steps of the slowest row.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np

import n2n_env  # noqa: F401  (registers the environments)

TARGET_US = 50.0


def policy(env: gym.Env, rng: np.random.Generator) -> Callable[[], list[int]]:
    """Seeded random valid actions for one episode of ``env`` (raw environment)."""
    raw = env.unwrapped
    if raw.spec is not None and raw.spec.id == "N2NRemoval-v0":
        fixed = ~np.array(raw.teacher.removable())
        return lambda: [1 if f else int(rng.random() < 0.8) for f in fixed]
    return lambda: rng.integers(0, 10, raw.num_variables).tolist()


def step_times_us(env: gym.Env, actions: Callable[[], list[int]], min_steps: int,
                  profiler: cProfile.Profile | None = None) -> tuple[list[float], list[float]]:
    """Wall times of the non-terminal steps (at least ``min_steps``) and of the terminal
    steps over the same episodes, in microseconds; ``profiler`` sees the non-terminal
    steps only."""
    clock = time.perf_counter_ns
    times: list[float] = []
    terminal: list[float] = []
    while len(times) < min_steps:
        env.reset(seed=0)
        episode = actions()
        for action in episode[:-1]:
            if profiler is not None:
                profiler.enable()
            start = clock()
            env.step(action)
            times.append((clock() - start) / 1000)
            if profiler is not None:
                profiler.disable()
        start = clock()
        env.step(episode[-1])
        terminal.append((clock() - start) / 1000)
    return times, terminal


def episodes_per_second(env: gym.Env, actions: Callable[[], list[int]], seconds: float
                        ) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.reset(seed=count)
        for action in actions():
            env.step(action)
        count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", default="conv4,resnet34")
    parser.add_argument("--steps", type=int, default=20_000,
                        help="non-terminal steps timed per row (default 20000)")
    parser.add_argument("--episode-seconds", type=float, default=2.0,
                        help="seconds of full episodes per row (default 2)")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the raw steps of the slowest row")
    args = parser.parse_args()
    print(f"command: python benchmarks/env_step.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"python {platform.python_version()}, numpy {np.__version__}, gymnasium "
          f"{gym.__version__}, {platform.processor() or platform.machine()}\n")
    print("| environment | teacher | T (steps) | step, median (p90) | step via gym.make, "
          "median | terminal step (mock), median | episodes/s | step <= 50 us |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for env_id in ("N2NRemoval-v0", "N2NShrink-v0"):
        for teacher in args.teachers.split(","):
            wrapped = gym.make(env_id, teacher=teacher, evaluator="mock")
            raw = wrapped.unwrapped
            rng = np.random.default_rng(0)
            actions = policy(wrapped, rng)
            length = len(actions())
            raw_times, terminal = step_times_us(raw, actions, args.steps)
            wrapped_times, _ = step_times_us(wrapped, actions, args.steps // 4)
            rate = episodes_per_second(raw, actions, args.episode_seconds)
            median = statistics.median(raw_times)
            p90 = float(np.percentile(raw_times, 90))
            rows.append((median, env_id, teacher, raw, actions))
            print(f"| {env_id} | {teacher} | {length} | {median:.1f} us ({p90:.1f}) | "
                  f"{statistics.median(wrapped_times):.1f} us | "
                  f"{statistics.median(terminal) / 1000:.2f} ms | {rate:,.0f} | "
                  f"{'yes' if median <= TARGET_US else 'NO'} |")
    if args.profile:
        median, env_id, teacher, raw, actions = max(rows, key=lambda row: row[0])
        profiler = cProfile.Profile()
        step_times_us(raw, actions, args.steps, profiler)
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
        print(f"\nprofile of {env_id} / {teacher} (slowest median, {median:.1f} us):")
        print(out.getvalue())


if __name__ == "__main__":
    main()
