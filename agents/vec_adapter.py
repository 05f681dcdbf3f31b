"""A Gymnasium vector environment seen through Stable-Baselines3's ``VecEnv`` interface.

SB3 has its own vector-environment API (``step_async``/``step_wait``, a list of info
dicts, ``terminal_observation`` in the info of a finished episode, ``env_method``),
while Gymnasium 1.x vector environments return batched infos and autoreset in one of
several modes. :class:`GymnasiumVecEnv` translates between the two, so that an SB3
algorithm trains on an N2N vector env (``gym.make_vec("N2NRemoval-v0", num_envs=5)``),
whose students are then evaluated as one batch per step instead of one at a time::

    envs = gym.make_vec("N2NRemoval-v0", num_envs=5, evaluator="mock")
    model = PPO("MultiInputPolicy", GymnasiumVecEnv(envs), n_steps=20)

Only vector envs with ``AutoresetMode.SAME_STEP`` are accepted: it is SB3's own
convention (the step that ends an episode returns the next episode's first observation),
so no step is lost or invented. ``env_method("action_masks")`` returns each
sub-environment's mask, which is what sb3-contrib's MaskablePPO asks for.

This module knows nothing of N2N (agents never import ``n2n_env``): it works for any
Gymnasium vector env with that autoreset mode, and with ``call``/``get_attr``/``set_attr``
methods (``SyncVectorEnv``, ``AsyncVectorEnv`` and ``N2NVectorEnv`` have them) for the
attribute access SB3 needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from agents.observations import worker_info

_TERMINAL_KEYS = ("final_obs", "final_info")
"""The keys SAME_STEP autoreset adds to the info of a step that ended episodes."""


def autoreset_mode(envs: gym.vector.VectorEnv) -> AutoresetMode | None:
    """The vector env's declared autoreset mode (None if it declares none)."""
    mode = envs.metadata.get("autoreset_mode")
    if mode is None or isinstance(mode, AutoresetMode):
        return mode
    return AutoresetMode(mode)


class GymnasiumVecEnv(VecEnv):  # type: ignore[misc]
    """SB3's ``VecEnv`` over a Gymnasium ``VectorEnv`` with SAME_STEP autoreset.

    Per step, each sub-environment's info is its own slice of the batched info; a finished
    episode's info is its terminal info (``final_info``) with ``terminal_observation`` (the
    terminal observation, for SB3's bootstrapping of truncated episodes) and
    ``TimeLimit.truncated``, and the next episode's reset info goes to ``reset_infos``, as
    SB3's ``DummyVecEnv`` does. ``seed(s)`` reseeds sub-environment i with ``s + i`` at the
    next ``reset``.
    """

    def __init__(self, envs: gym.vector.VectorEnv) -> None:
        if not isinstance(envs, gym.vector.VectorEnv):
            raise TypeError(f"expected a Gymnasium VectorEnv, got {type(envs).__name__}")
        mode = autoreset_mode(envs)
        if mode is not AutoresetMode.SAME_STEP:
            raise ValueError(f"the vector env autoresets in mode {mode}; SB3 needs "
                             "AutoresetMode.SAME_STEP (e.g. SyncVectorEnv(..., "
                             "autoreset_mode=AutoresetMode.SAME_STEP), or an N2NVectorEnv)")
        self.envs = envs
        self._actions: np.ndarray | None = None
        super().__init__(envs.num_envs, envs.single_observation_space,
                         envs.single_action_space)

    def reset(self) -> VecEnvObs:
        """Reset every sub-environment, with the seeds and options set since the last reset
        (``seed``, ``set_options``), then forget them."""
        observations, info = self.envs.reset(seed=self._reset_seed(),
                                             options=self._reset_option())
        self.reset_infos = [worker_info(info, index) for index in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return observations

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async()")
        actions, self._actions = self._actions, None
        observations, rewards, terminated, truncated, info = self.envs.step(actions)
        dones = np.logical_or(terminated, truncated)
        current = {key: value for key, value in info.items()
                   if key.lstrip("_") not in _TERMINAL_KEYS}
        infos: list[dict[str, Any]] = []
        for index in range(self.num_envs):
            own = worker_info(current, index)
            if dones[index]:
                self.reset_infos[index] = own
                own = worker_info(info["final_info"], index)
                own["terminal_observation"] = info["final_obs"][index]
            own["TimeLimit.truncated"] = bool(truncated[index] and not terminated[index])
            infos.append(own)
        return (observations, np.asarray(rewards, np.float32), dones, infos)

    def close(self) -> None:
        self.envs.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Each selected sub-environment's attribute (AttributeError if it has none)."""
        values = self._sub_env_call("get_attr", attr_name)
        return [values[index] for index in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set the attribute of the selected sub-environments to ``value``."""
        chosen = set(self._get_indices(indices))
        values = ([value] * self.num_envs if len(chosen) == self.num_envs
                  else self._sub_env_call("get_attr", attr_name))
        self._sub_env_call("set_attr", attr_name,
                           [value if index in chosen else values[index]
                            for index in range(self.num_envs)])

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        """Call each selected sub-environment's method (e.g. ``action_masks``)."""
        results = self._sub_env_call("call", method_name, *method_args, **method_kwargs)
        return [results[index] for index in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper],
                       indices: VecEnvIndices = None) -> list[bool]:
        """False for each selected sub-environment: a Gymnasium vector env does not show
        its sub-environments' wrappers (SB3 asks this to find a ``Monitor``; use SB3's
        ``VecMonitor`` around this adapter instead)."""
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.envs.render()
        return list(frames) if frames is not None else [None] * self.num_envs

    def _sub_env_call(self, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        method = getattr(self.envs, name, None)
        if not callable(method):
            raise AttributeError(f"{type(self.envs).__name__} has no {name}(); the adapter "
                                 "needs call/get_attr/set_attr for attribute access")
        result = method(*args, **kwargs)
        return list(result) if result is not None else []

    def _reset_seed(self) -> int | list[int | None] | None:
        """The seeds of the next reset: None, the first of consecutive seeds (what
        ``VecEnv.seed`` sets, and what a Gymnasium vector env spreads the same way), or
        the list."""
        seeds = list(self._seeds)
        if all(seed is None for seed in seeds):
            return None
        first = seeds[0]
        if first is not None and seeds == [first + i for i in range(self.num_envs)]:
            return int(first)
        return seeds

    def _reset_option(self) -> dict[str, Any] | None:
        options = self._options
        if not any(options):
            return None
        if any(option != options[0] for option in options):
            raise ValueError("a Gymnasium vector env takes one options dict for all "
                             "sub-environments; set_options got different ones")
        return dict(options[0])

    def _get_indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int | np.integer):
            return [int(indices)]
        return list(indices)
