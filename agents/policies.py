"""The paper's policy networks for N2N (Ashok et al., ICLR 2018, Figure 2), and the
independent per-variable shrink policy, shared by REINFORCE and actor-critic.

Their parameters do not depend on the number of layers or variables, so a policy saved
on one teacher loads on another.
"""

from __future__ import annotations

import torch
from torch import nn

MAX_VARIABLES = 128
"""Shrink variables an independent policy has room for: the environments' padding of
the variable table (``MAX_LAYERS``), so that a saved policy loads on any teacher."""


class RemovalPolicy(nn.Module):
    """Bidirectional LSTM over the layer table with one keep/remove head shared by all layers.

    Layer t's distribution sees the layers before it (forward state h_{t-1}) and after it
    (backward state h_{t+1}), as the paper's pi_remove(a_t | h_{t-1}, h_{t+1}, x_t). It does
    not depend on earlier actions, so all L distributions come from one pass per episode.
    """

    num_actions = 2

    def __init__(self, feature_size: int, hidden_size: int = 30, num_layers: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(feature_size, hidden_size, num_layers, batch_first=True,
                            bidirectional=True)
        self.head = nn.Linear(2 * hidden_size, self.num_actions)

    def forward(self, table: torch.Tensor, actions: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (T, 2) for a (T, F) layer table; `actions` is ignored (interface parity)."""
        states, _ = self.lstm(table.unsqueeze(0))
        return self.head(states.squeeze(0))


class ShrinkPolicy(nn.Module):
    """Autoregressive LSTM: step t reads variable t's features and a one-hot of a_{t-1}.

    `step` is used while acting; `forward` replays a whole episode with the actions taken
    (teacher forcing), so the loss backpropagates through time over the episode.
    """

    num_actions = 10

    def __init__(self, feature_size: int, hidden_size: int = 50, num_layers: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(feature_size + self.num_actions, hidden_size, num_layers,
                            batch_first=True)
        self.head = nn.Linear(hidden_size, self.num_actions)

    def _previous(self, action: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """One-hot of the previous action, zeros at the first step."""
        if action is None:
            return like.new_zeros(self.num_actions)
        return nn.functional.one_hot(action, self.num_actions).to(like.dtype)

    def step(self, features: torch.Tensor, previous: torch.Tensor | None,
             state: tuple[torch.Tensor, torch.Tensor] | None
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Logits (10,) for one variable's (V,) features, and the new LSTM state."""
        x = torch.cat([features, self._previous(previous, features)]).view(1, 1, -1)
        out, state = self.lstm(x, state)
        return self.head(out.view(-1)), state

    def forward(self, table: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Logits (T, 10) for a (T, V) variable table given the episode's (T,) actions."""
        previous = nn.functional.one_hot(actions[:-1], self.num_actions).to(table.dtype)
        previous = torch.cat([table.new_zeros(1, self.num_actions), previous])
        out, _ = self.lstm(torch.cat([table, previous], dim=1).unsqueeze(0))
        return self.head(out.squeeze(0))


class IndependentShrinkPolicy(nn.Module):
    """One categorical distribution per shrink variable, by position: its logits are
    parameters, read neither from the features nor from earlier actions."""

    num_actions = 10

    def __init__(self, positions: int = MAX_VARIABLES) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(positions, self.num_actions))

    def forward(self, table: torch.Tensor, actions: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (T, 10) for a (T, V) variable table; `actions` is ignored."""
        if len(table) > len(self.logits):
            raise ValueError(f"the teacher has {len(table)} shrink variables; this policy "
                             f"has room for {len(self.logits)}")
        return self.logits[:len(table)]
