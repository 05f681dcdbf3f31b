"""REINFORCE for N2N (Ashok et al., ICLR 2018, sections 3.2-3.4).

CleanRL style: a config and a straight training loop; the policy networks are in
`agents.policies`, the baselines in `agents.advantages`.

- Stage 1, `N2NRemoval-v0`: `RemovalPolicy`, a bidirectional LSTM reads the teacher's whole
  layer table and gives a keep/remove distribution for every layer (paper Figure 2a).
- Stage 2, `N2NShrink-v0`: by default `IndependentShrinkPolicy`, one learned distribution
  per shrink variable; `shrink_policy="lstm"` gives the paper's `ShrinkPolicy`, an
  autoregressive LSTM that steps through the shrink variables and at each step also sees
  its previous action (paper Figure 2b).

Both are trained by REINFORCE (paper eq. 2). Stage 1 uses the paper's moving-average
baseline b; stage 2 by default a risk-seeking one, b the 90th percentile of the last 50
rewards, with only the episodes above it reinforced (`risk_seeking`):

    loss = -(1/m) * sum_k (R_k - b) * sum_t log pi(a_t | ...)  -  entropy_coef * entropy

The stage-2 defaults are not the paper's: on N2N-Bench's shrink table the paper's LSTM
with a moving-average baseline ends with a higher regret than random search, and these
settings with a lower one (docs/rl-benchmark.md, the leaderboard).

The policies' parameters do not depend on the number of layers, so a policy trained on one
teacher runs on another (the paper's transfer experiment)::

    env = gym.make("N2NRemoval-v0", teacher="conv4", evaluator="mock")
    agent = Reinforce.for_env(env, ReinforceConfig(seed=0))
    stats = agent.train(env, iterations=100)
    agent.save("removal.pt")
    print(agent.best_reward, agent.best_architecture)
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from agents import policy_files
from agents.advantages import advantages, risk_seeking_advantages, update_baseline
from agents.observations import (
    env_kind,
    observation_spaces,
    observation_table,
    worker_info,
)
from agents.policies import IndependentShrinkPolicy, RemovalPolicy, ShrinkPolicy
from agents.search import EPISODES_PER_UPDATE, BestStudent

KINDS = ("removal", "shrink")
"""The two policy kinds: one per environment."""
SHRINK_POLICIES = ("lstm", "independent")
"""The stage-2 policies `ReinforceConfig.shrink_policy` accepts."""
FORMAT = "n2n-reinforce-v1"
"""Tag stored in every checkpoint written by `Reinforce.save`."""


@dataclass
class ReinforceConfig:
    """Hyperparameters; `None` means the default for the policy kind: the paper's value,
    but for stage 2's learning rate and risk seeking (see their fields)."""

    learning_rate: float | None = None
    """Adam step size. None: 0.003 for removal (paper section 4.2); for shrink 0.1 with the
    independent policy (appendix 10.1's value) and 0.01 with the LSTM (section 4.2's,
    which contradicts appendix 10.1)."""
    rollouts_per_update: int = EPISODES_PER_UPDATE
    """m, the number of episodes per gradient update (the paper's batch size of 5)."""
    baseline_decay: float = 0.9
    """Decay of the exponential moving average baseline: b <- decay * b + (1 - decay) * mean(R)."""
    entropy_coef: float = 0.0
    """Weight of an optional entropy bonus (0: plain REINFORCE, as in the paper)."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global L2 norm before each Adam step."""
    shrink_policy: str = "independent"
    """The stage-2 policy (stage 1 always uses the paper's bidirectional LSTM):
    "independent", one learned categorical distribution per shrink variable, none
    conditioned on the others, or "lstm", the paper's autoregressive LSTM (Figure 2b).
    Where the widths that are best together are bad on average (docs/rl-benchmark.md, the
    shrink space), the LSTM's shared head moves every width the same way; independent
    distributions let each width follow its own rewards."""
    risk_seeking: float | None = None
    """Epsilon of risk-seeking policy gradient (Petersen et al., ICLR 2021), or 0 for the
    paper's moving-average baseline. The baseline is then the (1 - epsilon) quantile of
    the last `risk_seeking_window` rewards, and only episodes above it are reinforced: the
    policy climbs towards the best students it has seen, not towards the best average.
    None: 0 for removal, 0.1 for shrink."""
    risk_seeking_window: int = 50
    """How many recent rewards (this batch's included) give the risk-seeking quantile."""
    hidden_size: int | None = None
    """LSTM units per layer. None: 30 for removal, 50 for shrink (appendix 10.1)."""
    num_layers: int = 2
    """Stacked LSTM layers (appendix 10.1: 2 for both policies)."""
    seed: int = 0
    """Seeds the policy initialisation, the action sampling and the first env reset."""

    def resolved(self, kind: str) -> ReinforceConfig:
        """A copy with the `None` fields replaced by the defaults for `kind`."""
        return ReinforceConfig(**kind_defaults(asdict(self), kind))


SHRINK_RISK_SEEKING = 0.1
"""The stage-2 default of `ReinforceConfig.risk_seeking`."""


def kind_defaults(values: dict[str, Any], kind: str) -> dict[str, Any]:
    """``values`` with their None fields replaced by the defaults for ``kind``: the
    paper's Adam 0.003 and 30 LSTM units for removal, and 50 units for shrink; for shrink
    Adam 0.1 with the independent policy (0.01 with the paper's LSTM) and, where the
    config has the field, risk seeking at 0.1 (0, off, for removal)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    shrink_policy = values.get("shrink_policy", "lstm")
    if shrink_policy not in SHRINK_POLICIES:
        raise ValueError(f"shrink_policy must be one of {', '.join(SHRINK_POLICIES)}, got "
                         f"{shrink_policy!r}")
    epsilon = values.get("risk_seeking")
    if epsilon is not None and not 0 <= epsilon <= 1:
        raise ValueError(f"risk_seeking must be None or in [0, 1] (0: off), got {epsilon!r}")
    if values.get("risk_seeking_window", 1) < 1:
        raise ValueError(f"risk_seeking_window must be at least 1, got "
                         f"{values['risk_seeking_window']!r}")
    if values["learning_rate"] is None:
        values["learning_rate"] = (0.003 if kind == "removal" else
                                   0.1 if shrink_policy == "independent" else 0.01)
    if values["hidden_size"] is None:
        values["hidden_size"] = 30 if kind == "removal" else 50
    if "risk_seeking" in values and epsilon is None:
        values["risk_seeking"] = 0.0 if kind == "removal" else SHRINK_RISK_SEEKING
    return values


@dataclass
class Episode:
    """One rollout: what the loss needs to replay it, and what the env reported."""

    table: torch.Tensor
    """(T, F) features of the real rows (layers or variables) of the reset observation."""
    actions: torch.Tensor
    """(T,) actions taken."""
    masks: torch.Tensor
    """(T, A) booleans, the action masks the env offered at each step."""
    reward: float
    """The terminal reward (the return: rewards before the last step are 0)."""
    info: dict[str, Any] = field(default_factory=dict)
    """The terminal info (accuracy, compression, architecture JSON, ...)."""


def masked_logits(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Logits with the disallowed actions set to -inf (probability exactly 0)."""
    return logits.masked_fill(~masks, float("-inf"))


class Reinforce:
    """A policy, its Adam optimiser, the baseline and the best student found so far."""

    checkpoint_format: str = FORMAT
    """Tag `save` writes and `load` insists on; subclasses use their own."""
    config_class: type = ReinforceConfig
    """The config dataclass `load` rebuilds from the checkpoint."""

    def __init__(self, kind: str, feature_size: int,
                 config: ReinforceConfig | None = None) -> None:
        self.kind = kind
        self.config = (config or ReinforceConfig()).resolved(kind)
        self.feature_size = feature_size
        torch.manual_seed(self.config.seed)
        self.policy: RemovalPolicy | ShrinkPolicy | IndependentShrinkPolicy
        if kind == "shrink" and self.config.shrink_policy == "independent":
            self.policy = IndependentShrinkPolicy()
        else:
            policy_class = RemovalPolicy if kind == "removal" else ShrinkPolicy
            self.policy = policy_class(feature_size, self.config.hidden_size or 0,
                                       self.config.num_layers)
        self.optimizer = torch.optim.Adam(self.policy.parameters(),
                                          lr=self.config.learning_rate or 0.0)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.baseline: float | None = None
        self.recent_rewards: list[float] = []
        """The last `risk_seeking_window` rewards, for the risk-seeking baseline."""
        self.iterations = 0
        self.best = BestStudent()
        """The best feasible student found so far."""
        self._reset_seed: int | None = self.config.seed

    @classmethod
    def for_env(cls, env: gym.Env | gym.vector.VectorEnv,
                config: ReinforceConfig | None = None) -> Reinforce:
        """An agent whose policy kind and input size fit `env` (a plain or vector env)."""
        kind = env_kind(env)
        spaces = observation_spaces(env)
        table, mask = ("layers", "layer_mask") if kind == "removal" else (
            "variables", "variable_mask")
        return cls(kind, spaces[table].shape[0] // spaces[mask].shape[0], config)

    def forget_rewards(self) -> None:
        """Drop what belongs to the previous task's rewards, the baseline and the best
        student, and keep the policy and optimiser: call it after `load` to transfer a
        policy to another teacher (the paper's section 4.6)."""
        self.baseline = None
        self.best = BestStudent()

    def sequence_logits(self, episode: Episode) -> torch.Tensor:
        """Masked logits (T, A) of the current policy for the steps of `episode`."""
        return masked_logits(self.policy(episode.table, episode.actions), episode.masks)

    def probabilities(self, episode: Episode) -> torch.Tensor:
        """Action probabilities (T, A) the current policy gives along `episode`."""
        with torch.no_grad():
            return torch.softmax(self.sequence_logits(episode), dim=-1)

    @torch.no_grad()
    def rollout(self, env: gym.Env, greedy: bool = False) -> Episode:
        """Play one episode, sampling actions (or taking the most likely with `greedy`)."""
        obs, info = env.reset(seed=self._reset_seed)
        self._reset_seed = None
        table = observation_table(obs)
        all_logits = self._episode_logits(table)
        state, previous = None, None
        actions: list[int] = []
        masks: list[torch.Tensor] = []
        terminated = truncated = False
        reward = 0.0
        while not (terminated or truncated):
            logits, state = self._step_logits(table, len(actions), all_logits, previous, state)
            mask = torch.as_tensor(np.asarray(obs["action_mask"]) > 0)
            action = self._choose(masked_logits(logits, mask), greedy)
            obs, step_reward, terminated, truncated, info = env.step(action)
            reward += float(step_reward)
            actions.append(action)
            masks.append(mask)
            previous = torch.tensor(action)
        episode = Episode(table, torch.tensor(actions), torch.stack(masks), reward, info)
        self._track_best(episode)
        return episode

    def rollouts(self, env: gym.Env | gym.vector.VectorEnv, count: int) -> list[Episode]:
        """At least `count` episodes: one after another on a plain env, or `num_envs` at a
        time on a Gymnasium vector env (whole vector batches, so with 2 workers and
        count=5 this plays 6)."""
        if not isinstance(env, gym.vector.VectorEnv):
            return [self.rollout(env) for _ in range(count)]
        episodes: list[Episode] = []
        while len(episodes) < count:
            episodes.extend(self.vector_rollout(env))
        return episodes

    @torch.no_grad()
    def vector_rollout(self, envs: gym.vector.VectorEnv, greedy: bool = False) -> list[Episode]:
        """Play one episode in each of the vector env's workers at once.

        The workers must end their episodes on the same step, which N2N episodes of one
        teacher do (their length is the number of layers or shrink variables).
        """
        obs, _ = envs.reset(seed=self._reset_seed)
        self._reset_seed = None
        workers = envs.num_envs
        tables = [observation_table({k: v[i] for k, v in obs.items()}) for i in range(workers)]
        removal_logits = [self._episode_logits(table) for table in tables]
        states: list[Any] = [None] * workers
        previous: list[torch.Tensor | None] = [None] * workers
        actions: list[list[int]] = [[] for _ in range(workers)]
        masks: list[list[torch.Tensor]] = [[] for _ in range(workers)]
        rewards = np.zeros(workers)
        while True:
            chosen = []
            for i in range(workers):
                logits, states[i] = self._step_logits(tables[i], len(actions[i]),
                                                      removal_logits[i], previous[i], states[i])
                mask = torch.as_tensor(np.asarray(obs["action_mask"][i]) > 0)
                chosen.append(self._choose(masked_logits(logits, mask), greedy))
                masks[i].append(mask)
            obs, step_rewards, terminated, truncated, info = envs.step(np.array(chosen))
            rewards += np.asarray(step_rewards, np.float64)
            for i, action in enumerate(chosen):
                actions[i].append(action)
                previous[i] = torch.tensor(action)
            done = np.logical_or(terminated, truncated)
            if done.any():
                if not done.all():
                    raise ValueError("the vector env's workers ended their episodes on "
                                     "different steps; use one teacher for all workers")
                break
        # Under Gymnasium's SAME_STEP autoreset the terminal infos are under "final_info"
        # (the top level already describes the next episode's reset).
        terminal = info.get("final_info", info)
        episodes = []
        for i in range(workers):
            episode = Episode(tables[i], torch.tensor(actions[i]), torch.stack(masks[i]),
                              float(rewards[i]), worker_info(terminal, i))
            self._track_best(episode)
            episodes.append(episode)
        return episodes

    def _episode_logits(self, table: torch.Tensor) -> torch.Tensor | None:
        """The logits of every step at once, for the policies whose logits do not depend
        on the actions (removal, independent shrink); None for the shrink LSTM, which must
        go step by step."""
        if isinstance(self.policy, RemovalPolicy | IndependentShrinkPolicy):
            return self.policy(table)
        return None

    def _step_logits(self, table: torch.Tensor, t: int, episode_logits: torch.Tensor | None,
                     previous: torch.Tensor | None, state: Any) -> tuple[torch.Tensor, Any]:
        """Step t's logits and the recurrent state to carry to step t + 1."""
        if episode_logits is not None:
            return episode_logits[t], state
        return self.policy.step(table[t], previous, state)  # type: ignore[operator]

    def _choose(self, logits: torch.Tensor, greedy: bool) -> int:
        """The most likely action, or one sampled with the agent's generator."""
        if greedy:
            return int(logits.argmax())
        return int(torch.multinomial(torch.softmax(logits, dim=-1), 1,
                                     generator=self.generator))

    def _track_best(self, episode: Episode) -> None:
        self.best.offer(episode.reward, episode.info)

    @property
    def best_reward(self) -> float:
        """The best feasible student's reward (-inf before the first)."""
        return self.best.reward

    @property
    def best_architecture(self) -> str | None:
        """The best feasible student's architecture JSON (None before the first)."""
        return self.best.architecture

    def update(self, episodes: list[Episode]) -> dict[str, float]:
        """One REINFORCE step on a batch of episodes (paper eq. 2); returns its statistics."""
        rewards = [episode.reward for episode in episodes]
        if not self.config.risk_seeking:
            advantage = advantages(rewards, self.baseline)
        else:
            window = self.config.risk_seeking_window
            self.recent_rewards = (self.recent_rewards + rewards)[-window:]
            advantage = risk_seeking_advantages(rewards, self.recent_rewards,
                                                self.config.risk_seeking)
        log_probs, entropies = [], []
        for episode in episodes:
            dist = torch.distributions.Categorical(logits=self.sequence_logits(episode))
            log_probs.append(dist.log_prob(episode.actions).sum())
            entropies.append(dist.entropy().sum())
        weights = torch.as_tensor(advantage, dtype=torch.float32)
        policy_loss = -(weights * torch.stack(log_probs)).mean()
        entropy = torch.stack(entropies).mean()
        loss = policy_loss - self.config.entropy_coef * entropy
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        # Only now, after the advantages were computed, does the batch enter the baseline.
        self.baseline = update_baseline(self.baseline, rewards, self.config.baseline_decay)
        self.iterations += 1
        return {"loss": loss.item(), "entropy": entropy.item(), "baseline": self.baseline}

    def train(self, env: gym.Env | gym.vector.VectorEnv,
              iterations: int) -> list[dict[str, float]]:
        """Run `iterations` updates of m rollouts each (on a vector env, the rollouts of
        an update run in its parallel workers); one statistics dict per iteration.

        Each dict has `iteration`, `mean_reward`, `best_reward` (of this batch),
        `mean_accuracy`, `mean_compression`, `loss`, `entropy` and `baseline` (after the
        update). The best student over all of training is in `best_reward` and
        `best_architecture`.
        """
        history = []
        for _ in range(iterations):
            episodes = self.rollouts(env, self.config.rollouts_per_update)
            stats = self.update(episodes)
            rewards = [e.reward for e in episodes]
            history.append({
                "iteration": float(self.iterations),
                "mean_reward": float(np.mean(rewards)),
                "best_reward": float(np.max(rewards)),
                "mean_accuracy": float(np.mean([e.info.get("accuracy", 0.0)
                                                for e in episodes])),
                "mean_compression": float(np.mean([e.info.get("compression", 0.0)
                                                   for e in episodes])),
                **stats,
            })
        return history

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write policy, optimiser, config, baseline and best student to one torch file.

        Only tensors and plain Python values go in, so `load` can use `weights_only=True`.
        """
        torch.save({
            "format": self.checkpoint_format, "kind": self.kind,
            "feature_size": self.feature_size,
            "config": asdict(self.config), "state_dict": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(), "baseline": self.baseline,
            "recent_rewards": self.recent_rewards,
            "iterations": self.iterations, "best_reward": self.best_reward,
            "best_architecture": self.best_architecture,
        }, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Any:
        """Read a file written by `save`. `weights_only=True` refuses pickled objects, so a
        checkpoint from elsewhere cannot run code on load."""
        what = f"a policy written by {cls.__name__}.save"
        data = policy_files.read(path, cls.checkpoint_format, what)

        def build() -> Any:
            agent = cls(data["kind"], data["feature_size"],
                        cls.config_class(**_with_settings_of_old_files(data["config"],
                                                                      cls.config_class)))
            agent.policy.load_state_dict(data["state_dict"])
            agent.optimizer.load_state_dict(data["optimizer"])
            agent.baseline = data["baseline"]
            agent.recent_rewards = list(data.get("recent_rewards", []))
            agent.iterations = data["iterations"]
            agent.best = BestStudent(data["best_reward"], data["best_architecture"])
            return agent

        return policy_files.restore(path, what, build)


def _with_settings_of_old_files(config: dict[str, Any], config_class: type) -> dict[str, Any]:
    """A saved config, where a file written before `shrink_policy` and `risk_seeking`
    existed or had their stage-2 defaults (new files store both resolved) gets the values
    it was trained with: the paper's LSTM and moving-average baseline."""
    if "shrink_policy" not in {field.name for field in fields(config_class)}:
        return config
    config = dict(config)
    config.setdefault("shrink_policy", "lstm")
    if config.get("risk_seeking") is None:
        config["risk_seeking"] = 0.0
    return config
