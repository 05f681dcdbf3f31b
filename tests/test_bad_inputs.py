"""Every bad input is refused where it enters, with one clear error and nothing written.

Each case asserts the exception type, a message naming what is allowed, and that no file
was changed or left behind (in the test's folder and under ``$N2N_HOME``). The CLI cases
assert one line on stderr and a non-zero exit status instead of a traceback.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch

import n2n_env  # noqa: F401  (registers the environments)
from agents.policy_files import PolicyFileError
from n2n_env import cli, zoo
from n2n_env.arch import Architecture, Layer
from n2n_env.build import build_model
from n2n_env.checkpoints import CheckpointError, TeacherRecord, load_teacher, save_teacher
from n2n_env.data import DatasetNotFoundError
from n2n_env.distill import DistillRecipe
from n2n_env.evaluators import MockEvaluator
from n2n_env.finetune import finetune
from n2n_env.recipes import Recipe
from n2n_env.reward import LinearConstraint, parse_constraints
from n2n_env.run_config import RunConfig
from n2n_env.stack import BackendSettings
from n2n_env.teacher import train_teacher

TINY = Architecture((3, 8, 8), 10, (Layer("conv", out=4, kernel=3, padding=1), Layer("relu"),
                                    Layer("flatten"), Layer("linear", out=16),
                                    Layer("linear", out=10)), name="tiny")
"""A teacher described by hand, for the synthetic dataset (3x8x8, 10 classes)."""


def _files(*roots: Path) -> dict[str, tuple[int, int]]:
    return {os.fspath(p): (p.stat().st_size, p.stat().st_mtime_ns)
            for root in roots if root.exists() for p in sorted(root.rglob("*"))}


@pytest.fixture
def untouched(tmp_path, monkeypatch):
    """Fails the test if anything under tmp_path or N2N_HOME changes while it runs."""
    home = tmp_path / "home"
    monkeypatch.setenv("N2N_HOME", str(home))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    holder: dict[str, Any] = {}

    def start() -> None:
        holder["before"] = _files(tmp_path)

    yield start
    assert _files(tmp_path) == holder.get("before", _files(tmp_path)), "a file was written"


def make(env_id: str = "N2NRemoval-v0", **kwargs: Any) -> Callable[[], Any]:
    return lambda: gym.make(env_id, **kwargs)


API_CASES: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    # constraints
    ("negative bound", lambda: parse_constraints({"params": -1}), ValueError,
     r"constraint 'params' must be a finite number > 0, got -1"),
    ("zero bound", lambda: parse_constraints({"flops": 0}), ValueError, r"> 0, got 0"),
    ("NaN bound", lambda: parse_constraints({"params": math.nan}), ValueError, r"> 0, got nan"),
    ("text bound", lambda: parse_constraints({"params": "1e5"}), TypeError, r"finite number"),
    ("row bound 0", lambda: LinearConstraint({"params": 1.0}, 0.0), ValueError,
     r"bound must be > 0 when every coefficient is >= 0"),
    ("NaN coefficient", lambda: LinearConstraint({"params": math.nan}, 1.0), ValueError,
     r"coefficient of 'params' must be a finite number"),
    ("env constraint", make(evaluator="mock", constraints={"params": -5}), ValueError,
     r"must be a finite number > 0"),
    # distillation settings
    ("fractional steps", lambda: DistillRecipe(steps=1.5), TypeError,  # type: ignore[arg-type]
     r"steps must be an integer >= 1, got 1.5"),
    ("negative steps", lambda: DistillRecipe(steps=-3), ValueError, r"integer >= 1, got -3"),
    ("infinite lr", lambda: DistillRecipe(lr=math.inf), ValueError, r"lr must be a finite"),
    ("fractional batch", lambda: DistillRecipe(batch_size=2.5), TypeError,  # type: ignore
     r"batch_size must be an integer >= 2"),
    ("negative seed", make(evaluator_kwargs={"seed": -1}), ValueError,
     r"seed must be an integer >= 0, got -1"),
    ("fractional seed", make(evaluator_kwargs={"seed": 0.5}), TypeError,
     r"seed must be an integer >= 0"),
    # teacher recipes
    ("fractional epochs", lambda: Recipe(epochs=2.5, lr=0.1, batch_size=8), TypeError,  # type: ignore
     r"epochs must be an integer >= 1"),
    ("infinite teacher lr", lambda: Recipe(epochs=2, lr=math.inf, batch_size=8), ValueError,
     r"lr must be a finite number > 0"),
    # zoo and architectures
    ("infinite width", lambda: zoo.get("conv4", width=math.inf), ValueError,
     r"width must be a finite number > 0, got inf"),
    ("fractional classes", lambda: zoo.get("conv4", num_classes=10.5), TypeError,  # type: ignore
     r"num_classes must be an integer >= 1, got 10.5"),
    ("fractional classes by hand", lambda: Architecture((1, 8, 8), 10.0, TINY.layers),  # type: ignore
     TypeError, r"num_classes must be an integer >= 1"),
    ("fractional input size", lambda: Architecture((3, 8.5, 8), 10, TINY.layers),  # type: ignore
     TypeError, r"input_shape \(C, H, W\) entry must be an integer >= 1, got 8.5"),
    ("fractional width", lambda: Layer("conv", out=4.5, kernel=3), TypeError,  # type: ignore
     r"layer out must be an integer"),
    # gym.make arguments
    ("fractional anneal", make(evaluator="mock", anneal_episodes=1.5), TypeError,
     r"anneal_episodes must be an integer >= 0"),
    ("negative anneal", make(evaluator="mock", anneal_episodes=-1), ValueError,
     r"anneal_episodes must be an integer >= 0"),
    ("infinite teacher width", make(evaluator="mock", teacher_width=math.inf), ValueError,
     r"teacher_width must be a finite number > 0"),
    ("zero max_layers", make("N2NShrink-v0", evaluator="mock", max_layers=0), ValueError,
     r"max_layers must be an integer >= 1"),
    ("mock accuracy NaN", lambda: MockEvaluator(TINY, teacher_accuracy=math.nan), ValueError,
     r"teacher_accuracy must be a finite number > 0 and <= 1"),
    # errors that used to come only at the first terminal step
    ("bad device", make(device="tpu"), ValueError, r"invalid device 'tpu'; use"),
    ("missing data root", make(dataset="mnist-10k", data_root="/nonexistent/n2n-data"),
     DatasetNotFoundError, r"data root /nonexistent/n2n-data does not exist"),
    ("unknown constraint", make(evaluator="mock", constraints={"latency": 5}), ValueError,
     r"allowed: accuracy, flops, params"),
    ("unknown mock option", make(evaluator="mock", evaluator_kwargs={"steps": 5}), ValueError,
     r"unknown evaluator_kwargs for evaluator='mock' \['steps'\]; allowed: capacity_scale"),
    ("mock option value", make(evaluator="mock", evaluator_kwargs={"depth_penalty": 2}),
     ValueError, r"depth_penalty must be a finite number >= 0 and <= 1"),
    # inheritance
    ("teacher of another architecture",
     lambda: build_model(TINY, teacher=build_model(zoo.get("conv4", (3, 8, 8), 10, 0.25))),
     ValueError, r"is not the teacher that 'tiny' derives from .*allowed"),
    ("teacher of another input shape",
     lambda: build_model(TINY, teacher=build_model(zoo.get("conv4", (1, 16, 16), 10, 0.25))),
     ValueError, r"input \(1, 16, 16\)"),
    # the pipeline's own arguments
    ("fractional iterations", lambda: RunConfig(iterations=1.5), TypeError,
     r"iterations must be an integer >= 1, got 1.5"),
    ("negative compress seed", lambda: RunConfig(iterations=1, seed=-2), ValueError,
     r"seed must be an integer >= 0"),
    ("compress mock option",
     lambda: RunConfig(iterations=1, evaluator="mock", mock_options={"steps": 9}),
     ValueError, r"unknown mock_options \['steps'\]; allowed: capacity_scale"),
    ("compress distill option", lambda: RunConfig(recipe=DistillRecipe(lr=-1)), ValueError,
     r"lr must be a finite number > 0, got -1"),
    ("compress constraint name",
     lambda: RunConfig(iterations=1, constraints={"latency": 3.0}), ValueError,
     r"allowed: accuracy, flops, params"),
    ("compress backend", lambda: RunConfig(backend=BackendSettings("threads")), ValueError,
     r"backend must be one of 'local', 'processes', 'ray'"),
]


@pytest.mark.parametrize(("case", "call", "error", "message"), API_CASES,
                         ids=[case[0] for case in API_CASES])
def test_the_python_api_refuses_at_the_door(case, call, error, message, untouched) -> None:
    untouched()
    with pytest.raises(error, match=message):
        call()


# ---------------------------------------------------------------- teachers and checkpoints
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, synthetic) -> Path:
    recipe = Recipe(epochs=1, lr=0.01, batch_size=64)
    trained = train_teacher(TINY, synthetic, recipe, device="cpu", progress=False)
    path = tmp_path_factory.mktemp("teacher") / "tiny.pt"
    return save_teacher(path, trained.model, TeacherRecord(
        TINY, "synthetic", synthetic.fingerprint, trained.val_accuracy, trained.test_accuracy,
        recipe))


def test_teacher_training_refuses_zero_steps(synthetic, untouched) -> None:
    untouched()
    with pytest.raises(ValueError, match=r"batch_size must be >= 2 .* zero steps"):
        train_teacher(TINY, synthetic, Recipe(epochs=1, lr=0.01, batch_size=1), device="cpu",
                      progress=False, resume_path=Path("partial.pt"))
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0"):
        train_teacher(TINY, synthetic, Recipe(epochs=1, lr=0.01, batch_size=8), seed=-1)
    with pytest.raises(ValueError, match=r"kd_weight must be a finite number >= 0"):
        finetune(TINY, build_model(TINY), synthetic, kd_weight=math.nan, progress=False)


def _rewritten(source: Path, target: Path, **changes: Any) -> Path:
    payload = torch.load(source, weights_only=True)
    payload.update(changes)
    torch.save(payload, target)
    return target


@pytest.mark.parametrize(("changes", "message"), [
    ({"val_accuracy": 0.0}, r"val_accuracy must be a finite number > 0 and <= 1, got 0.0"),
    ({"val_accuracy": math.nan}, r"val_accuracy must be .* got nan"),
    ({"test_accuracy": "high"}, r"test_accuracy must be a finite number > 0 and <= 1"),
    ({"val_accuracy": 97.5}, r"val_accuracy must be .*<= 1, got 97.5"),
], ids=["zero", "nan", "text", "percent"])
def test_a_checkpoint_with_a_bad_recorded_accuracy_is_refused(tiny_checkpoint, tmp_path,
                                                              changes, message) -> None:
    path = _rewritten(tiny_checkpoint, tmp_path / "bad.pt", **changes)
    with pytest.raises(CheckpointError, match=message):
        load_teacher(path)
    with pytest.raises(CheckpointError, match=message):
        gym.make("N2NRemoval-v0", teacher=str(path), dataset="synthetic")


def test_a_checkpoint_with_nan_weights_is_refused(tiny_checkpoint, tmp_path) -> None:
    state = torch.load(tiny_checkpoint, weights_only=True)["state_dict"]
    state["layers.0.weight"] = torch.full_like(state["layers.0.weight"], math.nan)
    path = _rewritten(tiny_checkpoint, tmp_path / "nan.pt", state_dict=state)
    with pytest.raises(CheckpointError, match=r"hold NaN or inf values .*retrain"):
        load_teacher(path)


def test_weights_of_another_network_are_refused_in_one_line(tiny_checkpoint, tmp_path) -> None:
    other = build_model(zoo.get("conv4", (3, 8, 8), 10, 0.25)).state_dict()
    path = _rewritten(tiny_checkpoint, tmp_path / "other.pt", state_dict=other)
    with pytest.raises(CheckpointError, match=r"do not fit .*another network") as error:
        load_teacher(path)
    assert len(str(error.value).splitlines()) == 1 and len(str(error.value)) < 400


# ---------------------------------------------------------------- the command line
def _cli(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip()


MOCK = ["--dataset", "synthetic", "--evaluator", "mock", "--iterations", "1",
        "--finetune-epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def finished_run(tiny_checkpoint, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    assert cli.main(["compress", "--teacher", str(tiny_checkpoint), *MOCK, "--stages",
                     "removal", "--out", str(run)]) == 0
    return run


def test_policy_init_on_a_truncated_or_foreign_file_is_one_line(tiny_checkpoint, tmp_path,
                                                                 capsys, untouched) -> None:
    truncated = tmp_path / "truncated.pt"
    data = (tmp_path / "full.pt")
    torch.save({"format": 1, "x": torch.zeros(1000)}, data)
    truncated.write_bytes(data.read_bytes()[:200])
    untouched()
    for policy, message in ((truncated, "damaged, truncated or not a torch file"),
                            (tiny_checkpoint, "is not a policy written by Reinforce.save")):
        code, err = _cli(["compress", "--teacher", str(tiny_checkpoint), *MOCK,
                          "--policy-init", str(policy), "--out", str(tmp_path / "r")], capsys)
        assert code == 1 and len(err.splitlines()) == 1 and message in err, err
    with pytest.raises(PolicyFileError):
        from agents.reinforce import Reinforce

        Reinforce.load(truncated)


def test_resume_on_a_damaged_run_is_one_line(finished_run, tmp_path, capsys) -> None:
    import shutil

    state_damaged = tmp_path / "state"
    shutil.copytree(finished_run, state_damaged)
    (state_damaged / "state.json").write_text('{"settings": {"teach')
    code, err = _cli(["compress", "--resume", str(state_damaged), "--no-progress"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "run state" in err and "damaged" in err
    policy_damaged = tmp_path / "policy"
    shutil.copytree(finished_run, policy_damaged)
    policy = policy_damaged / "removal_policy.pt"
    policy.write_bytes(policy.read_bytes()[:300])
    code, err = _cli(["compress", "--resume", str(policy_damaged), "--no-progress"], capsys)
    assert code == 1 and len(err.splitlines()) == 1 and "removal_policy.pt" in err, err


def test_a_checkpoint_of_another_network_is_one_line_on_the_cli(tiny_checkpoint, tmp_path,
                                                                capsys, untouched) -> None:
    other = build_model(zoo.get("conv4", (3, 8, 8), 10, 0.25)).state_dict()
    path = _rewritten(tiny_checkpoint, tmp_path / "other.pt", state_dict=other)
    untouched()
    code, err = _cli(["compress", "--teacher", str(path), *MOCK, "--out",
                      str(tmp_path / "r")], capsys)
    assert code == 1 and len(err.splitlines()) == 1 and "do not fit" in err


def test_teacher_train_refusals_are_one_line(capsys, untouched) -> None:
    untouched()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["teacher", "train", "--dataset", "synthetic", "--batch-size", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "an integer >= 2" in err


def test_a_diverged_teacher_training_is_one_line(capsys, tmp_path) -> None:
    out = tmp_path / "t.pt"
    code, err = _cli(["teacher", "train", "--dataset", "synthetic", "--width", "0.25",
                      "--epochs", "1", "--lr", "1e30", "--no-progress", "--out", str(out)],
                     capsys)
    assert code == 1 and len(err.splitlines()) == 1 and "diverged" in err and "--lr" in err
    assert not out.exists()


def test_warnings_reach_cli_users_as_one_line(monkeypatch) -> None:
    shown: list[str] = []

    def warn(args) -> int:  # what Python prints for a warning while a command runs
        shown.append(warnings.formatwarning(RuntimeWarning("first line\nsecond line"),
                                            RuntimeWarning, "/x/y.py", 7, "source line"))
        return 0

    monkeypatch.setattr(cli, "_zoo_list", warn)
    assert cli.main(["zoo", "list"]) == 0
    assert shown == ["n2n: warning: first line second line\n"]
    assert warnings.formatwarning is not cli._format_warning  # restored afterwards


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("n2n ")


def test_state_json_is_not_misread(finished_run) -> None:
    assert json.loads((finished_run / "state.json").read_text())["stages"]["removal"][
        "iteration"] == 1


def test_ctrl_c_during_the_teachers_training_says_rerunning_continues_it(
        tmp_path, capsys, monkeypatch) -> None:
    import n2n_env.teacher as teacher_module

    monkeypatch.setenv("N2N_HOME", str(tmp_path / "home"))
    original, epochs, limit = teacher_module._train_epoch, [], [2]

    def interrupted(*args, **kwargs):
        epochs.append(1)
        if len(epochs) == limit[0]:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(teacher_module, "_train_epoch", interrupted)
    argv = ["compress", "--dataset", "synthetic", "--teacher-width", "0.25", "--teacher-epochs",
            "2", *MOCK[2:], "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "rerun the same command to continue it" in err and "nothing" not in err
    epochs.clear()
    limit[0] = 1  # the rerun continues at epoch 2, and is interrupted there again
    assert cli.main(["teacher", "train", "--dataset", "synthetic", "--width", "0.25",
                     "--epochs", "2", "--no-progress"]) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "continue from the last finished epoch" in err


def test_a_cache_error_names_what_the_cli_offers(tmp_path) -> None:
    from n2n_env.cache import CachedEvaluator, CacheFileError

    path = tmp_path / "rewards.sqlite"
    path.write_text("not a database")
    with pytest.raises(CacheFileError, match=r"another --out") as error:
        CachedEvaluator(MockEvaluator(TINY), path).evaluate(TINY)
    assert "pass another cache path" not in str(error.value)
