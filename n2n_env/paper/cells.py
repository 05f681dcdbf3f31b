"""Table cells: a value over seeds as mean ± standard deviation, and per-seed lists.

Every function takes the values of the seeds that have finished (possibly none: the cell
reads ``pending``). One value is printed alone; several as ``mean ± std`` with the sample
standard deviation (n - 1), the seed-to-seed spread. Pure Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["PENDING", "count", "mean_std", "pct", "per_seed", "points", "ratio", "reward",
           "share"]

PENDING = "pending"
"""What a cell reads before any of its units has finished."""


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        raise ValueError("mean_std needs at least one value")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def _cell(values: Sequence[float], fmt: str, unit: str = "") -> str:
    if not values:
        return PENDING
    mean, std = mean_std(values)
    if len(values) == 1:
        return f"{mean:{fmt}}{unit}"
    return f"{mean:{fmt}} ± {std:{fmt.lstrip('+')}}{unit}"


def pct(fractions: Sequence[float]) -> str:
    """Accuracies (fractions) as ``98.91%`` or ``98.91 ± 0.12%``."""
    return _cell([100 * f for f in fractions], ".2f", "%")


def share(fractions: Sequence[float]) -> str:
    """Table 5's compression and accuracy (fractions), one decimal: ``46.0%``."""
    return _cell([100 * f for f in fractions], ".1f", "%")


def count(values: Sequence[float]) -> str:
    """Parameter counts as ``80,123`` or ``80,123 ± 5,012``."""
    return _cell(values, ",.0f")


def ratio(values: Sequence[float]) -> str:
    """Compression rates as ``125.5x`` or ``125.5 ± 8.1x``."""
    return _cell(values, ".1f", "x")


def points(values: Sequence[float]) -> str:
    """Accuracy differences in percentage points (fractions in), signed: ``-0.40``."""
    return _cell([100 * v for v in values], "+.2f")


def reward(values: Sequence[float]) -> str:
    """Mean rewards: ``0.81`` or ``0.81 ± 0.05``."""
    return _cell(values, ".2f")


def per_seed(items: Sequence[tuple[int, str]]) -> str:
    """``s0: ...; s1: ...`` (``pending`` when empty)."""
    return "; ".join(f"s{seed}: {text}" for seed, text in items) or PENDING

