"""benchmarks/gpu.sh, the script a session lent a GPU runs first, checked on the CPU.

A GPU session is rare and short: a script that fails there wastes it. Its device is a
setting, so the same orchestration (teacher first, six searches side by side, the report,
the archive and the teacher's pieces in $OUT) runs here on a tiny Table 1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "gpu.sh"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")]


def run_script(tmp_path: Path, paper_args: str, budget: int) -> subprocess.CompletedProcess:
    """benchmarks/gpu.sh on the CPU, with this interpreter as its python3."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "N2N_HOME": str(tmp_path / "home"), "DEVICE": "cpu",
           "WORK": str(tmp_path / "work"), "OUT": str(tmp_path / "out"),
           "BUDGET": str(budget), "OMP_NUM_THREADS": "1", "PAPER_ARGS": paper_args}
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=budget + 120)


def test_gpu_script_runs_table_one_and_sends_back_its_units_and_teacher(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    done = run_script(tmp_path, "--dataset digits --teacher conv4 --teacher-width 0.25 "
                      "--teacher-epochs 1 --iterations 1 --finetune-epochs 1 --evaluator mock",
                      budget=800)
    assert done.returncode == 0, done.stdout + done.stderr
    units = sorted(path.name for path in (work / "units").glob("*.json"))
    assert set(units) == {"teacher-conv4-w0.25-digits.json"} | {
        f"compress-conv4-w0.25-digits-{agent}-seed{seed}.json"
        for agent in ("random", "reinforce") for seed in range(3)}
    assert "units finished: " + " ".join(units) in (out / "gpu.txt").read_text()
    with tarfile.open(out / "results.tgz") as archive:
        names = archive.getnames()
    assert sum(name.endswith(".json") and "/units/" in name for name in names) == 7
    for name in ("table-1.md", "table-1.settings.json", "figure-1.png"):
        assert any(entry.endswith(f"/{name}") for entry in names), name
    assert all(any(name.endswith(f"/logs/{agent}-seed{seed}.log") for name in names)
               for agent in ("random", "reinforce") for seed in range(3))
    pieces = sorted(out.glob("teacher-conv4-w0.25-digits.pt.part-*"))
    assert pieces and b"".join(p.read_bytes() for p in pieces) == (
        work / "teachers" / "teacher-conv4-w0.25-digits.pt").read_bytes()
    assert len(list(out.iterdir())) <= 8  # what the device tool sends back at most


def test_searches_stopped_at_the_budget_come_back_as_copies_to_continue(
        tmp_path: Path) -> None:
    """A GPU session ends before a full-width search does: what it did must come back
    (carry/), or every GPU session would start the searches over. The teacher is
    already there, as in a later GPU session; the searches cannot finish in the budget."""
    tiny = ("--dataset digits --teacher conv4 --teacher-width 0.25 --teacher-epochs 1 "
            "--finetune-epochs 1 --evaluator mock --iterations 2000")
    subprocess.run([sys.executable, "-m", "n2n_env.cli", "paper", "1", "--work",
                    str(tmp_path / "work"), "--device", "cpu", "--no-progress",
                    "--only", "teacher-*", *tiny.split()], check=True, capture_output=True,
                   env={**os.environ, "N2N_HOME": str(tmp_path / "home"),
                        "OMP_NUM_THREADS": "1"}, timeout=300)
    done = run_script(tmp_path, tiny, budget=40)
    assert done.returncode == 0, done.stdout + done.stderr  # stopped at the budget is fine
    with tarfile.open(tmp_path / "out" / "results.tgz") as archive:
        names = archive.getnames()
    carried = {Path(name).parent.name for name in names if name.endswith("/carry.json")}
    assert carried and carried <= {f"compress-conv4-w0.25-digits-{agent}-seed{seed}"
                                   for agent in ("random", "reinforce") for seed in range(3)}
    assert all(f"/carry/{unit}/unit.json" in " ".join(names) for unit in carried)
    assert "carry compress-conv4" in (tmp_path / "out" / "gpu.txt").read_text()


def test_gpu_script_fails_when_the_teacher_cannot_be_made(tmp_path: Path) -> None:
    """A failed teacher must not look like a finished run, nor start six searches that
    would each train it at once."""
    done = run_script(tmp_path, "--no-such-option", budget=120)
    assert done.returncode == 1
    assert "no teacher" in (tmp_path / "out" / "gpu.txt").read_text()
    logs = tmp_path / "work" / "logs"
    assert "unrecognized arguments: --no-such-option" in (logs / "teacher.log").read_text()
    assert not list(logs.glob("*-seed*.log"))
