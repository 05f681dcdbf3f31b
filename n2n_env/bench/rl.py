"""``n2n bench rl``: agents from ``agents.registry`` x seeds on a benchmark environment.

Each run gives one agent one seed and a budget (evaluations, or simulated seconds), and
logs every episode: its actions, the student it built, the reward the agent saw, and that
student's *true* reward (the reward of its validation accuracy averaged over the table's
seeds). The agent's *incumbent* is the student with the best reward it has seen; its regret
is the table's best true reward minus the incumbent's true reward. A run's log is one CSV
file, written when the run ends, so a stopped harness resumes by skipping finished runs.

This module drives both the environments and the agents (it is driver code, like
:mod:`n2n_env.pipeline`); the statistics are in :mod:`n2n_env.bench.stats`, the report in
:mod:`n2n_env.bench.report`.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from n2n_env.bench.table import BenchTable
from n2n_env.reward import n2n_reward

ENV_IDS = {"removal": "N2NRemovalBench-v0", "shrink": "N2NShrinkBench-v0"}
EPISODE_COLUMNS = ("agent", "seed", "episode", "actions", "student", "reward", "table_seed",
                   "true_reward", "test_accuracy", "compression", "simulated_seconds",
                   "simulated_seconds_total")
MAX_EPISODES = 1_000_000
"""Safety stop of a run budgeted in simulated seconds."""


@dataclass(frozen=True)
class RunSpec:
    """One run: an agent, a seed and a budget on one table."""

    agent: str
    """An agent spec of ``agents.registry``: a name, or ``NAME:key=value,...``."""
    seed: int
    table: str
    """Path of the table file (each worker process loads it)."""
    evaluations: int | None = 300
    """Stop after this many episodes (each one an evaluation)."""
    seconds: float | None = None
    """Or stop once the simulated seconds reach this total."""
    reward_seed: str = "draw"

    def __post_init__(self) -> None:
        if (self.evaluations is None) == (self.seconds is None):
            raise ValueError("give exactly one budget: evaluations or seconds")
        if self.evaluations is not None and self.evaluations < 1:
            raise ValueError(f"evaluations must be a positive integer, got {self.evaluations}")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"seconds must be positive, got {self.seconds}")

    @property
    def log_name(self) -> str:
        return log_name(self.agent, self.seed)


def log_name(agent: str, seed: int) -> str:
    """A run's CSV file name: the agent spec with every character but letters, digits, '.',
    '=' and '-' written as '_', then the seed."""
    return f"{re.sub(r'[^A-Za-z0-9.=-]', '_', agent)}-seed{seed:03d}.csv"


def true_rewards(table: BenchTable, metric: str = "params") -> np.ndarray:
    """(students,) the reward of each student's mean validation accuracy; 0 for students
    larger than the teacher (whatever their accuracy, as the environments score them
    untrained); -1 for degenerate students and for students whose training failed at any
    seed."""
    accuracy = table.val_accuracy.astype(np.float64).mean(axis=1)
    compression = table.compression(metric)
    rewards = np.full(table.num_students, -1.0)
    rewards[(table.status < 0) & (compression < 0)] = 0.0
    for student in np.flatnonzero(np.isfinite(accuracy) & (table.status < 0)
                                  & (compression >= 0)):
        rewards[student] = n2n_reward(compression[student], accuracy[student],
                                      table.header.teacher_accuracy)
    return rewards


class EpisodeRecorder(gym.Wrapper):
    """Writes the episode's actions, as the environment received them, into the terminal
    ``info`` (``info["actions"]``: one digit per step)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._actions: list[int] = []

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._actions = []
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        self._actions.append(int(np.asarray(action).reshape(-1)[0]))
        observation, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            info = {**info, "actions": "".join(map(str, self._actions))}
        return observation, reward, terminated, truncated, info


def run(spec: RunSpec) -> list[dict[str, Any]]:
    """Play one run to its budget; one record per episode (see EPISODE_COLUMNS)."""
    import torch

    from agents import registry

    torch.set_num_threads(1)
    table = BenchTable.load(spec.table)
    space = table.header.space_object()
    rewards = true_rewards(table)
    test = table.test_accuracy.astype(np.float64).mean(axis=1)
    compression = table.compression()
    env = EpisodeRecorder(gym.make(ENV_IDS[table.header.space], table=table,
                                   reward_seed=spec.reward_seed))
    env.reset(seed=spec.seed)  # seeds the stored-seed draws, whatever the agent does
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        agent = registry.make_spec(spec.agent, env, seed=spec.seed)
        records: list[dict[str, Any]] = []
        iteration = 0
        while not _spent(spec, records):
            agent.reseed((spec.seed * 1_000_003 + iteration) % 2**31)
            for _, info in agent.iterate(env):
                if _spent(spec, records):
                    break
                # the environment's own reward: SB3's Monitor rounds what agents report
                reward = info["rewards"]["reward"]
                student = table.student_of(space.index([int(a) for a in info["actions"]]))
                records.append({
                    "agent": spec.agent, "seed": spec.seed, "episode": len(records) + 1,
                    "actions": info["actions"], "student": student, "reward": float(reward),
                    "table_seed": info.get("table_seed"),
                    "true_reward": float(rewards[student]),
                    "test_accuracy": float(test[student]),
                    "compression": float(compression[student]),
                    "simulated_seconds": float(info["simulated_seconds"]),
                    "simulated_seconds_total": float(info["simulated_seconds_total"]),
                })
            iteration += 1
    env.close()
    return records


def _spent(spec: RunSpec, records: list[dict[str, Any]]) -> bool:
    if spec.evaluations is not None:
        return len(records) >= spec.evaluations
    assert spec.seconds is not None
    return (bool(records) and records[-1]["simulated_seconds_total"] >= spec.seconds) or (
        len(records) >= MAX_EPISODES)


def run_all(specs: Sequence[RunSpec], out: Path, workers: int = 1,
            on_done: Callable[[RunSpec], None] | None = None) -> list[Path]:
    """Run every spec whose log is not in ``out/episodes`` yet (``workers`` processes, one
    torch thread each); returns every spec's log path."""
    logs = out / "episodes"
    logs.mkdir(parents=True, exist_ok=True)
    todo = [spec for spec in specs if not (logs / spec.log_name).exists()]
    if workers <= 1:
        for spec in todo:
            write_log(logs / spec.log_name, run(spec))
            if on_done:
                on_done(spec)
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(run, spec): spec for spec in todo}
            for future in as_completed(futures):
                spec = futures[future]
                write_log(logs / spec.log_name, future.result())
                if on_done:
                    on_done(spec)
    return [logs / spec.log_name for spec in specs]


def write_log(path: Path, records: list[dict[str, Any]],
              columns: Sequence[str] = EPISODE_COLUMNS) -> None:
    """Write a run's episode records as CSV with ``columns``, atomically."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(records)
    os.replace(partial, path)


def read_logs(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Episode records of the given CSV logs, typed; a malformed log raises ValueError
    naming it."""
    records = []
    for path in paths:
        with Path(path).open(newline="") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != EPISODE_COLUMNS:
                raise ValueError(f"{os.fspath(path)!r} is not an n2n bench episode log "
                                 f"(columns {reader.fieldnames})")
            for line, row in enumerate(reader, start=2):
                try:
                    records.append(_typed(row))
                except (KeyError, ValueError) as error:
                    raise ValueError(f"{os.fspath(path)!r} line {line}: {error}") from None
    return records


def _typed(row: dict[str, str]) -> dict[str, Any]:
    return {
        "agent": row["agent"], "seed": int(row["seed"]), "episode": int(row["episode"]),
        "actions": row["actions"], "student": int(row["student"]),
        "reward": float(row["reward"]),
        "table_seed": int(row["table_seed"]) if row["table_seed"] not in ("", "None") else None,
        "true_reward": float(row["true_reward"]), "test_accuracy": float(row["test_accuracy"]),
        "compression": float(row["compression"]),
        "simulated_seconds": float(row["simulated_seconds"]),
        "simulated_seconds_total": float(row["simulated_seconds_total"]),
    }
