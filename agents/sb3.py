"""Stable-Baselines3 agents for N2N: PPO, A2C, MaskablePPO and RecurrentPPO.

`make_agent` builds one of them for either environment with settings chosen for N2N's
reward, which is terminal-only (0 on every step but the last) on fixed-length episodes::

    env = gym.make("N2NRemoval-v0", evaluator="mock")
    agent = make_agent("maskable-ppo", env, seed=0)
    rewards = train(agent, episodes=200)

The env is wrapped in SB3's `Monitor` with `info_keywords=("accuracy", "compression")`,
so every finished episode's reward, length, accuracy and compression are logged (and
`monitor(agent)` gives them back). Only MaskablePPO uses the action masks: the others may
pick a masked action (removing a fixed layer). The env takes it as the allowed one by
default (and raises under `invalid_action="raise"`); `make_agent` also adds
`MaskedActionFallback`, which turns a masked action into the nearest allowed one for any
environment (the policy is then trained on the action it sampled, a small off-policy
error on the fixed layers only).

On a Gymnasium vector env (``gym.make_vec("N2NRemoval-v0", num_envs=5, ...)``, whose
students are evaluated as one batch per step) the agent trains through
`agents.vec_adapter.GymnasiumVecEnv`, wrapped in SB3's `VecMonitor` (same info keywords)
and, except for MaskablePPO, `VecMaskedActionFallback`; a rollout then holds whole
episodes of every sub-environment (see `make_agent`).
"""

from __future__ import annotations

import sys
from typing import Any

import gymnasium as gym
import numpy as np
from sb3_contrib import MaskablePPO, RecurrentPPO
from sb3_contrib.common.wrappers import ActionMasker
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HumanOutputFormat, Logger
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecMonitor

from agents.search import EPISODES_PER_UPDATE
from agents.step_features import CurrentStepExtractor
from agents.vec_adapter import GymnasiumVecEnv

AGENTS = ("ppo", "a2c", "maskable-ppo", "recurrent-ppo")
"""The names `make_agent` accepts."""
INFO_KEYWORDS = ("accuracy", "compression")
"""Terminal-info keys the `Monitor` logs per episode besides reward and length."""


RECURRENT_POLICY: dict[str, Any] = {"features_extractor_class": CurrentStepExtractor,
                                    "lstm_hidden_size": 64}
"""RecurrentPPO's policy: an LSTM of 64 units (the paper's recurrent policies have 30 and
50) over the current step's keys only; with the whole observation table as input its
training took about 13 s per update of 5 episodes on one CPU core, with this 0.4 s."""


def episode_length(env: gym.Env | gym.vector.VectorEnv | VecEnv) -> int:
    """Steps per episode: `num_layers` (removal) or `num_variables` (shrink), of the env
    or, for a Gymnasium or SB3 vector env, of its sub-environments.

    For an env with neither attribute, one episode is played (always the last allowed
    action) and its steps are counted; N2N episodes have a fixed length, so one suffices.
    (A vector env without the attributes is refused rather than played.)
    """
    if isinstance(env, gym.vector.VectorEnv | VecEnv):
        for name in ("num_layers", "num_variables"):
            try:
                values = list(env.get_attr(name))
            except AttributeError:
                continue
            if values and all(isinstance(value, int) for value in values):
                if len(set(values)) != 1:
                    raise ValueError(f"the sub-environments' episodes differ in length "
                                     f"({name} {sorted(set(values))})")
                return int(values[0])
        raise ValueError("cannot tell the episode length of this vector env: its "
                         "sub-environments have no num_layers or num_variables")
    base = env.unwrapped
    for name in ("num_layers", "num_variables"):
        if isinstance(getattr(base, name, None), int):
            return int(getattr(base, name))
    _, info = env.reset()
    steps, done = 0, False
    while not done:
        allowed = np.flatnonzero(np.asarray(info["action_mask"]) > 0)
        _, _, terminated, truncated, info = env.step(int(allowed[-1]))
        steps, done = steps + 1, terminated or truncated
    return steps


def nearest_allowed(action: int, mask: np.ndarray) -> int:
    """``action`` if ``mask`` allows it (or allows nothing), else the nearest allowed action
    (ties: the larger one)."""
    allowed = np.flatnonzero(np.asarray(mask))
    if action in allowed or allowed.size == 0:
        return action
    distance = np.abs(allowed - action) - allowed * 1e-6  # prefer the larger on ties
    return int(allowed[int(np.argmin(distance))])


class MaskedActionFallback(gym.ActionWrapper):
    """Replaces a masked action by the nearest allowed one (ties: the larger action).

    PPO, A2C and RecurrentPPO know nothing of masks; with this they also run on an env made
    with ``invalid_action="raise"``. The nearest action keeps shrink choices close to what
    was asked; for removal it turns "remove a fixed layer" into "keep".
    """

    def action(self, action: Any) -> int:
        action = int(np.asarray(action).reshape(-1)[0])
        return nearest_allowed(action,
                               self.env.unwrapped.action_masks())  # type: ignore[attr-defined]


class VecMaskedActionFallback(VecEnvWrapper):  # type: ignore[misc]
    """`MaskedActionFallback` for an SB3 vector env: each sub-environment's masked action
    becomes its nearest allowed one, the masks read through ``env_method("action_masks")``.
    """

    def step_async(self, actions: np.ndarray) -> None:
        masks = self.venv.env_method("action_masks")
        chosen = [nearest_allowed(int(action), mask)
                  for action, mask in zip(np.asarray(actions).reshape(-1), masks)]
        self.venv.step_async(np.asarray(chosen, dtype=np.asarray(actions).dtype))

    def step_wait(self) -> Any:
        return self.venv.step_wait()

    def reset(self) -> Any:
        return self.venv.reset()


def env_action_masks(env: gym.Env) -> np.ndarray:
    """The N2N env's own `action_masks()` (the mask function given to `ActionMasker`)."""
    return np.asarray(env.unwrapped.action_masks(), dtype=bool)  # type: ignore[attr-defined]


def wrap(env: gym.Env, masked: bool) -> Monitor:
    """`Monitor(ActionMasker(env))` for MaskablePPO, `Monitor(MaskedActionFallback(env))`
    otherwise. The Monitor is outermost so it sees exactly what the agent sees."""
    if masked:
        inner: gym.Env = ActionMasker(env, env_action_masks)
    else:
        inner = MaskedActionFallback(env)
    return Monitor(inner, info_keywords=INFO_KEYWORDS)


def wrap_vector(envs: gym.vector.VectorEnv, masked: bool) -> VecMonitor:
    """`VecMonitor(GymnasiumVecEnv(envs))` for MaskablePPO (which reads the masks through
    ``env_method``), with `VecMaskedActionFallback` in between for the others. The
    VecMonitor is outermost so it sees exactly what the agent sees."""
    inner: VecEnv = GymnasiumVecEnv(envs)
    if not masked:
        inner = VecMaskedActionFallback(inner)
    return VecMonitor(inner, info_keywords=INFO_KEYWORDS)


def rollout_steps(episode_steps: int, num_envs: int = 1) -> int:
    """`n_steps` (per sub-environment) for rollouts of whole episodes, at least m = 5 of
    them: episode length x ceil(5 / num_envs). With 1 or 5 sub-environments a rollout holds
    exactly 5 episodes; otherwise ``num_envs * ceil(5 / num_envs)`` (2 or 3 envs: 6, 4: 8,
    more than 5: one each), as no episode may be cut at a rollout boundary."""
    return episode_steps * -(-EPISODES_PER_UPDATE // num_envs)


def diskless_logger(verbose: int = 0) -> Logger:
    """An SB3 logger that writes no files: the standard output when ``verbose >= 1``,
    nothing otherwise.

    Without one, SB3 makes a fresh empty ``SB3-<date>`` folder in the temporary directory on
    every ``learn`` call, and an N2N search calls ``learn`` once per update: a few thousand
    stray folders per search.
    """
    return Logger(folder=None,
                  output_formats=[HumanOutputFormat(sys.stdout)] if verbose >= 1 else [])


def make_agent(name: str, env: gym.Env | gym.vector.VectorEnv, seed: int = 0,
               **overrides: Any) -> BaseAlgorithm:
    """A `name` agent (one of `AGENTS`) on `env`, an N2N environment or a Gymnasium vector
    env of them (SAME_STEP autoreset, e.g. ``gym.make_vec("N2NRemoval-v0", num_envs=5)``);
    `overrides` go to the algorithm's constructor and replace the defaults below.

    Defaults, chosen for a terminal-only reward on episodes of fixed length L:

    - `gamma=1`: the return of every step is the final reward. Episodes are short and
      finite, so nothing diverges, and discounting would only shrink the credit of the early
      decisions (gamma**(L - t)), which matter as much as the late ones.
    - `gae_lambda=1`: Monte-Carlo advantages R - V(s_t). With one reward at the end, lower
      lambda bootstraps from a value function that is still wrong early on; lambda=1 is
      REINFORCE with a learned baseline, the paper's estimator.
    - `n_steps = 5 * L`: every rollout holds exactly 5 whole episodes (the paper's m = 5),
      so no episode is cut and bootstrapped at a rollout boundary, and each update sees a
      few rewards rather than one. (A2C's default of 5 steps would never see a reward in
      most rollouts.) On a vector env of n sub-environments SB3's `n_steps` counts steps
      per sub-environment: `n_steps = L * ceil(5 / n)` (`rollout_steps`), so a rollout
      holds exactly 5 whole episodes when n is 1 or 5 (one per sub-environment), and
      otherwise the fewest whole episodes of every sub-environment that make at least 5
      (n = 2 or 3: 6 episodes, n = 4: 8, n > 5: n).
    - PPO variants: `batch_size = n_steps * n` (one minibatch of the whole rollout, as the
      batches are tiny) and `n_epochs=10`.
    - `learning_rate=3e-3` (the paper's removal rate): few updates are affordable when each
      episode trains a student. On the mock removal env 1e-3 had not improved after 200
      episodes for 4 of 4 seeds, 3e-3 had (mean reward about 0.25 -> 0.6).
    - `ent_coef=0.01` keeps some exploration: a policy that collapses early never sees
      other architectures.
    - `device="cpu"`: the networks are small MLPs/LSTMs; a GPU would only add transfers.

    RecurrentPPO gets `RECURRENT_POLICY` unless `policy_kwargs` is given.

    MaskablePPO gets the env's `action_masks()` through `ActionMasker`; the other agents
    get `MaskedActionFallback`. RecurrentPPO uses `MultiInputLstmPolicy`, the others
    `MultiInputPolicy` (the observation is a `Dict`).

    The agent logs through `diskless_logger`, unless `tensorboard_log` is given: then SB3
    writes its usual run folders there.
    """
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; choose one of {', '.join(AGENTS)}")
    vector = isinstance(env, gym.vector.VectorEnv)
    num_envs = env.num_envs if vector else 1
    n_steps = rollout_steps(episode_length(env), num_envs)
    settings: dict[str, Any] = {"gamma": 1.0, "gae_lambda": 1.0, "n_steps": n_steps,
                                "learning_rate": 3e-3, "ent_coef": 0.01, "seed": seed,
                                "device": "cpu", "verbose": 0}
    if name != "a2c":
        settings.update(batch_size=n_steps * num_envs, n_epochs=10)
    settings.update(overrides)
    masked = name == "maskable-ppo"
    wrapped: Monitor | VecMonitor = (
        wrap_vector(env, masked) if isinstance(env, gym.vector.VectorEnv)
        else wrap(env, masked))
    agent: BaseAlgorithm
    if name == "ppo":
        agent = PPO("MultiInputPolicy", wrapped, **settings)
    elif name == "a2c":
        agent = A2C("MultiInputPolicy", wrapped, **settings)
    elif name == "maskable-ppo":
        agent = MaskablePPO("MultiInputPolicy", wrapped, **settings)
    else:
        settings.setdefault("policy_kwargs", RECURRENT_POLICY)
        agent = RecurrentPPO("MultiInputLstmPolicy", wrapped, **settings)
    if settings.get("tensorboard_log") is None:
        agent.set_logger(diskless_logger(int(settings["verbose"])))
    return agent


def monitor(agent: BaseAlgorithm) -> Monitor:
    """The `Monitor` around the agent's (single) environment. An agent on a vector env has
    a `VecMonitor` instead (`agent.get_env()`); `train` returns its episodes."""
    vec_env = agent.get_env()
    env = vec_env.envs[0] if isinstance(getattr(vec_env, "envs", None), list) else None
    while env is not None and not isinstance(env, Monitor):
        env = getattr(env, "env", None)
    if env is None:
        raise ValueError("the agent's environment is not wrapped in a Monitor; build the "
                         "agent with make_agent on a single environment (on a vector env "
                         "it is a VecMonitor: agent.get_env())")
    return env


class EpisodeRecorder(BaseCallback):  # type: ignore[misc]
    """Records each episode that finishes during `learn`: its reward (from the Monitor or
    VecMonitor) and its terminal info, without the monitor's and SB3's own keys."""

    def __init__(self) -> None:
        super().__init__()
        self.outcomes: list[tuple[float, dict[str, Any]]] = []

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"]):
            if done:
                details = {k: v for k, v in info.items()
                           if k not in ("episode", "terminal_observation",
                                        "TimeLimit.truncated")}
                self.outcomes.append((float(info["episode"]["r"]), details))
        return True


def train(agent: BaseAlgorithm, episodes: int) -> list[float]:
    """Train for about `episodes` episodes; return the rewards of the episodes finished
    during this call, from the Monitor (or VecMonitor).

    SB3 counts steps and only stops between rollouts, so the count is rounded up to whole
    rollouts (multiples of 5 episodes with `make_agent`'s defaults).
    """
    recorder = EpisodeRecorder()
    vec_env = agent.get_env()
    length = episode_length(vec_env if isinstance(vec_env, VecMonitor) else monitor(agent))
    agent.learn(total_timesteps=episodes * length, callback=recorder,
                reset_num_timesteps=False)
    return [reward for reward, _ in recorder.outcomes]
