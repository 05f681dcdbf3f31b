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
