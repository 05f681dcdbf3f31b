"""Compress under a hard parameter budget (paper 3.3.1 and 4.5, Table 4).

Compresses conv4 on digits (374,858 parameters) with both stages of N2N, each searched by
the paper's REINFORCE agent, under the constraint ``params <= 20,000`` (the paper's MNIST
budget in Table 4; an unconstrained ``n2n compress`` finds a student of 19,438
parameters, docs/results.md). The constraint enters the reward as in section 3.3.1: a
student over the budget gets ``eps_t (R + 1) - 1`` instead of ``R``, with ``eps_t``
annealed from 1 (over budget costs nothing, so the policy can explore) to 0 (over budget
is as bad as a degenerate network, -1) during the first half of each stage; the example
prints eps_t, the number of students over budget and the mean rewards per iteration.
The best student within budget is fine-tuned and reported in Table 4's columns.

Run: ``python examples/constraints.py``: 15 iterations of 5 students per stage with real
distillation, then 50 epochs of fine-tuning; 1.2 minutes on 2 CPU cores, plus about 12 s to
train and cache the teacher on first use. ``--max-params``, ``--iterations`` and
``--anneal-iterations`` change the budget and the schedule; ``--evaluator mock`` is
instant and NOT REAL.

What we measured (seed 0): in stage 1 almost every student removal alone can reach is
over budget; while eps_t > 0 they still earn part of their reward, after that -1, and the
best student within budget has 11,020 parameters. Stage 2 shrinks it, so every stage-2
student is within budget too; the best has 9,988 parameters. Fine-tuned: 99.16% test
accuracy against the teacher's 99.44%, 37.5x smaller, constraint met.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import n2n_env  # noqa: F401  (registers N2NRemoval-v0 and N2NShrink-v0)
from agents.reinforce import Episode, Reinforce, ReinforceConfig
from n2n_env import data as data_mod
from n2n_env.arch import Architecture
from n2n_env.finetune import finetune
from n2n_env.recipes import recipe_for
from n2n_env.teacher import get_teacher

TEACHER = "conv4"
DATASET = "digits"


@dataclass(frozen=True)
class Candidate:
    """A scored student: its architecture and the reward before any constraint penalty."""

    architecture: Architecture
    unconstrained_reward: float
    valid: bool
    """Neither degenerate nor failed in training."""
    within_budget: bool


@dataclass(frozen=True)
class ConstrainedResult:
    """What the example found: the final student and whether it meets the budget."""

    teacher_params: int
    teacher_accuracy: float
    student: Architecture
    student_accuracy: float
    max_params: int
    met: bool
    out: Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-params", type=int, default=20_000,
                        help="upper bound on the student's parameters (default 20000)")
    parser.add_argument("--iterations", type=int, default=15,
                        help="policy updates of 5 students per stage (default 15)")
    parser.add_argument("--anneal-iterations", type=int, default=None,
                        help="iterations over which eps_t falls from 1 to 0, per stage "
                             "(default: half of --iterations; 0: hard from the start)")
    parser.add_argument("--finetune-epochs", type=int, default=None,
                        help="epochs of the final training (default: the teacher recipe's, 50)")
    parser.add_argument("--evaluator", choices=("distill", "mock"), default="distill",
                        help="distill (default, real training) or mock (instant, NOT REAL)")
    parser.add_argument("--out", default=None,
                        help="run directory (default n2n-runs/constraints-<time>)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def search(env: gym.Env, iterations: int, seed: int) -> list[Candidate]:
    """REINFORCE on ``env``, printing eps_t and the budget per iteration; every student."""
    agent = Reinforce.for_env(env, ReinforceConfig(seed=seed))
    candidates: list[Candidate] = []
    print(f"  {'iter':>4}  {'eps_t':<9}  {'over budget':>11}  {'degenerate':>10}  "
          f"{'mean reward':>11}  {'without penalty':>15}")
    for iteration in range(1, iterations + 1):
        batch = [agent.rollout(env) for _ in range(agent.config.rollouts_per_update)]
        agent.update(batch)
        candidates.extend(candidate(episode) for episode in batch)
        breakdowns = [episode.info["rewards"] for episode in batch]
        epsilons = f"{breakdowns[0]['epsilon']:.2f}-{breakdowns[-1]['epsilon']:.2f}"
        over = f"{sum(bool(b['violated']) for b in breakdowns)}/{len(batch)}"
        degenerate = f"{sum(b['degenerate'] for b in breakdowns)}/{len(batch)}"
        mean_reward = np.mean([episode.reward for episode in batch])
        without_penalty = np.mean([b["unconstrained"] for b in breakdowns])
        print(f"  {iteration:>4}  {epsilons:<9}  {over:>11}  {degenerate:>10}  "
              f"{mean_reward:>+11.3f}  {without_penalty:>+15.3f}", flush=True)
    env.close()
    return candidates


def candidate(episode: Episode) -> Candidate:
    rewards: dict[str, Any] = episode.info["rewards"]
    valid = not rewards["degenerate"]
    return Candidate(Architecture.from_json(episode.info["architecture"]),
                     rewards["unconstrained"], valid, valid and not rewards["violated"])


def best(candidates: list[Candidate]) -> Candidate | None:
    """The best student within budget by reward; if there is none, the best valid student
    by its reward without the penalty (it is over budget); None if all are degenerate."""
    within = [c for c in candidates if c.within_budget]
    valid = [c for c in candidates if c.valid]
    pool = within or valid
    return max(pool, key=lambda c: c.unconstrained_reward) if pool else None


def compress_within_budget(args: argparse.Namespace, out: Path) -> ConstrainedResult:
    anneal = args.iterations // 2 if args.anneal_iterations is None else args.anneal_iterations
    env_kwargs: dict[str, Any] = {
        "teacher": TEACHER, "dataset": DATASET, "evaluator": args.evaluator,
        "constraints": {"params": args.max_params}, "anneal_episodes": 5 * anneal,
        "cache": out / "rewards.sqlite"}
    if args.evaluator == "distill":
        env_kwargs["evaluator_kwargs"] = {"seed": args.seed}
    teacher_model, record = get_teacher(TEACHER, DATASET, progress=not args.no_progress)
    teacher_params = record.architecture.num_params()
    print(f"teacher {TEACHER} on {DATASET}: {teacher_params:,} parameters; constraint "
          f"params <= {args.max_params:,}; eps_t annealed over {anneal} of {args.iterations} "
          f"iterations per stage")
    if args.evaluator == "mock":
        print("rewards: MOCK evaluator, instant and NOT REAL; the final accuracies come from "
              "real fine-tuning")

    print("stage 1, layer removal:")
    removal = search(gym.make("N2NRemoval-v0", **env_kwargs), args.iterations, args.seed)
    start = best(removal)
    if start is None:
        raise SystemExit("stage 1 found only degenerate students; try more --iterations")
    print(f"stage 2, layer shrinkage, from a stage-1 student of "
          f"{start.architecture.num_params():,} parameters "
          f"({'within' if start.within_budget else 'over'} budget):")
    shrink = search(gym.make("N2NShrink-v0", start=start.architecture, **env_kwargs),
                    args.iterations, args.seed)
    final = best(shrink + removal)
    assert final is not None  # the stage-1 start itself is valid
    met = final.architecture.num_params() <= args.max_params

    data = data_mod.load(DATASET)
    recipe = recipe_for(DATASET)
    if args.finetune_epochs is not None:
        recipe = recipe.with_epochs(args.finetune_epochs)
    trained = finetune(final.architecture, teacher_model, data, recipe, seed=args.seed,
                       progress=not args.no_progress)
    torch.save({k: v.cpu() for k, v in trained.model.state_dict().items()}, out / "student.pt")
    (out / "student.json").write_text(final.architecture.to_json())
    return ConstrainedResult(teacher_params, record.test_accuracy, final.architecture,
                             trained.test_accuracy, args.max_params, met, out)


def table(result: ConstrainedResult) -> str:
    """Table 4's columns: Model, Acc., #Params, Compr., Constr."""
    params = result.student.num_params()
    cells = [("Model", "Acc.", "#Params", "Compr.", "Constr."),
             (f"Teacher ({DATASET}/{TEACHER})", f"{100 * result.teacher_accuracy:.2f}%",
              f"{result.teacher_params:,}", "1x", "N/A"),
             ("Student (Stage 1 & 2)", f"{100 * result.student_accuracy:.2f}%", f"{params:,}",
              f"{result.teacher_params / params:.1f}x",
              f"{result.max_params:,}" + ("" if result.met else " (NOT met)"))]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in cells)


def main(argv: list[str] | None = None) -> ConstrainedResult:
    args = parse_args(argv)
    started = time.perf_counter()
    out = Path(args.out or f"n2n-runs/constraints-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    result = compress_within_budget(args, out)
    print(table(result))
    params = result.student.num_params()
    if result.met:
        print(f"constraint met: {params:,} <= {result.max_params:,} parameters")
    else:
        print(f"constraint NOT met: no student within {result.max_params:,} parameters was "
              f"found; the best one has {params:,} (try more --iterations)")
    print(f"wall time: {time.perf_counter() - started:.1f} s")
    print(f"run dir:   {out}")
    return result


if __name__ == "__main__":
    main()
