"""The pipeline under constraints: the annealed penalty, the best feasible student, and
the nearest student a stage hands on when none is feasible."""

from __future__ import annotations

import json
import sqlite3

import pytest
from pipeline_runs import (
    FAST,
    column,
    compress,
    first_run_fixture,  # noqa: F401  (the first_run fixture)
    interrupt_evaluation,
    scalars,
)

from n2n_env import pipeline
from n2n_env.arch import Architecture
from n2n_env.evaluators import MockEvaluator


def test_constraints_anneal_and_only_feasible_students_win(first_run, tmp_path, monkeypatch):
    _, checkpoint = first_run
    teacher_params = Architecture.from_json(first_run[0].rows[0].architecture).num_params()
    bound = teacher_params // 8
    kwargs = {**FAST, "iterations": 4, "constraints": {"params": bound}, "anneal_episodes": 12}
    clean = compress(str(checkpoint), tmp_path / "clean", **kwargs)
    assert all(row.params <= bound for row in clean.rows[1:])
    interrupt_evaluation(monkeypatch, 8)
    with pytest.raises(KeyboardInterrupt):
        compress(str(checkpoint), tmp_path / "run", **kwargs)
    resumed = compress(str(checkpoint), tmp_path / "run", resume=True, **kwargs)
    for stage in pipeline.STAGES:  # equal rewards: the penalty schedule resumed where it was
        assert column(tmp_path / "run" / f"metrics_{stage}.csv", "reward_mean") == column(
            tmp_path / "clean" / f"metrics_{stage}.csv", "reward_mean")
    assert resumed.student.architecture == clean.student.architecture
    settings = json.loads((tmp_path / "run" / "result.json").read_text())["config"]
    assert settings["anneal_episodes"] == 12
    default = compress(str(checkpoint), tmp_path / "default", stages=("removal",),
                                **{**kwargs, "anneal_episodes": None})
    assert json.loads((default.out / "result.json").read_text())["config"][
        "anneal_episodes"] == 10  # half of 4 iterations x 5 episodes


def test_an_impossible_constraint_keeps_the_start_and_says_so(first_run, tmp_path):
    _, checkpoint = first_run
    with pytest.warns(UserWarning, match="no valid student within the constraints"):
        result = compress(str(checkpoint), tmp_path / "run", iterations=1,
                                   stages=("removal",), constraints={"params": 1}, **FAST)
    assert result.student.architecture == result.teacher.architecture


def _valid_params(run):
    """The parameter counts of the valid students in a run's reward cache."""
    with sqlite3.connect(run / "rewards.sqlite") as db:
        rows = db.execute("SELECT evaluation_json FROM evaluations").fetchall()
    evaluations = [json.loads(row[0]) for row in rows]
    return [e["params"] for e in evaluations if e["degenerate_reason"] is None]


def test_a_stage_that_meets_no_constraint_hands_the_next_its_nearest_student(first_run,
                                                                            tmp_path):
    _, checkpoint = first_run
    kwargs = {**FAST, "iterations": 2, "constraints": {"params": 1}}
    with pytest.warns(UserWarning, match="keeping its start"):
        compress(str(checkpoint), tmp_path / "removal", stages=("removal",), **kwargs)
    with pytest.warns(UserWarning, match="the next stage starts from the nearest one"):
        both = compress(str(checkpoint), tmp_path / "both", **kwargs)
    smallest = min(_valid_params(tmp_path / "removal"))  # the same seeds: stage 1's students
    state = json.loads((tmp_path / "both" / "state.json").read_text())
    nearest = Architecture.from_json(state["stages"]["removal"]["nearest"]["architecture"])
    assert nearest.num_params() == smallest < both.rows[0].params
    assert state["stages"]["shrink"]["start"] == nearest.to_json()
    assert both.rows[1].params == smallest


def test_a_constrained_stage_saved_without_its_nearest_student_replays_from_the_cache(
        first_run, tmp_path, monkeypatch):
    _, checkpoint = first_run
    kwargs = {**FAST, "iterations": 3, "constraints": {"params": 1}, "anneal_episodes": 8}
    trained = []
    original = MockEvaluator.evaluate

    def counted(self, arch):
        trained.append(arch.signature())
        return original(self, arch)

    monkeypatch.setattr(MockEvaluator, "evaluate", counted)
    clean = compress(str(checkpoint), tmp_path / "clean", **kwargs)
    clean_trained = list(trained)
    trained.clear()
    interrupt_evaluation(monkeypatch, 8)
    with pytest.raises(KeyboardInterrupt):
        compress(str(checkpoint), tmp_path / "run", **kwargs)
    monkeypatch.setattr(MockEvaluator, "evaluate", counted)
    state_path = tmp_path / "run" / "state.json"
    state = json.loads(state_path.read_text())
    assert state["stages"]["removal"]["iteration"] >= 1
    del state["stages"]["removal"]["nearest"]  # as an earlier version saved it
    state_path.write_text(json.dumps(state))
    trained.clear()
    resumed = compress(str(checkpoint), tmp_path / "run", resume=True, **kwargs)
    assert len(trained) == len(clean_trained) - 7  # the 7 trained before the kill replay
    for stage in pipeline.STAGES:
        assert column(tmp_path / "run" / f"metrics_{stage}.csv", "reward_mean") == column(
            tmp_path / "clean" / f"metrics_{stage}.csv", "reward_mean")
    assert resumed.student.architecture == clean.student.architecture
    saved = json.loads(state_path.read_text())["stages"]["removal"]["nearest"]
    assert saved == json.loads((tmp_path / "clean" / "state.json").read_text())[
        "stages"]["removal"]["nearest"] is not None
    assert [step for step, _ in scalars(tmp_path / "run", "removal", "reward_mean")] == [
        1, 2, 3]  # the replay's events replace the first attempt's


def _plant_nearest(run, excess, choose=lambda start: start):
    """Record ``choose(start)`` as stage 1's nearest student in ``run``'s state, with
    this ``excess``; return the start and the planted student."""
    state_path = run / "state.json"
    state = json.loads(state_path.read_text())
    start = Architecture.from_json(state["stages"]["removal"]["start"])
    planted = choose(start)
    state["stages"]["removal"]["nearest"] = {"excess": excess, "unconstrained": 0.0,
                                             "architecture": planted.to_json()}
    state_path.write_text(json.dumps(state))
    return start, planted


def test_a_resumed_stage_keeps_the_nearest_student_found_before(first_run, tmp_path):
    _, checkpoint = first_run
    kwargs = {**FAST, "constraints": {"params": 1}}
    with pytest.warns(UserWarning):
        compress(str(checkpoint), tmp_path / "run", iterations=2, **kwargs)
    _, planted = _plant_nearest(tmp_path / "run", 1e-3)
    with pytest.warns(UserWarning, match="the next stage starts from the nearest one"):
        resumed = compress(str(checkpoint), tmp_path / "run", resume=True, iterations=3,
                           **kwargs)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["stages"]["shrink"]["start"] == planted.to_json()
    assert resumed.rows[1].architecture == planted.to_json()


def test_a_nearest_student_farther_than_the_start_is_not_handed_on(first_run, tmp_path):
    _, checkpoint = first_run
    kwargs = {**FAST, "constraints": {"params": 1}}
    with pytest.warns(UserWarning):
        compress(str(checkpoint), tmp_path / "run", iterations=1, **kwargs)
    teacher, larger = _plant_nearest(
        tmp_path / "run", 1e12,
        lambda start: start.remove([layer.kind != "maxpool" for layer in start.layers]))
    assert larger.num_params() > teacher.num_params()  # a bigger classifier input
    with pytest.warns(UserWarning, match="keeping its start"):
        resumed = compress(str(checkpoint), tmp_path / "run", resume=True, **kwargs)
    assert resumed.rows[1].architecture == teacher.to_json()
