"""How the agents read the N2N environments: which MDP an env is, and the per-layer table
out of an observation, for plain and vector envs alike.

An observation pads the layer (or shrink-variable) table to `max_layers` rows so that
every teacher has the same space; the recurrent policies want only the real rows.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch


def observation_spaces(env: gym.Env | gym.vector.VectorEnv) -> dict[str, gym.spaces.Space]:
    """The observation's sub-spaces of one episode (a vector env's single-env ones)."""
    space = env.single_observation_space if isinstance(env, gym.vector.VectorEnv) else (
        env.observation_space)
    if not isinstance(space, gym.spaces.Dict):
        raise ValueError(f"not an N2N environment: its observation space is {space}, "
                         f"not a Dict")
    return dict(space.spaces)


def env_kind(env: gym.Env | gym.vector.VectorEnv) -> str:
    """'removal' or 'shrink', read from the observation space's keys."""
    keys = set(observation_spaces(env))
    if {"layers", "layer_mask"} <= keys:
        return "removal"
    if {"variables", "variable_mask"} <= keys:
        return "shrink"
    raise ValueError(f"not an N2N environment: observation keys {sorted(keys)}")


def observation_table(obs: dict[str, np.ndarray]) -> torch.Tensor:
    """The (T, F) table of real rows in an observation (the padding rows dropped)."""
    name, mask = ("layers", "layer_mask") if "layers" in obs else ("variables", "variable_mask")
    rows = obs[mask].shape[0]
    table = np.asarray(obs[name], np.float32).reshape(rows, -1)[np.asarray(obs[mask]) > 0]
    return torch.from_numpy(table.copy())


def worker_info(info: dict[str, Any], index: int) -> dict[str, Any]:
    """Worker `index`'s own info dict out of a vector env's batched one (Gymnasium stores
    each key as an array over workers, with a `_key` array saying which workers set it)."""
    own = {}
    for key, values in info.items():
        if key.startswith("_"):
            continue
        present = info.get(f"_{key}")
        if present is not None and not present[index]:
            continue
        value = worker_info(values, index) if isinstance(values, dict) else values[index]
        own[key] = value.item() if isinstance(value, np.generic) else value
    return own


def is_feasible(info: dict[str, Any]) -> bool:
    """Whether a terminal info describes a student worth keeping: a valid network that
    meets every constraint. (While constraints are annealed, an over-budget student can
    still earn a high reward; it must never be reported as the best student.)"""
    return info.get("degenerate_reason") is None and not info.get("rewards", {}).get(
        "violated")
