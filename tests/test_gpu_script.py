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


def test_gpu_script_runs_table_one_and_sends_back_its_units_and_teacher(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    bin_dir = tmp_path / "bin"  # the script calls python3: make it this interpreter
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "N2N_HOME": str(tmp_path / "home"), "DEVICE": "cpu", "WORK": str(work),
           "OUT": str(out), "BUDGET": "400", "OMP_NUM_THREADS": "1",
           "PAPER_ARGS": "--dataset digits --teacher conv4 --teacher-width 0.25 "
                         "--teacher-epochs 1 --iterations 1 --finetune-epochs 1 "
                         "--evaluator mock"}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr
    units = sorted(path.name for path in (work / "units").glob("*.json"))
    assert set(units) == {"teacher-conv4-w0.25-digits.json"} | {
        f"compress-conv4-w0.25-digits-{agent}-seed{seed}.json"
        for agent in ("random", "reinforce") for seed in range(3)}
    assert "units finished: " + " ".join(units) in (out / "gpu.txt").read_text()
    with tarfile.open(out / "results.tgz") as archive:
        names = archive.getnames()
    assert sum(name.endswith(".json") and "/units/" in name for name in names) == 7
    assert any(name.endswith("table-1.md") for name in names)
    assert {f"logs/{agent}-seed{seed}.log" for agent in ("random", "reinforce")
            for seed in range(3)} <= set(names)
    pieces = sorted(out.glob("teacher-conv4-w0.25-digits.pt.part-*"))
    assert pieces and b"".join(p.read_bytes() for p in pieces) == (
        work / "teachers" / "teacher-conv4-w0.25-digits.pt").read_bytes()
    assert len(list(out.iterdir())) <= 8  # what the device tool sends back at most


def test_gpu_script_fails_when_the_table_cannot_be_made(tmp_path: Path) -> None:
    """A broken install (here: an unknown option) must not look like a finished run."""
    env = {**os.environ, "DEVICE": "cpu", "WORK": str(tmp_path / "work"),
           "OUT": str(tmp_path / "out"), "BUDGET": "60", "PAPER_ARGS": "--no-such-option"}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0
    assert "units finished: \n" in (tmp_path / "out" / "gpu.txt").read_text()
