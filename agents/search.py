"""What every search shares: the paper's batch of m episodes per update, and the best
student found so far.

The paper (Algorithm 1) samples m = 5 students per policy update. Every agent, the
driver's iteration count and the reported metrics use :data:`EPISODES_PER_UPDATE`, so
an iteration means the same work whichever agent runs. :class:`BestStudent` is the one
rule for which student a search reports: the highest reward among valid students that
meet every constraint. :class:`NearestStudent` is what a search that found none of those
can still hand to a later stage, which may shrink it within the constraints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from agents.observations import is_feasible

EPISODES_PER_UPDATE = 5
"""m, the episodes (trained students) per policy update (paper, Algorithm 1)."""


@dataclass
class BestStudent:
    """The best feasible student seen so far: its reward and its architecture as JSON."""

    reward: float = -math.inf
    """Its reward (-inf before the first feasible student)."""
    architecture: str | None = None
    """``info["architecture"]`` of its terminal step (None before the first)."""

    def offer(self, reward: float, info: dict[str, Any]) -> bool:
        """Keep the student of this terminal ``info`` if it is feasible and beats the best
        so far; True if it was kept. Ties keep the earlier student."""
        if not is_feasible(info) or not reward > self.reward:
            return False
        self.reward, self.architecture = float(reward), info.get("architecture")
        return True

    @property
    def found(self) -> bool:
        return self.architecture is not None


@dataclass
class NearestStudent:
    """The valid student that came nearest to meeting the constraints: the least summed
    relative excess (``info["rewards"]["excess"]``), then the highest unconstrained
    reward R.

    Under tight constraints a search may meet none of them: removing layers alone cannot
    bring full-width VGG-13 under 20,000 parameters unless it keeps a single conv, which
    few samples do, and after the relaxation eps_t has annealed to 0 every over-budget
    student scores -1 alike. The shrink stage that follows can still get there, but only
    from a small enough start, which this tracker keeps.
    """

    excess: float = math.inf
    """Its summed relative excess (inf before the first valid student)."""
    unconstrained: float = -math.inf
    """Its reward R without the constraints' relaxation."""
    architecture: str | None = None
    """``info["architecture"]`` of its terminal step (None before the first)."""

    def offer(self, info: dict[str, Any]) -> bool:
        """Keep the student of this terminal ``info`` if it is valid and nearer than the
        one kept; True if it was kept. Ties keep the earlier student."""
        if info.get("degenerate_reason") is not None:
            return False
        rewards = info["rewards"]
        key = (float(rewards["excess"]), -float(rewards["unconstrained"]))
        if not key < (self.excess, -self.unconstrained):
            return False
        self.excess, self.unconstrained = key[0], -key[1]
        self.architecture = info.get("architecture")
        return True

    @property
    def found(self) -> bool:
        return self.architecture is not None
