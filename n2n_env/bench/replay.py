"""``n2n bench validate``: replay logged episodes against the table and check every number.

As CompilerGym's ``validate`` does for its leaderboards: each logged episode's actions are
played again in a fresh benchmark environment, serving the stored training seed the log
names, and the replayed reward, student, true reward and simulated seconds must equal the
logged ones. A log edited by hand, or produced against another table, fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from n2n_env.bench.rl import ENV_IDS, true_rewards
from n2n_env.bench.table import BenchTable

TOLERANCE = 1e-9


@dataclass(frozen=True)
class Mismatch:
    """One logged value that the replay does not reproduce."""

    agent: str
    seed: int
    episode: int
    field: str
    logged: Any
    replayed: Any

    def __str__(self) -> str:
        return (f"{self.agent} seed {self.seed} episode {self.episode}: {self.field} logged "
                f"{self.logged!r}, replayed {self.replayed!r}")


def validate(records: Sequence[dict[str, Any]], table: BenchTable) -> list[Mismatch]:
    """Every mismatch between the logged episodes and their replay (empty: the log holds)."""
    env_id = ENV_IDS[table.header.space]
    envs = {mode: gym.make(env_id, table=table, reward_seed=mode).unwrapped
            for mode in ("draw", "mean")}
    rewards = true_rewards(table)
    space = table.header.space_object()
    mismatches: list[Mismatch] = []
    for record in records:
        def differs(field: str, replayed: Any, logged: Any = None, record: dict = record
                    ) -> None:
            logged = record[field] if logged is None else logged
            same = (np.isclose(float(logged), float(replayed), rtol=0, atol=TOLERANCE)
                    if isinstance(replayed, float) else logged == replayed)
            if not same:
                mismatches.append(Mismatch(record["agent"], record["seed"], record["episode"],
                                           field, logged, replayed))

        actions = [int(a) for a in record["actions"]]
        if len(actions) != space.episode_length:
            differs("actions", f"{space.episode_length} actions", f"{len(actions)} actions")
            continue
        seed = record["table_seed"]
        env = envs["draw" if seed is not None else "mean"]
        env.reset(seed=0)
        if seed is not None:
            if seed not in table.header.seeds:
                differs("table_seed", f"one of {table.header.seeds}")
                continue
            env._evaluator.next_column = table.header.seeds.index(seed)
        for action in actions:
            _, reward, _, _, info = env.step(action)
        student = table.student_of(space.index(actions))
        differs("reward", float(reward))
        differs("student", student)
        differs("true_reward", float(rewards[student]))
        differs("simulated_seconds", float(info["simulated_seconds"]))
        differs("table_seed", info["table_seed"])
    for env in envs.values():
        env.close()
    return mismatches
