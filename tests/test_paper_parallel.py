"""``n2n paper TABLE --jobs N``: units side by side in worker processes.

The workers must reach the very results of one invocation, never run a unit whose needs
have not finished, never run one unit twice at once (the lock), and report a failed
worker without stopping the others.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runs import run

from n2n_env.paper import parallel, runner
from n2n_env.paper.settings import PaperSettings

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

TINY = ["--dataset", "digits", "--teacher", "conv4", "--teacher-width", "0.25",
        "--teacher-epochs", "1", "--seeds", "0", "--iterations", "1",
        "--finetune-epochs", "1", "--evaluator", "mock", "--no-progress"]
UNITS = ["teacher-conv4-w0.25-digits"] + [
    f"compress-conv4-w0.25-digits-{agent}-seed0" for agent in ("reinforce", "random")]


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("N2N_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path / "home"


def results(work: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((work / "units").glob("*.json"))}


def test_two_jobs_reach_the_results_of_one_invocation(
        tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["paper", "1", "--work", str(tmp_path / "one"), *TINY], capsys)
    assert code == 0, err
    code, out, err = run(["paper", "1", "--work", str(tmp_path / "two"), *TINY,
                          "--jobs", "2"], capsys)
    assert code == 0, err
    one, two = results(tmp_path / "one"), results(tmp_path / "two")
    assert sorted(two) == sorted(UNITS)
    for unit in UNITS:
        assert two[unit]["result"] == one[unit]["result"], unit
        assert "1 thread," in two[unit]["machine"]
    assert "2 jobs of 1 thread each" in out
    assert all(f"finished {unit}" in out for unit in UNITS)
    assert not re.search(r"^\[\d+/\d+\] (done|skipped)", out, flags=re.MULTILINE)
    assert out.count("| Model |") == 1  # one table, the invocation's
    assert "Units: 3 of 3 finished" in (tmp_path / "two" / "table-1.md").read_text()


def test_a_unit_held_elsewhere_fails_its_worker_and_the_others_go_on(
        tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    busy = "compress-conv4-w0.25-digits-random-seed0"
    with runner.holding(work, busy):  # as another shell running that unit would
        with pytest.raises(runner.UnitBusyError, match="another process"), \
                runner.holding(work, busy):
            pass
        code, out, err = run(["paper", "1", "--work", str(work), *TINY, "--jobs", "2"],
                             capsys)
    assert code == 1
    assert f"failed   {busy} (exit status 1)" in out
    assert f"{busy} is being run by another process" in out
    assert f"n2n: error: {busy} failed" in err
    assert sorted(results(work)) == sorted(set(UNITS) - {busy})
    code, out, err = run(["paper", "1", "--work", str(work), *TINY, "--jobs", "2"], capsys)
    assert code == 0, err  # released: the next invocation runs it
    assert sorted(results(work)) == sorted(UNITS)

    # a lost teacher checkpoint, needed by both searches, is made again by one worker
    (work / "teachers" / f"{UNITS[0]}.pt").unlink()
    for unit in UNITS[1:]:
        (work / "units" / f"{unit}.json").unlink()
    code, out, err = run(["paper", "1", "--work", str(work), *TINY, "--jobs", "2"], capsys)
    assert code == 0, out + err
    assert out.count(f"again    {UNITS[0]}") == 1
    assert (work / "teachers" / f"{UNITS[0]}.pt").is_file()
    assert sorted(results(work)) == sorted(UNITS)


def test_a_worker_that_fails_after_its_result_has_still_finished_its_unit(
        tmp_path: Path, home: Path) -> None:
    """A worker writes its table after its unit's result; if that fails (here the table's
    path is a folder), the unit is finished all the same, and those that need it run."""
    work = tmp_path / "work"
    (work / "table-1.md").mkdir(parents=True)
    settings = PaperSettings.from_dict({"table": 1, **{
        "dataset": "digits", "teacher": "conv4", "teacher_width": 0.25,
        "teacher_epochs": 1, "seeds": (0,), "iterations": 1, "finetune_epochs": 1,
        "evaluator": "mock"}})
    lines: list[str] = []
    units = [UNITS[0], UNITS[2]]  # the teacher, and a search that needs it
    result = parallel.run_jobs([settings], str(work), jobs=2, threads=2, device="cpu",
                               only=units, log=lines.append)
    assert result.finished == tuple(units)
    assert result.failed == () and result.blocked == ()
    assert sorted(results(work)) == sorted(units)
    for unit in units:
        assert f"      warning  {unit} finished, then its process exited with status 1; " \
               "its lines above say why" in lines
    assert any("n2n: error: [Errno 21] Is a directory" in line for line in lines)


def test_a_worker_runs_the_tables_own_command_for_one_unit() -> None:
    settings = PaperSettings(1, dataset="digits", seeds=(0, 1))
    command = parallel.worker_command(settings, "w", "teacher-x", "cpu")
    assert command[:3] == [sys.executable, "-m", "n2n_env.cli"]
    assert command[3:] == ["paper", "1", "--work", "w", "--dataset", "digits", "--seeds",
                           "0,1", "--device", "cpu", "--no-progress", "--only", "teacher-x"]


@pytest.mark.parametrize(("line", "passed_on"), [
    ("n2n: error: [Errno 28] No space left on device", True),
    ("Traceback (most recent call last):", True),
    ('  File "n2n_env/paper/cli.py", line 154, in _paper', True),
    ("ValueError: bad", True),
    ("torch.OutOfMemoryError: CUDA out of memory.", True),
    ("sqlite3.OperationalError: database is locked", True),
    ("KeyboardInterrupt", True),
    ("| Model | Paper acc. |", False),
    ("# Table 1: Summary of Compression results", False),
    ("wrote work/table-1.md", False),
])
def test_after_its_unit_a_worker_passes_on_only_what_says_why_it_failed(
        line: str, passed_on: bool) -> None:
    assert bool(parallel._ERROR.match(line)) is passed_on


def test_stopping_sends_ctrl_c_first() -> None:
    """A worker stopped by Ctrl-C saves its state and records its time; SIGTERM or a kill
    would not, so the workers get SIGINT and are killed only after the grace period."""
    worker = subprocess.Popen(
        [sys.executable, "-c", "import time\ntry:\n    time.sleep(60)\n"
         "except KeyboardInterrupt:\n    print('saved', flush=True)\n    raise SystemExit(130)"],
        stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)  # the interpreter is up
    started = time.monotonic()
    parallel._stop([worker], settle=0.5, grace=30)
    assert worker.returncode == 130 and time.monotonic() - started < 10
    assert worker.stdout is not None and worker.stdout.read() == "saved\n"


def test_a_worker_started_with_ctrl_c_ignored_still_saves_on_it(tmp_path: Path,
                                                              home: Path) -> None:
    """``cmd &`` in a script starts ``n2n paper`` (and so its workers) with SIGINT
    ignored; the stop protocol's Ctrl-C must still reach the run, or the workers are
    killed after the grace period and lose what they held."""
    work = tmp_path / "work"
    options = [word if word != "1" or TINY[at - 1] != "--teacher-epochs" else "1000"
               for at, word in enumerate(TINY)]
    worker = subprocess.Popen(
        [sys.executable, "-m", "n2n_env.cli", "paper", "1", "--work", str(work), *options,
         "--only", UNITS[0]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert worker.stdout is not None
    for line in worker.stdout:  # the teacher is training, so a checkpoint is written
        if "epoch 2/1000" in line:
            break
    worker.send_signal(signal.SIGINT)
    try:
        out = worker.communicate(timeout=60)[0]
    finally:
        worker.kill()
    assert worker.returncode == 130, out
    assert "n2n: interrupted" in out
    assert (work / "resume" / f"{UNITS[0]}.pt").is_file()


@pytest.mark.parametrize(("threads", "jobs", "at_once", "each"), [
    (2, 2, 2, 1), (2, 2, 5, 1),  # two units side by side: a core each
    (2, 2, 1, 2),  # a lone unit (a teacher before its searches, the pruning run): both
    (16, 4, 3, 5), (16, 4, 1, 16), (1, 2, 1, 1), (3, 2, 2, 1)])
def test_a_unit_that_runs_alone_takes_every_thread(threads: int, jobs: int, at_once: int,
                                                   each: int) -> None:
    assert parallel.threads_each(threads, jobs, at_once) == each


def test_a_lone_worker_is_given_every_thread(tmp_path: Path, home: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.delenv("N2N_THREADS", raising=False)  # it would fix the threads to share
    code, out, err = run(["paper", "1", "--work", str(tmp_path / "work"), *TINY, "--jobs", "2",
                          "--only", UNITS[0]], capsys)
    assert code == 0, err
    assert "2 jobs of 1 thread each; a unit that can only run alone gets 2" in out
    assert "2 threads," in results(tmp_path / "work")[UNITS[0]]["machine"]


FAKE_WORKER = """
import sys, time
from pathlib import Path
work, unit, table, partner = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
(work / "started").mkdir(parents=True, exist_ok=True)
(work / "started" / unit).write_text(table)
deadline = time.monotonic() + 60
while partner and not (work / "started" / partner).exists():  # runs beside its partner
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.05)
if unit.startswith("teacher-"):
    (work / "teachers").mkdir(exist_ok=True)
    (work / "teachers" / f"{unit}.pt").write_bytes(b"")
(work / "units").mkdir(exist_ok=True)
(work / "units" / f"{unit}.json").write_text("{}")
print(f"[1/1] finished {unit}", flush=True)
"""


def test_tables_given_together_share_one_pool_of_workers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Table 4's search runs beside Table 1's instead of after the whole of Table 1: each
    fake worker of the two waits until the other has started, and fails after 60 s."""
    tiny = {"dataset": "digits", "teacher": "conv4", "teacher_width": 0.25, "seeds": (0,),
            "evaluator": "mock"}
    one, four = PaperSettings(1, **tiny), PaperSettings(4, **tiny)
    search = "compress-conv4-w0.25-digits-reinforce-seed0"
    constrained = "compress-conv4-w0.25-digits-reinforce-params20000-seed0"
    partners = {search: constrained, constrained: search}

    def fake_worker(settings: PaperSettings, work: str, unit_id: str, device: str
                    ) -> list[str]:
        return [sys.executable, "-c", FAKE_WORKER, work, unit_id, str(settings.table),
                partners.get(unit_id, "")]

    monkeypatch.setattr(parallel, "worker_command", fake_worker)
    work = tmp_path / "work"
    lines: list[str] = []
    result = parallel.run_jobs([four, one], str(work), jobs=2, threads=2, device="cpu",
                               log=lines.append)
    assert result.failed == () and result.blocked == ()
    ran_by = {p.name: p.read_text() for p in (work / "started").iterdir()}
    assert ran_by == {"teacher-conv4-w0.25-digits": "4", constrained: "4", search: "1",
                      "compress-conv4-w0.25-digits-random-seed0": "1"}  # each unit once
    assert sorted(result.finished) == sorted(ran_by)
    assert lines[0] == "2 jobs of 1 thread each; a unit that can only run alone gets 2"


def test_n2n_paper_runs_tables_given_together_in_one_pool(
        tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    code, out, err = run(["paper", "4", "1", "--work", str(work), *TINY, "--jobs", "2",
                          "--only", "*reinforce*"], capsys)
    assert code == 0, err
    constrained = "compress-conv4-w0.25-digits-reinforce-params20000-seed0"
    records = results(work)
    assert sorted(records) == sorted([UNITS[0], UNITS[1], constrained])  # not random's
    for unit, table in ((UNITS[0], "4"), (constrained, "4"), (UNITS[1], "1")):
        assert records[unit]["command"].startswith(f"n2n paper {table} --work"), unit
    assert out.count("2 jobs of 1 thread each") == 1
    assert "# Table 4:" in out and "# Table 1:" in out
    assert "Units: 2 of 2 finished" in (work / "table-4.md").read_text()
    assert "Units: 2 of 3 finished" in (work / "table-1.md").read_text()
    assert json.loads((work / "table-4.settings.json").read_text())["max_params"] == 20000
