"""The two tables shipped as package data (n2n_env/bench/tables): complete, from the
documented build, and what the benchmark environments serve by default.

The digests and optima are the ones docs/rl-benchmark.md reports; a rebuilt or damaged file
changes them, and every committed leaderboard log would then fail `n2n bench validate`.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import n2n_env  # noqa: F401  (registers the environments)
from n2n_env.bench.landscape import landscape
from n2n_env.bench.lookup import load_table, shipped_table_path

SHIPPED = {
    # space: (digest, episodes, students, seeds, optimum student, optimum true reward)
    "removal": ("0e99270af3b06abe", 8192, 8192, (0, 1, 2), 735, 0.95186),
    "shrink": ("05a772f22439ed6a", 10_000, 10_000, (0, 1), 9512, 0.97559),
}


@pytest.mark.parametrize("space", sorted(SHIPPED))
def test_the_shipped_table_is_the_documented_complete_build(space: str) -> None:
    digest, episodes, students, seeds, best, optimum = SHIPPED[space]
    table = load_table(None, space)
    assert table.digest() == digest
    header = table.header
    assert (header.space, header.teacher_name, header.dataset) == (space, "conv3", "mnist-10k")
    assert header.seeds == seeds and "provisional" not in header.extra
    assert (table.num_episodes, table.num_students) == (episodes, students)
    trained = table.status < 0
    assert np.isfinite(table.val_accuracy[trained]).all()  # every student at every seed
    assert (table.seconds[trained] > 0).all()
    figures = landscape(table)
    assert figures.optimum_student == best and figures.optimum == pytest.approx(optimum, abs=5e-6)
    assert shipped_table_path(space).stat().st_size < 1_000_000  # a few hundred KB


@pytest.mark.parametrize("env_id", ["N2NRemovalBench-v0", "N2NShrinkBench-v0"])
def test_the_benchmark_environments_serve_the_shipped_tables_by_default(env_id: str) -> None:
    env = gym.make(env_id)
    _, info = env.reset(seed=0)
    terminated = False
    while not terminated:
        allowed = np.flatnonzero(info["action_mask"])
        _, reward, terminated, _, info = env.step(int(allowed[-1]))
    assert -1.0 <= reward <= 1.0 and info["simulated_seconds"] >= 0
    env.close()
