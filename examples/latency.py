"""Compress under a latency budget: latency as the reward's compression and as a constraint.

Compresses conv4 on digits with both stages of N2N, each searched by the paper's REINFORCE
agent, with ``compression_metric="latency"`` (C = 1 - latency(student)/latency(teacher))
and the constraint ``latency_ms <= budget``. Latency is estimated as NetAdapt does: the sum
of the student's layers' latencies, each layer shape timed once (the median of repeated
runs at batch size 1, one CPU thread by default) and kept in a per-layer table on disk
(``$N2N_HOME/latency.sqlite``), so a shape timed once is never timed again, in this run or
a later one. The budget is a fraction of the teacher's estimated latency (``--budget``,
default 0.5), since milliseconds depend on the machine; ``--max-latency-ms`` fixes it.

AMC's action wall is on (``--no-action-wall`` turns it off): the mask forbids the actions
after which even the most favourable rest of the episode could not meet the budget, so
the agent does not waste students over it; the paper's annealed penalty eps_t (R + 1) - 1
still applies to any student over budget. The example prints, per iteration, eps_t, the
share of masked actions, the students over budget and the mean latency; then the best
student within budget is fine-tuned, and its latency is timed again as a whole model (the
per-layer estimate leaves out the model's own per-call overhead, docs/benchmarks.md).

Run: ``python examples/latency.py``: 10 iterations of 5 students per stage with real
distillation, then 50 epochs of fine-tuning; a few minutes on 2 CPU cores (the first run
also fills the latency table and trains the teacher). ``--evaluator mock`` makes the
accuracies instant and NOT REAL (the latencies stay real).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import n2n_env  # noqa: F401  (registers N2NRemoval-v0 and N2NShrink-v0)
from agents.reinforce import Reinforce, ReinforceConfig
from n2n_env import data as data_mod
from n2n_env.arch import Architecture
from n2n_env.env_factory import make_evaluator
from n2n_env.finetune import finetune
from n2n_env.latency import LatencyEvaluator, LatencySettings
from n2n_env.latency_timing import time_model
from n2n_env.recipes import recipe_for
from n2n_env.teacher import get_teacher

TEACHER = "conv4"
DATASET = "digits"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.5,
                        help="latency budget as a fraction of the teacher's (default 0.5)")
    parser.add_argument("--max-latency-ms", type=float, default=None,
                        help="latency budget in milliseconds (overrides --budget)")
    parser.add_argument("--iterations", type=int, default=10,
                        help="policy updates of 5 students per stage (default 10)")
    parser.add_argument("--no-action-wall", action="store_true",
                        help="no action wall: only the annealed penalty keeps the budget")
    parser.add_argument("--latency-device", default=None,
                        help="cpu, cuda or cuda:N (default: the evaluation device)")
    parser.add_argument("--latency-batch-size", type=int, default=1,
                        help="images per timed forward call (default 1)")
    parser.add_argument("--latency-repeats", type=int, default=20,
                        help="timed samples per layer shape, median kept (default 20)")
    parser.add_argument("--finetune-epochs", type=int, default=None,
                        help="epochs of the final training (default: the teacher recipe's, 50)")
    parser.add_argument("--evaluator", choices=("distill", "mock"), default="distill",
                        help="distill (default, real training) or mock (instant, NOT REAL)")
    parser.add_argument("--out", default=None,
                        help="run directory (default n2n-runs/latency-<time>)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def search(env: gym.Env, iterations: int, seed: int) -> list[dict[str, Any]]:
    """REINFORCE on ``env``, one line per iteration; the terminal info of every student."""
    agent = Reinforce.for_env(env, ReinforceConfig(seed=seed))
    infos: list[dict[str, Any]] = []
    print(f"  {'iter':>4}  {'eps_t':<9}  {'masked':>6}  {'over budget':>11}  "
          f"{'mean latency':>12}  {'mean reward':>11}")
    for iteration in range(1, iterations + 1):
        batch = [agent.rollout(env) for _ in range(agent.config.rollouts_per_update)]
        agent.update(batch)
        infos.extend(episode.info for episode in batch)
        rewards = [episode.info["rewards"] for episode in batch]
        masks = torch.cat([episode.masks for episode in batch])
        masked = 1.0 - masks.float().mean().item()
        latencies = [info["latency_ms"] for info in (e.info for e in batch)
                     if "latency_ms" in info]
        print(f"  {iteration:>4}  {rewards[0]['epsilon']:.2f}-{rewards[-1]['epsilon']:.2f}  "
              f"{masked:>6.1%}  {sum(bool(r['violated']) for r in rewards):>9}/5  "
              f"{np.mean(latencies) if latencies else float('nan'):>9.3f} ms  "
              f"{np.mean([e.reward for e in batch]):>+11.3f}", flush=True)
    return infos


def best_within_budget(infos: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best-rewarded student that is valid and within budget, if any."""
    within = [i for i in infos if i["degenerate_reason"] is None and not i["rewards"]["violated"]]
    return max(within, key=lambda i: i["rewards"]["reward"]) if within else None


def measured_ms(arch: Architecture, evaluator: LatencyEvaluator) -> float:
    """The whole model's latency under the evaluator's timing setup (median of samples)."""
    return statistics.median(time_model(arch, evaluator.meter.setup))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started = time.perf_counter()
    out = Path(args.out or f"n2n-runs/latency-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    teacher_model, record = get_teacher(TEACHER, DATASET, progress=not args.no_progress)
    latency = LatencySettings(device=args.latency_device, batch_size=args.latency_batch_size,
                              repeats=args.latency_repeats)
    evaluator = make_evaluator(TEACHER, DATASET, evaluator=args.evaluator,
                               cache=out / "rewards.sqlite", latency=latency)
    assert isinstance(evaluator, LatencyEvaluator)
    teacher_ms = evaluator.teacher_latency_ms
    budget = args.max_latency_ms or args.budget * teacher_ms
    anneal = 5 * (args.iterations // 2)
    options: dict[str, Any] = {
        "evaluator": evaluator, "compression_metric": "latency",
        "constraints": {"latency_ms": budget}, "anneal_episodes": anneal,
        "action_wall": not args.no_action_wall}
    print(f"teacher {TEACHER} on {DATASET}: {teacher_ms:.3f} ms estimated "
          f"({evaluator.meter.conditions['device']}, batch {latency.batch_size}); constraint "
          f"latency_ms <= {budget:.3f}; action wall {'on' if options['action_wall'] else 'off'}")
    if args.evaluator == "mock":
        print("accuracies: MOCK evaluator, instant and NOT REAL; latencies are timed for real")

    print("stage 1, layer removal:")
    removal = search(gym.make("N2NRemoval-v0", **options), args.iterations, args.seed)
    start = best_within_budget(removal)
    start_arch = (Architecture.from_json(start["architecture"]) if start
                  else record.architecture)
    print(f"stage 2, layer shrinkage, from a stage-1 student of "
          f"{evaluator.latency_ms(start_arch):.3f} ms:")
    shrink = search(gym.make("N2NShrink-v0", start=start_arch, **options), args.iterations,
                    args.seed)
    final = best_within_budget(shrink + removal)
    student = Architecture.from_json(final["architecture"]) if final else start_arch
    evaluator.close()

    data = data_mod.load(DATASET)
    recipe = recipe_for(DATASET)
    if args.finetune_epochs is not None:
        recipe = recipe.with_epochs(args.finetune_epochs)
    trained = finetune(student, teacher_model, data, recipe, seed=args.seed,
                       progress=not args.no_progress)
    (out / "student.json").write_text(student.to_json())
    estimate = evaluator.latency_ms(student)
    rows = [("Model", "Acc.", "#Params", "Latency (est.)", "Latency (whole)", "Constr."),
            (f"Teacher ({DATASET}/{TEACHER})", f"{100 * record.test_accuracy:.2f}%",
             f"{record.architecture.num_params():,}", f"{teacher_ms:.3f} ms",
             f"{measured_ms(record.architecture, evaluator):.3f} ms", "N/A"),
            ("Student (Stage 1 & 2)", f"{100 * trained.test_accuracy:.2f}%",
             f"{student.num_params():,}", f"{estimate:.3f} ms",
             f"{measured_ms(student, evaluator):.3f} ms", f"{budget:.3f} ms")]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                    for row in rows))
    met = final is not None and estimate <= budget
    print(f"latency budget {'met' if met else 'NOT met'}: {estimate:.3f} ms estimated, "
          f"budget {budget:.3f} ms, {teacher_ms / estimate:.2f}x faster than the teacher")
    print(f"wall time: {time.perf_counter() - started:.1f} s")
    print(f"run dir:   {out}")
    return {"met": met, "budget": budget, "student": student, "estimate": estimate}


if __name__ == "__main__":
    main()
