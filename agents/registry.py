"""Every search agent behind one small interface, for drivers such as `n2n compress`.

A search iteration is the paper's unit of work: play m = 5 episodes (each one a trained
and scored student), then let the agent learn from them. The agents differ in how they
do that (REINFORCE and actor-critic update once per batch, SB3 collects a rollout of 5
whole episodes and runs its own update, random search learns nothing), so
`SearchAgent` hides the difference behind `iterate`, and adds what a resumable driver
needs: per-iteration reseeding and a policy file that loads with `weights_only=True`::

    env = gym.make("N2NRemoval-v0", evaluator="mock")
    agent = make("maskable-ppo", env, seed=0)
    for iteration in range(10):
        agent.reseed(iteration)
        outcomes = agent.iterate(env)      # [(reward, terminal info), ...] of 5 episodes
    agent.save("removal_policy.pt")
    agent = restore("maskable-ppo", env, "removal_policy.pt", seed=0)

Every agent also runs on a Gymnasium vector env of N2N environments (``gym.make_vec(
"N2NRemoval-v0", num_envs=5, ...)``, whose students are evaluated as one batch per step):
make it on the vector env and pass the vector env to `iterate`, which then returns one
outcome per finished episode. With 5 sub-environments an iteration is one episode in each;
with n sub-environments it is the fewest whole vector episodes that make at least 5
(n x ceil(5 / n) episodes).

The SB3 agents need the `sb3` extra (`pip install "n2n[sb3]"`); the others do not.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from agents import policy_files
from agents.actor_critic import ActorCritic, ActorCriticConfig
from agents.agent_spec import NAMES, AgentSpec
from agents.observations import env_kind
from agents.random_search import RandomSearch, RandomSearchConfig
from agents.reinforce import Reinforce, ReinforceConfig

POLICY_GRADIENT = {"reinforce": (Reinforce, ReinforceConfig),
                   "actor-critic": (ActorCritic, ActorCriticConfig)}
"""The paper's recurrent agents: name -> (agent class, config class)."""
SB3_AGENTS = ("ppo", "a2c", "maskable-ppo", "recurrent-ppo")
"""Stable-Baselines3 / sb3-contrib agents (see `agents.sb3.make_agent`)."""
AGENT_NAMES = NAMES
"""Every name `make` accepts: the paper's agents, the SB3 ones, random search."""
TRANSFERABLE = tuple(POLICY_GRADIENT)
"""Agents whose saved removal policy can start a search on another teacher."""
SB3_FORMAT = "n2n-sb3-v1"
"""Tag stored in every SB3 policy file written by `SB3Agent.save`."""
Outcome = tuple[float, dict[str, Any]]
"""One episode's reward and terminal info."""
Env = gym.Env | gym.vector.VectorEnv
"""What an agent plays on: one N2N environment, or a Gymnasium vector env of them."""


class SearchAgent(Protocol):
    """What a driver needs from an agent."""

    iterations: int
    """Search iterations completed (restored by `restore`, except for random search,
    which saves nothing: its driver keeps the count)."""

    def iterate(self, env: Env) -> list[Outcome]:
        """Play one batch of episodes on `env`, learn from it, return what each scored
        (one outcome per finished episode)."""
        ...

    def reseed(self, seed: int) -> None:
        """Seed the agent's sampling (a resumed run then samples as an unbroken one)."""
        ...

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the agent's learned state to `path` (nothing for agents that learn nothing)."""
        ...


class PolicyGradientAgent:
    """`Reinforce` or `ActorCritic`: m rollouts, then one policy-gradient update."""

    def __init__(self, learner: Reinforce) -> None:
        self.learner = learner

    @property
    def iterations(self) -> int:
        """Policy updates so far."""
        return self.learner.iterations

    def iterate(self, env: Env) -> list[Outcome]:
        """m rollouts (in parallel on a vector env: whole vector episodes, at least m),
        then one update."""
        episodes = self.learner.rollouts(env, self.learner.config.rollouts_per_update)
        self.learner.update(episodes)
        return [(episode.reward, episode.info) for episode in episodes]

    def reseed(self, seed: int) -> None:
        """Seed the action sampling."""
        self.learner.generator.manual_seed(seed)

    def save(self, path: str | os.PathLike[str]) -> None:
        """`Reinforce.save`: policy, optimiser, baseline, counters."""
        self.learner.save(path)


class RandomAgent:
    """`RandomSearch`: m uniformly random episodes per iteration, nothing to save."""

    def __init__(self, search: RandomSearch) -> None:
        self.search = search
        self.iterations = 0

    def iterate(self, env: Env) -> list[Outcome]:
        """m uniformly random episodes (on a vector env: whole vector episodes, at least
        m)."""
        outcomes = self.search.rollouts(env, self.search.config.rollouts_per_update)
        self.iterations += 1
        return outcomes

    def reseed(self, seed: int) -> None:
        """Seed the action sampling."""
        self.search.rng = np.random.default_rng(seed)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Random search has no learned state: nothing is written."""


class SB3Agent:
    """An SB3 algorithm whose every `learn` call is exactly one rollout of whole episodes
    and one update (`agents.sb3.make_agent` sets n_steps = 5 x episode length on one env,
    episode length x ceil(5 / n) on a vector env of n sub-environments)."""

    def __init__(self, name: str, model: Any) -> None:
        from agents.sb3 import EpisodeRecorder

        self.name = name
        self.model = model
        self._recorder = EpisodeRecorder()

    @property
    def rollout_steps(self) -> int:
        """Steps of one rollout over all sub-environments (SB3 counts its timesteps so)."""
        return int(self.model.n_steps * self.model.n_envs)

    @property
    def iterations(self) -> int:
        """Rollouts (and updates) so far: SB3's step count over its rollout length."""
        return int(self.model.num_timesteps // self.rollout_steps)

    def iterate(self, env: Env) -> list[Outcome]:
        """One rollout and update; one outcome per episode finished in it. `env` is the one
        the model was built on (SB3 keeps its own wrapped copy), so it is not used here."""
        self._recorder.outcomes.clear()
        self.model.learn(total_timesteps=self.rollout_steps, callback=self._recorder,
                         reset_num_timesteps=False)
        return list(self._recorder.outcomes)

    def reseed(self, seed: int) -> None:
        """Seed SB3's sampling, which draws from torch's and numpy's global generators:
        reseed right before `iterate`."""
        self.model.set_random_seed(seed)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Policy and optimiser state_dicts and counters: tensors and plain values only, so
        `restore` loads with `weights_only=True` (SB3's own zip format unpickles)."""
        policy = self.model.policy
        torch.save({"format": SB3_FORMAT, "name": self.name,
                    "state_dict": policy.state_dict(),
                    "optimizer": policy.optimizer.state_dict(),
                    "num_timesteps": int(self.model.num_timesteps),
                    "n_updates": int(getattr(self.model, "_n_updates", 0))}, path)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Read a file written by `save` into this (freshly made) agent."""
        what = "an SB3 policy written by n2n"
        saved = policy_files.read(path, SB3_FORMAT, what)
        if saved.get("name") != self.name:
            raise policy_files.PolicyFileError(
                f"{os.fspath(path)!r} holds a {saved.get('name')} policy, not {self.name}")

        def build() -> None:
            self.model.policy.load_state_dict(saved["state_dict"])
            self.model.policy.optimizer.load_state_dict(saved["optimizer"])
            self.model.num_timesteps = saved["num_timesteps"]
            self.model._n_updates = saved["n_updates"]

        policy_files.restore(path, what, build)


def check_name(name: str) -> None:
    """Raise a ValueError naming the allowed agents if `name` is not one of them."""
    if name not in AGENT_NAMES:
        raise ValueError(f"unknown agent {name!r}; allowed: {', '.join(AGENT_NAMES)}")


def check_available(name: str) -> None:
    """`check_name`, and for the SB3 agents a ValueError saying how to install them if the
    `sb3` extra is missing (so a driver can fail before any expensive work)."""
    check_name(name)
    if name in SB3_AGENTS:
        _sb3_make_agent(name)


def check_spec(text: str) -> AgentSpec:
    """The parsed agent spec ``text`` (``NAME`` or ``NAME:key=value,...``), checked as
    `check_available` checks a name; a ValueError says what is wrong."""
    spec = AgentSpec.parse(text)
    check_available(spec.name)
    if spec.name in POLICY_GRADIENT:  # values out of range (shrink_policy=x), before any work
        config_class = POLICY_GRADIENT[spec.name][1]
        for kind in ("removal", "shrink"):
            config_class(**spec.settings).resolved(kind)
    return spec


def _sb3_make_agent(name: str) -> Any:
    """`agents.sb3.make_agent`, or a ValueError naming the missing extra."""
    try:
        from agents.sb3 import make_agent
    except ImportError as exc:
        raise ValueError(f"agent {name!r} needs stable-baselines3 and sb3-contrib: "
                         f"pip install \"n2n[sb3]\" ({exc})") from None
    return make_agent


def check_policy_init(name: str, path: str | os.PathLike[str]) -> None:
    """Refuse, before any work, a ``policy_init`` file that ``make`` could not start the
    removal stage of agent ``name`` from (missing, damaged, foreign, or a shrink policy)."""
    if name not in POLICY_GRADIENT:
        raise ValueError(f"policy_init needs one of {', '.join(TRANSFERABLE)}, not {name!r}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"policy_init {os.fspath(path)!r} does not exist")
    learner = POLICY_GRADIENT[name][0].load(path)
    if learner.kind != "removal":
        raise ValueError(f"policy_init {os.fspath(path)!r} is a {learner.kind} policy; it "
                         "can only start the removal stage")


def make(name: str, env: Env, seed: int = 0,
         policy_init: str | os.PathLike[str] | None = None,
         settings: Mapping[str, Any] | None = None) -> SearchAgent:
    """A fresh `name` agent for `env` (one N2N environment or a vector env of them).
    `policy_init` (reinforce and actor-critic, removal env only) starts from a saved
    removal policy, e.g. one trained on another teacher: its weights and optimiser are
    kept, its baseline and best student are not (they belong to the other teacher's
    rewards). `settings` replace defaults: config fields, or SB3 constructor arguments
    (`agents.agent_spec` lists and checks them; `make_spec` takes a parsed spec)."""
    check_name(name)
    settings = dict(settings or {})
    if settings and policy_init is not None:
        raise ValueError("policy_init continues a saved policy with its own settings; "
                         "settings cannot be given with it")
    if name in POLICY_GRADIENT:
        agent_class, config_class = POLICY_GRADIENT[name]
        if policy_init is None:
            return PolicyGradientAgent(agent_class.for_env(
                env, config_class(**{**settings, "seed": seed})))
        learner = agent_class.load(policy_init)
        if learner.kind != "removal" or learner.kind != env_kind(env):
            raise ValueError(f"policy_init {os.fspath(policy_init)!r} is a {learner.kind} "
                             f"policy; it can only start the removal stage")
        learner.forget_rewards()
        learner.iterations = 0
        learner.generator.manual_seed(seed)
        return PolicyGradientAgent(learner)
    if policy_init is not None:
        raise ValueError(f"policy_init needs one of {', '.join(TRANSFERABLE)}, not {name!r}")
    if name == "random":
        return RandomAgent(RandomSearch(RandomSearchConfig(**{**settings, "seed": seed})))
    return SB3Agent(name, _sb3_make_agent(name)(name, env, seed=seed, **settings))


def make_spec(spec: str | AgentSpec, env: Env, seed: int = 0) -> SearchAgent:
    """`make` for an agent spec such as ``"reinforce:learning_rate=0.03"`` (see
    `agents.agent_spec`), parsed and checked first."""
    spec = AgentSpec.parse(spec) if isinstance(spec, str) else spec
    return make(spec.name, env, seed=seed, settings=spec.settings)


def restore(name: str, env: Env, path: str | os.PathLike[str],
            seed: int = 0, settings: Mapping[str, Any] | None = None) -> SearchAgent:
    """The agent `save` wrote to `path`, ready to continue on `env`. Random search saves
    nothing, so it comes back fresh (its iteration count lives with the driver); for the
    others a missing file is a FileNotFoundError, never a silent fresh start. `settings`
    are those `make` was given (the paper's agents keep theirs in the file)."""
    check_name(name)
    if name == "random":
        return make(name, env, seed=seed, settings=settings)
    if not Path(path).is_file():
        raise FileNotFoundError(f"no saved {name} agent at {os.fspath(path)!r}")
    if name in POLICY_GRADIENT:
        return PolicyGradientAgent(POLICY_GRADIENT[name][0].load(path))
    agent = make(name, env, seed=seed, settings=settings)
    assert isinstance(agent, SB3Agent)
    agent.load(path)
    return agent

