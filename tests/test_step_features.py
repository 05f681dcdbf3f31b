"""The current-step features extractor of RecurrentPPO."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import n2n_env  # noqa: F401  (registers the environments)
from agents.sb3 import make_agent
from agents.step_features import CurrentStepExtractor


@pytest.mark.parametrize(("env_id", "width"), [
    ("N2NRemoval-v0", 18 + 1 + 1 + 2),   # layer, position, params_kept, action_mask
    ("N2NShrink-v0", 20 + 1 + 1 + 1 + 10),  # variable, position, previous_action, ...
])
def test_it_keeps_only_the_current_step(env_id, width):
    env = gym.make(env_id, evaluator="mock")
    extractor = CurrentStepExtractor(env.observation_space)
    assert extractor.features_dim == width
    obs, _ = env.reset(seed=0)
    batch = {key: torch.as_tensor(value)[None] for key, value in obs.items()}
    features = extractor(batch)
    assert features.shape == (1, width)
    # the table of every layer is not read: changing it changes nothing
    table_key = "layers" if "layers" in batch else "variables"
    batch[table_key] = torch.rand_like(batch[table_key])
    torch.testing.assert_close(extractor(batch), features)


def test_recurrent_ppo_uses_it_by_default_and_yields_to_policy_kwargs():
    env = gym.make("N2NRemoval-v0", evaluator="mock")
    model = make_agent("recurrent-ppo", env, seed=0)
    assert isinstance(model.policy.features_extractor, CurrentStepExtractor)
    assert model.policy.lstm_actor.hidden_size == 64
    model = make_agent("recurrent-ppo", env, seed=0, policy_kwargs={"lstm_hidden_size": 16})
    assert not isinstance(model.policy.features_extractor, CurrentStepExtractor)


def test_an_observation_without_step_keys_is_refused():
    space = gym.spaces.Dict({"other": gym.spaces.Box(0, 1, (3,))})
    with pytest.raises(ValueError, match="none of the keys"):
        CurrentStepExtractor(space)
