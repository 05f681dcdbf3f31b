"""A features extractor that reads only the current step of an N2N observation.

The N2N observations carry the whole layer (or variable) table and every decision so far,
so that a feed-forward policy sees a Markov state. A recurrent policy does not need them:
its LSTM reads the layers one step at a time, as the paper's agents do, and remembers the
decisions. Feeding it the table anyway makes every LSTM step some 2,600 inputs wide, and
RecurrentPPO's training about 20 times slower on a CPU. This extractor keeps the keys
that describe the current step: the current layer's (or variable's) features, the
position, the previous action, the parameters kept so far and the action mask.
"""

from __future__ import annotations

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

STEP_KEYS = ("layer", "variable", "position", "previous_action", "params_kept", "action_mask")
"""Observation keys that describe the current step (each environment has a subset)."""


class CurrentStepExtractor(BaseFeaturesExtractor):
    """Concatenates the observation's current-step keys (see STEP_KEYS), flattened."""

    def __init__(self, observation_space: gym.spaces.Dict) -> None:
        keys = tuple(key for key in STEP_KEYS if key in observation_space.spaces)
        if not keys:
            raise ValueError(f"the observation has none of the keys {STEP_KEYS}; is it an "
                             "N2N environment's?")
        size = sum(int(observation_space.spaces[key].shape[0]) for key in keys)
        super().__init__(observation_space, features_dim=size)
        self.keys = keys

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([observations[key].flatten(1) for key in self.keys], dim=1)
