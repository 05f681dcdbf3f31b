"""AMC's action wall in both MDPs, on a hand-checked architecture.

TINY (tests/test_latency.py) has conv_a (1->a), relu, conv_b (a->b), relu, maxpool,
flatten, linear (b*16 -> 10): params = 10a + 9ab + 161b + 10, 444 for the teacher (a=4,
b=2). Removing conv_a leaves 350, removing conv_b 690 (conv_a feeds the classifier 4
channels), removing both is degenerate; nothing removal reaches is below 350. With the
fake timer, latency = a + b + 10 (the conv and linear widths), 16 for the teacher.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from test_latency import TINY, fake_latency

import n2n_env  # noqa: F401  (registers the environments)
from n2n_env import zoo
from n2n_env.action_wall import removal_completions
from n2n_env.evaluators import MockEvaluator
from n2n_env.removal_env import N2NRemovalEnv
from n2n_env.reward import LinearConstraint
from n2n_env.shrink_env import N2NShrinkEnv

ALL_REMOVAL = [True, True]
FIXED = [False, True]
KEEP_MASKED = [True, False]


def tiny_params(a: int, b: int) -> int:
    return 10 * a + 9 * a * b + 161 * b + 10


def masks_along(env: N2NRemovalEnv | N2NShrinkEnv, actions: list[int]) -> list[list[bool]]:
    """The mask of every state along ``actions`` (taken as given: all must be allowed)."""
    _, info = env.reset(seed=0)
    masks = []
    for action in actions:
        masks.append(info["action_mask"].tolist())
        assert info["action_mask"][action], f"action {action} is masked in {masks}"
        _, _, _, _, info = env.step(action)
    return masks


def test_the_tiny_formula() -> None:
    assert TINY.num_params() == tiny_params(4, 2) == 444
    assert TINY.shrink([0.5, 0.5]).num_params() == tiny_params(2, 1)


# ---------------------------------------------------------------- removal MDP
@pytest.mark.parametrize("constraints", [{"params": 400}, "latency"])
def test_removal_wall_masks_keep_exactly_where_keeping_makes_the_bound_impossible(
        constraints: dict[str, float] | str, tmp_path: Path) -> None:
    # params <= 400: keeping conv_a leaves 444 at best (690 without conv_b), so keep is
    # masked; once conv_a is gone, every completion with conv_b (350) meets it.
    # latency_ms <= 13 is the same wall: keeping conv_a leaves 14 at best, without it 12.
    evaluator = fake_latency(tmp_path) if constraints == "latency" else MockEvaluator(TINY)
    bound = {"latency_ms": 13} if constraints == "latency" else constraints
    env = N2NRemovalEnv(evaluator, constraints=bound, action_wall=True)
    masks = masks_along(env, [0, 1, 1, 1, 1, 1, 1])
    assert masks == [KEEP_MASKED, ALL_REMOVAL, ALL_REMOVAL, ALL_REMOVAL, ALL_REMOVAL,
                     FIXED, FIXED]
    # Removing the maxpool would make the classifier 64 wide (1,290 params), but the wall
    # never masks the removal of a removable layer.
    masks = masks_along(env, [0, 1, 1, 1, 0, 1, 1])
    assert masks[4] == ALL_REMOVAL


def test_removal_wall_keeps_every_action_when_the_bound_is_out_of_reach() -> None:
    env = N2NRemovalEnv(MockEvaluator(TINY), constraints={"params": 300}, action_wall=True)
    assert masks_along(env, [1] * 7) == [ALL_REMOVAL] * 5 + [FIXED] * 2


def test_removal_wall_uses_the_better_of_its_two_completions() -> None:
    # params <= 500: keeping conv_a and removing everything after it but the pool gives
    # 690, keeping everything 444, so keep stays allowed; a keep-all completion only
    # would not catch the first, a lean one only would mask keep wrongly.
    lean, full = removal_completions(TINY, [], 0, True)
    assert (lean.num_params(), full.num_params()) == (690, 444)
    env = N2NRemovalEnv(MockEvaluator(TINY), constraints={"params": 500}, action_wall=True)
    assert masks_along(env, [1] * 7)[0] == ALL_REMOVAL


def test_a_masked_keep_is_replaced_or_refused() -> None:
    env = N2NRemovalEnv(MockEvaluator(TINY), constraints={"params": 400}, action_wall=True)
    env.reset(seed=0)
    _, _, _, _, info = env.step(1)
    assert info["action_replaced"] and env.unwrapped._decisions[0] == -1.0
    strict = N2NRemovalEnv(MockEvaluator(TINY), constraints={"params": 400},
                           action_wall=True, invalid_action="raise")
    strict.reset(seed=0)
    with pytest.raises(ValueError, match=r"keeping layer 0 \(conv\) leaves no way to meet"):
        strict.step(1)


# ---------------------------------------------------------------- shrink MDP
def test_shrink_wall_masks_the_factors_that_make_the_bound_impossible() -> None:
    # params <= 220 with b at 0.1 (b=1): 19a + 171 <= 220, so a <= 2: factors 0.1-0.5.
    # Then with a=2: 30 + 179b <= 220, so b=1: factors 0.1-0.5 again.
    env = N2NShrinkEnv(MockEvaluator(TINY), constraints={"params": 220}, action_wall=True)
    five = [True] * 5 + [False] * 5
    assert masks_along(env, [4, 4]) == [five, five]
    env.reset(seed=0)
    env.step(4)
    _, _, done, _, info = env.step(9)  # masked: taken as the nearest allowed, 0.5
    assert done and info["action_replaced"] and info["params"] == tiny_params(2, 1) == 209
    assert not info["rewards"]["violated"]


def test_shrink_wall_on_latency(tmp_path: Path) -> None:
    # latency_ms <= 14 with b at 0.1: a + 1 + 10 <= 14, so a <= 3: factors 0.1-0.7.
    env = N2NShrinkEnv(fake_latency(tmp_path), constraints={"latency_ms": 14},
                       action_wall=True, invalid_action="raise")
    env.reset(seed=0)
    assert env.action_masks().tolist() == [True] * 7 + [False] * 3
    with pytest.raises(ValueError, match=r"action 9 leaves no way.*allowed: \[0, 1, 2, 3, 4, "
                                         r"5, 6\]"):
        env.step(9)


@pytest.mark.parametrize("bound", [190, 200, 220, 250, 300, 400, 443, 1000])
def test_shrink_wall_is_exact_for_params(bound: int) -> None:
    """Brute force over all 100 students: an action is masked exactly when no student
    after it meets the bound (and nothing is masked when none at all does)."""
    widths = [max(1, math.ceil(w * level / 10)) for w in (4, 2) for level in range(1, 11)]
    a_of, b_of = widths[:10], widths[10:]
    feasible = {(i, j) for i, j in itertools.product(range(10), range(10))
                if tiny_params(a_of[i], b_of[j]) <= bound}
    env = N2NShrinkEnv(MockEvaluator(TINY), constraints={"params": bound}, action_wall=True)
    for first in range(10):
        env.reset(seed=0)
        expected = [any((i, j) in feasible for j in range(10)) for i in range(10)]
        assert env.action_masks().tolist() == (expected if any(expected) else [True] * 10)
        env.step(first)
        taken = env._levels[0] - 1  # a masked first action was replaced
        expected = [(taken, j) in feasible for j in range(10)]
        assert env.action_masks().tolist() == (expected if any(expected) else [True] * 10)


# ---------------------------------------------------------------- never all, and options
@pytest.mark.parametrize(("env_id", "teacher"), [("N2NRemoval-v0", "conv4"),
                                                 ("N2NRemoval-v0", "resnet18"),
                                                 ("N2NShrink-v0", "vgg11")])
@pytest.mark.parametrize("fraction", [0.02, 0.3, 0.7])
def test_the_wall_never_masks_every_action(env_id: str, teacher: str, fraction: float
                                           ) -> None:
    arch = zoo.get(teacher, (3, 16, 16), 10, width=0.125)
    rows = [LinearConstraint.upper_bound("params", fraction * arch.num_params()),
            LinearConstraint({"params": 1.0, "flops": 0.01},
                             fraction * (arch.num_params() + 0.01 * arch.flops()))]
    env = gym.make(env_id, teacher=arch, evaluator="mock", constraints=rows,
                   action_wall=True).unwrapped
    rng = np.random.default_rng(0)
    removable = arch.removable()
    for episode in range(3):
        _, info = env.reset(seed=episode)
        done, step = False, 0
        while not done:
            mask = info["action_mask"]
            assert mask.any()
            if env_id == "N2NRemoval-v0" and removable[step]:
                assert mask[0], "removing a removable layer must stay allowed"
            _, _, done, _, info = env.step(int(rng.choice(np.flatnonzero(mask))))
            step += 1


def test_the_wall_is_off_by_default_and_needs_an_upper_bound() -> None:
    env = N2NRemovalEnv(MockEvaluator(TINY), constraints={"params": 400})
    assert env.wall is None and masks_along(env, [1] * 7)[0] == ALL_REMOVAL
    for constraints in (None, {"accuracy": 0.9},
                        [LinearConstraint({"params": 1.0, "accuracy": -1e6}, 1.0)]):
        with pytest.raises(ValueError, match="action_wall=True masks actions against upper"):
            N2NShrinkEnv(MockEvaluator(TINY), constraints=constraints, action_wall=True)
    with pytest.raises(TypeError, match="action_wall must be True or False"):
        gym.make("N2NRemoval-v0", evaluator="mock", constraints={"params": 1e4},
                 action_wall="yes")


def test_the_wall_passes_the_environment_checkers(tmp_path: Path) -> None:
    from gymnasium.utils.env_checker import check_env

    for env_class in (N2NRemovalEnv, N2NShrinkEnv):
        env = env_class(fake_latency(tmp_path), constraints={"latency_ms": 13},
                        action_wall=True)
        check_env(env, skip_render_check=True)


def test_vector_envs_play_with_the_wall() -> None:
    envs = gym.make_vec("N2NShrink-v0", 3, vectorization_mode="vector_entry_point",
                        teacher=TINY, evaluator="mock", constraints={"params": 220},
                        action_wall=True)
    envs.reset(seed=0)
    assert envs.action_masks().tolist() == [[True] * 5 + [False] * 5] * 3
    _, _, _, _, info = envs.step(np.array([9, 4, 0]))
    assert info["action_replaced"].tolist() == [True, False, False]
    _, _, done, _, info = envs.step(np.array([4, 4, 4]))
    assert done.all() and all(p <= 220 for p in info["final_info"]["params"])
