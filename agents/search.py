"""What every search shares: the paper's batch of m episodes per update, and the best
student found so far.

The paper (Algorithm 1) samples m = 5 students per policy update. Every agent, the
driver's iteration count and the reported metrics use :data:`EPISODES_PER_UPDATE`, so
an iteration means the same work whichever agent runs. :class:`BestStudent` is the one
rule for which student a search reports: the highest reward among valid students that
meet every constraint.
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
