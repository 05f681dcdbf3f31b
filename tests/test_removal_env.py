"""N2NRemoval-v0, stage 1 of N2N: keep or remove each teacher layer (paper section 3.2.1).

API conformance, errors, observations and masks, rendering and the documented example, on
the instant mock evaluator; rewards and terminal info are in test_removal_env_rewards.py.
"""

from __future__ import annotations

import pickle
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from observations_equal import same
from removal_episodes import (
    DIGITS,
    F,
    keep_all,
    make,
    random_actions,
    run,
)

import n2n_env  # noqa: F401  (registers the environments)
from n2n_env import data, zoo
from n2n_env.arch import Architecture, Layer
from n2n_env.evaluators import MockEvaluator
from n2n_env.removal_env import N2NRemovalEnv


# ---------------------------------------------------------------- API conformance
@pytest.mark.parametrize("kwargs", [{}, {"render_mode": "rgb_array"}, {"teacher": "resnet18"}])
def test_gymnasium_check_env_passes_without_warnings(kwargs: dict[str, Any]) -> None:
    from gymnasium.utils.env_checker import check_env

    env = make(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)  # also makes and renders every render mode


def test_sb3_check_env_passes_without_warnings() -> None:
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(make(), warn=True)
        check_env(make(render_mode="ansi").unwrapped, warn=True, skip_render_check=False)


def test_seeding_gives_identical_episodes() -> None:
    first, second = make(), make()
    actions = random_actions(first, seed=3)
    assert 0 in actions
    episodes = [run(env, actions, seed=7) for env in (first, second, first)]
    for other in episodes[1:]:
        assert len(other) == len(episodes[0])
        for a, b in zip(episodes[0], other):
            assert all(same(x, y) for x, y in zip(a, b))


def test_pickle_round_trip_then_full_episode() -> None:
    env = make()
    actions = random_actions(env, seed=5)
    expected = run(env, actions)[-1]
    fresh = pickle.loads(pickle.dumps(make()))
    assert same(run(fresh, actions)[-1][4], expected[4])
    # mid-episode: the copy continues where the original was
    env.reset(seed=0)
    for action in actions[:6]:
        env.step(action)
    copy = pickle.loads(pickle.dumps(env))
    for action in actions[6:]:
        last = copy.step(action)
    assert last[1] == expected[1] and same(last[4], expected[4])
    assert same(last[0], expected[0])


def test_async_vector_env_runs_episodes() -> None:
    venv = gym.vector.AsyncVectorEnv([make, make])  # default start method (fork on Linux)
    try:
        length = len(zoo.get("conv4", *DIGITS))
        obs, info = venv.reset(seed=[0, 1])
        assert obs["layers"].shape == (2, 128 * F) and info["action_mask"].shape == (2, 2)
        removals = np.array([0, 1])  # worker 0 removes the first conv, worker 1 keeps it
        finished = 0
        for t in range(2 * length + 1):  # two episodes each (plus the autoreset step)
            obs, reward, terminated, truncated, info = venv.step(
                removals if t % (length + 1) == 0 else np.ones(2, np.int64))
            assert not truncated.any()
            if terminated.any():
                assert terminated.all()
                finished += 1
                assert info["compression"][0] > 0 and info["compression"][1] == 0
                assert reward[0] > 0 and reward[1] == 0
                assert {"params", "architecture", "rewards"} <= set(info)
        assert finished == 2
    finally:
        venv.close()
    assert venv.closed


def test_sb3_subproc_vec_env_runs_episodes() -> None:
    from stable_baselines3.common.vec_env import SubprocVecEnv

    venv = SubprocVecEnv([make, make])  # SB3's default start method (forkserver)
    try:
        obs = venv.reset()
        assert obs["layer"].shape == (2, F)
        length = len(zoo.get("conv4", *DIGITS))
        dones_at = []
        for t in range(2 * length):
            obs, rewards, dones, infos = venv.step(np.ones(2, np.int64))
            if dones.any():
                assert dones.all()
                dones_at.append(t)
                assert infos[0]["compression"] == 0.0 and rewards[0] == 0.0
                assert infos[0]["terminal_observation"]["position"][0] == 1.0
                assert obs["position"][0, 0] == 0.0  # auto-reset
        assert dones_at == [length - 1, 2 * length - 1]
        masks = venv.env_method("action_masks")
        assert [m.tolist() for m in masks] == [[True, True]] * 2
    finally:
        venv.close()
    assert venv.closed


@pytest.mark.usefixtures("one_thread")
def test_maskable_ppo_learns_without_choosing_masked_actions() -> None:
    """sb3-contrib reads action_masks(); a masked action would raise inside learn()."""
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents.sb3 import diskless_logger

    venv = DummyVecEnv([make, make])
    assert is_masking_supported(venv)
    assert get_action_masks(venv).shape == (2, 2)
    model = MaskablePPO("MultiInputPolicy", venv, n_steps=40, batch_size=40, n_epochs=1,
                        seed=0, device="cpu")
    model.set_logger(diskless_logger())  # no empty SB3-<date> folder in the temp dir
    model.learn(total_timesteps=80)
    assert model.num_timesteps == 80


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("action", [2, -1, 0.5, "x", True])
def test_invalid_actions_raise_value_error_and_change_nothing(action: Any) -> None:
    env = make()
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match=r"invalid action .*allowed: 0 \(remove\) or 1 \(keep\)"):
        env.step(action)
    obs, *_ = env.step(1)  # a refused action was not a step: this is still step 0
    assert obs["decisions"][:2].tolist() == [1.0, 0.0] and obs["position"][0] == 1 / 20


@pytest.mark.parametrize("kind", ["flatten", "linear"])
def test_removing_a_fixed_layer_raises_value_error_when_asked_to(kind: str) -> None:
    env = make(invalid_action="raise")
    env.reset(seed=0)
    layers = env.unwrapped.teacher.layers
    target = max(i for i, layer in enumerate(layers) if layer.kind == kind)  # the classifier
    for _ in range(target):
        env.step(1)
    with pytest.raises(ValueError, match=rf"layer {target} \({kind}\) is fixed.*only allowed "
                                         r"action is 1 \(keep\)"):
        env.step(0)
    obs, *_ = env.step(1)  # keeping it is fine, and the refused action was not a step
    assert obs["position"][0] == pytest.approx((target + 1) / len(layers))
    assert obs["decisions"][target] == 1.0


def test_stepping_after_the_end_raises_runtime_error() -> None:
    env = make()
    run(env, keep_all)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(1)
    with pytest.raises(RuntimeError, match="reset"):
        N2NRemovalEnv(_mock_evaluator()).step(1)  # nor before the first reset
    env.reset()
    env.step(1)  # a reset starts a new episode


def test_unknown_names_raise_value_error_naming_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="unknown teacher 'alexnet'") as error:
        make(teacher="alexnet")
    assert all(name in str(error.value) for name in zoo.names())
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'") as error:
        make(dataset="imagenet")
    assert all(name in str(error.value) for name in data.names())
    with pytest.raises(ValueError, match="evaluator"):
        make(evaluator="oracle")


# ---------------------------------------------------------------- observations and masks
def test_action_mask_is_offered_three_ways_and_fixes_flatten_and_classifier() -> None:
    env = make(teacher="resnet18")
    teacher = env.unwrapped.teacher
    fixed = [not removable for removable in teacher.removable()]
    assert [layer.kind for layer, f in zip(teacher.layers, fixed) if f] == ["flatten", "linear"]
    assert fixed[-1]
    obs, info = env.reset(seed=0)
    for t in range(len(teacher)):
        from_method = env.unwrapped.action_masks()
        assert from_method.dtype == bool
        np.testing.assert_array_equal(obs["action_mask"], from_method.astype(np.float32))
        np.testing.assert_array_equal(info["action_mask"], from_method)
        np.testing.assert_array_equal(env.get_wrapper_attr("action_masks")(), from_method)
        assert from_method.tolist() == ([False, True] if fixed[t] else [True, True])
        obs, _, terminated, _, info = env.step(int(fixed[t] or t % 3 != 0))
    assert terminated and obs["action_mask"].tolist() == info["action_mask"].tolist()


@pytest.mark.parametrize("teacher", ["conv4", "vgg13", "resnet34"])
def test_observations_are_in_the_space_with_fixed_shapes(teacher: str) -> None:
    env = make(teacher=teacher)
    arch = env.unwrapped.teacher
    length = len(arch)
    expected = {"layer": (F,), "layers": (128 * F,), "layer_mask": (128,), "decisions": (128,),
                "position": (1,), "params_kept": (1,), "action_mask": (2,)}
    assert {k: s.shape for k, s in env.observation_space.spaces.items()} == expected
    transitions = run(env, random_actions(env, seed=1))
    for t, (obs, *_rest) in enumerate(transitions):
        assert env.observation_space.contains(obs), t
        assert {k: v.shape for k, v in obs.items()} == expected
        assert all(v.dtype == np.float32 for v in obs.values())
        assert obs["layer_mask"].sum() == length and obs["layer_mask"][:length].all()
        table = obs["layers"].reshape(128, F)
        np.testing.assert_array_equal(table[:length], arch.features(normalized=True))
        assert not table[length:].any()
        if t < length:
            np.testing.assert_array_equal(obs["layer"], table[t])  # x_t, row-major table
        assert obs["position"][0] == pytest.approx(t / length)
    assert not transitions[-1][0]["layer"].any()


def test_resnet34_fits_the_default_max_layers_but_not_fewer() -> None:
    resnet34 = zoo.get("resnet34", *DIGITS)
    assert len(resnet34) == 102
    assert make(teacher="resnet34").unwrapped.max_layers == 128
    make(teacher="resnet34", max_layers=102).reset()
    with pytest.raises(ValueError, match="102 rows exceed max_layers=101"):
        make(teacher="resnet34", max_layers=101)
    small = make(max_layers=20)  # conv4 has 20 layers
    assert small.observation_space["layers"].shape == (20 * F,)
    run(small, keep_all)


def test_decisions_record_keep_and_remove() -> None:
    env = make()
    actions = random_actions(env, seed=2)
    transitions = run(env, actions)
    for t, (obs, *_rest) in enumerate(transitions):
        expected = np.zeros(128, np.float32)
        expected[:t] = [1.0 if a == 1 else -1.0 for a in actions[:t]]
        np.testing.assert_array_equal(obs["decisions"], expected)


def test_params_kept_falls_when_a_conv_is_removed() -> None:
    env = make()
    teacher = env.unwrapped.teacher
    per_layer, total = teacher.layer_params(), teacher.num_params()
    convs = [i for i, layer in enumerate(teacher.layers) if layer.kind == "conv"]
    relus = [i for i, layer in enumerate(teacher.layers) if layer.kind == "relu"]
    actions = [0 if i in (convs[1], relus[0]) else 1 for i in range(len(teacher))]
    transitions = run(env, actions)
    kept = [obs["params_kept"][0] for obs, *_ in transitions]
    assert kept[0] == 1.0
    assert kept[relus[0] + 1] == kept[relus[0]] == 1.0  # a relu has no parameters
    assert kept[convs[1] + 1] == pytest.approx(1 - per_layer[convs[1]] / total, rel=1e-6)
    assert kept[convs[1] + 1] < kept[convs[1]]
    assert kept[-1] == kept[convs[1] + 1]

# ---------------------------------------------------------------- rendering
def test_ansi_render_lists_layers_and_decisions() -> None:
    env = make(render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert isinstance(text, str) and text.count("\n") == 1 + 20
    assert "conv4 step 0/20" in text and "(fixed)" in text and "maxpool" in text
    env.step(0)
    env.step(1)
    lines = env.render().splitlines()
    assert "conv" in lines[1] and lines[1].rstrip().endswith("REMOVE")
    assert lines[2].rstrip().endswith("keep") and lines[3].startswith(">")
    for _ in range(18):
        env.step(1)
    assert "student: accuracy" in env.render()


def test_rgb_array_render_is_an_image_that_shows_removals() -> None:
    env = make(render_mode="rgb_array")
    env.reset(seed=0)
    before = env.render()
    assert isinstance(before, np.ndarray) and before.dtype == np.uint8
    assert before.ndim == 3 and before.shape[2] == 3 and before.shape[1] == 20 * 8 + 2
    env.step(0)
    after = env.render()
    assert after.shape == before.shape and not np.array_equal(after, before)
    assert (after[:, 2 : 2 + 6] == 200).all(axis=2).any()  # the removed conv greyed out


def test_render_without_a_render_mode_warns_and_returns_none() -> None:
    env = make()
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert env.render() is None


def test_invalid_render_mode_raises_value_error() -> None:
    with pytest.raises(ValueError, match="render_mode must be one of"):
        N2NRemovalEnv(_mock_evaluator(), render_mode="human")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="render_mode"):
        make(render_mode="rgb")


# ---------------------------------------------------------------- docs/environments.md
def tiny_network() -> Architecture:
    """The worked example of docs/environments.md: conv, relu, flatten, hidden linear and
    the classifier, on 1x8x8 inputs with 10 classes."""
    return Architecture((1, 8, 8), 10, (Layer("conv", out=4, kernel=3, padding=1),
                                        Layer("relu"), Layer("flatten"),
                                        Layer("linear", out=32), Layer("linear", out=10)),
                        name="tiny")


def test_worked_example_of_the_docs() -> None:
    """The numbers quoted in docs/environments.md for the removal episode."""
    tiny = tiny_network()
    assert tiny.layer_params() == (40, 0, 0, 8224, 330) and tiny.num_params() == 8594
    env = make(teacher=tiny, max_layers=8)
    obs, info = env.reset(seed=0)
    np.testing.assert_allclose(obs["layer"], [1, 0, 0, 0, 0, 0, 0, 0, 0.5, 0.5, 0.3333,
                                              0.1935, 0.3962, 0, 0, 0, 0, 1], atol=1e-4)
    assert obs["layer_mask"].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    masks, kept = [], []
    for action in (0, 1, 1, 1, 1):
        masks.append(env.unwrapped.action_masks().astype(int).tolist())
        obs, reward, terminated, _, info = env.step(action)
        kept.append(round(float(obs["params_kept"][0]), 4))
    assert masks == [[1, 1], [1, 1], [0, 1], [1, 1], [0, 1]]
    assert kept == [0.9953] * 5 and obs["decisions"][:5].tolist() == [-1, 1, 1, 1, 1]
    assert terminated and info["params"] == 2410
    assert info["compression"] == pytest.approx(0.71957, abs=1e-5)
    assert info["accuracy"] == pytest.approx(0.90093, abs=1e-5)
    assert reward == pytest.approx(0.83847, abs=1e-5)
    # without the hidden linear layer, removing the conv leaves nothing to learn
    small = Architecture((1, 8, 8), 10, (*tiny.layers[:3], tiny.layers[4]))
    *_, reward, _, _, info = run(make(teacher=small), [0, 1, 1, 1])[-1]
    assert reward == -1.0 and "empty" in info["degenerate_reason"]


def test_a_masked_action_is_taken_as_the_allowed_one_and_flagged() -> None:
    env = make()
    env.reset(seed=0)
    fixed = [not removable for removable in env.unwrapped.teacher.removable()]
    replaced = []
    for _ in fixed:
        obs, _, terminated, _, info = env.step(0)  # remove everything, fixed layers too
        replaced.append(info["action_replaced"])
    assert terminated and replaced == fixed
    assert obs["decisions"][: len(fixed)].tolist() == [1.0 if f else -1.0 for f in fixed]
    with pytest.raises(ValueError, match="invalid_action must be one of 'replace', 'raise'"):
        make(invalid_action="ignore")


@pytest.mark.parametrize("env_id", ["N2NRemoval-v0", "N2NShrink-v0"])
def test_an_agent_without_masking_runs_out_of_the_box(env_id: str) -> None:
    env = gym.make(env_id, evaluator="mock")
    env.action_space.seed(0)
    for episode in range(20):
        env.reset(seed=episode)
        terminated = False
        while not terminated:
            _, _, terminated, _, info = env.step(env.action_space.sample())
        assert "accuracy" in info


def _mock_evaluator() -> MockEvaluator:
    return MockEvaluator(zoo.get("conv4", (1, 8, 8), 10))

