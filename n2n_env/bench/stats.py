"""Statistics for comparing RL agents over seeds, after Agarwal et al. (2021), "Deep RL at
the Edge of the Statistical Precipice" (the methods of the ``rliable`` library):

* the interquartile mean (IQM): the mean of the middle 50% of runs, robust to outlier
  seeds yet far less noisy than the median;
* percentile-bootstrap 95% confidence intervals over runs;
* the probability of improvement P(X > Y): the chance that a run of one agent beats a run
  of another (the Mann-Whitney U statistic over all pairs, ties counting one half);
* performance profiles: the fraction of runs whose score exceeds each threshold.

Built on ``scipy.stats`` (``trim_mean``, ``bootstrap``, ``mannwhitneyu``) rather than on
``rliable`` itself, which would bring arch, statsmodels, pandas and seaborn for the same
few estimators.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval; ``low`` and ``high`` are None when
    there is no interval (a sample of one run, which no bootstrap can resample)."""

    point: float
    low: float | None
    high: float | None

    def overlaps(self, other: Interval) -> bool:
        """Whether the two intervals share a value; without an interval, the estimates
        cannot be told apart, so they count as overlapping."""
        if None in (self.low, self.high, other.low, other.high):
            return True
        return self.low <= other.high and other.low <= self.high  # type: ignore[operator]

    def __str__(self) -> str:
        if self.low is None or self.high is None:
            return f"{self.point:.4f} [no interval: one run]"
        return f"{self.point:.4f} [{self.low:.4f}, {self.high:.4f}]"


def iqm(values: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Interquartile mean along ``axis``: the mean after trimming 25% at each end."""
    return stats.trim_mean(np.asarray(values, dtype=np.float64), 0.25, axis=axis)


def iqm_interval(values: np.ndarray, confidence: float = CONFIDENCE,
                 resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """The IQM of ``values`` (one per run) with a percentile-bootstrap interval."""
    values = _runs(values)
    point = float(iqm(values))
    if len(values) < 2:
        return Interval(point, None, None)
    if np.ptp(values) == 0:
        return Interval(point, point, point)
    result = stats.bootstrap((values,), iqm, confidence_level=confidence,
                             n_resamples=resamples, method="percentile", vectorized=True,
                             random_state=np.random.default_rng(seed))
    return Interval(point, float(result.confidence_interval.low),
                    float(result.confidence_interval.high))


def iqm_band(values: np.ndarray, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQM and bootstrap band of a curve: ``values`` is (runs, points); runs are resampled
    together, so the band belongs to whole curves."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), (resamples, len(values)))
    resampled = np.asarray(iqm(values[picks], axis=1))
    tail = (1 - confidence) / 2
    return (np.asarray(iqm(values, axis=0)), np.quantile(resampled, tail, axis=0),
            np.quantile(resampled, 1 - tail, axis=0))


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + P(X = Y) / 2 for a run X of one agent and a run Y of another."""
    x, y = _runs(x), _runs(y)
    statistic = stats.mannwhitneyu(x, y, alternative="two-sided").statistic
    return float(statistic) / (len(x) * len(y))


def improvement_interval(x: np.ndarray, y: np.ndarray, confidence: float = CONFIDENCE,
                         resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """:func:`probability_of_improvement` with a bootstrap interval (each agent's runs
    resampled independently)."""
    x, y = _runs(x), _runs(y)
    point = probability_of_improvement(x, y)
    if min(len(x), len(y)) < 2:
        return Interval(point, None, None)
    if np.ptp(np.concatenate([x, y])) == 0:
        return Interval(point, point, point)

    def statistic(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        greater = (a[..., :, None] > b[..., None, :]).mean(axis=(-2, -1))
        ties = (a[..., :, None] == b[..., None, :]).mean(axis=(-2, -1))
        return greater + 0.5 * ties

    result = stats.bootstrap((x, y), statistic, confidence_level=confidence,
                             n_resamples=resamples, method="percentile", vectorized=True,
                             paired=False, random_state=np.random.default_rng(seed))
    return Interval(point, float(result.confidence_interval.low),
                    float(result.confidence_interval.high))


def performance_profile(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The fraction of runs whose score exceeds each threshold."""
    scores = _runs(scores)
    return (scores[None, :] > np.asarray(thresholds, dtype=np.float64)[:, None]).mean(axis=1)


def _runs(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("no runs to summarise")
    if not np.isfinite(values).all():
        raise ValueError("run scores must be finite")
    return values
