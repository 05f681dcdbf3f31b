"""Checks for values entering through a public API, each raising one clear error.

Every public entry point (``gym.make`` keyword arguments, recipes, constraints, zoo
arguments, checkpoint contents) checks its input with these helpers where it is given, so
a bad value fails at once with a message naming the argument, the value and what is
allowed, instead of later (after a teacher has trained) or not at all. A value of the
wrong type raises ``TypeError``, one out of range ``ValueError``. Pure Python.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any


def integer(name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` as an int (numpy integers too; never a bool or a float), at least
    ``minimum`` if given."""
    what = "an integer" if minimum is None else f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def number(name: str, value: Any, *, above: float | None = None,
           at_least: float | None = None, at_most: float | None = None) -> float:
    """``value`` as a finite float (never a bool or text), within the given bounds."""
    limits = [f"> {above:g}" if above is not None else "",
              f">= {at_least:g}" if at_least is not None else "",
              f"<= {at_most:g}" if at_most is not None else ""]
    what = " and ".join(limit for limit in limits if limit)
    what = f"a finite number {what}".rstrip()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    result = float(value)
    if (not math.isfinite(result) or (above is not None and not result > above)
            or (at_least is not None and not result >= at_least)
            or (at_most is not None and not result <= at_most)):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return result


def flag(name: str, value: Any) -> bool:
    """``value`` if it is a bool (numpy's too)."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    """``value`` if it is one of ``allowed``."""
    options = tuple(allowed)
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, "
                         f"got {value!r}")
    return value


def known_keys(name: str, given: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse keys of ``given`` outside ``allowed`` (a misspelt option is never ignored)."""
    if not isinstance(given, Mapping):
        raise TypeError(f"{name} must be a dict, got {given!r}")
    options = sorted(allowed)
    unknown = sorted(str(key) for key in given if key not in options)
    if unknown:
        raise ValueError(f"unknown {name} {unknown}; allowed: {', '.join(options)}")
