"""How ``n2n paper`` runs a unit across sittings: an interrupted search resumes its run,
its time is tallied while it runs, and a teacher longer than a sitting continues from
the work folder on a fresh machine (tiny settings, as in test_paper.py)."""

from __future__ import annotations

import json
import time
import types
from pathlib import Path

import pytest
import torch
from cli_runs import run
from paper_runs import SEARCH, md_row, paper_cmd, results, unit_lines

from n2n_env.paper import report, runner
from n2n_env.paper.plan import Unit

pytestmark = pytest.mark.usefixtures("one_thread", "private_n2n_home")


def test_an_interrupted_unit_resumes_its_run(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from n2n_env import pipeline

    argv = paper_cmd("1", tmp_path / "work", *SEARCH, "--agents", "reinforce")
    argv[argv.index("--seeds") + 1] = "0"
    real = pipeline.finetuned

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "finetuned", interrupt)
    code, out, err = run(argv, capsys)
    assert code == 130 and "rerunning the same command resumes" in err
    unit = "compress-conv4-w0.25-digits-reinforce-seed0"
    table = (tmp_path / "work" / "table-1.md").read_text()
    assert md_row(table, unit)[1] == "partial: stage 1 1/1, stage 2 1/1 iterations"
    assert md_row(table, unit)[2].endswith(" so far")
    assert md_row(table, "Student (Stage1), REINFORCE")[5] == "pending"
    state = json.loads((tmp_path / "work" / "runs" / unit / "state.json").read_text())
    monkeypatch.setattr(pipeline, "finetuned", real)
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert unit_lines(out, "resume") == [unit] and "resuming the run in" in out
    record = results(tmp_path / "work")[unit]
    assert record["sittings"] == 2
    assert record["result"]["stages"] == {
        name: {key: saved[key] for key in ("iteration", "best_reward", "evaluations",
                                           "cache_hits")}
        for name, saved in state["stages"].items()}  # the search was not run again


def test_a_running_units_tally_is_written_while_it_runs(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A sitting killed without warning (a machine taken away) must not lose the time it
    spent: ``unit.json`` is brought up to date while the unit runs, not only at its end."""
    monkeypatch.setattr(runner, "TALLY_SECONDS", 0.05)
    unit = Unit("compress-a", "compress", {"seed": 0})
    marker = tmp_path / "runs" / unit.id / "unit.json"
    seen: list[float] = []

    def slow(unit: Unit, context: object) -> dict:
        seen.append(json.loads(marker.read_text())["seconds"])
        time.sleep(0.5)
        seen.append(json.loads(marker.read_text())["seconds"])
        raise KeyboardInterrupt  # the end is never reached cleanly

    monkeypatch.setitem(runner.EXECUTORS, "compress", slow)
    context = types.SimpleNamespace(work=tmp_path, device=torch.device("cpu"))
    with pytest.raises(KeyboardInterrupt):
        runner._execute(unit, "run", {}, context, "n2n paper 1", print)
    assert seen[0] == pytest.approx(0.0, abs=0.05)
    assert 0.3 <= seen[1] <= 0.55  # written by the tally while the unit was running
    assert json.loads(marker.read_text())["seconds"] >= 0.5
    assert json.loads(marker.read_text())["sittings"] == 1


def test_an_interrupted_teacher_continues_on_a_fresh_machine_from_the_work_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A teacher longer than a sitting keeps its per-epoch state in ``resume/``, which is
    committed with the work folder: a machine with an empty N2N_HOME trains only the
    epochs left, and the finished teacher removes the state."""
    from n2n_env import teacher

    work, unit = tmp_path / "work", "teacher-conv4-w0.25-digits"
    argv = paper_cmd("1", work, *SEARCH, "--only", "teacher-*")
    argv[argv.index("--teacher-epochs") + 1] = "3"
    monkeypatch.setenv("N2N_HOME", str(tmp_path / "first-machine"))
    real_epoch, epochs = teacher._train_epoch, []

    def interrupted_in_epoch_three(*args, **kwargs):
        epochs.append(1)
        if len(epochs) == 3:
            raise KeyboardInterrupt
        time.sleep(3)  # the first machine's epochs outlast the whole second sitting
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(teacher, "_train_epoch", interrupted_in_epoch_three)
    code, _, err = run(argv, capsys)
    assert code == 130, err
    state = work / "resume" / f"{unit}.pt"
    assert torch.load(state, weights_only=True)["epoch"] == 2

    monkeypatch.setenv("N2N_HOME", str(tmp_path / "fresh-machine"))
    epochs.clear()
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert len(epochs) == 1, "the fresh machine should train only the third epoch"
    record = results(work)[unit]
    assert record["result"]["epochs"] == 3
    # the table's wall time covers the first machine's epochs too
    assert record["result"]["train_seconds"] >= 6 > record["seconds"]
    assert report.wall_seconds(record) == record["result"]["train_seconds"]
    assert (work / "teachers" / f"{unit}.pt").is_file() and not state.exists()


def test_an_unfinished_pruning_unit_reports_its_finished_runs(tmp_path: Path) -> None:
    from n2n_env.paper.settings import PaperSettings

    settings = PaperSettings(2)
    prune = next(state.unit for state in runner.states(settings, tmp_path)
                 if state.unit.kind == "prune")
    run_folder = tmp_path / "runs" / prune.id
    run_folder.mkdir(parents=True)
    (run_folder / "unit.json").write_text(json.dumps({"seconds": 4000.0, "sittings": 1}))
    for name in ("seed-0.result.json", "seed-0.pt", "seed-0.json", "seed-1.loop.pt",
                 "seed-2.result.json", "seed-2.pt", "seed-2.json",
                 "seed-3.result.json", "seed-3.json"):  # seed 3's weights were not carried
        (run_folder / name).write_text("{}")
    state = next(s for s in runner.states(settings, tmp_path) if s.unit == prune)
    assert state.status == "partial" and state.progress == "2/5 pruning runs finished"
    assert state.seconds == 4000.0
