"""N2NRemoval-v0, stage 1 of N2N: keep or remove each teacher layer (paper section 3.2.1).

Everything but ``test_real_distillation_episodes`` uses the instant mock evaluator.
"""

from __future__ import annotations

import json
import pickle
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import n2n_env  # noqa: F401  (registers the environments)
from n2n_env import data, zoo
from n2n_env.arch import Architecture, Layer
from n2n_env.features import NORMALIZED_FEATURE_NAMES
from n2n_env.removal_env import N2NRemovalEnv

ENV_ID = "N2NRemoval-v0"
F = len(NORMALIZED_FEATURE_NAMES)
TERMINAL_KEYS = {"accuracy", "teacher_accuracy", "params", "flops", "compression", "rewards",
                 "degenerate_reason", "architecture", "eval_seconds", "cache_hit"}
DIGITS = data.info("digits")


def make(**kwargs: Any) -> gym.Env:
    return gym.make(ENV_ID, **{"evaluator": "mock", **kwargs})


def run(env: gym.Env, policy: Callable[[int, Layer], int] | Sequence[int], seed: int | None = 0
        ) -> list[tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]]:
    """One episode; ``policy`` maps (step, teacher layer) to an action, or lists them."""
    obs, info = env.reset(seed=seed)
    teacher = env.unwrapped.teacher
    transitions = [(obs, 0.0, False, False, info)]
    for t, layer in enumerate(teacher.layers):
        action = policy[t] if isinstance(policy, Sequence) else policy(t, layer)
        transitions.append(env.step(action))
    assert transitions[-1][2], "the episode must end after one step per layer"
    return transitions


def keep_all(t: int, layer: Layer) -> int:
    return 1


def random_actions(env: gym.Env, seed: int) -> list[int]:
    """A seeded random valid action per layer (fixed layers kept)."""
    rng = np.random.default_rng(seed)
    fixed = ~np.array(env.unwrapped.teacher.removable())
    return [1 if fixed[t] else int(rng.integers(2)) for t in range(len(fixed))]


def same(first: Any, second: Any) -> bool:
    """Deep equality of observations/infos (dicts, arrays, floats, strings)."""
    if isinstance(first, dict):
        return first.keys() == second.keys() and all(same(first[k], second[k]) for k in first)
    if isinstance(first, np.ndarray):
        return first.dtype == second.dtype and np.array_equal(first, second)
    return type(first) is type(second) and first == second


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
def test_removing_a_fixed_layer_raises_value_error(kind: str) -> None:
    env = make()
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
        N2NRemovalEnv(evaluator="mock").step(1)  # nor before the first reset
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


# ---------------------------------------------------------------- rewards and terminal info
def test_keep_everything_gives_zero_compression_and_the_teachers_size() -> None:
    env = make()
    teacher = env.unwrapped.teacher
    obs, reward, terminated, truncated, info = run(env, keep_all)[-1]
    assert (terminated, truncated) == (True, False)
    assert set(info) >= TERMINAL_KEYS
    assert info["compression"] == 0.0 and reward == 0.0
    assert info["params"] == teacher.num_params() and info["flops"] == teacher.flops()
    assert info["accuracy"] == pytest.approx(info["teacher_accuracy"]) == pytest.approx(0.99)
    assert Architecture.from_json(info["architecture"]) == teacher
    assert info["degenerate_reason"] is None and info["cache_hit"] is False
    assert info["rewards"]["reward"] == reward and info["rewards"]["violated"] == ()
    assert obs["position"][0] == 1.0 and obs["params_kept"][0] == 1.0


def test_removing_a_conv_earns_the_paper_reward() -> None:
    env = make()
    teacher = env.unwrapped.teacher
    convs = [i for i, layer in enumerate(teacher.layers) if layer.kind == "conv"]
    *_, reward, _, _, info = run(env, [int(i != convs[-1]) for i in range(len(teacher))])[-1]
    student = Architecture.from_json(info["architecture"])
    assert len(student) == len(teacher) - 1
    compression = 1 - student.num_params() / teacher.num_params()
    assert info["compression"] == pytest.approx(compression) and 0 < compression < 1
    assert reward == pytest.approx(compression * (2 - compression) * info["accuracy"]
                                   / info["teacher_accuracy"])


def test_keeping_only_fixed_layers_is_degenerate() -> None:
    env = make()
    fixed = [not removable for removable in env.unwrapped.teacher.removable()]
    *_, reward, terminated, _, info = run(env, [int(f) for f in fixed])[-1]
    assert terminated and reward == -1.0
    assert isinstance(info["degenerate_reason"], str) and "empty" in info["degenerate_reason"]
    assert info["rewards"]["degenerate"] is True
    assert [layer["kind"] for layer in json.loads(info["architecture"])["layers"]] == [
        "flatten", "linear"]


def test_constraints_are_annealed_from_free_to_minus_one() -> None:
    anneal = 4
    env = make(constraints={"params": 1}, anneal_episodes=anneal)  # every student violates
    actions = [0 if i == 11 else 1 for i in range(20)]  # conv4: remove the 4th conv
    rewards, epsilons = [], []
    for _ in range(anneal + 2):
        *_, reward, _, _, info = run(env, actions)[-1]
        breakdown = info["rewards"]
        assert breakdown["violated"] == ("params <= 1",)
        unconstrained = breakdown["unconstrained"]
        assert unconstrained > 0
        assert reward == pytest.approx(breakdown["epsilon"] * (unconstrained + 1) - 1)
        rewards.append(reward)
        epsilons.append(breakdown["epsilon"])
    assert epsilons == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert rewards[0] == pytest.approx(unconstrained)  # eps_0 = 1: no penalty yet
    assert rewards[-2:] == [-1.0, -1.0]
    assert rewards == sorted(rewards, reverse=True)


def test_satisfied_constraints_leave_the_reward_alone() -> None:
    env = make(constraints={"params": 10**9}, anneal_episodes=3)
    *_, reward, _, _, info = run(env, [0 if i == 11 else 1 for i in range(20)])[-1]
    assert info["rewards"]["violated"] == () and reward == info["rewards"]["unconstrained"] > 0


def test_flops_compression_metric() -> None:
    actions = [0 if i == 11 else 1 for i in range(20)]  # conv4: remove the 4th conv
    *_, by_params = run(make(), actions)[-1]
    *_, reward, _, _, by_flops = run(make(compression_metric="flops"), actions)[-1]
    teacher = zoo.get("conv4", *DIGITS)
    student = Architecture.from_json(by_flops["architecture"])
    flops_c = 1 - student.flops() / teacher.flops()
    assert by_flops["compression"] == pytest.approx(flops_c)
    assert by_params["compression"] == pytest.approx(
        1 - student.num_params() / teacher.num_params())
    assert abs(flops_c - by_params["compression"]) > 0.05
    assert reward == pytest.approx(flops_c * (2 - flops_c) * by_flops["accuracy"] / 0.99)


def test_a_student_larger_than_its_teacher_earns_zero() -> None:
    """Removing a pool enlarges the classifier: C < 0 is reported, the reward clips it."""
    for metric in ("params", "flops"):
        *_, reward, _, _, info = run(make(compression_metric=metric),
                                     [0 if i == 3 else 1 for i in range(20)])[-1]
        assert info["compression"] < 0 and reward == 0.0 and info["degenerate_reason"] is None


def test_cache_hit_on_the_second_identical_episode(tmp_path) -> None:
    env = make(cache=tmp_path / "c.sqlite")
    actions = random_actions(env, seed=4)
    first = run(env, actions)[-1]
    second = run(env, actions)[-1]
    assert (first[4]["cache_hit"], second[4]["cache_hit"]) == (False, True)
    assert first[1] == second[1] and first[4]["accuracy"] == second[4]["accuracy"]
    # a second environment (another process, say) reads the same file
    third = run(make(cache=tmp_path / "c.sqlite"), actions)[-1]
    assert third[4]["cache_hit"] is True
    other = run(env, [1] * 20)[-1]
    assert other[4]["cache_hit"] is False
    copy = pickle.loads(pickle.dumps(env))  # the copy reopens the file
    assert run(copy, actions)[-1][4]["cache_hit"] is True


def test_close_releases_the_cache(tmp_path) -> None:
    env = make(cache=tmp_path / "c.sqlite")
    run(env, keep_all)
    assert (tmp_path / "c.sqlite-wal").exists()  # WAL mode while a connection is open
    env.close()
    # SQLite removes the WAL file when the last connection to the database closes
    assert not (tmp_path / "c.sqlite-wal").exists()


def test_a_full_episode_through_gym_make_warns_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the passive checker warns about bad obs/infos
        env = make(teacher="resnet18", render_mode="ansi")
        run(env, random_actions(env, seed=8))
        env.render()
        env.close()


def test_an_architecture_teacher_with_the_mock_evaluator() -> None:
    arch = zoo.get("vgg11", (3, 32, 32), 100, width=0.25)
    env = make(teacher=arch)
    assert env.unwrapped.teacher is arch
    info = run(env, keep_all)[-1][4]
    assert info["params"] == arch.num_params()


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
        N2NRemovalEnv(evaluator="mock", render_mode="human")
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


# ---------------------------------------------------------------- real distillation
@pytest.mark.slow
def test_real_distillation_episodes(tmp_path, monkeypatch) -> None:
    """End to end with the real evaluator: trains a tiny teacher on digits, then scores a
    keep-everything removal episode, a removal and a shrink episode by distillation."""
    monkeypatch.setenv("N2N_HOME", str(tmp_path))
    kwargs = {"teacher": "conv4", "teacher_width": 0.25, "dataset": "digits",
              "evaluator_kwargs": {"steps": 5}}
    env = gym.make(ENV_ID, **kwargs)
    assert list(tmp_path.iterdir()) == []  # lazy: nothing trained yet
    *_, reward, terminated, _, info = run(env, keep_all)[-1]
    assert terminated and set(info) >= TERMINAL_KEYS
    assert list((tmp_path / "teachers").glob("*.pt"))  # the teacher was trained fresh
    teacher = zoo.get("conv4", *DIGITS, width=0.25)
    assert info["params"] == teacher.num_params() and info["compression"] == 0.0
    assert Architecture.from_json(info["architecture"]) == teacher
    assert info["accuracy"] > 0.5 > 1 / 10  # far above chance
    assert info["teacher_accuracy"] > 0.5
    assert info["eval_seconds"] > 0 and info["cache_hit"] is False
    assert info["degenerate_reason"] is None and reward == 0.0
    assert run(env, keep_all)[-1][4]["accuracy"] == info["accuracy"]  # seeded training

    convs = [i for i, layer in enumerate(teacher.layers) if layer.kind == "conv"]
    actions = [int(i not in range(convs[-1], convs[-1] + 3)) for i in range(len(teacher))]
    *_, reward, _, _, removed = run(env, actions)[-1]
    assert 0 < removed["compression"] < 1 and 0 <= removed["accuracy"] <= 1
    assert reward == pytest.approx(removed["rewards"]["unconstrained"])

    shrink = gym.make("N2NShrink-v0", **kwargs)  # the cached teacher is reused
    shrink.reset(seed=0)
    for _ in range(shrink.unwrapped.num_variables):
        *_, reward, terminated, _, info = shrink.step(4)
    assert terminated and set(info) >= TERMINAL_KEYS
    assert 0.5 < info["compression"] < 1 and info["accuracy"] > 1 / 10
    assert len(list((tmp_path / "teachers").glob("*.pt"))) == 1
