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
from stable_baselines3.common.logger import HumanOutputFormat, Logger
from stable_baselines3.common.monitor import Monitor

from agents.search import EPISODES_PER_UPDATE
from agents.step_features import CurrentStepExtractor

AGENTS = ("ppo", "a2c", "maskable-ppo", "recurrent-ppo")
"""The names `make_agent` accepts."""
INFO_KEYWORDS = ("accuracy", "compression")
"""Terminal-info keys the `Monitor` logs per episode besides reward and length."""


RECURRENT_POLICY: dict[str, Any] = {"features_extractor_class": CurrentStepExtractor,
                                    "lstm_hidden_size": 64}
"""RecurrentPPO's policy: an LSTM of 64 units (the paper's recurrent policies have 30 and
50) over the current step's keys only; with the whole observation table as input its
training took about 13 s per update of 5 episodes on one CPU core, with this 0.4 s."""


def episode_length(env: gym.Env) -> int:
    """Steps per episode: `num_layers` (removal) or `num_variables` (shrink).

    For an env with neither attribute, one episode is played (always the last allowed
    action) and its steps are counted; N2N episodes have a fixed length, so one suffices.
    """
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


class MaskedActionFallback(gym.ActionWrapper):
    """Replaces a masked action by the nearest allowed one (ties: the larger action).

    PPO, A2C and RecurrentPPO know nothing of masks; with this they also run on an env made
    with ``invalid_action="raise"``. The nearest action keeps shrink choices close to what
    was asked; for removal it turns "remove a fixed layer" into "keep".
    """

    def action(self, action: Any) -> int:
        action = int(np.asarray(action).reshape(-1)[0])
        allowed = np.flatnonzero(self.env.unwrapped.action_masks())  # type: ignore[attr-defined]
        if action in allowed or allowed.size == 0:
            return action
        distance = np.abs(allowed - action) - allowed * 1e-6  # prefer the larger on ties
        return int(allowed[int(np.argmin(distance))])


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


def diskless_logger(verbose: int = 0) -> Logger:
    """An SB3 logger that writes no files: the standard output when ``verbose >= 1``,
    nothing otherwise.

    Without one, SB3 makes a fresh empty ``SB3-<date>`` folder in the temporary directory on
    every ``learn`` call, and an N2N search calls ``learn`` once per update: a few thousand
    stray folders per search.
    """
    return Logger(folder=None,
                  output_formats=[HumanOutputFormat(sys.stdout)] if verbose >= 1 else [])


def make_agent(name: str, env: gym.Env, seed: int = 0, **overrides: Any) -> BaseAlgorithm:
    """A `name` agent (one of `AGENTS`) on `env`, an N2N environment; `overrides` go to the
    algorithm's constructor and replace the defaults below.

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
      most rollouts.)
    - PPO variants: `batch_size = n_steps` (one minibatch of the whole rollout, as the
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
    n_steps = EPISODES_PER_UPDATE * episode_length(env)
    settings: dict[str, Any] = {"gamma": 1.0, "gae_lambda": 1.0, "n_steps": n_steps,
                                "learning_rate": 3e-3, "ent_coef": 0.01, "seed": seed,
                                "device": "cpu", "verbose": 0}
    if name != "a2c":
        settings.update(batch_size=n_steps, n_epochs=10)
    settings.update(overrides)
    wrapped = wrap(env, masked=name == "maskable-ppo")
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
    """The `Monitor` around the agent's (single) environment."""
    vec_env = agent.get_env()
    env = vec_env.envs[0] if vec_env is not None and hasattr(vec_env, "envs") else None
    while env is not None and not isinstance(env, Monitor):
        env = getattr(env, "env", None)
    if env is None:
        raise ValueError("the agent's environment is not wrapped in a Monitor; build the "
                         "agent with make_agent")
    return env


def train(agent: BaseAlgorithm, episodes: int) -> list[float]:
    """Train for about `episodes` episodes; return the rewards of the episodes finished
    during this call, from the Monitor.

    SB3 counts steps and only stops between rollouts, so the count is rounded up to whole
    rollouts (multiples of 5 episodes with `make_agent`'s defaults).
    """
    log = monitor(agent)
    before = len(log.get_episode_rewards())
    agent.learn(total_timesteps=episodes * episode_length(log), reset_num_timesteps=False)
    return [float(r) for r in log.get_episode_rewards()[before:]]
