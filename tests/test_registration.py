"""Importing n2n_env registers N2NRemoval-v0 and N2NShrink-v0, and their N2N-Bench twins,
with Gymnasium, each with an entry point and a vector entry point."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import gymnasium as gym
import pytest

import n2n_env
from n2n_env.removal_env import N2NRemovalEnv
from n2n_env.shrink_env import N2NShrinkEnv
from n2n_env.vector_env import N2NVectorEnv

ENTRY_POINTS = {"N2NRemoval-v0": "n2n_env.env_factory:make_removal_env",
                "N2NShrink-v0": "n2n_env.env_factory:make_shrink_env"}
BENCH_ENTRY_POINTS = {"N2NRemovalBench-v0": "n2n_env.env_factory:make_removal_bench_env",
                      "N2NShrinkBench-v0": "n2n_env.env_factory:make_shrink_bench_env"}


@pytest.mark.parametrize("env_id", sorted({**ENTRY_POINTS, **BENCH_ENTRY_POINTS}))
def test_every_id_has_a_vector_entry_point(env_id: str) -> None:
    entry_point = {**ENTRY_POINTS, **BENCH_ENTRY_POINTS}[env_id]
    assert gym.spec(env_id).vector_entry_point == entry_point.removesuffix("_env") + (
        "_vector_env")


@pytest.mark.parametrize("env_id", sorted(ENTRY_POINTS))
def test_import_registers_both_ids_as_nondeterministic(env_id: str) -> None:
    spec = gym.spec(env_id)
    assert spec.entry_point == ENTRY_POINTS[env_id]
    assert spec.nondeterministic is True  # the reward comes from (GPU) training
    assert spec.max_episode_steps is None  # episodes end by themselves, never truncated
    assert spec.kwargs == {}


@pytest.mark.parametrize("env_id", sorted(BENCH_ENTRY_POINTS))
def test_import_registers_the_benchmark_ids_as_deterministic(env_id: str) -> None:
    spec = gym.spec(env_id)
    assert spec.entry_point == BENCH_ENTRY_POINTS[env_id]
    assert spec.nondeterministic is False  # a looked-up reward, drawn by the env's RNG
    assert spec.max_episode_steps is None and spec.kwargs == {}


@pytest.mark.parametrize("env_id, env_class", [("N2NRemoval-v0", N2NRemovalEnv),
                                                ("N2NShrink-v0", N2NShrinkEnv)])
def test_make_builds_the_environment_class(env_id: str, env_class: type) -> None:
    env = gym.make(env_id, evaluator="mock")
    assert type(env.unwrapped) is env_class
    assert env.spec is not None and env.spec.kwargs == {"evaluator": "mock"}
    env.close()
    vector = gym.make_vec(env_id, num_envs=2, evaluator="mock")
    assert type(vector) is N2NVectorEnv and all(type(e) is env_class for e in vector.envs)
    vector.close()
    synced = gym.make_vec(env_id, num_envs=2, vectorization_mode="sync", evaluator="mock")
    assert isinstance(synced, gym.vector.SyncVectorEnv)
    synced.close()


def test_module_prefixed_id_works_in_a_fresh_process() -> None:
    """gym.make('n2n_env:...') imports the package itself: no prior import needed."""
    code = (
        "import sys, gymnasium as gym\n"
        "assert 'n2n_env' not in sys.modules\n"
        "for env_id in ('n2n_env:N2NRemoval-v0', 'n2n_env:N2NShrink-v0'):\n"
        "    env = gym.make(env_id, evaluator='mock')\n"
        "    obs, info = env.reset(seed=0)\n"
        "    obs, reward, terminated, truncated, info = env.step(1)\n"
        "    print(type(env.unwrapped).__name__, sorted(obs), terminated)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("N2NRemovalEnv [") and lines[0].endswith("False")
    assert lines[1].startswith("N2NShrinkEnv [") and "'previous_action'" in lines[1]


def test_registering_twice_is_idempotent() -> None:
    before = {env_id: gym.spec(env_id) for env_id in {**ENTRY_POINTS, **BENCH_ENTRY_POINTS}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium warns when an id is overridden
        importlib.reload(n2n_env)
        importlib.reload(n2n_env)
    for env_id, spec in before.items():
        assert gym.spec(env_id) == spec
    assert sum(env_id.startswith("N2N") for env_id in gym.registry) == 4
    gym.make("N2NRemoval-v0", evaluator="mock").reset()
