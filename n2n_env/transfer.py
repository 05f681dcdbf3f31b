"""Transfer of a layer-removal policy to another teacher (paper section 4.6, Table 5).

The paper pre-trains the removal policy on one teacher, then lets it continue learning on
another and compares it, over the first 10 policy updates, with a policy that starts from
scratch on that teacher: mean reward, mean compression and mean accuracy of the students
sampled. The REINFORCE policy's parameters do not depend on the number of layers, so a
policy trained on VGG-11 decides every layer of VGG-19.

This module is that experiment's reusable part: :func:`removal_env` makes the stage-1
environment of a teacher, :func:`pretrain` trains a fresh policy on it,
:func:`load_pretrained` reads a saved policy back for another teacher, :func:`learn` runs
policy updates, :func:`summarize` turns the students sampled into a :class:`TransferRow`
and :func:`table` prints rows as Table 5 does. ``examples/transfer.py`` and the Table 5
command (``n2n paper 5``) both use it. It is driver code: it imports the agents and the
environments.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np

import n2n_env  # noqa: F401  (registers N2NRemoval-v0)
from agents.reinforce import Episode, Reinforce, ReinforceConfig

__all__ = ["TransferRow", "learn", "load_pretrained", "pretrain", "removal_env", "scratch",
           "summarize", "table"]

Report = Callable[[str], None]
"""Where :func:`learn` sends its progress lines (``print``, a logger, ...)."""


@dataclass(frozen=True)
class TransferRow:
    """One row of Table 5: means over the students of the compared iterations."""

    name: str
    reward: float
    compression: float
    """Mean C = 1 - params(student)/params(teacher), a student larger than the teacher
    counted as 0 (as the reward clips it)."""
    accuracy: float
    """Mean validation accuracy the environment reported (0 for degenerate students)."""
    degenerate: int
    """Students the environment refused (empty, too large a classifier, ...)."""
    students: int
    decisions: tuple[int, ...]
    """The distinct numbers of decisions per episode (one per teacher layer)."""
    iteration_rewards: tuple[float, ...] = ()
    """Mean reward of each policy update, in order."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        values = asdict(self)
        values["decisions"] = list(self.decisions)
        values["iteration_rewards"] = list(self.iteration_rewards)
        return values


def removal_env(teacher: str | os.PathLike[str], dataset: str, *,
                data_root: str | os.PathLike[str] | None = None, teacher_width: float = 1.0,
                evaluator: str = "distill", seed: int = 0,
                cache: str | os.PathLike[str] | None = None) -> gym.Env:
    """``N2NRemoval-v0`` for ``teacher`` (a zoo name, trained on first use, or a teacher
    checkpoint ``.pt``) on ``dataset``; candidates are distilled with seed ``seed`` and
    their rewards kept in the SQLite file ``cache`` (None: no cache)."""
    evaluator_kwargs = {"seed": seed} if evaluator == "distill" else None
    return gym.make("N2NRemoval-v0", teacher=os.fspath(teacher), dataset=dataset,
                    data_root=data_root, teacher_width=teacher_width, evaluator=evaluator,
                    evaluator_kwargs=evaluator_kwargs,
                    cache=None if cache is None else os.fspath(cache))


def learn(agent: Reinforce, env: gym.Env, iterations: int, *, report_every: int = 0,
          report: Report = print) -> list[Episode]:
    """``iterations`` REINFORCE updates of m rollouts each; every episode, in order. With
    ``report_every``, send the mean reward of every block of that many iterations to
    ``report``."""
    episodes: list[Episode] = []
    first_unreported = 1
    for iteration in range(1, iterations + 1):
        batch = [agent.rollout(env) for _ in range(agent.config.rollouts_per_update)]
        agent.update(batch)
        episodes.extend(batch)
        if report_every and (iteration % report_every == 0 or iteration == iterations):
            block = episodes[(first_unreported - 1) * len(batch):]
            report(f"  iterations {first_unreported:3d}-{iteration:3d}: mean reward "
                   f"{np.mean([e.reward for e in block]):+.3f}")
            first_unreported = iteration + 1
    return episodes


def pretrain(env: gym.Env, iterations: int, *, seed: int = 0, report_every: int = 0,
             report: Report = print) -> tuple[Reinforce, list[Episode]]:
    """A fresh REINFORCE removal policy (seed ``seed``) after ``iterations`` updates on
    ``env`` (the pre-trained policy of Table 5, to be saved with ``Reinforce.save``), and
    the episodes it played."""
    agent = Reinforce.for_env(env, ReinforceConfig(seed=seed))
    episodes = learn(agent, env, iterations, report_every=report_every, report=report)
    return agent, episodes


def load_pretrained(path: str | os.PathLike[str]) -> Reinforce:
    """The policy saved at ``path``, ready to continue on another teacher: its baseline
    and best student, which belong to the teacher it was trained on, are dropped."""
    agent = Reinforce.load(path)
    agent.forget_rewards()
    return agent


def scratch(env: gym.Env, *, seed: int = 0) -> Reinforce:
    """A fresh policy for ``env`` with the same seed as the pre-trained one (so the same
    initial sampling stream: the only difference is the pre-training)."""
    return Reinforce.for_env(env, ReinforceConfig(seed=seed))


def summarize(name: str, episodes: Sequence[Episode], per_update: int = 0) -> TransferRow:
    """The row of ``episodes``; with ``per_update`` (episodes per policy update), also the
    mean reward of each update."""
    rewards = [e.reward for e in episodes]
    updates = (tuple(float(np.mean(rewards[i:i + per_update]))
                     for i in range(0, len(rewards), per_update)) if per_update else ())
    return TransferRow(
        name=name,
        reward=float(np.mean(rewards)),
        compression=float(np.mean([max(0.0, e.info["compression"]) for e in episodes])),
        accuracy=float(np.mean([e.info["accuracy"] for e in episodes])),
        degenerate=sum(e.info["degenerate_reason"] is not None for e in episodes),
        students=len(episodes),
        decisions=tuple(sorted({len(e.actions) for e in episodes})),
        iteration_rewards=updates,
    )


def table(rows: Sequence[TransferRow]) -> str:
    """Table 5's columns (Reward, Comp., Acc.) plus the count of degenerate students."""
    cells = [("", "Reward", "Comp.", "Acc.", "Degenerate")] + [
        (r.name, f"{r.reward:.2f}", f"{100 * r.compression:.1f}%", f"{100 * r.accuracy:.1f}%",
         f"{r.degenerate}/{r.students}") for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in cells)
