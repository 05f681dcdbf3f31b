"""``n2n_env.load_student`` and ``n2n export``: ONNX, TorchScript and state_dict round trips,
the check that refuses a file which does not reproduce the student, files that run without
n2n, and the errors for bad input.

Students are small zoo networks after a removal and a shrink (random weights, randomized
batch norms, so a lost or mixed-up tensor changes the outputs); the run directory is a real
``n2n compress`` run (mock evaluator, tiny teacher, one iteration per stage: about 6 s).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import n2n_env
from n2n_env import export, pipeline
from n2n_env.arch import Architecture
from n2n_env.checkpoints import CheckpointError
from n2n_env.cli import main
from n2n_env.run_config import RunConfig
from n2n_env.run_files import architecture_path, atomic_json, finetuned_path, save_student

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")]

STUDENTS = {"conv4": 3, "resnet18": 4}
"""Zoo teachers and a removal period: every such removable layer goes, then every width is
halved. conv4 keeps batch norms and dropout; resnet18 keeps residual blocks, some with
projection shortcuts."""


def derived_student(small_zoo, name: str) -> Architecture:
    teacher = small_zoo.arch(name)
    period = STUDENTS[name]
    arch = teacher.remove([not r or i % period != 1 for i, r in enumerate(teacher.removable())])
    return arch.shrink([0.5] * len(arch.shrink_variables()))


def saved_student(small_zoo, name: str, folder: Path) -> tuple[torch.nn.Module, Path]:
    """A random derived student, saved as a model file ``student.pt`` (+ ``.json``)."""
    arch = derived_student(small_zoo, name)
    assert arch.root and arch.num_params() < small_zoo.arch(name).num_params()
    model = small_zoo.random_model(arch, seed=7)
    return model, save_student(folder / "student.pt", model)


@pytest.fixture(params=sorted(STUDENTS))
def student(request, small_zoo, tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    return saved_student(small_zoo, request.param, tmp_path)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished ``n2n compress`` run directory (both stages), from the pipeline itself."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("N2N_HOME", str(home))
        result = pipeline.compress(
            RunConfig(teacher="conv4", dataset="synthetic", evaluator="mock", iterations=1,
                      teacher_width=0.125, teacher_epochs=1, finetune_epochs=1),
            out=home / "run", progress=False)
    return result.out


def inputs(arch: Architecture, size: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(size, *arch.input_shape, generator=torch.Generator().manual_seed(seed))


def outputs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ loading


def test_load_student_rebuilds_the_saved_model_exactly(student) -> None:
    model, path = student
    loaded = n2n_env.load_student(path)
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.architecture == model.architecture
    saved = model.state_dict()
    assert saved.keys() == loaded.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in loaded.state_dict().items())
    x = inputs(model.architecture, 3)
    assert torch.equal(outputs(loaded, x), outputs(model, x))
    # the architecture file names the same student
    assert n2n_env.load_student(architecture_path(path)).architecture == model.architecture


def test_load_student_is_public_lazily_and_importing_the_package_stays_light() -> None:
    from n2n_env import load_student

    assert load_student is export.load_student is n2n_env.load_student
    assert "load_student" in n2n_env.__all__
    code = ("import sys, n2n_env; assert 'torch' not in sys.modules, 'eager torch'; "
            "assert 'load_student' not in vars(n2n_env); print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(export.__file__).parent.parent, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        n2n_env.nope  # noqa: B018


def test_a_run_directory_gives_its_final_student_and_each_stage_its_own(run: Path) -> None:
    result = json.loads((run / "result.json").read_text())
    final = n2n_env.load_student(run)
    assert final.architecture.to_json() == result["rows"][-1]["architecture"]
    assert final.architecture.num_params() == result["rows"][-1]["params"]
    for stage, row in zip(result["config"]["stages"], result["rows"][1:]):
        model = n2n_env.load_student(run, stage=stage)
        assert model.architecture.to_json() == row["architecture"]
        kept = torch.load(finetuned_path(run, model.architecture), weights_only=True)
        assert all(torch.equal(kept["state_dict"][k], v)
                   for k, v in model.state_dict().items())
    # the last stage's fine-tuned student is the final student
    x = inputs(final.architecture, 4)
    assert torch.equal(outputs(n2n_env.load_student(run, stage="shrink"), x), outputs(final, x))
    assert (n2n_env.load_student(run, stage="removal").architecture.num_params()
            > final.architecture.num_params())


def test_loading_never_unpickles(tmp_path: Path) -> None:
    marker = tmp_path / "executed"

    class Trap:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"weight": Trap()}, protocol=2))
    (tmp_path / "evil.json").write_text("{}")
    with pytest.raises(CheckpointError, match="could not read"):
        n2n_env.load_student(path)
    assert not marker.exists()


# ------------------------------------------------------------------ exporting


def test_every_format_round_trips_and_runs_any_batch_size(student, tmp_path: Path) -> None:
    model, path = student
    arch = model.architecture
    x = inputs(arch, 7, seed=3)  # neither the traced batch nor the checked one
    expected = outputs(model, x)
    results = {fmt: export.export_student(path, fmt) for fmt in export.FORMATS}
    for fmt, result in results.items():
        assert result.path == export.default_export_path(path, fmt) and result.path.is_file()
        assert result.source == path and result.architecture == arch
        assert 0 <= result.max_abs_diff <= export.ATOL
    assert [p.name for p in results["state_dict"].files] == ["student.state_dict.pt",
                                                            "student.state_dict.json"]
    import onnxruntime

    session = onnxruntime.InferenceSession(os.fspath(results["onnx"].path),
                                           providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [export.INPUT_NAME]
    assert isinstance(session.get_inputs()[0].shape[0], str)  # a free batch dimension
    assert session.get_inputs()[0].shape[1:] == list(arch.input_shape)
    (onnx_out,) = session.run([export.OUTPUT_NAME], {export.INPUT_NAME: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(onnx_out), expected, atol=1e-4, rtol=0)
    scripted = torch.jit.load(results["torchscript"].path)
    torch.testing.assert_close(outputs(scripted, x), expected, atol=1e-5, rtol=0)
    reloaded = n2n_env.load_student(results["state_dict"].path)
    assert reloaded.architecture == arch
    assert torch.equal(outputs(reloaded, x), expected)
    # nothing but the six exported files came beside the student: no staged leftovers
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"student.pt", "student.json", "student.onnx", "student.torchscript.pt",
                     "student.state_dict.pt", "student.state_dict.json"}


def test_a_model_in_memory_exports_without_being_changed(small_zoo, tmp_path: Path) -> None:
    model = small_zoo.random_model(derived_student(small_zoo, "conv4"), seed=2).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="give out="):
        export.export_student(model, "torchscript")
    result = export.export_student(model, "torchscript", out=f"{tmp_path}/new/")
    assert result.path == tmp_path / "new" / "student.torchscript.pt" and result.source is None
    assert model.training  # the caller's model keeps its mode and its weights
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = inputs(model.architecture, 5)
    torch.testing.assert_close(outputs(torch.jit.load(result.path), x),
                               outputs(model.eval(), x), atol=1e-5, rtol=0)


def test_a_stage_exports_into_its_run_directory(run: Path, tmp_path: Path) -> None:
    result = export.export_student(run, "torchscript", stage="removal")
    assert result.path == run / "student-removal.torchscript.pt"
    assert result.source == finetuned_path(run, result.architecture)
    stage_one = n2n_env.load_student(run, stage="removal")
    x = inputs(stage_one.architecture, 6)
    torch.testing.assert_close(outputs(torch.jit.load(result.path), x), outputs(stage_one, x),
                               atol=1e-5, rtol=0)
    result.path.unlink()


def test_onnx_that_does_not_reproduce_the_student_fails_and_writes_nothing(
        student, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    _, path = student
    real = export._onnx_round_trip

    def off_by_a_little(*args, **kwargs):
        return real(*args, **kwargs) + 1e-3

    monkeypatch.setattr(export, "_onnx_round_trip", off_by_a_little)
    with pytest.raises(export.ExportError, match=r"max abs difference 0\.001 .* exceeds 0\.0001"):
        export.export_student(path, "onnx")
    assert sorted(p.name for p in path.parent.iterdir()) == ["student.json", "student.pt"]
    monkeypatch.setattr(export, "_onnx_round_trip", real)
    assert export.export_student(path, "onnx", atol=1e-6).max_abs_diff <= 1e-6


def test_exported_files_run_where_n2n_cannot_be_imported(small_zoo, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model, path = saved_student(small_zoo, "resnet18", tmp_path)
    onnx_file = export.export_student(path, "onnx").path
    script_file = export.export_student(path, "torchscript").path
    x = inputs(model.architecture, 5, seed=9)
    np.save(tmp_path / "x.npy", x.numpy())
    code = textwrap.dedent("""
        import sys
        sys.modules["n2n_env"] = None  # before anything else: n2n cannot be imported
        try:
            import n2n_env  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("n2n_env was importable")
        import numpy as np
        import onnxruntime
        import torch

        x = np.load("x.npy")
        session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
        np.save("onnx.npy", session.run(None, {session.get_inputs()[0].name: x})[0])
        with torch.no_grad():
            np.save("script.npy", torch.jit.load(sys.argv[2])(torch.from_numpy(x)).numpy())
        assert not any(name.startswith("n2n_env.") for name in sys.modules)
        print("ran")
    """)
    done = subprocess.run([sys.executable, "-I", "-c", code, os.fspath(onnx_file),
                           os.fspath(script_file)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and done.stdout.strip() == "ran", done.stderr
    expected = outputs(model, x)
    for name in ("onnx.npy", "script.npy"):
        torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / name)), expected,
                                   atol=1e-4, rtol=0)


# ------------------------------------------------------------------ the command


def test_cli_exports_a_run_and_reports_the_check(run: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    code, out, err = cli(["export", os.fspath(run), "--format", "onnx"], capsys)
    assert code == 0, err
    assert f"wrote:   {run / 'student.onnx'}" in out
    assert "onnxruntime" in out and "max abs difference" in out and "allowed 0.0001" in out
    assert (run / "student.onnx").is_file()
    (run / "student.onnx").unlink()
    target = tmp_path / "exports" / "first.pt"
    code, out, err = cli(["export", os.fspath(run), "--format", "state_dict", "--stage",
                          "removal", "--out", os.fspath(target)], capsys)
    assert code == 0, err
    assert f"wrote:   {target}" in out and f"wrote:   {target.with_suffix('.json')}" in out
    stage_one = n2n_env.load_student(run, stage="removal")
    copy = n2n_env.load_student(target)
    assert copy.architecture == stage_one.architecture
    assert all(torch.equal(stage_one.state_dict()[k], v) for k, v in copy.state_dict().items())


@pytest.mark.parametrize(("argv", "status", "message"), [
    (["--format", "zip"], 2, "unknown format 'zip'; choose from: onnx, torchscript, state_dict"),
    (["--format", "onnx", "--stage", "prune"], 2,
     "unknown stage 'prune' for run .*; choose from: removal, shrink"),
    (["--format", "state_dict", "--out", "x.onnx"], 2, "a state_dict export ends in .pt"),
    (["--format", "torchscript", "--out", "RUN/student.pt"], 2,
     "would overwrite the student being exported"),
])
def test_cli_refuses_bad_values_in_one_line(run: Path, argv, status, message, capsys) -> None:
    argv = [a.replace("RUN", os.fspath(run)) for a in argv]
    before = sorted(p.name for p in run.iterdir())
    code, _, err = cli(["export", os.fspath(run), *argv], capsys)
    assert code == status and err.startswith("n2n: error:") and len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert sorted(p.name for p in run.iterdir()) == before
    assert n2n_env.load_student(run).architecture  # the student is untouched


def test_missing_onnxruntime_says_how_to_install_it(student, monkeypatch, capsys) -> None:
    _, path = student
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(export.ExportError, match=r'onnxruntime.*pip install "n2n\[export\]"'):
        export.export_student(path, "onnx")
    code, _, err = cli(["export", os.fspath(path), "--format", "onnx"], capsys)
    assert code == 1 and 'pip install "n2n[export]"' in err
    assert not path.with_suffix(".onnx").exists()
    assert export.export_student(path, "torchscript").path.is_file()  # the others still work


def test_bad_sources_are_refused_with_what_is_expected(run: Path, student, tmp_path: Path,
                                                       small_zoo, capsys) -> None:
    _, path = student
    with pytest.raises(FileNotFoundError, match="does not exist; expected an n2n compress"):
        export.load_student(tmp_path / "nowhere")
    code, _, err = cli(["export", os.fspath(tmp_path / "nowhere"), "--format", "onnx"], capsys)
    assert code == 1 and "does not exist" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="not an n2n compress run directory"):
        export.export_student(empty, "torchscript")
    unfinished = tmp_path / "unfinished"  # a run still searching: its state, no student
    unfinished.mkdir()
    atomic_json(unfinished / "state.json", json.loads((run / "state.json").read_text()))
    for stage in (None, "removal"):
        with pytest.raises(FileNotFoundError, match=r"no finished student yet .*--resume"):
            export.export_student(unfinished, "torchscript", stage=stage)
    with pytest.raises(ValueError, match="is a file"):
        export.load_student(path, stage="removal")
    with pytest.raises(ValueError, match="choose from: onnx, torchscript, state_dict"):
        export.export_student(path, "tflite")
    teacher = next((run.parent / "teachers").glob("*.pt"))
    with pytest.raises(CheckpointError, match="teacher checkpoint, not a student"):
        export.load_student(teacher)
    with pytest.raises(CheckpointError, match="fine-tuned student kept by a run"):
        export.load_student(next(run.glob("finetune_*.pt")))


def test_damaged_or_mismatched_student_files_are_refused(student, small_zoo,
                                                         tmp_path: Path) -> None:
    model, path = student
    json_file = architecture_path(path)
    other = small_zoo.arch("conv3")
    json_file.write_text(other.to_json())
    with pytest.raises(CheckpointError, match="weights do not fit the architecture"):
        export.load_student(path)
    json_file.write_text("{not json")
    with pytest.raises(CheckpointError, match="not an n2n architecture"):
        export.load_student(path)
    json_file.unlink()
    with pytest.raises(CheckpointError, match=r"no architecture student\.json beside it"):
        export.load_student(path)
    broken = save_student(tmp_path / "nan.pt", model)
    state = torch.load(broken, weights_only=True)
    next(v for v in state.values() if v.is_floating_point()).fill_(float("nan"))
    torch.save(state, broken)
    with pytest.raises(CheckpointError, match="NaN or inf"):
        export.load_student(broken)
    path.write_bytes(b"not a model file")
    with pytest.raises(CheckpointError, match="could not read"):
        export.load_student(tmp_path / "student.pt")


def test_save_student_refuses_what_it_cannot_write_back(small_zoo, tmp_path: Path) -> None:
    model = small_zoo.random_model(small_zoo.arch("conv3"))
    with pytest.raises(ValueError, match=r"ends in \.pt"):
        save_student(tmp_path / "student.pth", model)
    with pytest.raises(TypeError, match="pass the architecture"):
        save_student(tmp_path / "plain.pt", torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="differs"):
        save_student(tmp_path / "x.pt", model, small_zoo.arch("conv4"))
    assert not list(tmp_path.iterdir())
