"""Learning agents against random search on a real environment (issue 12, item 5).

N2N-Bench answers "does a learning agent beat random search?" on tables; this script checks
the answer where the reward is the real thing: ``N2NRemoval-v0`` (``--env removal``) or
``N2NShrink-v0`` (``--env shrink``, shrinking the teacher itself) with real distillation.
Each (agent spec, seed) run plays ``--evaluations`` episodes on a vector env of 5
environments (the paper's 5 students per update, trained as one batch on ``--workers``
processes), and logs every episode's reward to ``OUT/episodes/SPEC-seedNNN.csv``. All runs
share one reward cache (``OUT/rewards.sqlite``): the evaluator is deterministic (one seed,
one recipe), so a student some run has trained costs nothing when another meets it again.
Finished runs are skipped, so rerunning the command continues a stopped experiment.

The score of a run is the best reward it saw (the student it would report); the report
gives, per agent, the interquartile mean of that score over seeds with a 95% bootstrap
interval, and the probability that a run of the agent ends higher than a run of random
search (:mod:`n2n_env.bench.stats`).

The teacher of issue 12's confirmation run (conv4 at width 0.5, 98.95% test accuracy) is
committed beside its logs, so that another machine continues it with the very same weights
(a zoo name instead trains, or reuses from ``$N2N_HOME``, a teacher of its own):
``python benchmarks/real_env_agents.py --data-root ../shared/datasets --agents
actor-critic random --seeds 5 --teacher benchmarks/results/real-env-conv4-mnist-10k/teacher.pt
--out benchmarks/results/real-env-conv4-mnist-10k`` (hours on 2 CPU cores; ``--dataset
digits --evaluations 20`` for a minute-long check).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm import tqdm

import n2n_env  # noqa: F401  (registers the environments)
from agents import registry
from n2n_env.bench import stats
from n2n_env.bench.rl import log_name, write_log

COLUMNS = ("episode", "reward", "accuracy", "compression", "cache_hit", "seconds", "trained")
"""``trained`` is 0 for a student the environment scored without training it (larger than
the teacher: reward 0); logs written before it did have no such column."""


def log_path(out: Path, spec: str, seed: int) -> Path:
    return out / "episodes" / log_name(spec, seed)


def play(args: argparse.Namespace, spec: str, seed: int) -> list[dict[str, float]]:
    """One run: ``args.evaluations`` episodes of agent ``spec`` at ``seed``."""
    env_id = "N2NRemoval-v0" if args.env == "removal" else "N2NShrink-v0"
    envs = gym.make_vec(env_id, num_envs=5, vectorization_mode="vector_entry_point",
                        teacher=args.teacher, teacher_width=args.teacher_width,
                        dataset=args.dataset, data_root=args.data_root,
                        evaluator=args.evaluator, cache=str(args.out / "rewards.sqlite"),
                        backend="processes" if args.workers > 1 else "local",
                        workers=args.workers, teacher_progress=False)
    agent = registry.make_spec(spec, envs, seed=seed)
    records: list[dict[str, float]] = []
    started = time.perf_counter()
    iteration = 0
    with tqdm(total=args.evaluations, desc=f"{spec} seed {seed}", unit="episode",
              disable=args.no_progress, leave=False) as bar:
        while len(records) < args.evaluations:
            agent.reseed(seed * 1_000_003 + iteration)
            for reward, info in agent.iterate(envs):
                if len(records) < args.evaluations:
                    records.append({"episode": len(records) + 1, "reward": float(reward),
                                    "accuracy": float(info.get("accuracy", 0.0)),
                                    "compression": float(info.get("compression", 0.0)),
                                    "cache_hit": int(bool(info.get("cache_hit", False))),
                                    "seconds": time.perf_counter() - started,
                                    "trained": int(bool(info.get("trained", True)))})
                    bar.update()
            if records:
                bar.set_postfix(best=f"{max(r['reward'] for r in records):.4f}")
            iteration += 1
    envs.close()
    return records


def best_rewards(out: Path, spec: str, seeds: int, evaluations: int) -> np.ndarray:
    """Each run's best reward within its first ``evaluations`` episodes."""
    return np.array([best["reward"] for best in best_episodes(out, spec, seeds, evaluations)])


def best_episodes(out: Path, spec: str, seeds: int, evaluations: int) -> list[dict[str, float]]:
    """Each run's episode with the best reward within its first ``evaluations`` (the
    student the run would report): its reward, accuracy and compression."""
    best = []
    for seed in range(seeds):
        with log_path(out, spec, seed).open(newline="") as handle:
            rows = list(csv.DictReader(handle))[:evaluations]
        top = max(rows, key=lambda row: float(row["reward"]))
        best.append({key: float(top[key]) for key in ("reward", "accuracy", "compression")})
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=("removal", "shrink"), default="removal",
                        help="N2NRemoval-v0 (default) or N2NShrink-v0, which shrinks the teacher")
    parser.add_argument("--agents", nargs="+", default=["reinforce", "random"],
                        help="agent specs (NAME or NAME:key=value,...); random is the baseline")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--evaluations", type=int, default=300)
    parser.add_argument("--teacher", default="conv4",
                        help="a zoo name (default conv4) or a teacher checkpoint .pt")
    parser.add_argument("--teacher-width", type=float, default=0.5,
                        help="default 0.5, the CPU-sized conv4 of docs/results.md")
    parser.add_argument("--dataset", default="mnist-10k")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--workers", type=int, default=2, help="training processes")
    parser.add_argument("--evaluator", choices=("distill", "mock"), default="distill",
                        help="mock: the instant stand-in reward, to check the script")
    parser.add_argument("--out", type=Path, default=Path("runs/real-env-agents"))
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (a line per finished run only)")
    args = parser.parse_args()
    specs = [registry.check_spec(text).label for text in args.agents]
    for seed in range(args.seeds):  # seed by seed, so that a stopped run leaves every agent
        for spec in specs:          # with the same number of finished seeds
            path = log_path(args.out, spec, seed)
            if path.exists():
                continue
            records = play(args, spec, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_log(path, records, COLUMNS)
            print(f"{spec} seed {seed}: best reward {max(r['reward'] for r in records):.4f}, "
                  f"{sum(r['trained'] and not r['cache_hit'] for r in records)} students "
                  "trained, "
                  f"{records[-1]['seconds']:.0f} s", flush=True)
    teacher = (args.teacher if args.teacher.endswith(".pt")
               else f"{args.teacher} (width {args.teacher_width:g})")
    print(f"\n{args.env}: {teacher} on {args.dataset}, "
          f"{args.evaluations} evaluations per run, {args.seeds} seeds; best reward per run")
    print("| agent | best reward, IQM [95% CI] | P(beats random) [95% CI] | best reward per seed "
          "| its student: compression, median (range) | validation accuracy, median (range) |")
    print("|---|---|---|---|---|---|")
    baseline = (best_rewards(args.out, "random", args.seeds, args.evaluations)
                if "random" in specs else None)
    for spec in specs:
        students = best_episodes(args.out, spec, args.seeds, args.evaluations)
        best = np.array([student["reward"] for student in students])
        improvement = ("-" if baseline is None or spec == "random"
                       else str(stats.improvement_interval(best, baseline)))
        ratios = [1 / (1 - student["compression"]) for student in students]
        accuracies = [100 * student["accuracy"] for student in students]
        print(f"| {spec} | {stats.iqm_interval(best)} | {improvement} | "
              f"{', '.join(f'{value:.4f}' for value in best)} | "
              f"{np.median(ratios):.1f}x ({min(ratios):.1f}-{max(ratios):.1f}x) | "
              f"{np.median(accuracies):.1f}% ({min(accuracies):.1f}-{max(accuracies):.1f}%) |")


if __name__ == "__main__":
    main()
