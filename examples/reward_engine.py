"""Score random stage-1 candidates with the N2N reward, a constraint and a cache.

Uses the MockEvaluator (instant and NOT REAL) so it runs anywhere in a second; swap in
``n2n_env.distill.DistillationEvaluator(teacher_model, dataset)`` for real rewards.
Run: ``python examples/reward_engine.py``.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from n2n_env import zoo
from n2n_env.cache import CachedEvaluator
from n2n_env.evaluators import MockEvaluator
from n2n_env.reward import EpsilonSchedule, constrained_reward, parse_constraints


def main() -> None:
    teacher = zoo.get("vgg13", input_shape=(1, 28, 28), num_classes=10, width=0.25)
    constraints = parse_constraints({"params": 0.1 * teacher.num_params()})
    schedule = EpsilonSchedule(anneal_episodes=5)
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as folder:
        evaluator = CachedEvaluator(MockEvaluator(teacher, teacher_accuracy=0.99),
                                    Path(folder) / "rewards.sqlite")
        for episode in range(8):
            keep = [rng.random() < 0.5 or not removable for removable in teacher.removable()]
            result = evaluator.evaluate(teacher.remove(keep))
            reward = constrained_reward(
                result.compression, result.accuracy, evaluator.teacher_accuracy,
                result.measured(), constraints, schedule.epsilon,
                degenerate=not result.ok)
            schedule.step()
            status = "ok"
            if result.degenerate_reason is not None:
                status = f"degenerate: {result.degenerate_reason}"
            elif reward.violated:
                status = f"violates {', '.join(reward.violated)}"
            print(f"episode {episode}: C={result.compression:+.3f} A={result.accuracy:.3f} "
                  f"eps={reward.epsilon:.2f} R={reward.reward:+.3f} ({status})")
        print(f"cache: {len(evaluator)} entries, {evaluator.stats}")


if __name__ == "__main__":
    main()
