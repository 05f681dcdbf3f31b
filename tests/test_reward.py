"""The N2N reward, its constraint relaxation and the epsilon schedule (paper 3.3, 11)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from n2n_env.reward import (
    DEGENERATE_REWARD,
    EpsilonSchedule,
    LinearConstraint,
    compression_ratio,
    constrained_reward,
    n2n_reward,
    parse_constraints,
)


def test_paper_worked_example_appendix_11_1() -> None:
    assert n2n_reward(0.25, 1.0, 1.0) == pytest.approx(0.4375)
    assert n2n_reward(1.0, 0.25, 1.0) == pytest.approx(0.25)


def test_accuracy_is_relative_to_the_teacher() -> None:
    assert n2n_reward(0.5, 0.9, 0.9) == pytest.approx(0.75)
    assert n2n_reward(0.5, 0.45, 0.9) == pytest.approx(0.375)


def test_students_larger_than_the_teacher_get_zero_not_an_unbounded_penalty() -> None:
    assert n2n_reward(-4.7, 0.9, 0.9) == 0.0
    assert constrained_reward(-0.5, 0.9, 0.9).reward == 0.0


def test_compression_ratio() -> None:
    assert compression_ratio(25, 100) == pytest.approx(0.75)
    assert compression_ratio(150, 100) == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="teacher size"):
        compression_ratio(1, 0)


@given(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1))
def test_reward_increases_with_compression_and_accuracy(c1: float, c2: float, a1: float,
                                                        a2: float) -> None:
    low_c, high_c = sorted((c1, c2))
    low_a, high_a = sorted((a1, a2))
    assert n2n_reward(low_c, high_a, 1.0) <= n2n_reward(high_c, high_a, 1.0) + 1e-12
    assert n2n_reward(high_c, low_a, 1.0) <= n2n_reward(high_c, high_a, 1.0) + 1e-12


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="teacher accuracy"):
        n2n_reward(0.5, 0.5, 0.0)
    with pytest.raises(ValueError, match="accuracy"):
        n2n_reward(0.5, 1.5, 0.9)


def test_degenerate_gets_minus_one() -> None:
    result = constrained_reward(0.9, 0.9, 0.9, degenerate=True)
    assert result.reward == DEGENERATE_REWARD == -1.0
    assert result.degenerate


def test_constraints_relax_with_epsilon() -> None:
    limit = parse_constraints({"params": 1000})
    measured = {"params": 2000.0, "flops": 1.0, "accuracy": 0.9}
    base = n2n_reward(0.5, 0.9, 0.9)
    hard = constrained_reward(0.5, 0.9, 0.9, measured, limit, epsilon=0.0)
    soft = constrained_reward(0.5, 0.9, 0.9, measured, limit, epsilon=0.5)
    free = constrained_reward(0.5, 0.9, 0.9, measured, limit, epsilon=1.0)
    assert hard.reward == pytest.approx(-1.0)
    assert soft.reward == pytest.approx(0.5 * (base + 1) - 1)
    assert free.reward == pytest.approx(base)
    assert hard.violated == ("params <= 1000",)
    ok = constrained_reward(0.5, 0.9, 0.9, {"params": 999.0}, limit, epsilon=0.0)
    assert ok.reward == pytest.approx(base) and ok.violated == ()


def test_excess_sums_each_violated_row_relative_to_its_bound() -> None:
    rows = parse_constraints({"params": 20_000, "flops": 1_000})
    over_both = constrained_reward(0.5, 0.9, 0.9, {"params": 30_000.0, "flops": 1_500.0},
                                   rows, epsilon=0.0)
    assert over_both.excess == pytest.approx(0.5 + 0.5)
    over_one = constrained_reward(0.5, 0.9, 0.9, {"params": 30_000.0, "flops": 10.0}, rows)
    assert over_one.excess == pytest.approx(0.5)
    met = constrained_reward(0.5, 0.9, 0.9, {"params": 20_000.0, "flops": 1_000.0}, rows)
    assert met.excess == 0.0 and met.violated == ()
    assert constrained_reward(0.5, 0.9, 0.9, degenerate=True).excess == 0.0
    zero_bound = LinearConstraint({"params": 1.0, "flops": -1.0}, bound=0.0)
    assert zero_bound.excess({"params": 7.0, "flops": 4.0}) == pytest.approx(3 / 11)
    assert zero_bound.excess({"params": 7e6, "flops": 4e6}) == pytest.approx(3 / 11)
    accuracy_floor = LinearConstraint({"accuracy": -1.0}, bound=-0.9)
    assert accuracy_floor.excess({"accuracy": 0.45}) == pytest.approx(0.5)
    assert accuracy_floor.excess({"accuracy": 0.95}) == 0.0
    latency = LinearConstraint.upper_bound("latency_ms", 2.0)
    assert latency.excess({"latency_ms": 3.0}) == pytest.approx(0.5)
    assert latency.excess({"latency_ms": float("nan")}) == math.inf


def test_general_linear_constraint_rows() -> None:
    row = LinearConstraint({"params": 1.0, "flops": 0.5}, bound=100.0)
    assert row.satisfied({"params": 50, "flops": 100})
    assert not row.satisfied({"params": 51, "flops": 100})
    with pytest.raises(ValueError, match="latency"):
        LinearConstraint.upper_bound("latency", 1.0).satisfied({"params": 1})
    with pytest.raises(TypeError):
        parse_constraints([("params", 1)])  # type: ignore[list-item]


def test_epsilon_schedule_falls_monotonically_from_one_to_zero() -> None:
    schedule = EpsilonSchedule(anneal_episodes=4)
    values = []
    for _ in range(7):
        values.append(schedule.epsilon)
        schedule.step()
    assert values == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0]
    assert EpsilonSchedule(0).epsilon == 0.0
    with pytest.raises(ValueError):
        EpsilonSchedule(-1)
