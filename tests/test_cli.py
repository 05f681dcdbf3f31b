"""The ``n2n`` command line (CPU, synthetic data, cache in a temporary N2N_HOME)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_runs import run

from n2n_env import checkpoints, data, zoo

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("N2N_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # so the CLI keeps the single thread
    return tmp_path / "home"



TRAIN = ["teacher", "train", "--dataset", "synthetic", "--width", "0.25", "--device", "cpu",
         "--no-progress"]


def test_train_end_to_end_writes_a_checkpoint_and_reports_accuracy(capsys, home: Path) -> None:
    code, out, err = run([*TRAIN, "--epochs", "2"], capsys)
    assert code == 0, err
    path = checkpoints.teacher_path("conv4", "synthetic", 0.25, 0)
    assert f"checkpoint: {path}" in out
    assert path.is_file() and not checkpoints.partial_path(path).exists()
    fingerprint = data.load("synthetic").fingerprint
    _, record = checkpoints.load_teacher(path, dataset_fingerprint=fingerprint)
    assert record.recipe.epochs == 2 and record.recipe.milestones == (1,)  # 30 * 2 / 50
    assert record.model_name == "conv4" and record.width == 0.25
    test_pct = float(re.search(r"test acc:\s+([\d.]+)%", out).group(1))
    assert test_pct == pytest.approx(100 * record.test_accuracy, abs=0.01)
    assert test_pct > 30  # chance is 10%
    assert re.search(r"val acc:\s+[\d.]+%", out) and re.search(r"wall time:\s+[\d.]+ s", out)
    params = zoo.get("conv4", input_shape=(3, 8, 8), num_classes=10, width=0.25).num_params()
    assert f"{params:,}" in out

    code, out, _ = run(["teacher", "list"], capsys)
    assert code == 0
    line = next(row for row in out.splitlines() if path.name in row)
    assert "synthetic" in line and f"{params:,}" in line
    assert f"{100 * record.test_accuracy:.2f}%" in line


def test_train_overrides_and_out_path(capsys, tmp_path: Path) -> None:
    out_path = tmp_path / "custom" / "teacher.pt"
    code, _, err = run([*TRAIN, "--epochs", "1", "--lr", "0.05", "--batch-size", "32",
                          "--seed", "3", "--out", str(out_path)], capsys)
    assert code == 0, err
    assert out_path.is_file()
    _, record = checkpoints.load_teacher(out_path)
    assert (record.recipe.lr, record.recipe.batch_size, record.seed) == (0.05, 32, 3)
    assert not checkpoints.teacher_path("conv4", "synthetic", 0.25, 3).exists()


def test_cli_respects_omp_num_threads(capsys) -> None:
    code, out, _ = run([*TRAIN, "--epochs", "1"], capsys)
    assert code == 0 and "cpu (1 thread)" in out
    assert torch.get_num_threads() == 1


def test_teacher_list_with_an_empty_cache(capsys) -> None:
    code, out, _ = run(["teacher", "list"], capsys)
    assert code == 0 and "no cached teachers" in out


def test_teacher_list_reports_unreadable_files_and_keeps_going(capsys, home: Path) -> None:
    assert run([*TRAIN, "--epochs", "1"], capsys)[0] == 0
    (home / "teachers" / "broken.pt").write_bytes(b"garbage")
    code, out, err = run(["teacher", "list"], capsys)
    assert code == 0
    assert "broken.pt: unreadable" in err and "broken.pt" not in out
    assert "conv4-synthetic-w0.25-s0.pt" in out


@pytest.mark.parametrize(
    ("argv", "allowed"),
    [
        (["teacher", "train", "--model", "vgg99"], ["conv4", "vgg16", "resnet34"]),
        (["teacher", "train", "--dataset", "imagenet"], ["digits", "synthetic", "cifar10-14k"]),
        (["zoo", "list", "--dataset", "imagenet"], ["digits", "svhn"]),
        (["data", "download", "imagenet"], ["mnist-10k", "fashion-mnist"]),
        (["teacher", "train", "--device", "gpu"], ["cpu", "cuda:N"]),
    ],
)
def test_bad_names_exit_2_with_the_allowed_names(argv, allowed, capsys) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert all(name in err for name in allowed)
    assert out == ""


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        ([*TRAIN, "--epochs", "0"], "--epochs"),
        ([*TRAIN, "--epochs", "ten"], "--epochs"),
        ([*TRAIN, "--width", "-1"], "--width"),
        ([*TRAIN, "--width", "0"], "--width"),
        ([*TRAIN, "--batch-size", "0"], "--batch-size"),
        (["zoo", "list", "--width", "0"], "--width"),
        (["zoo", "list", "--input-shape", "3,32"], "--input-shape"),
        (["zoo", "list", "--dataset", "digits", "--num-classes", "3"], "--num-classes"),
        ([], "COMMAND"),
    ],
)
def test_bad_numbers_exit_2_on_one_line(argv, flag, capsys) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert flag in err


def test_missing_dataset_files_exit_1_with_the_data_message(capsys, tmp_path: Path) -> None:
    code, _, err = run(["teacher", "train", "--dataset", "mnist-10k",
                          "--data-root", str(tmp_path / "empty")], capsys)
    assert code == 1
    assert "not found" in err and "t10k-images-idx3-ubyte" in err and "Traceback" not in err
    assert not list(checkpoints.cached_teachers())


def test_zoo_list_reports_params_and_flops(capsys) -> None:
    code, out, _ = run(["zoo", "list", "--input-shape", "1,16,16", "--num-classes", "7",
                        "--width", "0.5"], capsys)
    assert code == 0
    for name in zoo.names():
        arch = zoo.get(name, input_shape=(1, 16, 16), num_classes=7, width=0.5)
        line = next(row for row in out.splitlines() if row.split()[:1] == [name])
        assert f"{arch.num_params():,}" in line
    code, out, _ = run(["zoo", "list", "--dataset", "synthetic"], capsys)
    assert code == 0 and "3x8x8" in out
    conv4 = zoo.get("conv4", input_shape=(3, 8, 8), num_classes=10)
    assert f"{conv4.num_params():,}" in out


def test_data_list_names_every_dataset(capsys) -> None:
    code, out, _ = run(["data", "list"], capsys)
    assert code == 0
    listed = {row.split()[0] for row in out.splitlines()[2:]}
    assert listed == set(data.names())


def test_data_download_of_an_offline_dataset_succeeds(capsys, tmp_path: Path) -> None:
    code, out, _ = run(["data", "download", "digits", "--data-root", str(tmp_path)], capsys)
    assert code == 0 and "digits" in out


@pytest.mark.parametrize("module", ["n2n_env", "n2n_env.cli"])
def test_python_dash_m_reports_usage_errors_without_a_traceback(module):
    done = subprocess.run([sys.executable, "-m", module, "compress", "--agent", "dqn"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("n2n: error: unknown agent 'dqn'; choose from: reinforce, "
                                   "actor-critic, ppo, a2c, maskable-ppo, recurrent-ppo, random")
