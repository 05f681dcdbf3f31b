"""The rules for which student a search reports or hands on (agents/search.py)."""

from __future__ import annotations

import math

from agents.search import BestStudent, NearestStudent


def info(architecture: str, *, excess: float = 0.0, unconstrained: float = 0.5,
         degenerate: str | None = None, violated: tuple[str, ...] = ()) -> dict:
    return {"architecture": architecture, "degenerate_reason": degenerate,
            "rewards": {"excess": excess, "unconstrained": unconstrained,
                        "violated": violated}}


def test_the_nearest_student_has_the_least_excess_then_the_highest_reward() -> None:
    nearest = NearestStudent()
    assert not nearest.found and nearest.excess == math.inf
    assert nearest.offer(info("big", excess=5.0, unconstrained=0.9))
    assert nearest.offer(info("smaller", excess=2.0, unconstrained=0.1))
    assert not nearest.offer(info("bigger again", excess=3.0, unconstrained=0.99))
    assert nearest.offer(info("as small, better", excess=2.0, unconstrained=0.2))
    assert not nearest.offer(info("a tie", excess=2.0, unconstrained=0.2))
    assert (nearest.architecture, nearest.excess, nearest.unconstrained) == (
        "as small, better", 2.0, 0.2)


def test_a_degenerate_student_is_never_the_nearest() -> None:
    nearest = NearestStudent()
    assert not nearest.offer(info("empty", degenerate="no layers left"))
    assert not nearest.found


def test_a_feasible_student_is_nearer_than_any_violating_one() -> None:
    nearest, best = NearestStudent(), BestStudent()
    violating = info("over", excess=0.01, unconstrained=0.99, violated=("params <= 1",))
    assert nearest.offer(violating) and not best.offer(0.99, violating)
    assert nearest.offer(info("within", unconstrained=0.1))
    assert nearest.architecture == "within"
