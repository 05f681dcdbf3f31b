"""The baselines REINFORCE scores its episodes against (``agents.reinforce``).

A terminal reward R says nothing about whether an episode was good until it is compared
with a baseline b; the gradient then weights each episode by its advantage R - b.

- :func:`advantages` with :func:`update_baseline`: the paper's baseline, an exponential
  moving average of the batch mean rewards (section 3.4). The policy climbs towards the
  students that are better than its average.
- :func:`risk_seeking_advantages`: risk-seeking policy gradient (Petersen et al., ICLR
  2021). b is a high quantile of the recent rewards and only the episodes above it count,
  so the policy climbs towards the best students it has seen.
"""

from __future__ import annotations

import numpy as np


def advantages(rewards: list[float], baseline: float | None) -> np.ndarray:
    """R_k - b for a batch, b the baseline from *earlier* batches.

    The first batch has no earlier batches; each of its rollouts is scored against the
    mean of the *other* rollouts (leave-one-out), which is also independent of its reward.
    """
    r = np.asarray(rewards, np.float64)
    if baseline is not None:
        return r - baseline
    if len(r) == 1:
        return r.copy()
    return r - (r.sum() - r) / (len(r) - 1)


def risk_seeking_advantages(rewards: list[float], recent: list[float],
                            epsilon: float) -> np.ndarray:
    """max(R_k - q, 0) for a batch, q the (1 - epsilon) quantile of the ``recent`` rewards:
    episodes below the quantile get no gradient, those above are pushed up by how far they
    exceed it (risk-seeking policy gradient, Petersen et al., ICLR 2021)."""
    threshold = float(np.quantile(np.asarray(recent, np.float64), 1.0 - epsilon))
    return np.maximum(np.asarray(rewards, np.float64) - threshold, 0.0)


def update_baseline(baseline: float | None, rewards: list[float], decay: float) -> float:
    """The EMA baseline after a batch: the batch mean at first, then
    decay * b + (1 - decay) * mean(rewards)."""
    mean = float(np.mean(rewards))
    return mean if baseline is None else decay * baseline + (1.0 - decay) * mean
