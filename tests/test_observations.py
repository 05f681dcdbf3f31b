"""Tests for agents/observations.py: reading N2N observations, plain and vectorised."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import n2n_env  # noqa: F401  (registers the environments)
from agents.observations import env_kind, is_feasible, observation_table, worker_info


def test_env_kind_for_plain_and_vector_envs() -> None:
    removal = gym.make("N2NRemoval-v0", evaluator="mock")
    shrink = gym.make("N2NShrink-v0", evaluator="mock")
    vector = gym.vector.SyncVectorEnv([lambda: gym.make("N2NShrink-v0", evaluator="mock")])
    assert (env_kind(removal), env_kind(shrink), env_kind(vector)) == (
        "removal", "shrink", "shrink")
    with pytest.raises(ValueError, match="not an N2N environment"):
        env_kind(gym.make("CartPole-v1"))


@pytest.mark.parametrize("teacher", ["conv4", "vgg11"])
def test_table_keeps_the_real_rows_in_order(teacher: str) -> None:
    env = gym.make("N2NRemoval-v0", teacher=teacher, evaluator="mock")
    obs, _ = env.reset(seed=0)
    table = observation_table(obs)
    layers = env.unwrapped.num_layers
    assert table.shape == (layers, obs["layer"].shape[0])
    np.testing.assert_array_equal(table[0].numpy(), obs["layer"])  # the first layer's row
    assert not np.any(obs["layers"].reshape(env.unwrapped.max_layers, -1)[layers:])


def test_worker_info_takes_one_workers_values_and_skips_unset_keys() -> None:
    batched = {"accuracy": np.array([0.5, 0.9]), "_accuracy": np.array([True, True]),
               "architecture": np.array(["a", None], dtype=object),
               "_architecture": np.array([True, False]),
               "rewards": {"reward": np.array([0.1, 0.2]), "_reward": np.array([True, True])},
               "_rewards": np.array([True, True])}
    first, second = worker_info(batched, 0), worker_info(batched, 1)
    assert first == {"accuracy": 0.5, "architecture": "a", "rewards": {"reward": 0.1}}
    assert second == {"accuracy": 0.9, "rewards": {"reward": 0.2}}
    assert type(first["accuracy"]) is float


def test_is_feasible_rejects_degenerate_and_over_budget_students() -> None:
    assert is_feasible({"degenerate_reason": None, "rewards": {"violated": []}})
    assert not is_feasible({"degenerate_reason": "empty", "rewards": {"violated": []}})
    assert not is_feasible({"degenerate_reason": None,
                            "rewards": {"violated": ["params <= 1"]}})
