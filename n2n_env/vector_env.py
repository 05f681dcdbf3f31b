"""N2NVectorEnv: several N2N environments stepped together, their students evaluated as a
batch.

An N2N episode is cheap until its last step, where the student is trained. Gymnasium's
``SyncVectorEnv`` would train the students of its sub-environments one after another, and
``AsyncVectorEnv`` would give every worker process its own copy of the teacher, the data
and the evaluator. :class:`N2NVectorEnv` instead drives the step seam of
:class:`~n2n_env.env_common.N2NEnvBase` itself: it calls each sub-environment's
``advance``, and when the episodes end it hands all finished students to their (normally
shared) evaluator in ONE ``evaluate_many`` call, which a parallel backend
(``backend="processes"`` or ``"ray"``) trains on its workers at once, and which trains
identical students once. Each sub-environment then scores its own student with ``finish``.

``gym.make_vec("N2NRemoval-v0", num_envs=5, vectorization_mode="vector_entry_point",
evaluator="mock")`` builds one through :mod:`n2n_env.env_factory`, with one evaluator
stack shared by all sub-environments.

Conventions (Gymnasium 1.x):

* autoreset: ``AutoresetMode.SAME_STEP`` (``metadata["autoreset_mode"]``): the step that
  ends an episode returns the next episode's first observation; the terminal
  observations are in ``info["final_obs"]`` and the terminal infos in
  ``info["final_info"]``, each with its ``_key`` mask, as ``SyncVectorEnv`` does in that
  mode;
* infos are merged the Gymnasium way: one array per key over the sub-environments, and a
  boolean ``_key`` array saying which sub-environments set it;
* ``reset(seed=s)`` seeds sub-environment i with ``s + i``.

All sub-environments run one MDP on one teacher, so their episodes have the same length
and end on the same step. Episodes that end on different steps would make the batch
meaningless; the step raises a RuntimeError instead of going on out of step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from n2n_env.arch import Architecture
from n2n_env.bench.envs import N2NRemovalBenchEnv, N2NShrinkBenchEnv
from n2n_env.env_common import N2NEnvBase, StepResult
from n2n_env.evaluators import Evaluation, Evaluator

Observation = dict[str, np.ndarray]
"""A batched observation: each key's array has the sub-environments as first axis."""


class N2NVectorEnv(VectorEnv[Observation, np.ndarray, np.ndarray]):
    """Steps N2N sub-environments of one MDP and teacher together; the students that finish
    on a step are evaluated by one ``evaluate_many`` call per distinct evaluator.

    ``envs`` are N2N environments themselves (instances of an
    :class:`~n2n_env.env_common.N2NEnvBase` subclass, not ``gym.make`` wrappers, which
    this class would bypass), all of the same class and on the same teacher architecture.
    They normally share one evaluator; :meth:`close` closes each distinct evaluator once.

    The sub-environments also share one terminal reward (sub-environment 0's, adopted by
    all; their constraint settings must agree), so the relaxation eps_t of annealed
    constraints advances once per finished episode of the vector env, in the order the
    sub-environments finish (0 first). N vector episodes are then scored exactly as N
    episodes of one environment played one after another, and ``episodes_played`` keeps
    counting all episodes when a search resumes.

    N2N-Bench environments (tabulated rewards) are the exception to the single batch: a
    lookup trains nothing, and it draws a stored training seed with the RNG of the
    environment that asks (seeded through ``reset``), then reports that seed in the
    environment's terminal ``info["table_seed"]``. So each bench student is looked up on its
    own, right before its environment's ``finish``, with that environment's RNG: the
    rewards then equal those of the sub-environments played on their own with the same
    seeds.
    """

    def __init__(self, envs: Sequence[N2NEnvBase]) -> None:
        envs = tuple(envs)
        if not envs:
            raise ValueError("N2NVectorEnv needs at least one sub-environment")
        for index, env in enumerate(envs):
            if isinstance(env, gym.Wrapper):
                raise TypeError(f"sub-environment {index} is a {type(env).__name__} wrapper; "
                                "pass the N2N environments themselves (env.unwrapped): the "
                                "vector env drives their advance/finish seam and would bypass "
                                "wrappers")
            if not isinstance(env, N2NEnvBase):
                raise TypeError(f"sub-environment {index} is a {type(env).__name__}, not an "
                                "N2N environment (N2NEnvBase)")
        first = envs[0]
        for index, env in enumerate(envs[1:], start=1):
            if type(env) is not type(first):
                raise ValueError(f"sub-environment {index} is a {type(env).__name__}, "
                                 f"sub-environment 0 a {type(first).__name__}; all must run "
                                 "the same MDP")
            if env.teacher_architecture != first.teacher_architecture:
                raise ValueError(f"sub-environment {index} has another teacher than "
                                 "sub-environment 0; all must compress the same teacher")
            if (env.observation_space != first.observation_space
                    or env.action_space != first.action_space):
                raise ValueError(f"sub-environment {index} has other spaces than "
                                 "sub-environment 0 (max_layers, start or include_kernels "
                                 "differ)")
            if env.render_mode != first.render_mode:
                raise ValueError(f"sub-environment {index} renders as {env.render_mode!r}, "
                                 f"sub-environment 0 as {first.render_mode!r}")
        _share_terminal_reward(envs)
        self.envs: tuple[N2NEnvBase, ...] = envs
        """The sub-environments, in order."""
        self.num_envs = len(envs)
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(first.observation_space, self.num_envs)
        self.action_space = batch_space(first.action_space, self.num_envs)
        self.render_mode = first.render_mode
        self.metadata = {**first.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}
        self._one_by_one = isinstance(first, N2NRemovalBenchEnv | N2NShrinkBenchEnv)
        self._running = False

    @property
    def evaluators(self) -> list[Evaluator]:
        """The distinct evaluators of the sub-environments, in order of first use (one when
        they share a stack, as ``gym.make_vec`` builds them)."""
        seen: dict[int, Evaluator] = {}
        for env in self.envs:
            seen.setdefault(id(env.evaluator), env.evaluator)
        return list(seen.values())

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Observation, dict[str, Any]]:
        """Reset every sub-environment: with an int ``seed``, sub-environment i gets
        ``seed + i``; a sequence gives each its own (None: not reseeded)."""
        if seed is None or isinstance(seed, int | np.integer):
            super().reset(seed=None if seed is None else int(seed))
            seeds: list[int | None] = ([None] * self.num_envs if seed is None
                                       else [int(seed) + i for i in range(self.num_envs)])
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset got {len(seeds)} seeds for {self.num_envs} "
                                 "sub-environments")
        observations, infos = [], {}
        for index, (env, env_seed) in enumerate(zip(self.envs, seeds)):
            observation, info = env.reset(seed=env_seed, options=options)
            observations.append(observation)
            infos = self._add_info(infos, info, index)
        self._running = True
        return self._batch(observations), infos

    def step(self, actions: Any) -> tuple[Observation, np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        """One decision in every sub-environment. On the step that ends the episodes the
        finished students are evaluated as one batch, each sub-environment is scored and
        reset (SAME_STEP autoreset: see the module docstring).

        Bad actions are refused (ValueError) before any sub-environment moves. A step that
        fails after they moved (episodes of different lengths, an evaluation that raised)
        leaves them out of step: reset() before stepping again."""
        if not self._running:
            raise RuntimeError("call reset() before step() (and after a step that failed after "
                               "the sub-environments had moved)")
        chosen = self._check_actions(actions)
        self._running = False  # until this step has completed for every sub-environment
        results: list[StepResult | None] = [None] * self.num_envs
        finished: list[tuple[int, Architecture, bool]] = []
        for index, (env, action) in enumerate(zip(self.envs, chosen)):
            student, replaced = env.advance(action)
            if student is None:
                results[index] = env.midway(replaced)
            else:
                finished.append((index, student, replaced))
        if finished and len(finished) != self.num_envs:
            done = [index for index, _, _ in finished]
            raise RuntimeError(
                f"sub-environments {done} ended their episodes and the others did not: N2N "
                "sub-environments must have episodes of one length (one MDP, one teacher, "
                "one start). Call reset() before stepping again")
        if finished:
            self._finish(finished, results)
        self._running = True
        return self._merge(results)

    def action_masks(self) -> np.ndarray:
        """Allowed actions now, one row per sub-environment: shape (num_envs, actions)."""
        return np.stack([env.action_masks() for env in self.envs])

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Each sub-environment's attribute ``name``, called with the arguments if it is a
        method (as ``SyncVectorEnv.call``)."""
        results = []
        for env in self.envs:
            value = getattr(env, name)
            results.append(value(*args, **kwargs) if callable(value) else value)
        return tuple(results)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """Each sub-environment's attribute ``name`` (as ``SyncVectorEnv.get_attr``)."""
        return tuple(getattr(env, name) for env in self.envs)

    def set_attr(self, name: str, values: Any) -> None:
        """Set attribute ``name`` of the sub-environments: one value each from a list or
        tuple of ``num_envs`` values, else the same value for all."""
        if not isinstance(values, list | tuple):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"set_attr got {len(values)} values for {self.num_envs} "
                             "sub-environments")
        for env, value in zip(self.envs, values):
            setattr(env, name, value)

    def render(self) -> tuple[Any, ...] | None:
        """Each sub-environment's rendering (None without a render_mode)."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='ansi' "
                            "or 'rgb_array' to gym.make_vec")
            return None
        return tuple(env.render() for env in self.envs)

    def close_extras(self, **kwargs: Any) -> None:
        """Close each distinct evaluator once (the sub-environments share it, so closing
        each of them would close it num_envs times)."""
        for evaluator in self.evaluators:
            close = getattr(evaluator, "close", None)
            if callable(close):
                close()

    def _check_actions(self, actions: Any) -> list[int]:
        """``actions`` as one int per sub-environment, refused before any sub-environment
        moves (so a bad action leaves the vector env where it was)."""
        flat = np.asarray(actions).reshape(-1)
        if flat.shape != (self.num_envs,):
            raise ValueError(f"expected {self.num_envs} actions, one per sub-environment, "
                             f"got {actions!r}")
        chosen = []
        for index, (env, action) in enumerate(zip(self.envs, flat)):
            if (isinstance(action, bool | np.bool_)
                    or not np.issubdtype(np.asarray(action).dtype, np.integer)
                    or not self.single_action_space.contains(np.int64(action))):
                raise ValueError(f"invalid action {action!r} for sub-environment {index}; "
                                 f"allowed: {self.single_action_space}")
            if env.invalid_action == "raise" and not env.action_masks()[int(action)]:
                raise ValueError(f"action {int(action)} is masked in sub-environment {index} "
                                 "(invalid_action='raise'); allowed: "
                                 f"{np.flatnonzero(env.action_masks()).tolist()}")
            chosen.append(int(action))
        return chosen

    def _finish(self, finished: list[tuple[int, Architecture, bool]],
                results: list[StepResult | None]) -> None:
        """Evaluate the finished students (one ``evaluate_many`` per distinct evaluator, or
        one lookup each for bench environments), then score each sub-environment's, in
        order."""
        if self._one_by_one:
            for index, student, replaced in finished:
                env = self.envs[index]
                env.evaluator.rng = env.np_random  # type: ignore[attr-defined]
                [evaluation] = env.evaluator.evaluate_many([student])
                results[index] = env.finish(student, evaluation, replaced)
            return
        groups: dict[int, list[tuple[int, Architecture, bool]]] = {}
        evaluations: dict[int, Evaluation] = {}
        for item in finished:
            untrained = self.envs[item[0]].untrained(item[1])
            if untrained is not None:
                evaluations[item[0]] = untrained
            else:
                groups.setdefault(id(self.envs[item[0]].evaluator), []).append(item)
        for members in groups.values():
            evaluator = self.envs[members[0][0]].evaluator
            outcome = evaluator.evaluate_many([student for _, student, _ in members])
            if len(outcome) != len(members):
                raise RuntimeError(f"{type(evaluator).__name__}.evaluate_many returned "
                                   f"{len(outcome)} evaluations for {len(members)} students")
            evaluations.update({index: one for (index, _, _), one in zip(members, outcome)})
        for index, student, replaced in finished:
            results[index] = self.envs[index].finish(student, evaluations[index], replaced)

    def _merge(self, results: list[StepResult | None]) -> tuple[
            Observation, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Batch the sub-environments' step results; reset the finished ones (SAME_STEP)."""
        observations = []
        rewards = np.zeros(self.num_envs, np.float64)
        terminated = np.zeros(self.num_envs, np.bool_)
        truncated = np.zeros(self.num_envs, np.bool_)
        infos: dict[str, Any] = {}
        for index, result in enumerate(results):
            assert result is not None
            observation, rewards[index], terminated[index], truncated[index], info = result
            if terminated[index] or truncated[index]:
                infos = self._add_info(infos, {"final_obs": observation, "final_info": info},
                                       index)
                observation, info = self.envs[index].reset()
            observations.append(observation)
            infos = self._add_info(infos, info, index)
        return self._batch(observations), rewards, terminated, truncated, infos

    def _batch(self, observations: list[dict[str, np.ndarray]]) -> Observation:
        space = self.single_observation_space
        return concatenate(space, observations, create_empty_array(space, self.num_envs))

    def _add_info(self, vector_infos: dict[str, Any], env_info: dict[str, Any],
                  env_num: int) -> dict[str, Any]:
        """Gymnasium's info merge (``VectorEnv._add_info``), robust to values whose type
        differs between sub-environments: an int key that is None for another
        sub-environment (``table_seed`` of a degenerate bench student) turns the key's
        array into an object array, an int array that meets a float becomes float,
        where Gymnasium's merge would fail or truncate."""
        for key, value in env_info.items():
            if key == "final_obs":
                array = vector_infos.get(key)
                if array is None:
                    array = np.full(self.num_envs, None, dtype=object)
                array[env_num] = value
            elif isinstance(value, dict):
                array = self._add_info(vector_infos.get(key, {}), value, env_num)
            else:
                array = _fitting(vector_infos.get(key), value, self.num_envs)
                array[env_num] = value
            present = vector_infos.get(f"_{key}")
            if present is None:
                present = np.zeros(self.num_envs, np.bool_)
            present[env_num] = True
            vector_infos[key], vector_infos[f"_{key}"] = array, present
        return vector_infos

    def __repr__(self) -> str:
        name = type(self.envs[0]).__name__
        return f"N2NVectorEnv({name}, num_envs={self.num_envs})"


def _fitting(array: np.ndarray | None, value: Any, count: int) -> np.ndarray:
    """An array over ``count`` sub-environments that can hold ``value``: ``array`` itself,
    or widened (to float, or to object) if it cannot, or a new one."""
    if isinstance(value, np.ndarray):
        if array is None:
            return np.zeros((count, *value.shape), value.dtype)
        if array.dtype != object and array.shape[1:] == value.shape and np.can_cast(
                value.dtype, array.dtype, "same_kind"):
            return array
        widened = np.full(count, None, dtype=object)
        widened[:] = list(array) if array.dtype != object or array.ndim > 1 else array
        return widened
    numeric = isinstance(value, int | float | bool | np.number | np.bool_)
    if array is None:
        if numeric:
            return np.zeros(count, dtype=type(value))
        return np.full(count, None, dtype=object)
    if array.dtype == object:
        return array
    if numeric and array.ndim == 1:
        wanted = np.result_type(array.dtype, np.asarray(value).dtype)
        return array if wanted == array.dtype else array.astype(wanted)
    widened = np.full(count, None, dtype=object)
    widened[:] = list(array)
    return widened


def _share_terminal_reward(envs: Sequence[N2NEnvBase]) -> None:
    """Give every sub-environment sub-environment 0's terminal reward, after checking that
    theirs are configured alike (see :class:`N2NVectorEnv`)."""
    shared = envs[0].terminal_reward
    for index, env in enumerate(envs[1:], start=1):
        own = env.terminal_reward
        if own is shared:
            continue
        if (own.constraints, own.compression_metric, own.schedule) != (
                shared.constraints, shared.compression_metric, shared.schedule):
            raise ValueError(f"sub-environment {index} has other constraints, "
                             "compression_metric, anneal_episodes or episodes_played than "
                             "sub-environment 0")
        env.terminal_reward = shared
