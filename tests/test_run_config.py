"""RunConfig (n2n_env.run_config): checked when made, stored in state.json and read back,
and the configuration of a run directory written before it existed."""

from __future__ import annotations

import json

import pytest

from n2n_env.distill import DistillRecipe
from n2n_env.run_config import DEFAULT_ITERATIONS, RunConfig
from n2n_env.stack import BackendSettings


def test_round_trip_through_json_gives_an_equal_config() -> None:
    config = RunConfig(teacher="vgg11", dataset="synthetic", stages=["removal"],
                       agent="random", iterations=7, constraints={"params": 5000.0},
                       anneal_episodes=3, recipe=DistillRecipe(steps=9, batch_size=16),
                       seed=4, teacher_width=0.5, finetune_epochs=2,
                       backend=BackendSettings("processes", 2))
    assert config.stages == ("removal",)  # a list is normalised to a tuple
    stored = json.loads(json.dumps(config.to_dict()))
    assert RunConfig.from_dict(stored) == config
    with pytest.raises(ValueError, match=r"unknown run settings \['colour'\]"):
        RunConfig.from_dict({**stored, "colour": "blue"})


def test_an_agent_with_settings_is_stored_in_one_spelling() -> None:
    config = RunConfig(agent=" actor-critic:learning_rate=1e-2, entropy_coef=0.01")
    assert config.agent == "actor-critic:entropy_coef=0.01,learning_rate=0.01"
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config == RunConfig(agent="actor-critic:entropy_coef=0.01,learning_rate=0.01")


def test_resolved_fixes_the_annealing_at_half_the_episodes() -> None:
    assert RunConfig(iterations=4).resolved().anneal_episodes == 10
    assert RunConfig(iterations=4, anneal_episodes=0).resolved().anneal_episodes == 0
    assert RunConfig().iterations == DEFAULT_ITERATIONS


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"stages": ("shrink", "removal")}, ValueError, "'removal' must come before 'shrink'"),
    ({"stages": ("removal", "removal")}, ValueError, "stages must be distinct names"),
    ({"stages": "removal"}, TypeError, "stages must be a sequence"),
    ({"teacher": "alexnet"}, ValueError, "unknown teacher 'alexnet'"),
    ({"agent": "dqn"}, ValueError, "unknown agent 'dqn'"),
    ({"iterations": 0}, ValueError, "iterations must be an integer >= 1"),
    ({"constraints": {"params": -5}}, ValueError, "constraint .params. must be"),
    ({"constraints": {"latency": 5}}, ValueError, "allowed: accuracy, flops, params"),
    ({"dataset": "imagenet"}, ValueError, "unknown dataset 'imagenet'"),
    ({"agent": "random", "policy_init": "p.pt"}, ValueError, "policy_init needs"),
    ({"agent": "reinforce:learning_rate=0.1", "policy_init": "p.pt"}, ValueError,
     "without settings"),
    ({"agent": "reinforce:lr=0.1"}, ValueError, "no setting 'lr'; allowed: baseline_decay"),
    ({"agent": 3}, TypeError, "an agent spec is a string"),
    ({"backend": BackendSettings("ray", 2, ray_address="auto"), "teacher_width": 0},
     ValueError, "teacher_width must be"),
])
def test_bad_settings_are_refused_when_the_config_is_made(changes, error, message) -> None:
    with pytest.raises(error, match=message):
        RunConfig(**changes)


def test_a_legacy_settings_dict_still_resumes() -> None:
    settings = {"teacher": "conv4", "dataset": "digits", "data_root": None,
                "stages": ["removal", "shrink"], "agent": "reinforce", "constraints": {},
                "evaluator": "distill", "evaluator_kwargs": {"steps": 20},
                "policy_init": None, "seed": 3, "teacher_width": 1.0, "teacher_epochs": None,
                "anneal_episodes": 100}
    config = RunConfig.from_legacy(settings, {"iterations": 12, "finetune_epochs": 4})
    assert config.recipe == DistillRecipe(steps=20)
    assert (config.seed, config.iterations, config.finetune_epochs) == (3, 12, 4)
    assert config.anneal_episodes == 100 and config.stages == ("removal", "shrink")
