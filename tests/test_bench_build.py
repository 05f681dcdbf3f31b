"""Building N2N-Bench tables end to end on synthetic: parts, a kill -9 and its resume, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from n2n_env import data, zoo
from n2n_env.bench.build import BuildError, BuildSettings, build, spread_order
from n2n_env.bench.table import BenchTable
from n2n_env.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("n2n-home")
    old = os.environ.get("N2N_HOME")
    os.environ["N2N_HOME"] = str(path)
    yield path
    if old is None:
        del os.environ["N2N_HOME"]
    else:
        os.environ["N2N_HOME"] = old


@pytest.fixture(scope="module")
def start_json(tmp_path_factory) -> Path:
    """conv3 on synthetic reduced to conv, flatten, classifier: one shrink variable, so the
    shrink space has 10 students."""
    teacher = zoo.get("conv3", *data.info("synthetic"))
    start = teacher.remove([i in (0, 11, 14) for i in range(len(teacher.layers))])
    path = tmp_path_factory.mktemp("start") / "start.json"
    path.write_text(start.to_json())
    return path


def settings(work: Path, start_json: Path, **changes) -> BuildSettings:
    from n2n_env.arch import Architecture

    values = {"space": "shrink", "work_dir": work, "out": work / "table.npz",
              "dataset": "synthetic", "teacher_epochs": 1, "seeds": SEEDS, "part_size": 3,
              "start": Architecture.from_json(start_json.read_text()), "progress": False}
    return BuildSettings(**{**values, **changes})


@pytest.fixture(scope="module")
def unbroken(home, start_json, tmp_path_factory) -> BenchTable:
    work = tmp_path_factory.mktemp("unbroken")
    status = build(settings(work, start_json))
    assert status.complete and status.parts_total == 4 and status.trainable == 10
    return BenchTable.load(status.table)


def test_unbroken_build_stores_every_student_at_every_seed(unbroken):
    assert unbroken.num_episodes == 10 and unbroken.num_students == 10
    assert unbroken.header.seeds == SEEDS and unbroken.header.dataset == "synthetic"
    assert np.isfinite(unbroken.val_accuracy).all() and np.isfinite(unbroken.test_accuracy).all()
    assert (unbroken.seconds > 0).all()
    assert unbroken.header.build_seconds == pytest.approx(float(unbroken.seconds.sum()), rel=1e-5)
    assert "CPU seconds" in unbroken.header.machine


def test_stored_accuracies_are_the_environment_evaluators(home, start_json, unbroken):
    """A stored validation accuracy is what DistillationEvaluator.evaluate gives the same
    student at the same seed, with the build's teacher."""
    from n2n_env.bench.spaces import make_space
    from n2n_env.checkpoints import load_teacher
    from n2n_env.distill import DistillationEvaluator

    work = Path(unbroken.source).parent
    model, record = load_teacher(work / "teacher.pt")
    space = make_space("shrink", record.architecture, settings(work, start_json).start)
    evaluator = DistillationEvaluator(model, data.load("synthetic"), seed=SEEDS[1],
                                      teacher_accuracy=record.val_accuracy)
    student = unbroken.student_of(6)
    evaluation = evaluator.evaluate(space.student(6))
    assert np.float32(evaluation.accuracy) == unbroken.val_accuracy[student, 1]
    assert unbroken.header.teacher_accuracy == record.val_accuracy


def test_kill_9_then_resume_gives_the_unbroken_table(home, start_json, unbroken, tmp_path):
    work = tmp_path / "work"
    command = [sys.executable, "-c", "import sys; from n2n_env.cli import main; "
               "sys.exit(main(sys.argv[1:]))", "bench", "build", "shrink", "--dataset",
               "synthetic", "--teacher-epochs", "1", "--start", str(start_json), "--seeds", "0,1",
               "--part-size", "3", "--work", str(work), "--threads", "1", "--no-progress"]
    process = subprocess.Popen(command, env={**os.environ, "N2N_HOME": str(home)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = work / "parts" / "part-00000.json"
    deadline = time.monotonic() + 120
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.exists(), process.stderr.read() if process.poll() is not None else "timeout"
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = sorted(p.name for p in (work / "parts").glob("part-*.json"))
    assert done_before and len(done_before) < 4
    stamps = {name: (work / "parts" / name).read_text() for name in done_before}

    status = build(settings(work, start_json))
    assert status.complete
    for name, text in stamps.items():  # finished parts were kept, not trained again
        assert (work / "parts" / name).read_text() == text
    resumed = BenchTable.load(status.table)
    np.testing.assert_array_equal(resumed.val_accuracy, unbroken.val_accuracy)
    np.testing.assert_array_equal(resumed.test_accuracy, unbroken.test_accuracy)
    np.testing.assert_array_equal(resumed.signature, unbroken.signature)


def test_a_work_directory_of_another_build_is_refused(home, start_json, unbroken, tmp_path):
    work = tmp_path / "work"
    build(settings(work, start_json, seeds=(0,), out=None))
    with pytest.raises(BuildError, match=r"belongs to another build.*seeds"):
        build(settings(work, start_json))


def test_a_damaged_part_is_refused_by_name(home, start_json, tmp_path):
    work = tmp_path / "work"
    build(settings(work, start_json, seeds=(0,), out=None))
    part = work / "parts" / "part-00001.json"
    part.write_text(part.read_text()[:50])
    with pytest.raises(BuildError, match=r"part-00001\.json is damaged"):
        build(settings(work, start_json, seeds=(0,), out=None))
    part.write_text(json.dumps({"format": "n2n-bench-part", "build": "x", "signatures": []}))
    with pytest.raises(BuildError, match=r"part-00001\.json belongs to another build"):
        build(settings(work, start_json, seeds=(0,), out=None))


def test_shards_split_the_parts(home, start_json, tmp_path):
    work = tmp_path / "work"
    status = build(settings(work, start_json, seeds=(0,), shard=(1, 2)))
    assert status.parts_done == 2 and not status.complete and status.table is None
    assert sorted(p.name for p in (work / "parts").iterdir()) == [
        "part-00001.json", "part-00003.json"]
    status = build(settings(work, start_json, seeds=(0,), shard=(0, 2)))
    assert status.complete and status.table is not None


def test_cli_builds_a_table_and_records_its_command(home, start_json, tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "t.npz"
    code = main(["bench", "build", "shrink", "--dataset", "synthetic", "--teacher-epochs", "1",
                 "--start", str(start_json), "--seeds", "3", "--work", str(work), "--out",
                 str(out), "--threads", "1", "--no-progress"])
    assert code == 0
    assert f"table written to {out}" in capsys.readouterr().out
    header = BenchTable.load(out).header
    assert header.seeds == (3,)
    assert header.command.startswith("n2n bench build shrink --teacher conv3 --dataset synthetic")
    assert f"--start {start_json}" in header.command


@pytest.mark.parametrize(("argv", "message"), [
    (["removal", "--seeds", "1,1"], "distinct integers"),
    (["removal", "--shard", "2/2"], "0 <= I < N"),
    (["removal", "--part-size", "0"], "positive integer"),
])
def test_cli_bad_values_are_one_line(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "build", *argv, "--work", str(tmp_path / "w")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["removal", "--start", "x.json"], "--start is for the shrink space only"),
    (["shrink", "--start", "/nonexistent/start.json"], "cannot read the architecture file"),
])
def test_cli_bad_start_is_one_line(argv, message, capsys, tmp_path):
    assert main(["bench", "build", *argv, "--work", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()


@given(count=st.integers(1, 600), shards=st.integers(1, 3), data=st.data())
@hypothesis_settings(max_examples=200, deadline=None)
def test_any_prefix_of_the_spread_order_covers_the_parts_evenly(count, shards, data):
    """Whatever a shard has finished when a build stops, no stretch of more than 2·count/m
    consecutive parts is missing from its first m (index order would leave count - m)."""
    shard = data.draw(st.integers(0, shards - 1))
    order = [number for number in spread_order(count) if number % shards == shard]
    assert sorted(spread_order(count)) == list(range(count))
    for finished in range(1, len(order) + 1):
        done = sorted(order[:finished])
        gaps = [done[0] + 1, count - done[-1], *np.diff(done)]
        assert max(gaps) <= 2 * count / finished, (finished, done)
