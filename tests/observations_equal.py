"""Deep equality of what environments return, shared by the environment tests. Not a test
module."""

from __future__ import annotations

from typing import Any

import numpy as np


def same(first: Any, second: Any) -> bool:
    """Deep equality of observations/infos (dicts, arrays, floats, strings): arrays must match
    in dtype and values, everything else in type and value."""
    if isinstance(first, dict):
        return first.keys() == second.keys() and all(same(first[k], second[k]) for k in first)
    if isinstance(first, np.ndarray):
        return first.dtype == second.dtype and np.array_equal(first, second)
    return type(first) is type(second) and first == second
