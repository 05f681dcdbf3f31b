"""The learnt policy against random search (``n2n_env.paper.versus``). Its numbers in a
whole table are checked in test_paper.py, on Table 1's tiny run."""

from __future__ import annotations

from pathlib import Path

import pytest

from n2n_env.paper import runner, versus
from n2n_env.paper.plan import plan
from n2n_env.paper.settings import PaperSettings


def test_the_comparison_waits_for_both_agents(tmp_path: Path) -> None:
    settings = PaperSettings(table=1, dataset="digits", teacher="conv4", teacher_width=0.25,
                             seeds=(0,), agents=("reinforce", "random"), evaluator="mock")
    planned = plan(settings)
    searches = [unit for unit in planned if unit.kind == "compress"]
    reinforce = next(unit for unit in searches if unit.label == "reinforce")
    done = {"result": {"stages": {"removal": {"best_reward": 0.5}}}}
    states = [runner.UnitState(unit, "done", done) if unit is reinforce
              else runner.UnitState(unit, "pending") for unit in planned]
    assert versus.section(states) == []  # random search has not finished a seed
    no_student = {"result": {"stages": {"removal": {"best_reward": None}}}}
    states = [runner.UnitState(unit, "done", done if unit is reinforce else no_student)
              for unit in searches]
    assert versus.scores(states) == {"reinforce": {"removal": [(0, 0.5)]}}
    assert versus.section(states) == []  # nor found a valid student


def test_the_late_score_is_the_mean_reward_of_the_last_iterations() -> None:
    settings = PaperSettings(table=1, dataset="digits", teacher="conv4", teacher_width=0.25,
                             seeds=(0,), agents=("reinforce", "random"), evaluator="mock")
    searches = [unit for unit in plan(settings) if unit.kind == "compress"]

    def record(best: float, means: list[float | None] | None) -> dict:
        result: dict = {"stages": {"removal": {"best_reward": best}}}
        if means is not None:
            result["curves"] = {"removal": {"reward_mean": means}}
        return {"result": result}

    means = [float(i) for i in range(1, 13)]  # 12 iterations: the last 10 are 3..12
    states = [runner.UnitState(unit, "done", record(0.9, means) if unit.label == "reinforce"
                               else record(0.8, None)) for unit in searches]
    assert versus.scores(states, "late") == {"reinforce": {"removal": [(0, 7.5)]}}
    assert versus.scores(states, "best") == {"reinforce": {"removal": [(0, 0.9)]},
                                             "random": {"removal": [(0, 0.8)]}}
    text = "\n".join(versus.section(states))
    assert "| Best reward, stage 1 (removal) | REINFORCE | s0: 0.9000 |" in text
    assert "| Mean reward" not in text  # random search kept no curves
    # Random search kept 4 iterations (one without a valid student): both sides are
    # scored over their last 4, skipping the iteration that has no value.
    states = [runner.UnitState(unit, "done", record(0.9, means) if unit.label == "reinforce"
                               else record(0.8, [0.1, 0.2, None, 0.6])) for unit in searches]
    text = "\n".join(versus.section(states))
    assert ("| Mean reward, last 4 iterations, stage 1 (removal) | REINFORCE | s0: 10.5000 |"
            in text)
    assert "| s0: 0.3000 |" in text
    with pytest.raises(ValueError, match="measure must be one of"):
        versus.scores(states, "worst")  # type: ignore[arg-type]
