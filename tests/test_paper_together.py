"""``n2n paper TABLE TABLE...`` without ``--jobs``: the tables one after another.

Each table's settings come from its own flags (or its recorded settings with
``--report``), Ctrl-C writes every table not yet written, and a table whose unit fails on
a lock or a result file is left while the next one runs. ``runner.run_table`` is replaced
here, so nothing trains; the tables run end to end in test_paper.py (``n2n paper 1
constraints``) and, with ``--jobs``, in test_paper_parallel.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from cli_runs import run

from n2n_env.paper import parallel, runner
from n2n_env.paper.settings import PaperSettings

TINY = ["--dataset", "digits", "--teacher", "conv4", "--teacher-width", "0.25",
        "--seeds", "0", "--iterations", "1", "--evaluator", "mock", "--no-progress"]
BUSY = "compress-conv4-w0.25-digits-random-seed0"


pytestmark = pytest.mark.usefixtures("private_n2n_home")  # nothing may train here


@pytest.fixture()
def tables_run(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The tables ``run_table`` is called for, in order. Table 1 fails on a unit another
    process holds, table 4 is interrupted by Ctrl-C, any other returns what is there."""
    calls: list[int] = []

    def run_table(settings: PaperSettings, work: str, **_: object) -> SimpleNamespace:
        calls.append(settings.table)
        if settings.table == 1:
            raise runner.UnitBusyError(f"{BUSY} is being run by another process")
        if settings.table == 4:
            raise KeyboardInterrupt
        return SimpleNamespace(states=runner.states(settings, Path(work)))

    monkeypatch.setattr(runner, "run_table", run_table)
    return calls


def test_a_table_that_fails_is_left_and_the_next_one_runs(
        tmp_path: Path, tables_run: list[int], capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    code, out, err = run(["paper", "1", "2", "--work", str(work), *TINY], capsys)
    assert code == 1
    assert tables_run == [1, 2]
    assert f"n2n: error: {BUSY} is being run by another process" in err
    assert "n2n: table 1 is left; the next table runs" in err
    assert "# Table 2:" in out and (work / "table-2.md").is_file()
    assert "# Table 1:" not in out and (work / "table-1.md").is_file()  # written, not shown
    code, _, err = run(["paper", "2", "1", "--work", str(work), *TINY], capsys)
    assert code == 1 and tables_run == [1, 2, 2, 1]
    assert err.endswith("n2n: table 1 is left\n")  # the last table: none runs next


def test_ctrl_c_with_jobs_writes_every_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C, or SIGTERM (as when a machine is taken away), reaches the pool of workers,
    which stops them, each saving its state, and is raised again."""
    def run_jobs(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(parallel, "run_jobs", run_jobs)
    work = tmp_path / "work"
    code, _, err = run(["paper", "1", "4", "--work", str(work), *TINY, "--jobs", "2"], capsys)
    assert code == 130
    assert "n2n: interrupted; finished units are kept in" in err
    assert (work / "table-1.md").is_file() and (work / "table-4.md").is_file()


def test_ctrl_c_writes_every_table_not_yet_written(
        tmp_path: Path, tables_run: list[int], capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    code, _, err = run(["paper", "1", "4", "--work", str(work), *TINY,
                        "--only", "*params20000*"], capsys)
    assert code == 130
    assert tables_run == [4]  # --only leaves table 1 nothing to run, and it is not asked to
    assert "n2n: interrupted" in err
    for table in (1, 4):
        assert (work / f"table-{table}.md").is_file()
        assert json.loads((work / f"table-{table}.settings.json").read_text())["table"] == table


def test_report_reads_each_tables_recorded_settings(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Tables 1 and 2, recorded with different settings, are reported together: a unit
    both would ask for different things is no reason to refuse a report, which runs
    nothing."""
    work = tmp_path / "work"
    code, _, err = run(["paper", "1", "--work", str(work), *TINY, "--report"], capsys)
    assert code == 0, err
    code, out, err = run(["paper", "1", "pruning", "--work", str(work), "--report"], capsys)
    assert code == 0, err
    assert "# Table 1:" in out and "# Table 2:" in out
    one = json.loads((work / "table-1.settings.json").read_text())
    two = json.loads((work / "table-2.settings.json").read_text())
    assert (one["dataset"], one["iterations"]) == ("digits", 1)
    assert (two["dataset"], two["iterations"]) == ("mnist-10k", 40)
