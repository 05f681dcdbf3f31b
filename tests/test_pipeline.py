"""The two-stage pipeline and ``n2n compress``, on the mock evaluator and a tiny teacher."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest
import torch
from pipeline_runs import (
    FAST,
    column,
    compress,
    first_run_fixture,  # noqa: F401  (the first_run fixture)
    interrupt_evaluation,
    scalars,
)

from agents import registry
from agents.agent_spec import AgentSpec
from agents.reinforce import Reinforce
from n2n_env import pipeline, run_files
from n2n_env.arch import Architecture
from n2n_env.build import build_model
from n2n_env.cli import main
from n2n_env.distill import DistillRecipe
from n2n_env.evaluators import MockEvaluator
from n2n_env.stack import BackendSettings


def test_run_directory_has_every_file(first_run):
    result, _ = first_run
    names = {p.name for p in result.out.iterdir()}
    assert {"student.pt", "student.json", "removal_policy.pt", "shrink_policy.pt",
            "metrics_removal.csv", "metrics_shrink.csv", "reward.png", "accuracy.png",
            "compression.png", "result.json", "state.json", "rewards.sqlite"} <= names
    for stage in pipeline.STAGES:
        assert column(result.out / f"metrics_{stage}.csv", "iteration") == ["1", "2", "3"]
        assert int(column(result.out / f"metrics_{stage}.csv", "evaluations")[-1]) + int(
            column(result.out / f"metrics_{stage}.csv", "cache_hits")[-1]) == 15
    arch = Architecture.from_json((result.out / "student.json").read_text())
    model = build_model(arch)
    model.load_state_dict(torch.load(result.out / "student.pt", weights_only=True))
    assert (result.out / "reward.png").read_bytes()[:4] == b"\x89PNG"
    assert Reinforce.load(result.out / "shrink_policy.pt").iterations == 3


def test_table_matches_the_student_architectures(first_run):
    result, checkpoint = first_run
    assert [r.name for r in result.rows] == ["Teacher", "Student (Stage1)",
                                             "Student (Stage1+Stage2)"]
    archs = [Architecture.from_json(r.architecture) for r in result.rows]
    for row, arch in zip(result.rows, archs):
        assert row.params == arch.num_params()
    teacher = torch.load(checkpoint, weights_only=True)
    assert archs[0].to_json() == teacher["architecture"]
    assert result.rows[0].test_accuracy == teacher["test_accuracy"]
    assert archs[2].num_params() <= archs[1].num_params() < archs[0].num_params()
    assert result.student.architecture == (result.out / "student.json").read_text()
    state = json.loads((result.out / "state.json").read_text())
    assert state["stages"]["shrink"]["start"] == result.rows[1].architecture
    for line, row in zip(result.table().splitlines()[1:], result.rows):
        assert line.split()[-1] == f"{archs[0].num_params() / row.params:.1f}x"
    saved = json.loads((result.out / "result.json").read_text())
    assert [r["params"] for r in saved["rows"]] == [r.params for r in result.rows]
    recipe_lr = pipeline.recipe_for("synthetic").lr
    assert [r["finetune_lr"] for r in saved["rows"]] == [None, recipe_lr, recipe_lr]


def test_tensorboard_logs_match_the_metrics(first_run):
    result, _ = first_run
    for stage in pipeline.STAGES:
        logged = scalars(result.out, stage, "reward_mean")
        assert [step for step, _ in logged] == [1, 2, 3]
        expected = [float(v) for v in column(result.out / f"metrics_{stage}.csv",
                                              "reward_mean")]
        assert [value for _, value in logged] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("agent", ["reinforce", "actor-critic", "ppo", "maskable-ppo",
                                   "random", "ppo:learning_rate=0.01,n_epochs=2"])
def test_resume_continues_and_never_reevaluates(first_run, tmp_path, monkeypatch, agent):
    _, checkpoint = first_run
    kwargs = {**FAST, "iterations": 4, "agent": agent}
    clean = compress(str(checkpoint), tmp_path / "clean", **kwargs)
    seen: list[str] = []
    original = MockEvaluator.evaluate

    def counting(self, arch):
        if len(seen) == 12:
            raise KeyboardInterrupt
        seen.append(arch.signature())
        return original(self, arch)

    monkeypatch.setattr(MockEvaluator, "evaluate", counting)
    with pytest.raises(KeyboardInterrupt):
        compress(str(checkpoint), tmp_path / "run", **kwargs)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert 0 < state["stages"]["removal"]["iteration"] < 4
    seen.append("interrupted")
    resumed = compress(str(checkpoint), tmp_path / "run", resume=True, **kwargs)
    assert len(set(seen)) == len(seen)  # no candidate evaluated twice across the two runs
    for stage in pipeline.STAGES:
        path = f"metrics_{stage}.csv"
        assert column(tmp_path / "run" / path, "iteration") == ["1", "2", "3", "4"]
        for name in run_files.METRIC_FIELDS:  # as docs/agents.md says, all but three agree
            if name not in ("evaluations", "cache_hits", "seconds"):
                assert column(tmp_path / "run" / path, name) == column(
                    tmp_path / "clean" / path, name), name
        done = [int(e) + int(h) for e, h in zip(column(tmp_path / "run" / path, "evaluations"),
                                                column(tmp_path / "run" / path, "cache_hits"))]
        assert done == [int(e) + int(h) for e, h in zip(
            column(tmp_path / "clean" / path, "evaluations"),
            column(tmp_path / "clean" / path, "cache_hits"))]
        # The resumed run's log continues without repeating a step. (Its events are in a
        # second file; files written within one second may be read in either order.)
        assert sorted(step for step, _ in scalars(tmp_path / "run", stage,
                                                   "reward_mean")) == [1, 2, 3, 4]
        if agent != "random":
            start = Architecture.from_json(resumed.rows[1].architecture)
            env = gym.make(pipeline.ENV_IDS[stage], teacher=str(checkpoint),
                           dataset="synthetic", evaluator="mock",
                           **({"start": start} if stage == "shrink" else {}))
            spec = AgentSpec.parse(agent)
            restored = registry.restore(spec.name, env, tmp_path / "run" / f"{stage}_policy.pt",
                                        settings=spec.settings)
            assert restored.iterations == 4
            if spec.settings:  # an SB3 agent is rebuilt with its settings, then loaded
                assert (restored.model.learning_rate, restored.model.n_epochs) == (0.01, 2)
    assert resumed.student.architecture == clean.student.architecture


def test_random_agent_and_bad_names(first_run, tmp_path):
    _, checkpoint = first_run
    result = compress(str(checkpoint), tmp_path / "r", agent="random",
                               stages=("removal",), iterations=2, **FAST)
    assert [r.name for r in result.rows] == ["Teacher", "Student (Stage1)"]
    assert not (tmp_path / "r" / "removal_policy.pt").exists()
    assert column(tmp_path / "r" / "metrics_removal.csv", "cache_hits")[-1] != ""
    with pytest.raises(ValueError, match=r"reinforce, actor-critic, ppo, .*, random"):
        compress(str(checkpoint), agent="dqn", out=tmp_path / "x", **FAST)
    with pytest.raises(ValueError, match=r"policy_init needs .* reinforce, actor-critic"):
        compress(str(checkpoint), agent="ppo", policy_init=tmp_path / "p.pt",
                          out=tmp_path / "x", **FAST)
    with pytest.raises(ValueError, match="removal, shrink"):
        compress(str(checkpoint), stages=("removal", "prune"), out=tmp_path / "x",
                          **FAST)
    with pytest.raises(ValueError, match="already holds a run"):
        compress(str(checkpoint), tmp_path / "r", **FAST)
    with pytest.raises(ValueError, match="nothing to resume"):
        compress(str(checkpoint), tmp_path / "none", resume=True, **FAST)


def test_cli_compress(first_run, tmp_path, capsys):
    _, checkpoint = first_run
    args = ["compress", "--teacher", str(checkpoint), "--dataset", "synthetic", "--iterations",
            "1", "--evaluator", "mock", "--finetune-epochs", "1", "--no-progress",
            "--constraint", "params<=100000"]
    assert main([*args, "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "Student (Stage1+Stage2)" in out and str(tmp_path / "cli") in out
    assert json.loads((tmp_path / "cli" / "result.json").read_text())["config"][
        "constraints"] == {"params": 100000.0}
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--constraint", "params<20000"])
    assert exit_info.value.code == 2
    assert "params<=N" in capsys.readouterr().err
    assert main([*args, "--agent", "dqn"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "reinforce, actor-critic, ppo" in err


def test_cli_ctrl_c_names_the_resume_command(first_run, tmp_path, capsys, monkeypatch):
    _, checkpoint = first_run
    interrupt_evaluation(monkeypatch, 7)
    run = tmp_path / "cli-run"
    args = ["compress", "--teacher", str(checkpoint), "--dataset", "synthetic", "--iterations",
            "2", "--evaluator", "mock", "--finetune-epochs", "1", "--no-progress"]
    assert main([*args, "--out", str(run)]) == 130
    printed = capsys.readouterr().err.strip().splitlines()
    assert "stage 1 (removal): iteration 1/2, best" in printed[0]  # --no-progress heartbeat
    assert f"n2n compress --resume {run}" in printed[-1]
    # The printed command alone continues the same run: 2 iterations, 1 fine-tuning epoch.
    assert main(printed[-1].split("continue with: ")[-1].split()[1:]) == 0
    assert "Student (Stage1+Stage2)" in capsys.readouterr().out
    assert column(run / "metrics_shrink.csv", "iteration") == ["1", "2"]
    assert json.loads((run / "result.json").read_text())["finetune_epochs"] == 1


def test_cli_trains_a_zoo_teacher_at_the_given_width(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("N2N_HOME", str(tmp_path / "home"))
    assert main(["compress", "--dataset", "synthetic", "--teacher-width", "0.25",
                 "--teacher-epochs", "1", "--iterations", "1", "--evaluator", "mock",
                 "--stages", "removal", "--finetune-epochs", "1", "--no-progress",
                 "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "home" / "teachers" / "conv4-synthetic-w0.25-s0.pt").is_file()
    settings = json.loads((tmp_path / "run" / "result.json").read_text())["config"]
    assert settings["teacher_width"] == 0.25 and settings["teacher_epochs"] == 1


@pytest.mark.parametrize("agent", ["reinforce", "ppo"])
def test_a_kill_between_policy_and_state_applies_no_update_twice(first_run, tmp_path,
                                                                  monkeypatch, agent):
    _, checkpoint = first_run
    kwargs = {**FAST, "iterations": 4, "agent": agent}
    clean = compress(str(checkpoint), tmp_path / "clean", **kwargs)
    original = pipeline.atomic_json
    writes = []

    def killed_before_the_second_state(path, value):
        writes.append(path)
        if len(writes) == 2:  # iteration 2's policy, metrics and logs are written, not state
            raise KeyboardInterrupt
        original(path, value)

    monkeypatch.setattr(pipeline, "atomic_json", killed_before_the_second_state)
    with pytest.raises(KeyboardInterrupt):
        compress(str(checkpoint), tmp_path / "run", **kwargs)
    monkeypatch.setattr(pipeline, "atomic_json", original)
    resumed = compress(str(checkpoint), tmp_path / "run", resume=True, **kwargs)
    for stage in pipeline.STAGES:
        assert column(tmp_path / "run" / f"metrics_{stage}.csv", "reward_mean") == column(
            tmp_path / "clean" / f"metrics_{stage}.csv", "reward_mean")
        steps = [step for step, _ in scalars(tmp_path / "run", stage, "reward_mean")]
        assert sorted(steps) == [1, 2, 3, 4]  # iteration 2's stale log entry was purged
    assert not list((tmp_path / "run").glob("*_policy.pt.*"))
    assert resumed.student.architecture == clean.student.architecture


def test_bad_settings_fail_before_any_teacher_is_trained(tmp_path, monkeypatch):
    monkeypatch.setenv("N2N_HOME", str(tmp_path / "home"))
    for bad, message in (({"anneal_episodes": -1}, "anneal_episodes must be an integer >= 0"),
                         ({"teacher_width": 0.0}, "teacher_width must be a finite number > 0"),
                         ({"finetune_epochs": 0}, "finetune_epochs must be an integer >= 1")):
        with pytest.raises(ValueError, match=message):
            compress("conv4", tmp_path / "run", **{**FAST, **bad})
    assert not (tmp_path / "home").exists()


def test_cli_compresses_a_hand_described_hand_trained_teacher(synthetic, tmp_path, capsys):
    from n2n_env.arch import Layer
    from n2n_env.checkpoints import TeacherRecord, save_teacher
    from n2n_env.recipes import Recipe
    from n2n_env.teacher import train_teacher

    mynet = Architecture(synthetic.input_shape, synthetic.num_classes, (
        Layer("conv", out=8, kernel=3, padding=1), Layer("relu"), Layer("maxpool", kernel=2,
                                                                         stride=2),
        Layer("flatten"), Layer("linear", out=16), Layer("relu"), Layer("linear", out=10)),
        name="mynet")
    recipe = Recipe(epochs=2, lr=0.01, batch_size=64)
    trained = train_teacher(mynet, synthetic, recipe, device="cpu", progress=False)
    path = save_teacher(tmp_path / "mynet.pt", trained.model, TeacherRecord(
        mynet, "synthetic", synthetic.fingerprint, trained.val_accuracy, trained.test_accuracy,
        recipe))
    run = tmp_path / "run"
    assert main(["compress", "--teacher", str(path), "--dataset", "synthetic", "--iterations",
                 "1", "--evaluator", "mock", "--finetune-epochs", "1", "--no-progress",
                 "--out", str(run)]) == 0
    assert "Student (Stage1+Stage2)" in capsys.readouterr().out
    student = Architecture.from_json((run / "student.json").read_text())
    assert student.root == mynet.signature()


def test_a_kill_during_fine_tuning_does_not_train_a_finished_student_again(
        first_run, tmp_path, monkeypatch):
    from n2n_env import run_files

    _, checkpoint = first_run
    original, calls = run_files.finetune, []

    def counted(arch, *args, **kwargs):
        calls.append(arch.signature())
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(arch, *args, **kwargs)

    monkeypatch.setattr(run_files, "finetune", counted)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        compress(str(checkpoint), iterations=2, out=run, **FAST)
    assert len(list(run.glob("finetune_*.pt"))) == 1
    calls.clear()
    result = compress(str(checkpoint), run, resume=True, **FAST)
    assert len(calls) == 1 and calls[0] == Architecture.from_json(
        result.student.architecture).signature()


@pytest.mark.parametrize("backend", ["processes", "ray"])
def test_every_backend_runs_through_compress_and_resumes(first_run, tmp_path, backend,
                                                         request):
    """A parallel backend plays each update's 5 episodes side by side and trains their
    students as one batch on 2 workers: real distillation with a tiny budget."""
    if backend == "ray":
        request.getfixturevalue("ray_session")
    _, checkpoint = first_run
    settings = {"dataset": "synthetic", "finetune_epochs": 1, "iterations": 2,
                "stages": ("removal",), "recipe": DistillRecipe(steps=2),
                "backend": BackendSettings(backend, 2)}
    result = compress(str(checkpoint), tmp_path / "run", **settings)
    assert column(result.out / "metrics_removal.csv", "iteration") == ["1", "2"]
    total = [int(a) + int(b) for a, b in zip(
        column(result.out / "metrics_removal.csv", "evaluations"),
        column(result.out / "metrics_removal.csv", "cache_hits"))]
    assert total == [5, 10]
    state = json.loads((result.out / "state.json").read_text())
    assert state["config"]["backend"] == {"kind": backend, "workers": 2, "ray_address": None,
                                          "gpus_per_student": 0.0}
    extended = pipeline.resume(result.out, iterations=3, progress=False)
    assert column(extended.out / "metrics_removal.csv", "iteration") == ["1", "2", "3"]
    with pytest.raises(ValueError, match="keeps local or parallel sampling"):
        pipeline.resume(result.out, backend=BackendSettings(), progress=False)


def test_cli_compress_runs_an_agent_with_settings_and_refuses_bad_ones(first_run, tmp_path,
                                                                        capsys):
    _, checkpoint = first_run
    argv = ["compress", "--teacher", str(checkpoint), "--dataset", "synthetic",
            "--iterations", "1", "--evaluator", "mock", "--finetune-epochs", "1",
            "--no-progress", "--stages", "removal"]
    assert main([*argv, "--agent", "reinforce:lr=3", "--out", str(tmp_path / "bad")]) == 2
    assert "no setting 'lr'; allowed: baseline_decay" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "run"
    assert main([*argv, "--agent", "reinforce:entropy_coef=0.5", "--out", str(out)]) == 0
    state = json.loads((out / "state.json").read_text())
    assert state["config"]["agent"] == "reinforce:entropy_coef=0.5"
    assert Reinforce.load(out / "removal_policy.pt").config.entropy_coef == 0.5


def test_curves_of_a_run_are_plain_json_one_value_per_iteration(tmp_path) -> None:
    row = dict.fromkeys(run_files.METRIC_FIELDS, 0.5)
    rows = [{**row, "iteration": 1, "reward_mean": 0.25},
            {**row, "iteration": 2, "reward_mean": float("nan"), "accuracy_mean": 0.75}]
    run_files.write_metrics(tmp_path / "metrics_removal.csv", rows)
    curves = run_files.curves_of_run(tmp_path, ("removal", "shrink"))
    assert list(curves) == ["removal"]  # no shrink iteration yet
    assert set(curves["removal"]) == set(run_files.CURVE_FIELDS)
    assert curves["removal"]["reward_mean"] == [0.25, None]  # NaN: no valid student
    assert curves["removal"]["accuracy_mean"] == [0.5, 0.75]
    json.dumps(curves, allow_nan=False)
