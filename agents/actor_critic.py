"""Actor-critic with recurrent policies for N2N (Ashok et al., ICLR 2018, appendix 6).

The REINFORCE agent of `agents.reinforce` with its moving-average baseline b replaced by a
learned value V(s_t) at each step (paper appendix 6):

    grad J ~ (1/m) sum_k sum_t grad log pi(a_t | h_t) * (R_k - V(s_t))

The critic is "an additional fully-connected layer that takes as input the hidden state of
the LSTM and outputs a single scalar": `RemovalActorCritic` and `ShrinkActorCritic` are the
two REINFORCE policies with an `nn.Linear(hidden, 1)` value head reading the same per-step
hidden states as the action head, so actor and critic share the LSTM body. Rewards are
terminal and undiscounted (gamma = 1), so every step's value target is the episode return R.

    loss = -(1/m) sum_k sum_t (R_k - V_kt).detach() * log pi(a_kt)
           + value_coef * (1/m) sum_k mean_t (V_kt - R_k)^2  -  entropy_coef * entropy

Acting, the training loop and the best-student bookkeeping are inherited from `Reinforce`::

    env = gym.make("N2NRemoval-v0", teacher="conv4", evaluator="mock")
    agent = ActorCritic.for_env(env, ActorCriticConfig(seed=0))
    stats = agent.train(env, iterations=100)
    agent.save("removal-ac.pt")
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from agents.policies import RemovalPolicy, ShrinkPolicy
from agents.reinforce import Episode, Reinforce, kind_defaults, masked_logits
from agents.search import EPISODES_PER_UPDATE, BestStudent

FORMAT = "n2n-actor-critic-v1"
"""Tag stored in every checkpoint written by `ActorCritic.save`."""


@dataclass
class ActorCriticConfig:
    """Hyperparameters; `None` means the paper's value for the policy kind."""

    learning_rate: float | None = None
    """Adam step size for actor and critic together. None: 0.003 for removal, 0.01 for
    shrink (paper section 4.2, the same as REINFORCE)."""
    rollouts_per_update: int = EPISODES_PER_UPDATE
    """m, the number of episodes per gradient update (the paper's batch size of 5)."""
    value_coef: float = 0.1
    """Weight of the critic's mean squared error to the return in the shared loss. The
    critic's gradient also trains the shared LSTM; on the mock removal task 0.5 sometimes
    let it drag the policy into the all-invalid (-1) corner, where V = R = -1 leaves no
    advantage to climb out with (the paper's "failed to explore"); 0.1 did not in 8 seeds."""
    entropy_coef: float = 0.0
    """Weight of an optional entropy bonus (0: none, as in the paper)."""
    max_grad_norm: float = 1.0
    """Gradients of actor and critic are clipped to this global L2 norm before each step."""
    hidden_size: int | None = None
    """LSTM units per layer. None: 30 for removal, 50 for shrink (appendix 10.1)."""
    num_layers: int = 2
    """Stacked LSTM layers (appendix 10.1: 2 for both policies)."""
    seed: int = 0
    """Seeds the network initialisation, the action sampling and the first env reset."""

    def resolved(self, kind: str) -> ActorCriticConfig:
        """A copy with the `None` fields replaced by the paper's values for `kind`."""
        return ActorCriticConfig(**kind_defaults(asdict(self), kind))


class RemovalActorCritic(RemovalPolicy):
    """`RemovalPolicy` plus a value head on the same bidirectional LSTM states.

    V(s_t) sees the whole layer table (as the actions do); it is a per-layer estimate of
    the return of the episode, which makes it a baseline that may differ from layer to layer.
    """

    def __init__(self, feature_size: int, hidden_size: int = 30, num_layers: int = 2) -> None:
        super().__init__(feature_size, hidden_size, num_layers)
        self.value_head = nn.Linear(2 * hidden_size, 1)

    def evaluate(self, table: torch.Tensor, actions: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (T, 2) and values (T,) for a (T, F) layer table; `actions` is unused."""
        states = self.lstm(table.unsqueeze(0))[0].squeeze(0)
        return self.head(states), self.value_head(states).squeeze(-1)


class ShrinkActorCritic(ShrinkPolicy):
    """`ShrinkPolicy` plus a value head on its autoregressive LSTM states.

    The state at step t has read variables 0..t and actions 0..t-1, so V(s_t) can react to
    the shrink factors already chosen.
    """

    def __init__(self, feature_size: int, hidden_size: int = 50, num_layers: int = 2) -> None:
        super().__init__(feature_size, hidden_size, num_layers)
        self.value_head = nn.Linear(hidden_size, 1)

    def evaluate(self, table: torch.Tensor, actions: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (T, 10) and values (T,) for a (T, V) table replayed with its (T,) actions."""
        previous = nn.functional.one_hot(actions[:-1], self.num_actions).to(table.dtype)
        previous = torch.cat([table.new_zeros(1, self.num_actions), previous])
        states = self.lstm(torch.cat([table, previous], dim=1).unsqueeze(0))[0].squeeze(0)
        return self.head(states), self.value_head(states).squeeze(-1)


class ActorCritic(Reinforce):
    """A `Reinforce` agent whose baseline is the critic's V(s_t) instead of a moving average.

    `rollout`, `train`, `probabilities`, `for_env`, `save` and `load` are inherited
    unchanged: the policy modules are subclasses of the REINFORCE ones, so acting is
    identical (checkpoints carry their own format tag).
    """

    policy: RemovalActorCritic | ShrinkActorCritic
    checkpoint_format = FORMAT
    config_class = ActorCriticConfig

    def __init__(self, kind: str, feature_size: int,
                 config: ActorCriticConfig | None = None) -> None:
        # Not Reinforce.__init__: that builds a critic-less policy from a ReinforceConfig.
        self.kind = kind
        self.config = (config or ActorCriticConfig()).resolved(kind)  # type: ignore[assignment]
        self.feature_size = feature_size
        torch.manual_seed(self.config.seed)
        module = RemovalActorCritic if kind == "removal" else ShrinkActorCritic
        self.policy = module(feature_size, self.config.hidden_size or 0,
                             self.config.num_layers)
        self.optimizer = torch.optim.Adam(self.policy.parameters(),
                                          lr=self.config.learning_rate or 0.0)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.baseline = None  # unused; kept so inherited code and stats read the same
        self.recent_rewards: list[float] = []  # likewise (no risk-seeking baseline here)
        self.iterations = 0
        self.best = BestStudent()
        """The best feasible student found so far."""
        self._reset_seed: int | None = self.config.seed

    def evaluate(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked logits (T, A) and values (T,) of the current networks along `episode`."""
        logits, values = self.policy.evaluate(episode.table, episode.actions)
        return masked_logits(logits, episode.masks), values

    def values(self, episode: Episode) -> torch.Tensor:
        """The critic's predicted return (T,) at each step of `episode`."""
        with torch.no_grad():
            return self.evaluate(episode)[1]

    def update(self, episodes: list[Episode]) -> dict[str, float]:
        """One actor-critic step on a batch (paper appendix 6); returns its statistics.

        `value_error` is the critic's mean squared error on this batch *before* the step.
        """
        policy_terms, value_terms, entropies, errors = [], [], [], []
        for episode in episodes:
            logits, values = self.evaluate(episode)
            dist = torch.distributions.Categorical(logits=logits)
            advantage = (episode.reward - values).detach()  # R - V(s_t), no actor grad to V
            policy_terms.append((advantage * dist.log_prob(episode.actions)).sum())
            value_terms.append(((values - episode.reward) ** 2).mean())
            entropies.append(dist.entropy().sum())
            errors.append(advantage)
        policy_loss = -torch.stack(policy_terms).mean()
        value_loss = torch.stack(value_terms).mean()
        entropy = torch.stack(entropies).mean()
        loss = (policy_loss + self.config.value_coef * value_loss  # type: ignore[attr-defined]
                - self.config.entropy_coef * entropy)
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.iterations += 1
        advantages = torch.cat(errors)
        return {"loss": loss.item(), "policy_loss": policy_loss.item(),
                "value_loss": value_loss.item(), "entropy": entropy.item(),
                "value_error": float((advantages ** 2).mean()),
                "mean_advantage": float(advantages.mean())}
