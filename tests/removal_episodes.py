"""Shared by the N2NRemoval-v0 tests: environments on the mock evaluator and whole episodes.
Not a test module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

import n2n_env  # noqa: F401  (registers the environments)
from n2n_env import data
from n2n_env.arch import Layer
from n2n_env.features import NORMALIZED_FEATURE_NAMES

ENV_ID = "N2NRemoval-v0"
F = len(NORMALIZED_FEATURE_NAMES)
TERMINAL_KEYS = {"accuracy", "teacher_accuracy", "params", "flops", "compression", "rewards",
                 "degenerate_reason", "architecture", "eval_seconds", "cache_hit", "trained"}
DIGITS = data.info("digits")


def make(**kwargs: Any) -> gym.Env:
    return gym.make(ENV_ID, **{"evaluator": "mock", **kwargs})


def run(env: gym.Env, policy: Callable[[int, Layer], int] | Sequence[int], seed: int | None = 0
        ) -> list[tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]]:
    """One episode; ``policy`` maps (step, teacher layer) to an action, or lists them."""
    obs, info = env.reset(seed=seed)
    teacher = env.unwrapped.teacher
    transitions = [(obs, 0.0, False, False, info)]
    for t, layer in enumerate(teacher.layers):
        action = policy[t] if isinstance(policy, Sequence) else policy(t, layer)
        transitions.append(env.step(action))
    assert transitions[-1][2], "the episode must end after one step per layer"
    return transitions


def keep_all(t: int, layer: Layer) -> int:
    return 1


def random_actions(env: gym.Env, seed: int) -> list[int]:
    """A seeded random valid action per layer (fixed layers kept)."""
    rng = np.random.default_rng(seed)
    fixed = ~np.array(env.unwrapped.teacher.removable())
    return [1 if fixed[t] else int(rng.integers(2)) for t in range(len(fixed))]
