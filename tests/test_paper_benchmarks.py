"""The benchmarks behind the paper tables' estimates and progress reports:
``benchmarks/paper_unit_costs.py`` (what a unit costs) and
``benchmarks/paper_iterations.py`` (what the running searches took, and their students)."""

from __future__ import annotations

import json
import math
import re
import runpy
import sys
from pathlib import Path

import pytest

from n2n_env import zoo
from n2n_env.cache import CachedEvaluator
from n2n_env.evaluators import MockEvaluator

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def test_paper_unit_costs_times_the_teacher_and_stage_one_candidates(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from n2n_env import data

    monkeypatch.setattr(sys, "argv", [
        "paper_unit_costs.py", "--dataset", "digits", "--teacher", "conv4", "--width", "0.25",
        "--candidates", "2", "--threads", "1"])
    runpy.run_path(str(BENCHMARKS / "paper_unit_costs.py"), run_name="__main__")
    out = capsys.readouterr().out
    step = re.search(r"teacher: ([\d.]+) s per step of 64; 50 epochs = ([\d,]+) steps", out)
    assert step is not None and float(step.group(1)) >= 0
    steps_per_epoch = math.ceil(len(data.load("digits").train) / 64)
    assert int(step.group(2).replace(",", "")) == 50 * steps_per_epoch
    candidates = re.search(r"candidates: 2 random keep masks, ([\d,]+)-([\d,]+) params; "
                           r"seconds each: mean ([\d.]+)", out)
    assert candidates is not None
    assert int(candidates.group(1).replace(",", "")) <= int(candidates.group(2).replace(",", ""))
    assert float(candidates.group(3)) >= 0


def test_paper_iterations_sums_each_searchs_stages_preferring_this_machines_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from n2n_env.run_files import METRIC_FIELDS, read_metrics, write_metrics

    def metrics(folder: Path, stage: str, seconds: list[float], best: float) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        write_metrics(folder / f"metrics_{stage}.csv", [
            {**dict.fromkeys(METRIC_FIELDS, 0.5), "iteration": i + 1, "seconds": s,
             "best_reward_so_far": best} for i, s in enumerate(seconds)])

    work = tmp_path / "work"
    here = work / "runs" / "compress-a-seed0"
    metrics(here, "removal", [100.0, 300.0, 200.0], 0.9)
    metrics(here, "shrink", [50.0], float("nan"))
    rows = read_metrics(here / "metrics_removal.csv")
    for row, (reward, accuracy) in zip(rows, [(0.1, 0.2), (-0.2, 0.6), (0.4, 0.9)]):
        row.update(reward_mean=reward, accuracy_mean=accuracy)
    write_metrics(here / "metrics_removal.csv", rows)
    metrics(work / "carry" / "compress-a-seed0", "removal", [1.0], 0.1)  # older copy
    metrics(work / "carry" / "compress-b-seed0", "removal", [3600.0, 3600.0], 0.8)
    teacher = zoo.get("conv4", (1, 64, 64), 10, width=0.25)
    removable = teacher.removable()
    empty = teacher.remove([not r for r in removable])
    no_pooling = teacher.remove([layer.kind != "maxpool" for layer in teacher.layers])
    with CachedEvaluator(MockEvaluator(teacher), here / "rewards.sqlite") as cache:
        cache.evaluate_many([empty, teacher.remove([not r or i % 2 == 0
                                                    for i, r in enumerate(removable)]),
                             teacher, no_pooling])
    elsewhere = MockEvaluator(teacher, depth_penalty=0.2)  # a run resumed otherwise
    with CachedEvaluator(elsewhere, here / "rewards.sqlite") as cache:
        cache.evaluate_many([teacher, no_pooling])
    (work / "carry" / "compress-b-seed0" / "rewards.sqlite").write_text("not a database")
    half = teacher.remove([not r or i % 2 == 0 for i, r in enumerate(removable)])
    constrained = work / "runs" / "compress-c-params-seed0"
    with CachedEvaluator(MockEvaluator(teacher), constrained / "rewards.sqlite") as cache:
        cache.evaluate_many([empty, half, teacher])
    (constrained / "state.json").write_text(json.dumps(
        {"config": {"constraints": {"params": teacher.num_params()}}, "stages": {}}))
    assert half.num_params() > teacher.num_params()  # its classifier input grew
    monkeypatch.setattr(sys, "argv", ["paper_iterations.py", str(work)])
    runpy.run_path(str(BENCHMARKS / "paper_iterations.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [
        "compress-a-seed0 removal: 3 iterations, 0.17 h, median 200 s (100-300 s), best "
        "reward 0.9000; last 3: mean reward 0.100, mean accuracy 0.567 [runs/]",
        "compress-a-seed0 shrink: 1 iterations, 0.01 h, median 50 s (50-50 s), best reward "
        "none; last 1: mean reward 0.500, mean accuracy 0.500 [runs/]",
        "compress-a-seed0: 4 distinct students evaluated (under 2 evaluator identities), "
        "2 degenerate (classifier input of N features exceeds the limit of N: 1, empty "
        "architecture: 1) [runs/]"]
    assert lines[3] == ("compress-b-seed0 removal: 2 iterations, 2.00 h, median 3600 s "
                        "(3600-3600 s), best reward 0.8000; last 2: mean reward 0.500, "
                        "mean accuracy 0.500 [carry/]")
    assert len(lines) == 6
    assert lines[4].startswith("compress-b-seed0: evaluation cache unreadable (")
    assert lines[4].endswith("[carry/]")
    assert lines[5] == (
        f"compress-c-params-seed0: 3 distinct students evaluated, 1 degenerate (empty "
        f"architecture: 1); params <= {teacher.num_params()}: 1 of 2 valid students "
        f"within, the smallest valid one {teacher.num_params():,} parameters [runs/]")


def test_constraint_reach_counts_students_within_a_budget_before_and_after_shrinking(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    script = runpy.run_path(str(BENCHMARKS / "constraint_reach.py"))
    vgg13 = zoo.get("vgg13", input_shape=(1, 28, 28))
    teacher_only = script["reach"](vgg13, 20_000, 1.0, 3, np.random.default_rng(0))
    assert (teacher_only.valid, teacher_only.within, teacher_only.reachable) == (3, 0, 0)
    assert teacher_only.smallest_params == vgg13.num_params()
    assert teacher_only.smallest_convs == 10
    roomy = script["reach"](vgg13, vgg13.num_params(), 0.5, 40, np.random.default_rng(0))
    assert roomy.within == roomy.reachable == roomy.valid > 0
    tight = script["reach"](vgg13, 20_000, 0.5, 400, np.random.default_rng(0))
    assert tight.within <= tight.reachable < tight.valid
    assert tight.reachable > 0  # shrinking reaches the budget where removal alone rarely does
    monkeypatch.setattr(sys, "argv", ["constraint_reach.py", "--samples", "50"])
    runpy.run_path(str(BENCHMARKS / "constraint_reach.py"), run_name="__main__")
    assert "within it after shrinking to 0.1" in capsys.readouterr().out


def test_pruning_step_lr_prunes_the_same_channels_at_each_rate(
        synthetic_teacher, synthetic, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch_pruning")
    from n2n_env.checkpoints import TeacherRecord, save_teacher
    from n2n_env.recipes import recipe_for

    path = save_teacher(tmp_path / "teacher.pt", synthetic_teacher, TeacherRecord(
        synthetic_teacher.architecture, "synthetic", synthetic.fingerprint, 0.9, 0.9,
        recipe_for("synthetic")))
    script = runpy.run_path(str(BENCHMARKS / "pruning_step_lr.py"))
    assert script["main"](["--teacher", str(path), "--dataset", "synthetic", "--lr", "0.5",
                           "0.001", "--seeds", "0", "--steps", "2",
                           "--finetune-steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "recipe lr 0.01, final lr 0.001" in out  # MNIST's recipe: x0.1 after epoch 30
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| 0")]
    assert [row[0] for row in rows] == ["| 0.5", "| 0.001"] and all(len(r) == 5 for r in rows)
    step1 = [row[2].split(", ") for row in rows]
    assert step1[0][0] == step1[1][0]  # the same channels go at step 1, whatever the rate
    # at 50 times the recipe's rate the updates wreck what 0.001 keeps
    assert float(step1[0][1]) < float(step1[1][1])


def test_final_training_lr_trains_the_student_a_stage_handed_on_at_each_rate(
        synthetic_teacher, synthetic, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from n2n_env.checkpoints import TeacherRecord, save_teacher
    from n2n_env.recipes import recipe_for

    (tmp_path / "teachers").mkdir()
    teacher = save_teacher(tmp_path / "teachers" / "t.pt", synthetic_teacher, TeacherRecord(
        synthetic_teacher.architecture, "synthetic", synthetic.fingerprint, 0.9, 0.9,
        recipe_for("synthetic")))
    arch = synthetic_teacher.architecture
    convs = [i for i, layer in enumerate(arch.layers) if layer.kind == "conv"]
    nearest = arch.remove([i != convs[1] for i in range(len(arch.layers))])
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.json").write_text(json.dumps({
        "config": {"teacher": str(teacher), "dataset": "synthetic", "data_root": None},
        "stages": {"removal": {"best_architecture": None,
                               "nearest": {"architecture": nearest.to_json()}}}}))
    script = runpy.run_path(str(BENCHMARKS / "final_training_lr.py"))
    with pytest.raises(SystemExit, match="no stage 'shrink'"):
        script["main"]([str(run), "--stage", "shrink"])
    assert script["main"]([str(run), "--lr", "50", "0.01", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"student: {nearest.num_params():,} parameters, stage removal" in out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| ") and
            line[2].isdigit()]
    assert [(row[0], row[1]) for row in rows] == [
        ("| 50", "1"), ("| 50", "2"), ("| 0.01", "1"), ("| 0.01", "2")]
    too_high, suited = float(rows[1][2]), float(rows[3][2])
    assert not too_high <= suited  # a rate 5,000 times the recipe's does not learn (or NaN)
    assert float(rows[3][3]) > 0.5  # the recipe's rate does
    before = float(re.search(r"loss before any update: ([\d.]+)", out).group(1))
    assert suited < before  # a student that learns ends its first epoch below its start
    units = tmp_path / "units"
    units.mkdir()
    unit = units / "compress-x.json"
    unit.write_text(json.dumps({"kind": "compress", "needs": ["t"],
                                "spec": {"dataset": "synthetic"},
                                "result": {"student": nearest.to_json()}}))
    assert script["main"]([str(unit), "--lr", "0.01", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert f"student: {nearest.num_params():,} parameters, the unit's final student" in out
    assert f"mean training loss before any update: {before:.3f}" in out  # same start
    teacher_arch = tmp_path / "teacher.json"
    teacher_arch.write_text(arch.to_json())
    assert script["main"]([str(unit), "--architecture", str(teacher_arch), "--lr", "0.01",
                           "--epochs", "1"]) == 0
    assert f"student: {arch.num_params():,} parameters, teacher.json" in capsys.readouterr().out
    unit.write_text(json.dumps({"kind": "teacher"}))
    with pytest.raises(SystemExit, match="not a finished n2n paper search unit"):
        script["main"]([str(unit)])


def test_final_training_lr_trains_a_pruned_network_from_its_own_weights(
        synthetic_teacher, synthetic, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from n2n_env.baselines.runs import _RunFiles
    from n2n_env.build import build_model
    from n2n_env.checkpoints import TeacherRecord, save_teacher
    from n2n_env.recipes import recipe_for

    (tmp_path / "teachers").mkdir()
    save_teacher(tmp_path / "teachers" / "t.pt", synthetic_teacher, TeacherRecord(
        synthetic_teacher.architecture, "synthetic", synthetic.fingerprint, 0.9, 0.9,
        recipe_for("synthetic")))
    arch = synthetic_teacher.architecture
    (tmp_path / "units").mkdir()
    unit = tmp_path / "units" / "compress-x.json"
    unit.write_text(json.dumps({"kind": "compress", "needs": ["t"],
                                "spec": {"dataset": "synthetic"},
                                "result": {"student": arch.to_json()}}))
    script = runpy.run_path(str(BENCHMARKS / "final_training_lr.py"))
    assert script["main"]([str(unit), "--lr", "0.01", "--epochs", "1"]) == 0
    inherited = capsys.readouterr().out  # the teacher's own weights: a trained start
    torch.manual_seed(1)
    untrained = build_model(arch)
    _RunFiles(tmp_path, 0, {}).save_pruned(untrained, 0.1, 3, "params", (), 1.0)
    pruned = tmp_path / "seed-0.pruned.pt"
    assert script["main"]([str(unit), "--pruned", str(pruned), "--lr", "0.01",
                           "--epochs", "1"]) == 0
    out = capsys.readouterr().out

    def start(text: str) -> float:
        return float(re.search(r"loss before any update: ([\d.]+)", text).group(1))

    assert f"student: {arch.num_params():,} parameters, pruned, seed-0.pruned.pt" in out
    assert start(out) > start(inherited) + 0.5  # its own untrained weights, not the teacher's
    with pytest.raises(SystemExit):
        script["main"]([str(unit), "--pruned", str(pruned), "--architecture", str(pruned)])
    with pytest.raises(SystemExit, match="not a pruning run's"):
        script["main"]([str(unit), "--pruned", str(tmp_path / "teachers" / "t.pt")])


def test_final_training_cost_times_the_teacher_sized_and_the_searchs_students(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    teacher = zoo.get("conv4", (1, 16, 16), 10, width=0.25)
    removable = teacher.removable()
    half = teacher.remove([not r or i % 2 == 0 for i, r in enumerate(removable)])
    empty = teacher.remove([not r for r in removable])  # degenerate: never trained
    with CachedEvaluator(MockEvaluator(teacher), tmp_path / "rewards.sqlite") as cache:
        cache.evaluate_many([empty, half])
    monkeypatch.setattr(sys, "argv", [
        "final_training_cost.py", "--teacher", "conv4", "--width", "0.25", "--dataset",
        "digits", "--sizes", "40,8,8", "--epochs", "3", "--threads", "1", "--device", "cpu",
        "--cache", str(tmp_path / "rewards.sqlite")])
    runpy.run_path(str(BENCHMARKS / "final_training_cost.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"teacher conv4 at width 0.25 ({teacher.num_params():,} "
                               "parameters), random data in digits's shape (1, 16, 16), 40 "
                               "training images, batch 64; recipe: 50 epochs")
    pattern = re.compile(r"(.+): ([\d,]+) parameters; ([\d.]+) s per epoch \(3 epochs in "
                         r"([\d.]+) s, 1 in ([\d.]+) s\); 50 epochs = ([\d.]+) min")
    rows = [pattern.fullmatch(line) for line in lines[1:]]
    assert all(rows) and [row.group(1) for row in rows] == [  # type: ignore[union-attr]
        "teacher-sized", "most FLOPs", "median FLOPs"]
    params = [int(row.group(2).replace(",", "")) for row in rows]  # type: ignore[union-attr]
    assert params == [teacher.num_params(), half.num_params(), half.num_params()]
    for row in rows:  # the extrapolation: the 1-epoch run plus 49 more epochs at the rate
        per_epoch, longer, one, whole = (float(row.group(k)) for k in (3, 4, 5, 6))  # type: ignore[union-attr]
        assert per_epoch == pytest.approx(max(longer - one, 0) / 2, abs=0.06)  # printed: 0.1 s
        assert whole == pytest.approx((one + 49 * per_epoch) / 60, abs=0.06)


@pytest.mark.parametrize("sizes", ["10,x,3", "10,1,3", "10,10"])
def test_final_training_cost_refuses_sizes_it_cannot_train_on(
        sizes: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["final_training_cost.py", "--sizes", sizes])
    with pytest.raises(SystemExit):
        runpy.run_path(str(BENCHMARKS / "final_training_cost.py"), run_name="__main__")
    assert f"--sizes takes three counts of at least 2, got '{sizes}'" in capsys.readouterr().err
