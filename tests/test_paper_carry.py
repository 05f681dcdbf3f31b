"""``n2n_env.paper.carry``: an unfinished unit's run folder travels through git intact.

A search of several hours is cut off by the end of a sitting, and the next sitting may be
on a fresh machine. The committed copy must be a state the run can resume from (never a
mix of two moments, never a reward cache without its newest rewards), must never replace
a newer run folder, and must go away once the unit is done.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from cli_runs import run

from n2n_env.paper import carry

pytestmark = pytest.mark.usefixtures("one_thread")


def write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def a_run(work: Path, unit: str = "compress-a") -> Path:
    """A run folder with the files of a search: state, policy, metrics, TensorBoard."""
    folder = work / "runs" / unit
    write(folder / "state.json", '{"iteration": 2}')
    write(folder / "removal_policy.pt", "policy-2")
    write(folder / "metrics_removal.csv", "iteration\n1\n2\n")
    write(folder / "tensorboard" / "removal" / "events", "e")
    write(folder / "unit.json", json.dumps({"identity": {}, "seconds": 100.0, "sittings": 1}))
    return folder


def test_a_copy_holds_the_rewards_still_in_the_write_ahead_log(tmp_path: Path) -> None:
    run_folder = a_run(tmp_path)
    connection = sqlite3.connect(run_folder / "rewards.sqlite")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA wal_autocheckpoint=0")
    connection.execute("CREATE TABLE rewards (key TEXT, reward REAL)")
    connection.executemany("INSERT INTO rewards VALUES (?, ?)", [("a", 0.5), ("b", 0.25)])
    connection.commit()
    try:
        assert (run_folder / "rewards.sqlite-wal").stat().st_size > 0
        done = carry.snapshot(run_folder, carry.carry_dir(tmp_path, "compress-a"))
    finally:
        connection.close()
    assert done.copied, done.note
    target = carry.carry_dir(tmp_path, "compress-a")
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "carry.json", "metrics_removal.csv", "removal_policy.pt", "rewards.sqlite",
        "state.json", "unit.json"]  # no TensorBoard, no -wal or -shm
    copied = sqlite3.connect(target / "rewards.sqlite")
    assert copied.execute("SELECT * FROM rewards ORDER BY key").fetchall() == [
        ("a", 0.5), ("b", 0.25)]
    copied.close()


def test_a_copy_travels_from_any_folder_name_without_a_readers_side_files(
        tmp_path: Path) -> None:
    work = tmp_path / "sitting #1? 100%"  # characters that mean something in a URI
    run_folder = a_run(work)
    with sqlite3.connect(run_folder / "rewards.sqlite") as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE rewards (key TEXT, reward REAL)")
        connection.execute("INSERT INTO rewards VALUES ('a', 0.5)")
    connection.close()
    done = carry.snapshot(run_folder, carry.carry_dir(work, "compress-a"))
    assert done.copied, done.note
    target = carry.carry_dir(work, "compress-a")
    # whoever reads the committed copy (benchmarks/paper_iterations.py) may leave these
    write(target / "rewards.sqlite-wal", "")
    write(target / "rewards.sqlite-shm", "stale index")
    fresh = tmp_path / "fresh" / "compress-a"
    assert carry.restore(work, "compress-a", fresh) is not None
    assert sorted(p.name for p in fresh.iterdir()) == [
        "metrics_removal.csv", "removal_policy.pt", "rewards.sqlite", "state.json",
        "unit.json"]
    with sqlite3.connect(fresh / "rewards.sqlite") as copied:
        assert copied.execute("SELECT * FROM rewards").fetchall() == [("a", 0.5)]
    copied.close()


def test_a_folder_that_changes_during_the_copy_is_copied_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The search saves its policy, then ``state.json``: a copy taken across that moment
    would pair the new policy with the old state. Only a copy during which nothing
    changed is kept."""
    run_folder = a_run(tmp_path)
    real_copy, calls = carry._copy, []

    def copy_while_an_iteration_ends(*args: object) -> None:
        calls.append(1)
        real_copy(*args)
        if len(calls) == 1:
            write(run_folder / "removal_policy.pt", "policy-3")
            write(run_folder / "state.json", '{"iteration": 3}')

    monkeypatch.setattr(carry, "_copy", copy_while_an_iteration_ends)
    monkeypatch.setattr(carry.time, "sleep", lambda seconds: None)
    done = carry.snapshot(run_folder, carry.carry_dir(tmp_path, "compress-a"))
    assert done.copied and len(calls) == 2
    target = carry.carry_dir(tmp_path, "compress-a")
    assert (target / "state.json").read_text() == '{"iteration": 3}'
    assert (target / "removal_policy.pt").read_text() == "policy-3"


def test_a_folder_that_never_settles_is_not_carried_and_the_old_copy_stays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_folder = a_run(tmp_path)
    target = carry.carry_dir(tmp_path, "compress-a")
    assert carry.snapshot(run_folder, target).copied
    real_copy, count = carry._copy, [0]

    def busy(*args: object) -> None:
        real_copy(*args)
        count[0] += 1
        write(run_folder / "state.json", json.dumps({"iteration": 10 + count[0]}))

    monkeypatch.setattr(carry, "_copy", busy)
    monkeypatch.setattr(carry.time, "sleep", lambda seconds: None)
    done = carry.snapshot(run_folder, target)
    assert not done.copied and "changed" in done.note and count[0] == carry.ATTEMPTS
    assert (target / "state.json").read_text() == '{"iteration": 2}'
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]


def test_large_files_are_left_out_only_when_a_resume_recomputes_them(tmp_path: Path) -> None:
    run_folder = a_run(tmp_path)
    write(run_folder / "finetune_abc.partial", "p" * 500)
    target = carry.carry_dir(tmp_path, "compress-a")
    done = carry.snapshot(run_folder, target, limit=100)
    assert done.copied and "finetune_abc.partial" in done.note
    assert not (target / "finetune_abc.partial").exists()
    assert json.loads((target / carry.MANIFEST).read_text())["left_out"] == [
        "finetune_abc.partial"]

    write(run_folder / "removal_policy.pt", "w" * 500)
    done = carry.snapshot(run_folder, target, limit=100)
    assert not done.copied and "removal_policy.pt" in done.note and "100" in done.note
    assert (target / "removal_policy.pt").read_text() == "policy-2"  # the old copy stays


def test_a_pruning_loops_checkpoint_is_carried_only_when_asked(
        tmp_path: Path) -> None:
    run_folder = tmp_path / "runs" / "prune-a"
    write(run_folder / "unit.json", json.dumps({"identity": {}, "seconds": 1.0, "sittings": 1}))
    write(run_folder / "seed-0.result.json", "{}")
    write(run_folder / "seed-1.loop.pt", "l")
    target = carry.carry_dir(tmp_path, "prune-a")
    done = carry.snapshot(run_folder, target)
    assert done.copied, done.note
    assert sorted(p.name for p in target.iterdir()) == [
        "carry.json", "seed-0.result.json", "unit.json"]
    # A new checkpoint alone asks for no new copy: the copy would be the same.
    time.sleep(0.01)
    write(run_folder / "seed-1.loop.pt", "step 2")
    assert carry.snapshot_unfinished(tmp_path) == []

    # Asked (the end of a sitting): the checkpoint is news, is copied, and a fresh machine
    # gets it back as it was.
    assert carry.main([str(tmp_path), "--loops"]) == 0
    assert sorted(p.name for p in target.iterdir()) == [
        "carry.json", "seed-0.result.json", "seed-1.loop.pt", "unit.json"]
    assert (target / "seed-1.loop.pt").read_text() == "step 2"
    assert carry.snapshot_unfinished(tmp_path, loops=True) == []  # nothing new since
    # A later copy without it, of an unchanged folder, keeps the copy that has it.
    assert carry.snapshot_unfinished(tmp_path) == []
    shutil.rmtree(run_folder)
    assert carry.restore(tmp_path, "prune-a", run_folder) is not None
    assert (run_folder / "seed-1.loop.pt").read_text() == "step 2"
    # The machine that ran it, one step further, keeps its own folder.
    time.sleep(0.01)
    write(run_folder / "seed-1.loop.pt", "step 3")
    assert carry.restore(tmp_path, "prune-a", run_folder) is None
    assert (run_folder / "seed-1.loop.pt").read_text() == "step 3"
    # Too large (full-width VGG-13's first steps): left out, and the loop starts over.
    write(run_folder / "seed-1.loop.pt", "step 4" * 20)
    done = carry.snapshot(run_folder, target, loops=True, limit=100)
    assert done.copied and "seed-1.loop.pt" in done.note
    assert not (target / "seed-1.loop.pt").exists()


def test_the_copy_counts_the_sittings_time_up_to_its_last_write(tmp_path: Path) -> None:
    run_folder = a_run(tmp_path)
    began = (run_folder / "unit.json").stat().st_mtime
    os.utime(run_folder / "state.json", (began + 600, began + 600))
    target = carry.carry_dir(tmp_path, "compress-a")
    carry.snapshot(run_folder, target)
    seconds = json.loads((target / "unit.json").read_text())["seconds"]
    assert seconds == pytest.approx(700.0, abs=1.0)
    assert json.loads((run_folder / "unit.json").read_text())["seconds"] == 100.0


def test_an_idle_folder_is_copied_with_its_own_times(tmp_path: Path) -> None:
    """A run stopped a day ago, its reward cache closed: reading the cache recreates an
    empty write-ahead log, which must count neither as the run's work nor as news."""
    run_folder = a_run(tmp_path)
    connection = sqlite3.connect(run_folder / "rewards.sqlite")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE rewards (key TEXT, reward REAL)")
    connection.execute("INSERT INTO rewards VALUES ('a', 0.5)")
    connection.commit()
    connection.close()  # the log is folded into the file and removed
    began = (run_folder / "unit.json").stat().st_mtime - 86_400
    for path in run_folder.rglob("*"):
        os.utime(path, (began, began))
    target = carry.carry_dir(tmp_path, "compress-a")
    assert carry.snapshot(run_folder, target).copied
    assert json.loads((target / "unit.json").read_text())["seconds"] == pytest.approx(100.0)
    assert carry.snapshot_unfinished(tmp_path) == []  # the copy itself is no change


def test_restore_fills_a_missing_or_older_folder_and_never_a_newer_one(tmp_path: Path) -> None:
    run_folder = a_run(tmp_path)
    carry.snapshot(run_folder, carry.carry_dir(tmp_path, "compress-a"))
    # the same machine went on: its folder is newer than the copy
    write(run_folder / "state.json", '{"iteration": 3}')
    assert carry.restore(tmp_path, "compress-a", run_folder) is None
    assert (run_folder / "state.json").read_text() == '{"iteration": 3}'
    # a machine with an older folder (left before another machine went on)
    old = (run_folder / "unit.json").stat().st_mtime - 3600
    for path in run_folder.rglob("*"):
        os.utime(path, (old, old))
    line = carry.restore(tmp_path, "compress-a", run_folder)
    assert line is not None and "continuing from" in line
    assert (run_folder / "state.json").read_text() == '{"iteration": 2}'
    assert not (run_folder / carry.MANIFEST).exists()
    # a fresh machine
    other = tmp_path / "fresh" / "compress-a"
    assert carry.restore(tmp_path, "compress-a", other) is not None
    assert (other / "removal_policy.pt").read_text() == "policy-2"
    assert carry.restore(tmp_path, "no-such-unit", tmp_path / "runs" / "x") is None


def test_snapshot_unfinished_skips_finished_and_unchanged_units(tmp_path: Path) -> None:
    a_run(tmp_path, "compress-a")
    a_run(tmp_path, "compress-b")
    write(tmp_path / "units" / "compress-b.json", "{}")
    write(tmp_path / "carry" / "compress-b" / carry.MANIFEST, "{}")  # finished meanwhile
    done = carry.snapshot_unfinished(tmp_path)
    assert [(d.unit, d.copied) for d in done] == [("compress-a", True)]
    assert not (tmp_path / "carry" / "compress-b").exists()
    assert carry.snapshot_unfinished(tmp_path) == []  # nothing changed since
    write(tmp_path / "runs" / "compress-a" / "state.json", '{"iteration": 3}')
    assert carry.snapshot_unfinished(tmp_path, every=3600) == []  # too soon
    assert [d.unit for d in carry.snapshot_unfinished(tmp_path)] == ["compress-a"]


def test_the_command_line_reports_each_unit(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    a_run(tmp_path)
    assert carry.main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("carry compress-a: 4 files")
    with pytest.raises(SystemExit):
        carry.main([str(tmp_path / "missing")])
    assert "is not a folder" in capsys.readouterr().err


def test_an_interrupted_search_continues_on_a_fresh_machine_as_if_unbroken(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Table 1's search is cut off in stage 2; its committed copy is all a fresh machine
    has (no run folder). It goes on from there, without searching stage 1 again, and ends
    with the very result of a run never cut off."""
    from n2n_env import pipeline

    monkeypatch.setenv("N2N_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    unit = "compress-conv4-w0.25-digits-reinforce-seed0"

    def argv(work: Path) -> list[str]:
        return ["paper", "1", "--work", str(work), "--dataset", "digits", "--teacher",
                "conv4", "--teacher-width", "0.25", "--iterations", "3",
                "--finetune-epochs", "1", "--teacher-epochs", "1", "--seeds", "0",
                "--evaluator", "mock", "--no-progress", "--agents", "reinforce"]

    code, _, err = run(argv(tmp_path / "unbroken"), capsys)
    assert code == 0, err
    unbroken = json.loads((tmp_path / "unbroken" / "units" / f"{unit}.json").read_text())

    real_seed, played, sittings = pipeline._iteration_seed, [], [1]

    def cut_off_in_stage_two(seed: int, stage: int, iteration: int) -> int:
        played.append((stage, iteration))
        if (stage, iteration) == (1, 2) and sittings == [1]:
            raise KeyboardInterrupt
        return real_seed(seed, stage, iteration)

    work = tmp_path / "work"
    monkeypatch.setattr(pipeline, "_iteration_seed", cut_off_in_stage_two)
    code, _, err = run(argv(work), capsys)
    assert code == 130, err
    assert [d.unit for d in carry.snapshot_unfinished(work) if d.copied] == [unit]
    shutil.rmtree(work / "runs")  # the fresh machine has the committed files only
    code, out, _ = run([*argv(work), "--report"], capsys)
    assert code == 0  # the copy tells how far the search got and how long it took
    assert re.search(rf"\| {unit} \| partial: stage 1 3/3, stage 2 1/3 iterations \| "
                     r"[0-9.]+ s so far \|", (work / "table-1.md").read_text())
    played.clear()
    sittings.append(2)
    code, out, err = run(argv(work), capsys)
    assert code == 0, err
    assert f"resume   {unit}" in out and "continuing from" in out
    assert played == [(1, 2), (1, 3)]  # stage 1 was not searched again
    result = json.loads((work / "units" / f"{unit}.json").read_text())
    assert result["result"] == unbroken["result"]
    assert result["sittings"] == 2
    assert not (work / "carry").exists()
