"""Agent specs: a name plus settings, parsed and checked where they enter."""

from __future__ import annotations

import re

import gymnasium as gym
import pytest

from agents import registry
from agents.agent_spec import AgentSpec

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_plain_name_has_no_settings():
    spec = AgentSpec.parse(" reinforce ")
    assert spec == AgentSpec("reinforce") and spec.label == "reinforce"


def test_settings_are_converted_to_the_config_fields_types():
    spec = AgentSpec.parse("reinforce:rollouts_per_update=10,learning_rate=3e-2,"
                           "hidden_size=none")
    assert spec.settings == {"rollouts_per_update": 10, "learning_rate": 0.03,
                             "hidden_size": None}
    assert isinstance(spec.settings["rollouts_per_update"], int)
    assert isinstance(AgentSpec.parse("reinforce:learning_rate=1").settings["learning_rate"],
                      float)
    assert spec.label == "reinforce:hidden_size=None,learning_rate=0.03,rollouts_per_update=10"
    assert AgentSpec.parse(spec.label) == spec
    assert hash(AgentSpec.parse(spec.label)) == hash(spec)
    words = AgentSpec.parse("reinforce:shrink_policy=independent")
    assert words.settings == {"shrink_policy": "independent"}
    assert words.label == "reinforce:shrink_policy='independent'"
    assert AgentSpec.parse(words.label) == words  # a printed label parses back unquoted


@pytest.mark.parametrize(("text", "message"), [
    ("dqn", "unknown agent 'dqn'"),
    ("reinforce:", "no settings"),
    ("reinforce:lr=0.1", "has no setting 'lr'; allowed: baseline_decay"),
    ("reinforce:seed=3", "has no setting 'seed'"),
    ("reinforce:learning_rate", "is not key=value"),
    ("reinforce:learning_rate=fast", "expected float or None"),
    ("reinforce:rollouts_per_update=2.5", "expected int"),
    ("reinforce:rollouts_per_update=true", "expected int"),
    ("reinforce:hidden_size=none,hidden_size=3", "given twice"),
    ("reinforce:shrink_policy=gru", "shrink_policy must be one of lstm, independent, got 'gru'"),
    ("reinforce:risk_seeking=1.5", "risk_seeking must be None or in [0, 1] (0: off), got 1.5"),
    ("reinforce:risk_seeking_window=0", "risk_seeking_window must be at least 1"),
    ("ppo:n_stepz=3", "has no setting 'n_stepz'"),
    ("ppo:seed=3", "has no setting 'seed'"),
])
def test_bad_specs_name_what_is_allowed(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        registry.check_spec(text)


def test_sb3_settings_take_python_literals_and_keep_bare_words():
    spec = AgentSpec.parse("ppo:learning_rate=0.01,policy_kwargs={'net_arch': [8, 8]},"
                           "normalize_advantage=False")
    assert spec.settings == {"learning_rate": 0.01, "policy_kwargs": {"net_arch": [8, 8]},
                             "normalize_advantage": False}
    assert AgentSpec.parse(spec.label) == spec


@pytest.fixture
def env():
    made = gym.make("N2NRemoval-v0", teacher="conv4", evaluator="mock")
    yield made
    made.close()


def test_make_spec_builds_the_agent_with_its_settings(env):
    agent = registry.make_spec("reinforce:learning_rate=0.05,rollouts_per_update=3", env,
                               seed=4)
    config = agent.learner.config
    assert (config.learning_rate, config.rollouts_per_update, config.seed) == (0.05, 3, 4)
    assert agent.learner.optimizer.param_groups[0]["lr"] == 0.05
    assert len(agent.iterate(env)) == 3
    random = registry.make_spec("random:rollouts_per_update=2", env, seed=1)
    assert len(random.iterate(env)) == 2
    ppo = registry.make_spec("ppo:learning_rate=0.02,n_epochs=2", env, seed=0)
    assert (ppo.model.learning_rate, ppo.model.n_epochs) == (0.02, 2)


def test_settings_cannot_change_a_transferred_policy(env, tmp_path):
    path = tmp_path / "policy.pt"
    registry.make("reinforce", env).save(path)
    with pytest.raises(ValueError, match="settings cannot be given"):
        registry.make("reinforce", env, policy_init=path, settings={"learning_rate": 0.1})
