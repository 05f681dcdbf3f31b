"""N2NShrink-v0, stage 2 of N2N: one shrink factor per configurable variable (paper
section 3.2.2). All tests use the instant mock evaluator; test_removal_env.py runs a real
distillation episode of this environment too."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from observations_equal import same

import n2n_env  # noqa: F401  (registers the environments)
from n2n_env import data, zoo
from n2n_env.arch import Architecture, Layer
from n2n_env.evaluators import MockEvaluator
from n2n_env.features import NORMALIZED_FEATURE_NAMES
from n2n_env.shrink_env import VARIABLE_FEATURES, N2NShrinkEnv

ENV_ID = "N2NShrink-v0"
V = VARIABLE_FEATURES
TERMINAL_KEYS = {"accuracy", "teacher_accuracy", "params", "flops", "compression", "rewards",
                 "degenerate_reason", "architecture", "eval_seconds", "cache_hit"}
DIGITS = data.info("digits")


def make(**kwargs: Any) -> gym.Env:
    return gym.make(ENV_ID, **{"evaluator": "mock", **kwargs})


def run(env: gym.Env, actions: Sequence[int] | int, seed: int | None = 0
        ) -> list[tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]]:
    """One episode: ``actions`` per variable, or one action for all of them."""
    obs, info = env.reset(seed=seed)
    count = env.unwrapped.num_variables
    actions = [actions] * count if isinstance(actions, int) else actions
    assert len(actions) == count
    transitions = [(obs, 0.0, False, False, info)]
    transitions += [env.step(action) for action in actions]
    assert transitions[-1][2] and not any(t[2] for t in transitions[:-1])
    return transitions


def random_actions(env: gym.Env, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 10, env.unwrapped.num_variables).tolist()


def stage1_student(teacher: Architecture) -> Architecture:
    """``teacher`` without its last conv + bn + relu: a valid stage-1 candidate."""
    last = max(i for i, layer in enumerate(teacher.layers) if layer.kind == "conv")
    return teacher.remove([i not in range(last, last + 3) for i in range(len(teacher))])


# ---------------------------------------------------------------- API conformance
@pytest.mark.parametrize("kwargs", [{}, {"include_kernels": True, "render_mode": "ansi"},
                                    {"teacher": "resnet18", "render_mode": "rgb_array"}])
def test_gymnasium_check_env_passes_without_warnings(kwargs: dict[str, Any]) -> None:
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(make(**kwargs).unwrapped)


def test_sb3_check_env_passes_without_warnings() -> None:
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(make(), warn=True)
        check_env(make(include_kernels=True, render_mode="rgb_array").unwrapped, warn=True,
                  skip_render_check=False)


def test_seeding_gives_identical_episodes() -> None:
    first, second = make(teacher="resnet18"), make(teacher="resnet18")
    actions = random_actions(first, seed=0)
    episodes = [run(env, actions, seed=11) for env in (first, second, first)]
    for other in episodes[1:]:
        for a, b in zip(episodes[0], other):
            assert all(same(x, y) for x, y in zip(a, b))


def test_pickle_round_trip_then_full_episode() -> None:
    start = stage1_student(zoo.get("conv4", *DIGITS))
    env = make(start=start, include_kernels=True)
    actions = random_actions(env, seed=1)
    expected = run(env, actions)[-1]
    copy = pickle.loads(pickle.dumps(env))
    assert copy.unwrapped.start == start
    assert same(run(copy, actions)[-1][4], expected[4])
    env.reset(seed=0)
    env.step(actions[0])
    copy = pickle.loads(pickle.dumps(env))  # mid-episode
    for action in actions[1:]:
        last = copy.step(action)
    assert last[1] == expected[1] and same(last[0], expected[0]) and same(last[4], expected[4])


def test_async_vector_env_runs_episodes() -> None:
    venv = gym.vector.AsyncVectorEnv([make, lambda: make(include_kernels=True)])
    try:
        obs, info = venv.reset(seed=0)
        assert obs["variables"].shape == (2, 128 * V) and info["action_mask"].shape == (2, 10)
        ends: dict[int, list[int]] = {0: [], 1: []}
        for t in range(20):
            obs, reward, terminated, truncated, info = venv.step(np.full(2, 4))
            assert not truncated.any()
            for worker in np.flatnonzero(terminated):
                ends[int(worker)].append(t)
                assert 0.5 < info["compression"][worker] < 1 and reward[worker] > 0
        # conv4: 5 width variables, 9 with kernels; one autoreset step between episodes
        assert ends == {0: [4, 10, 16], 1: [8, 18]}
    finally:
        venv.close()
    assert venv.closed


def test_sb3_subproc_vec_env_runs_episodes() -> None:
    from stable_baselines3.common.vec_env import SubprocVecEnv

    venv = SubprocVecEnv([make, make])
    try:
        obs = venv.reset()
        assert obs["variable"].shape == (2, V)
        for t in range(10):
            obs, _, dones, infos = venv.step(np.array([9, 0]))
            assert dones.all() == (t % 5 == 4)
        assert infos[0]["compression"] == 0.0 and infos[1]["compression"] > 0.9
        assert infos[1]["terminal_observation"]["previous_action"][0] == pytest.approx(0.1)
        assert venv.env_method("action_masks")[0].tolist() == [True] * 10
    finally:
        venv.close()
    assert venv.closed


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("action", [10, -1, 0.5, "x", True])
def test_invalid_actions_raise_value_error_and_change_nothing(action: Any) -> None:
    env = make()
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match=r"invalid action .*allowed: 0-9"):
        env.step(action)
    obs, *_ = env.step(9)  # a refused action was not a step: this is still step 0
    assert obs["decisions"][:2].tolist() == [1.0, 0.0] and obs["position"][0] == 1 / 5


def test_stepping_after_the_end_raises_runtime_error() -> None:
    env = make()
    run(env, 9)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(9)
    with pytest.raises(RuntimeError, match="reset"):
        N2NShrinkEnv(_mock_evaluator()).step(9)


def test_unknown_names_raise_value_error_naming_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="unknown teacher 'lenet'") as error:
        make(teacher="lenet")
    assert all(name in str(error.value) for name in zoo.names())
    with pytest.raises(ValueError, match="unknown dataset 'mnist-1m'") as error:
        make(dataset="mnist-1m")
    assert all(name in str(error.value) for name in data.names())


def test_mismatched_start_raises_value_error(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"start takes \(3, 32, 32\)"):
        make(start=zoo.get("conv4", (3, 32, 32), 10))  # the teacher takes (1, 16, 16)
    with pytest.raises(ValueError, match="100 classes"):
        make(start=zoo.get("conv4", DIGITS[0], 100))
    teacher = zoo.get("conv4", *DIGITS)
    with pytest.raises(ValueError, match="degenerate"):
        make(start=teacher.remove([not r for r in teacher.removable()]))
    with pytest.raises(ValueError, match="not an Architecture or a JSON file"):
        make(start=str(tmp_path / "missing.json"))
    with pytest.raises(TypeError, match="start must be"):
        make(start=42)


# ---------------------------------------------------------------- the episode
@pytest.mark.parametrize("teacher", ["conv4", "vgg13", "resnet34"])
@pytest.mark.parametrize("include_kernels", [False, True])
def test_one_step_per_shrink_variable(teacher: str, include_kernels: bool) -> None:
    env = make(teacher=teacher, include_kernels=include_kernels)
    start = env.unwrapped.start
    assert start == zoo.get(teacher, *DIGITS)
    variables = start.shrink_variables(include_kernels)
    assert env.unwrapped.num_variables == len(variables)
    assert len(run(env, random_actions(env, seed=2))) == len(variables) + 1


def test_include_kernels_adds_a_kernel_variable_per_spatial_conv() -> None:
    plain, kernels = make(), make(include_kernels=True)
    convs = [i for i, layer in enumerate(plain.unwrapped.start.layers)
             if layer.kind == "conv" and layer.kernel > 1]
    added = [v for v in kernels.unwrapped.variables if v.kind == "kernel"]
    assert [v.slots for v in added] == [(("layer", i),) for i in convs]
    assert all(v.value == 3 for v in added)
    assert kernels.unwrapped.num_variables == plain.unwrapped.num_variables + len(convs)
    obs, _ = kernels.reset(seed=0)
    table = obs["variables"].reshape(128, V)
    flags = table[: kernels.unwrapped.num_variables, -2]
    assert flags.tolist() == [float(v.kind == "kernel") for v in kernels.unwrapped.variables]
    # factor 0.1 on every kernel: 3x3 convs become 1x1 with no padding, widths untouched
    actions = [0 if v.kind == "kernel" else 9 for v in kernels.unwrapped.variables]
    *_, info = run(kernels, actions)[-1]
    student = Architecture.from_json(info["architecture"])
    assert [(layer.kernel, layer.padding) for layer in student.layers
            if layer.kind == "conv"] == [(1, 0)] * len(convs)
    assert [layer.out for layer in student.layers] == [
        layer.out for layer in kernels.unwrapped.start.layers]
    assert 0 < info["compression"] < 1


def test_action_a_keeps_a_plus_one_tenths_rounded_up() -> None:
    env = make()
    values = [v.value for v in env.unwrapped.variables]
    assert values == [32, 64, 128, 128, 256]
    *_, info = run(env, [0, 2, 4, 6, 8])[-1]
    student = Architecture.from_json(info["architecture"])
    widths = [layer.out for layer in student.layers if layer.kind in ("conv", "linear")]
    # ceil(32 * 0.1), ceil(64 * 0.3), ceil(128 * 0.5), ceil(128 * 0.7), ceil(256 * 0.9)
    assert widths == [4, 20, 64, 90, 231, 10]


def test_all_nines_from_the_teacher_compress_nothing() -> None:
    env = make(teacher="resnet18")
    teacher = env.unwrapped.start
    *_, reward, terminated, truncated, info = run(env, 9)[-1]
    assert (terminated, truncated) == (True, False) and set(info) >= TERMINAL_KEYS
    assert info["compression"] == 0.0 and reward == 0.0
    assert info["params"] == teacher.num_params()
    assert Architecture.from_json(info["architecture"]) == teacher


def test_a_stage1_start_is_scored_against_the_teacher(tmp_path) -> None:
    teacher = zoo.get("conv4", *DIGITS)
    start = stage1_student(teacher)
    path = tmp_path / "stage1.json"
    path.write_text(start.to_json())
    expected_c = 1 - start.num_params() / teacher.num_params()
    for given in (start, path, str(path)):
        env = make(start=given)
        assert env.unwrapped.start == start
        assert env.unwrapped.num_variables == len(start.shrink_variables())
        *_, reward, _, _, info = run(env, 9)[-1]
        assert info["compression"] == pytest.approx(expected_c) and expected_c > 0.3
        assert reward == pytest.approx(expected_c * (2 - expected_c) * info["accuracy"] / 0.99)
        assert Architecture.from_json(info["architecture"]) == start
    *_, info = run(make(start=path), 0)[-1]
    assert info["compression"] > expected_c


def test_previous_action_is_the_previous_factor_and_decisions_record_factors() -> None:
    env = make(include_kernels=True)
    actions = random_actions(env, seed=3)
    transitions = run(env, actions)
    assert transitions[0][0]["previous_action"][0] == 0.0
    for t, (obs, *_rest) in enumerate(transitions[1:], start=1):
        assert obs["previous_action"][0] == pytest.approx((actions[t - 1] + 1) / 10)
        np.testing.assert_allclose(obs["decisions"][:t], [(a + 1) / 10 for a in actions[:t]],
                                   rtol=1e-6)
        assert not obs["decisions"][t:].any()


@pytest.mark.parametrize("teacher", ["conv4", "vgg13", "resnet34"])
def test_observations_are_in_the_space_with_fixed_shapes(teacher: str) -> None:
    env = make(teacher=teacher, include_kernels=True)
    count = env.unwrapped.num_variables
    expected = {"variable": (V,), "variables": (128 * V,), "variable_mask": (128,),
                "decisions": (128,), "position": (1,), "previous_action": (1,),
                "params_kept": (1,), "action_mask": (10,)}
    assert len(NORMALIZED_FEATURE_NAMES) + 2 == V
    assert {k: s.shape for k, s in env.observation_space.spaces.items()} == expected
    transitions = run(env, random_actions(env, seed=4))
    first_table = transitions[0][0]["variables"]
    for t, (obs, *_rest) in enumerate(transitions):
        assert env.observation_space.contains(obs), t
        assert {k: v.shape for k, v in obs.items()} == expected
        assert obs["variable_mask"].sum() == count
        np.testing.assert_array_equal(obs["variables"], first_table)  # the table is static
        if t < count:
            np.testing.assert_array_equal(obs["variable"], obs["variables"].reshape(128, V)[t])
        assert obs["position"][0] == pytest.approx(t / count)
        assert obs["action_mask"].tolist() == [1.0] * 10
    assert not transitions[-1][0]["variable"].any()


def test_too_many_variables_for_max_layers_raises_value_error() -> None:
    assert make(teacher="resnet34", include_kernels=True).unwrapped.num_variables == 53
    with pytest.raises(ValueError, match="20 rows exceed max_layers=19"):
        make(teacher="resnet34", max_layers=19)


def test_action_mask_is_offered_three_ways_and_allows_everything() -> None:
    env = make()
    obs, info = env.reset(seed=0)
    for _ in range(env.unwrapped.num_variables):
        mask = env.unwrapped.action_masks()
        assert mask.dtype == bool and mask.all() and mask.shape == (10,)
        np.testing.assert_array_equal(info["action_mask"], mask)
        np.testing.assert_array_equal(obs["action_mask"], mask.astype(np.float32))
        obs, _, _, _, info = env.step(3)


@pytest.mark.parametrize("teacher", ["conv4", "vgg13", "resnet34"])
def test_params_kept_estimates_the_fraction_of_start_parameters(teacher: str) -> None:
    env = make(teacher=teacher)
    start = env.unwrapped.start
    transitions = run(env, 4)  # factor 0.5 everywhere
    kept = [obs["params_kept"][0] for obs, *_ in transitions]
    assert kept[0] == 1.0 and kept == sorted(kept, reverse=True) and kept[-1] < kept[-2]
    exact = transitions[-1][4]["params"] / start.num_params()
    assert kept[-1] == pytest.approx(exact, rel=0.01)  # ~0.25: both ends of weights halved


def test_constraints_and_flops_metric_apply_to_shrink_too() -> None:
    env = make(constraints={"flops": 1}, anneal_episodes=2, compression_metric="flops")
    teacher = env.unwrapped.start
    rewards = []
    for _ in range(3):
        *_, reward, _, _, info = run(env, 4)[-1]
        student = Architecture.from_json(info["architecture"])
        assert info["compression"] == pytest.approx(1 - student.flops() / teacher.flops())
        assert info["rewards"]["violated"] == ("flops <= 1",)
        rewards.append(reward)
    assert rewards[0] == pytest.approx(info["rewards"]["unconstrained"])
    assert rewards[1] == pytest.approx(0.5 * (rewards[0] + 1) - 1) and rewards[2] == -1.0


def test_cache_hit_on_the_second_identical_episode(tmp_path) -> None:
    env = make(cache=tmp_path / "c.sqlite")
    first, second = run(env, 3)[-1][4], run(env, 3)[-1][4]
    assert (first["cache_hit"], second["cache_hit"]) == (False, True)
    assert first["accuracy"] == second["accuracy"]


def test_close_releases_the_cache(tmp_path) -> None:
    env = make(cache=tmp_path / "c.sqlite")
    run(env, 5)
    assert (tmp_path / "c.sqlite-wal").exists()  # WAL mode while a connection is open
    env.close()
    assert not (tmp_path / "c.sqlite-wal").exists()


def test_a_full_episode_through_gym_make_warns_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = make(teacher="resnet18", include_kernels=True, render_mode="rgb_array")
        run(env, random_actions(env, seed=8))
        env.render()
        env.close()


# ---------------------------------------------------------------- rendering
def test_ansi_render_lists_variables_and_choices() -> None:
    env = make(render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert isinstance(text, str) and "conv4 step 0/5" in text and text.count("?") == 5
    env.step(4)
    lines = env.render().splitlines()
    assert "width" in lines[1] and lines[1].rstrip().endswith("x0.5 -> 16")
    assert lines[2].startswith(">")
    for _ in range(4):
        env.step(9)
    assert "student: accuracy" in env.render()


def test_rgb_array_render_is_an_image_that_shows_shrinking() -> None:
    env = make(render_mode="rgb_array")
    env.reset(seed=0)
    before = env.render()
    assert isinstance(before, np.ndarray) and before.dtype == np.uint8
    assert before.shape == (160, 5 * 8 + 2, 3)
    env.step(0)
    after = env.render()
    assert after.shape == before.shape and not np.array_equal(after, before)


def test_render_without_a_render_mode_warns_and_returns_none() -> None:
    env = make()
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert env.render() is None


def test_invalid_render_mode_raises_value_error() -> None:
    with pytest.raises(ValueError, match="render_mode must be one of"):
        N2NShrinkEnv(_mock_evaluator(), render_mode="human")


# ---------------------------------------------------------------- docs/environments.md
def test_worked_example_of_the_docs() -> None:
    """The numbers quoted in docs/environments.md for the shrink episode."""
    tiny = Architecture((1, 8, 8), 10, (Layer("conv", out=4, kernel=3, padding=1),
                                        Layer("relu"), Layer("flatten"),
                                        Layer("linear", out=32), Layer("linear", out=10)),
                        name="tiny")
    env = make(teacher=tiny, max_layers=8)
    assert [(v.kind, v.value) for v in env.unwrapped.variables] == [("width", 4),
                                                                    ("width", 32)]
    obs, _ = env.reset(seed=0)
    assert obs["variable"][-2:].tolist() == [0.0, pytest.approx(0.1935, abs=1e-4)]
    obs, *_ = env.step(4)
    assert obs["previous_action"][0] == 0.5 and obs["params_kept"][0] == pytest.approx(
        0.5192, abs=1e-4)
    obs, reward, terminated, _, info = env.step(1)
    assert terminated and obs["params_kept"][0] == pytest.approx(0.1057, abs=1e-4)
    assert info["params"] == 1003
    assert info["compression"] == pytest.approx(0.88329, abs=1e-5)
    assert info["accuracy"] == pytest.approx(0.97181, abs=1e-5)
    assert reward == pytest.approx(0.96825, abs=1e-5)
    kernels = make(teacher=tiny, include_kernels=True).unwrapped
    assert [v.kind for v in kernels.variables] == ["width", "kernel", "width"]


def test_start_from_another_teacher_is_refused() -> None:
    other = zoo.get("vgg11", (1, 16, 16), 10, width=0.25)
    with pytest.raises(ValueError, match="not derived from the teacher"):
        gym.make("N2NShrink-v0", evaluator="mock", start=other)


def test_a_hand_described_teachers_stage1_student_is_a_start() -> None:
    tiny = Architecture((1, 8, 8), 10, (Layer("conv", out=4, kernel=3, padding=1),
                                        Layer("relu"), Layer("flatten"),
                                        Layer("linear", out=32), Layer("linear", out=10)))
    start = tiny.remove([True, False, True, True, True])
    env = gym.make("N2NShrink-v0", teacher=tiny, evaluator="mock", max_layers=8, start=start)
    assert env.unwrapped.start == start


def test_start_from_a_teacher_with_the_same_layers_but_other_widths_is_refused() -> None:
    other = zoo.get("conv4", DIGITS[0], DIGITS[1], width=0.5)
    with pytest.raises(ValueError, match=r"not derived from the teacher.*root signature"):
        gym.make("N2NShrink-v0", evaluator="mock", start=other.remove([True] * len(other)))


def _mock_evaluator() -> MockEvaluator:
    return MockEvaluator(zoo.get("conv4", (1, 8, 8), 10))

