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
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


@pytest.fixture()
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from n2n_env.teacher import get_teacher

    monkeypatch.setenv("N2N_HOME", str(tmp_path))
    get_teacher("conv4", "digits", width=0.25, epochs=2, progress=False)
    return tmp_path


def table_rows(out: str) -> list[list[str]]:
    """The data rows of the markdown table a benchmark prints last."""
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


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
