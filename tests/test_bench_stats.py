"""The statistics of `n2n bench rl`, against cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from n2n_env.bench import stats


def test_iqm_trims_a_quarter_at_each_end():
    assert stats.iqm(np.arange(1, 9)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert stats.iqm([0.0, 1.0, 2.0, 100.0]) == pytest.approx(1.5)  # the outlier is trimmed


def test_probability_of_improvement_counts_pairs_and_half_ties():
    # pairs (1,1) tie, (1,0) win, (2,1) win, (2,0) win: (3 + 0.5) / 4
    assert stats.probability_of_improvement([1, 2], [1, 0]) == pytest.approx(0.875)
    assert stats.probability_of_improvement([0, 0], [1, 1]) == 0.0
    assert stats.probability_of_improvement([3, 3], [3, 3]) == 0.5


def test_intervals_contain_their_point_and_are_reproducible():
    rng = np.random.default_rng(0)
    values = rng.normal(size=20)
    interval = stats.iqm_interval(values)
    assert interval.low <= interval.point <= interval.high
    assert interval == stats.iqm_interval(values)
    assert interval.high - interval.low < 2.0
    other = stats.improvement_interval(values + 10, values)
    assert other.point == 1.0 and other.low == 1.0
    assert not other.overlaps(stats.Interval(0.5, 0.4, 0.6))


def test_constant_runs_give_a_point_interval():
    assert stats.iqm_interval([0.0] * 5) == stats.Interval(0.0, 0.0, 0.0)
    assert stats.improvement_interval([1.0, 1.0], [1.0, 1.0]) == stats.Interval(0.5, 0.5, 0.5)


def test_one_run_gives_no_interval_and_cannot_be_told_apart():
    """scipy's bootstrap refuses a sample of one, and a zero-width interval would claim a
    certainty that one run cannot give: the estimate stands alone."""
    alone = stats.iqm_interval([0.25])
    assert alone == stats.Interval(0.25, None, None)
    assert str(alone) == "0.2500 [no interval: one run]"
    improvement = stats.improvement_interval([2.0], [1.0, 3.0, 0.0])
    assert improvement.point == pytest.approx(2 / 3) and improvement.low is None
    assert alone.overlaps(stats.Interval(0.9, 0.8, 1.0))
    assert stats.Interval(0.9, 0.8, 1.0).overlaps(alone)


def test_interval_width_shrinks_with_more_runs():
    rng = np.random.default_rng(1)
    few = stats.iqm_interval(rng.normal(size=5))
    many = stats.iqm_interval(rng.normal(size=200))
    assert many.high - many.low < few.high - few.low


def test_performance_profile_is_the_fraction_above_each_threshold():
    profile = stats.performance_profile([0.1, 0.5, 0.9], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(profile, [1.0, 1 / 3, 0.0])


def test_band_of_curves():
    curves = np.array([[3.0, 2.0, 1.0], [3.0, 1.0, 0.0], [4.0, 2.0, 0.0], [3.0, 3.0, 1.0]])
    center, low, high = stats.iqm_band(curves)
    np.testing.assert_allclose(center, [3.0, 2.0, 0.5])
    assert (low <= center).all() and (center <= high).all()


@pytest.mark.parametrize("values", [[], [1.0, float("nan")]])
def test_bad_runs_are_refused(values):
    with pytest.raises(ValueError, match=r"no runs|finite"):
        stats.iqm_interval(values)
