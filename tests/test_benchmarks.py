"""The benchmark scripts are where the documented numbers come from: they must keep running.

Each runs as a script on ``digits`` with tiny budgets and a private ``$N2N_HOME`` whose
teacher was trained for two epochs, and its printed table is checked for the rows and
columns docs/benchmarks.md quotes.
"""

from __future__ import annotations

import math
import re
import runpy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bench_tables import table_rows

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


@pytest.fixture()
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from n2n_env.teacher import get_teacher

    monkeypatch.setenv("N2N_HOME", str(tmp_path))
    get_teacher("conv4", "digits", width=0.25, epochs=2, progress=False)
    return tmp_path


def test_evaluator_benchmark_compares_budgets_with_a_repeated_reference(
        private_home: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    script = BENCHMARKS / "evaluator.py"
    monkeypatch.setattr(sys, "argv", [
        str(script), "--dataset", "digits", "--teachers", "conv4:0.25", "--candidates", "4",
        "--budgets", "6x16,3@0.002", "--reference-repeats", "2", "--reference-epochs", "1",
        "--seeds", "2"])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert [row[3] for row in rows] == ["6 x 16", "3 x 32 @ 0.002"]
    assert len({len(row) for row in rows}) == 1 and len(rows[0]) == 13
    assert all(row[0] == "conv4" and float(row[4]) > 0 and row[6].endswith("x") for row in rows)
    # Each budget ran with two seeds: its taus are "mean (min to max)", the mean inside.
    spreads = [re.fullmatch(r"(\S+) \((\S+) to (\S+)\)", row[column])
               for row in rows for column in (7, 8, 11)]
    assert all(spreads), rows
    for spread in spreads:
        mean, low, high = (float(value) for value in spread.groups())  # type: ignore[union-attr]
        assert -1.005 <= low - 0.005 <= mean <= high + 0.005 <= 1.005 or math.isnan(mean)
    # How well the reference, and each budget, predicts its own rerun with another seed.
    assert all(-1.0 <= float(row[column]) <= 1.0 or math.isnan(float(row[column]))
               for row in rows for column in (9, 10))
    assert "mean Kendall tau" in out and "over 1 pair\n" in out
    candidate_lines = [line for line in out.splitlines() if "conv4 candidate" in line]
    assert len(candidate_lines) == 4
    assert all(re.search(r"6x16: \d\.\d{4} \d\.\d{4} \(", line) for line in candidate_lines)

    # --from-log recomputes the agreements from the printed accuracies alone.
    log = private_home / "evaluator.log"
    log.write_text(out)
    monkeypatch.setattr(sys, "argv", [str(script), "--from-log", str(log)])
    runpy.run_path(str(script), run_name="__main__")
    agreements = table_rows(capsys.readouterr().out)
    assert [row[1] for row in agreements] == ["6x16", "3@0.002", "reference"]
    assert [row[3] for row in agreements[:2]] == [row[7] for row in rows]
    assert [row[4] for row in agreements[:2]] == [row[10] for row in rows]
    assert agreements[2][4] == rows[0][9]


def test_reference_agreement_measures() -> None:
    helpers = runpy.run_path(str(BENCHMARKS / "evaluator.py"))
    identical, swapped = [1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 40.0, 31.0]
    runs = [identical, identical, swapped]
    # Pairs: (identical, identical) agree fully, each pair with `swapped` has one of six
    # pairs discordant: (1 + 2/3 + 2/3) / 3.
    assert helpers["mean_pairwise_tau"](runs) == pytest.approx(7 / 9)
    # Each run against the mean of the other two ranks the last two candidates the other way
    # round, since `swapped` outweighs `identical` there: 2/3 every time.
    assert helpers["leave_one_out_tau"](runs) == pytest.approx(2 / 3)


def test_compress_benchmark_reports_each_agents_table_and_search(
        private_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    script = BENCHMARKS / "compress_mnist.py"
    monkeypatch.setattr(sys, "argv", [
        str(script), "--dataset", "digits", "--teacher-width", "0.25", "--iterations", "1",
        "--finetune-epochs", "1", "--agents", "reinforce,random", "--out", str(tmp_path / "runs")])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    headers = re.findall(r"## (\S+): (\d+) \+ (\d+) candidates trained \(stage 1 \+ 2\), best "
                         r"reward (\S+) / (\S+), \d+ s, run dir (\S+)", out)
    assert [header[0] for header in headers] == ["reinforce", "random"]
    for _, stage1, stage2, best1, best2, run in headers:
        # One iteration is 5 episodes per stage; repeats are answered by the cache.
        assert 1 <= int(stage1) <= 5 and 1 <= int(stage2) <= 5
        assert -1.0 <= float(best1) <= 1.0 and -1.0 <= float(best2) <= 1.0
        assert (Path(run) / "result.json").is_file()
    assert out.count("Student (Stage1+Stage2)") == 2


def test_backend_benchmark_reports_students_per_minute_and_identical_results(
        private_home: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    script = BENCHMARKS / "bench_backends.py"
    monkeypatch.setenv("N2N_THREADS", "1")  # the script fixes it; restored after the test
    monkeypatch.setattr(sys, "argv", [
        str(script), "--width", "0.25", "--students", "2", "--mock-students", "10",
        "--workers", "1", "--backends", "process"])
    runpy.run_path(str(script), run_name="__main__")
    rows = table_rows(capsys.readouterr().out)
    process = [row for row in rows if row[0] == "process"]
    assert process and process[0][-1] == "yes"  # the worker's results equal in-process ones
    assert float(process[0][4]) > 0  # students per minute


def test_latency_benchmark_compares_the_estimate_and_measures_noise(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    script = BENCHMARKS / "bench_latency.py"
    monkeypatch.setattr(sys, "argv", [
        str(script), "--networks", "conv4@1x8x8:0.125,resnet18@3x8x8:0.125", "--students",
        "2", "--repeats", "2"])
    runpy.run_path(str(script), run_name="__main__")
    rows = table_rows(capsys.readouterr().out)
    assert [row[:2] for row in rows] == [["conv4@1x8x8:0.125", "2"],
                                         ["resnet18@3x8x8:0.125", "2"]]
    for row in rows:
        assert int(row[2]) > 0 and float(row[3]) > 0 and float(row[4]) > 0
        assert all(re.fullmatch(r"[\d.]+% / [\d.]+%", cell) for cell in row[7:])


def test_real_env_agents_compares_agents_with_random_and_resumes(
        private_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    script = BENCHMARKS / "real_env_agents.py"
    argv = [str(script), "--dataset", "digits", "--teacher-width", "0.25", "--evaluator",
            "mock", "--workers", "1", "--evaluations", "12", "--seeds", "2", "--agents",
            "reinforce:learning_rate=0.01", "random", "--out", str(tmp_path / "out")]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(script), run_name="__main__")
    out, err = capsys.readouterr()
    assert out.count("best reward") >= 4  # one line per run, and the table's title
    assert "random seed 1" in err and "episode" in err  # a progress bar per run
    rows = table_rows(out)
    assert [row[0] for row in rows] == ["reinforce:learning_rate=0.01", "random"]
    assert rows[1][2] == "-" and re.fullmatch(r"\S+ \[\S+, \S+\]", rows[0][2])
    logs = sorted((tmp_path / "out" / "episodes").glob("*.csv"))
    assert len(logs) == 4 and all(len(log.read_text().splitlines()) == 13 for log in logs)
    stamps = [log.stat().st_mtime_ns for log in logs]
    runpy.run_path(str(script), run_name="__main__")  # resumed: nothing is played again
    assert [log.stat().st_mtime_ns for log in logs] == stamps
    assert table_rows(capsys.readouterr().out) == rows


def test_real_env_agents_plays_the_shrink_environment_when_asked(
        private_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import gymnasium as gym

    made: list[str] = []
    make_vec = gym.make_vec

    def spy(env_id: str, *args: object, **kwargs: object) -> object:
        made.append(env_id)
        return make_vec(env_id, *args, **kwargs)

    monkeypatch.setattr(gym, "make_vec", spy)
    script = BENCHMARKS / "real_env_agents.py"
    monkeypatch.setattr(sys, "argv", [
        str(script), "--env", "shrink", "--dataset", "digits", "--teacher-width", "0.25",
        "--evaluator", "mock", "--workers", "1", "--evaluations", "10", "--seeds", "1",
        "--agents", "reinforce", "random", "--out", str(tmp_path / "out"), "--no-progress"])
    runpy.run_path(str(script), run_name="__main__")
    assert made == ["N2NShrink-v0", "N2NShrink-v0"]
    out = capsys.readouterr().out
    assert "shrink: conv4 (width 0.25) on digits" in out
    assert [row[0] for row in table_rows(out)] == ["reinforce", "random"]


def test_provisional_table_keeps_finished_students_and_imputes_the_nearest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A removal work directory made by hand (the small teacher of the bench tests, a part
    file holding every student but the masks with layer bit 5 set): the finished students
    keep their values, each imputed one gets its nearest finished mask's."""
    import json

    import numpy as np
    from bench_tables import fake_table, small_teacher

    from n2n_env.bench.table import BenchTable
    from n2n_env.build import build_model
    from n2n_env.checkpoints import TeacherRecord, save_teacher
    from n2n_env.recipes import recipe_for

    teacher = small_teacher()
    work = tmp_path / "work"
    save_teacher(work / "teacher.pt", build_model(teacher), TeacherRecord(
        teacher, "synthetic", "f" * 16, 0.97, 0.96, recipe_for("synthetic")))
    (work / "identity.json").write_text(json.dumps({
        "space": "removal", "seeds": [0, 1, 2], "teacher": "0" * 16, "dataset": "synthetic",
        "dataset_fingerprint": "f" * 16, "recipe": {"steps": 100}, "recipe_digest": "d" * 16,
        "include_kernels": False}))
    real = fake_table("removal")
    space = real.header.space_object()
    trainable = [e for e in range(space.size) if real.status[real.student_of(e)] < 0]
    finished = [e for e in trainable if not (e >> 5) & 1]
    students = [real.student_of(e) for e in finished]
    signatures = {e: build_student_signature(teacher, space, e) for e in trainable}
    (work / "parts").mkdir()
    (work / "parts" / "part-00000.json").write_text(json.dumps({
        "signatures": [signatures[e] for e in finished],
        "val_accuracy": real.val_accuracy[students].tolist(),
        "test_accuracy": real.test_accuracy[students].tolist(),
        "seconds": real.seconds[students].tolist()}))
    out = tmp_path / "provisional.npz"
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / "provisional_table.py"), "--work",
                                      str(work), "--out", str(out)])
    runpy.run_path(str(BENCHMARKS / "provisional_table.py"), run_name="__main__")
    imputed = len(trainable) - len(finished)
    assert f"{len(finished)} finished students, {imputed} imputed" in capsys.readouterr().out
    table = BenchTable.load(out)
    assert table.header.extra["provisional"].startswith(f"{imputed} of {len(trainable)}")
    assert np.array_equal(table.params, real.params) and np.array_equal(table.status,
                                                                         real.status)
    for episode in trainable:
        got = table.val_accuracy[table.student_of(episode)]
        if episode in finished:
            assert np.allclose(got, real.val_accuracy[real.student_of(episode)])
        else:  # the nearest finished mask differs in bit 5 alone
            twin = real.student_of(episode & ~(1 << 5))
            assert np.allclose(got, real.val_accuracy[twin]), episode


def _shrink_build(work: Path) -> tuple[Any, Callable[[int], list[float]]]:
    """A shrink build's work directory by hand: the small teacher of the bench tests (2
    shrink variables, 100 students), 2 seeds, made-up accuracies that differ by both
    widths, every student finished but those whose first width is 40%. Returns the space
    and the accuracies."""
    import json

    from bench_tables import small_teacher

    from n2n_env.bench.spaces import catalogue, make_space
    from n2n_env.build import build_model
    from n2n_env.checkpoints import TeacherRecord, save_teacher
    from n2n_env.recipes import recipe_for

    teacher = small_teacher()
    save_teacher(work / "teacher.pt", build_model(teacher), TeacherRecord(
        teacher, "synthetic", "f" * 16, 0.97, 0.96, recipe_for("synthetic")))
    (work / "identity.json").write_text(json.dumps({
        "space": "shrink", "seeds": [0, 1], "teacher": "0" * 16, "dataset": "synthetic",
        "dataset_fingerprint": "f" * 16, "recipe": {"steps": 100}, "recipe_digest": "d" * 16,
        "start": None, "include_kernels": False}))
    space = make_space("shrink", teacher)
    students = catalogue(space)

    def accuracy(episode: int) -> list[float]:
        first, second = space.actions(episode)
        return [0.5 + 0.04 * first + 0.003 * second, 0.6 + 0.004 * first * first]

    finished = [e for e in range(space.size) if space.actions(e)[0] != 3]
    (work / "parts").mkdir()
    (work / "parts" / "part-00000.json").write_text(json.dumps({
        "signatures": [students.students[students.row_student[e]].signature()
                       for e in finished],
        "val_accuracy": [accuracy(e) for e in finished],
        "test_accuracy": [accuracy(e) for e in finished],
        "seconds": [[1.0, 2.0] for _ in finished]}))
    return space, accuracy


def test_provisional_shrink_table_imputes_the_mean_of_the_nearest_width_steps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every student whose first width is 40% is missing: each gets the mean of its
    neighbours at 30% and 50% (L1 distance 1), whose accuracies differ, so a wrong
    distance shows."""
    import numpy as np

    from n2n_env.bench.table import BenchTable

    work = tmp_path / "work"
    space, accuracy = _shrink_build(work)
    out = tmp_path / "shrink.npz"
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / "provisional_table.py"), "--work",
                                      str(work), "--out", str(out)])
    runpy.run_path(str(BENCHMARKS / "provisional_table.py"), run_name="__main__")
    table = BenchTable.load(out)
    assert table.header.space == "shrink"
    assert table.header.extra["provisional"].startswith("10 of 100")
    for episode in range(space.size):
        got = table.val_accuracy[table.student_of(episode)]
        first, second = space.actions(episode)
        if first != 3:
            assert np.allclose(got, accuracy(episode))
        else:
            expected = np.mean([accuracy(space.index((2, second))),
                                accuracy(space.index((4, second)))], axis=0)
            assert np.allclose(got, expected), episode


def test_partial_landscape_of_a_shrink_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The preview reads the space from the build's identity, counts its parts, and says
    what each decision is worth, as computed here by hand from the made-up accuracies."""
    import numpy as np
    from bench_tables import small_teacher

    from n2n_env.bench.spaces import catalogue
    from n2n_env.reward import n2n_reward

    work = tmp_path / "work"
    space, accuracy = _shrink_build(work)
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / "partial_landscape.py"), "--work",
                                      str(work)])
    runpy.run_path(str(BENCHMARKS / "partial_landscape.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "shrink space: 100 students, 100 trainable; finished 90 (90%), 2 seeds" in out
    students, teacher_params = catalogue(space), small_teacher().num_params()

    def mean_reward(episode: int) -> float:
        student = students.students[students.row_student[episode]]
        compression = 1 - student.num_params() / teacher_params
        return float(np.mean([n2n_reward(compression, a, 0.97) for a in accuracy(episode)]))

    finished = [e for e in range(space.size) if space.actions(e)[0] != 3]
    for variable in (0, 1):
        largest = [mean_reward(e) for e in finished if space.actions(e)[variable] == 9]
        smallest = [mean_reward(e) for e in finished if space.actions(e)[variable] == 0]
        effect = np.mean(largest) - np.mean(smallest)
        assert f"variable {variable}, 100% - 10%: {effect:+.3f}" in out
    for part in (work / "parts").iterdir():
        part.unlink()
    with pytest.raises(SystemExit):  # a build not started yet: one line, no traceback
        runpy.run_path(str(BENCHMARKS / "partial_landscape.py"), run_name="__main__")
    assert "holds no finished part of a build yet" in capsys.readouterr().err


def build_student_signature(teacher, space, episode: int) -> str:
    return teacher.remove([bool(a) for a in space.actions(episode)]).signature()


def test_env_speed_benchmark_plays_uniform_allowed_actions_on_both_environments(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import gymnasium as gym
    from bench_tables import fake_table

    speed = runpy.run_path(str(BENCHMARKS / "bench_env_speed.py"))
    # invalid_action="raise": one masked action (removing a fixed layer) would raise.
    env = gym.make("N2NRemovalBench-v0",
                   table=fake_table("removal"), invalid_action="raise")
    taken: list[int] = []
    step = env.step
    monkeypatch.setattr(env, "step", lambda action: taken.append(action) or step(action))
    steps_per_second, episodes_per_second = speed["measure"](env, 0.3)
    assert steps_per_second > episodes_per_second > 0 and len(taken) > 500
    assert 0.3 < taken.count(0) / len(taken) < 0.7  # both actions drawn, not one
    paths = []
    for space in ("removal", "shrink"):
        paths += [f"--{space}-table", str(fake_table(space).save(tmp_path / f"{space}.npz"))]
    monkeypatch.setattr(sys, "argv", ["bench_env_speed.py", *paths, "--seconds", "0.05",
                                      "--warmup", "0.05"])
    speed["main"]()
    rows = table_rows(capsys.readouterr().out)
    assert [(row[0], row[1], row[2]) for row in rows] == [
        (env_id, state, wrappers) for env_id in ("N2NRemovalBench-v0", "N2NShrinkBench-v0")
        for state, wrappers in (("cold", "gym.make"), ("warm", "gym.make"), ("warm", "raw"))]


def test_degenerate_rates_counts_each_teachers_students_by_reason(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    from n2n_env import zoo

    script = runpy.run_path(str(BENCHMARKS / "degenerate_rates.py"))
    resnet = zoo.get("resnet18", input_shape=(3, 32, 32), num_classes=10, width=0.125)
    projection = next(block for block in resnet.blocks if block.projection is not None)
    convs = [i for i in range(projection.start, projection.end)
             if resnet.layers[i].kind == "conv"]  # the body keeps its batch norms only
    student = resnet.remove([i not in convs for i in range(len(resnet.layers))])
    assert script["kind_of"](student.degenerate_reason()) == "residual block"
    keep_mask = np.array([i not in convs for i in range(len(resnet.layers))])
    repaired = script["without_convless_bodies"](resnet, keep_mask)
    assert not repaired[projection.start:projection.end].any()
    assert (repaired[:projection.start] == keep_mask[:projection.start]).all()
    assert resnet.remove(repaired.tolist()).degenerate_reason() is None
    assert script["kind_of"]("empty architecture: no conv") == "empty"

    monkeypatch.setattr(sys, "argv", ["degenerate_rates.py", "--samples", "60",
                                      "--keep", "0.5", "1.0"])
    runpy.run_path(str(BENCHMARKS / "degenerate_rates.py"), run_name="__main__")
    rows = [[cell.strip() for cell in line.strip("|").split("|")]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][2:]
    assert len(rows) == 2 * len(script["TEACHERS"])
    for teacher, _, keep, *shares in rows:
        values = [float(share.rstrip("%")) for share in shares]
        *kinds, usable_if_repaired = values
        assert sum(kinds) == pytest.approx(100.0, abs=0.5)
        if keep == "1.0":
            assert values[0] == usable_if_repaired == 100.0  # the teacher itself is usable
        elif teacher.startswith("resnet"):
            assert values[3] > 25.0  # a conv-less body beside a projection shortcut
            assert usable_if_repaired == pytest.approx(values[0] + values[3], abs=0.5)
        else:
            assert values[3] == 0.0  # no residual blocks in a VGG
            assert usable_if_repaired == values[0]
