"""The learnt policy against random search (``n2n_env.paper.versus``). Its numbers in a
whole table are checked in test_paper.py, on Table 1's tiny run."""

from __future__ import annotations

from pathlib import Path

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
    means = [float(i) for i in range(1, 13)]  # 12 iterations: the last 10 are 3..12
    with_curves = {"result": {"stages": {"removal": {"best_reward": 0.9}},
                              "curves": {"removal": {"reward_mean": means}}}}
    without = {"result": {"stages": {"removal": {"best_reward": 0.8}}}}
    states = [runner.UnitState(unit, "done", with_curves if unit.label == "reinforce"
                               else without) for unit in searches]
    assert versus.scores(states, "late") == {"reinforce": {"removal": [(0, 7.5)]}}
    assert versus.scores(states, "best") == {"reinforce": {"removal": [(0, 0.9)]},
                                             "random": {"removal": [(0, 0.8)]}}
    text = "\n".join(versus.section(states))
    assert "| Best reward, stage 1 (removal) | REINFORCE | s0: 0.9000 |" in text
    assert "| Mean reward, last 10" not in text  # random search kept no curves

