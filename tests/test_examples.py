"""The examples are documentation: they must keep running.

Every example runs as a script (``runpy`` with ``__name__ == "__main__"``) and must print
its ``EXPECTED_OUTPUT``. The examples that compress for real take command-line budgets;
here they run with tiny ones (the mock evaluator, one or two iterations, one fine-tuning
epoch), write into ``tmp_path`` and use a private ``$N2N_HOME`` holding a conv4 teacher
trained for two epochs, so that no test trains the full teacher or touches the user's cache.
"""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))
EXPECTED_OUTPUT = {
    "architecture_tour": "student output (2, 10)",
    "reward_engine": "cache: ",
    "random_agent": "episodes done",
    "sb3_ppo": "sb3 done",
    "quickstart": "run dir:",
    "transfer": "Scratch",
    "constraints": "constraint ",
    "byo_teacher": "load_student: N2NNet",
    "latency": "latency budget ",
}
WITH_ARGUMENTS = ("quickstart", "transfer", "constraints", "byo_teacher", "latency")
"""Examples with a search budget: each has its own test below, with tiny arguments."""
MOCK_FAST = ["--evaluator", "mock", "--finetune-epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def teacher_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An N2N_HOME with the conv4/digits teacher trained for 2 epochs (about a second)."""
    from n2n_env.teacher import get_teacher

    home = tmp_path_factory.mktemp("n2n-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("N2N_HOME", str(home))
        get_teacher("conv4", "digits", epochs=2, progress=False)
    return home


@pytest.fixture(autouse=True)
def private_home(teacher_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every example sees the private N2N_HOME, never the user's cache."""
    monkeypatch.setenv("N2N_HOME", str(teacher_home))


def run_example(name: str, argv: list[str], monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``examples/<name>.py`` as a script with ``argv``; its checked stdout."""
    path = EXAMPLES[[p.stem for p in EXAMPLES].index(name)]
    monkeypatch.setattr(sys, "argv", [str(path), *argv])
    runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    assert EXPECTED_OUTPUT[name] in out
    return out


def columns(line: str) -> list[str]:
    """The cells of a printed table row (cells are separated by two or more spaces)."""
    return re.split(r"\s{2,}", line.strip())


def row(out: str, label: str) -> list[str]:
    """The cells of the one table row starting with ``label``."""
    rows = [columns(line) for line in out.splitlines() if line.startswith(label)]
    assert len(rows) == 1, f"expected one row {label!r} in:\n{out}"
    return rows[0]


def test_every_example_is_tested() -> None:
    assert {p.stem for p in EXAMPLES} == set(EXPECTED_OUTPUT)


@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.stem not in WITH_ARGUMENTS],
                         ids=lambda p: p.stem)
def test_example_runs(path: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str]) -> None:
    run_example(path.stem, [], monkeypatch, capsys)


def test_quickstart(teacher_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str]) -> None:
    from n2n_env.arch import Architecture

    out = run_example("quickstart", ["--iterations", "1", *MOCK_FAST,
                                     "--out", str(tmp_path / "run")], monkeypatch, capsys)
    assert "MOCK" in out
    assert f"run dir:    {tmp_path / 'run'}" in out
    teacher, stage1, final = (row(out, label) for label in (
        "Teacher", "Student (Stage1)", "Student (Stage1+Stage2)"))
    student = Architecture.from_json((tmp_path / "run" / "student.json").read_text())
    assert final[2] == f"{student.num_params():,}"
    params = [int(r[2].replace(",", "")) for r in (teacher, stage1, final)]
    assert params[0] > params[1] >= params[2]
    assert final[4] == f"{params[0] / params[2]:.1f}x"


def test_transfer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  capsys: pytest.CaptureFixture[str]) -> None:
    from agents.reinforce import Reinforce
    from n2n_env import data, zoo

    out = run_example("transfer", ["--pretrain-iterations", "2", "--iterations", "1",
                                   "--evaluator", "mock", "--seed", "1",
                                   "--out", str(tmp_path)], monkeypatch, capsys)
    assert "MOCK" in out and "NOT REAL" in out
    for label in ("Pre-trained", "Scratch"):
        reward, compression, accuracy, degenerate = row(out, label + " ")[1:]
        assert -1.0 <= float(reward) <= 1.0
        assert 0.0 <= float(compression.rstrip("%")) <= 100.0
        assert 0.0 <= float(accuracy.rstrip("%")) <= 100.0
        assert degenerate.endswith("/5")
    shape, classes = data.info("digits")
    source, target = (len(zoo.get(name, shape, classes, width=0.125))
                      for name in ("vgg11", "vgg19"))
    assert source != target
    assert f"Pre-trained: decisions per episode {target}\n" in out
    assert f"Scratch: decisions per episode {target}\n" in out
    # The pre-trained row continued the saved vgg11 policy; the scratch row did not.
    assert Reinforce.load(tmp_path / "policy-vgg11.pt").iterations == 2
    assert Reinforce.load(tmp_path / "policy-vgg19-pre-trained.pt").iterations == 3
    assert Reinforce.load(tmp_path / "policy-vgg19-scratch.pt").iterations == 1


@pytest.mark.parametrize("max_params", [20_000, 10])
def test_constraints(max_params: int, teacher_home: Path, tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture[str]) -> None:
    """The budget is met exactly when the search saw a student within it; 10 parameters
    never are (the classifier alone has more)."""
    from n2n_env.arch import Architecture

    out = run_example("constraints", ["--max-params", str(max_params), "--iterations", "2",
                                      "--anneal-iterations", "1", *MOCK_FAST,
                                      "--out", str(tmp_path)], monkeypatch, capsys)
    # eps_t anneals from 1 over the first iteration (5 episodes) of each stage, then is 0:
    # a student over budget then scores -1, as a degenerate one does.
    progress = [columns(line) for line in out.splitlines() if re.match(r"\s+[12]\s", line)]
    assert [cells[1] for cells in progress] == ["1.00-0.20", "0.00-0.00"] * 2
    seen_within_budget = False
    for _, epsilons, over, degenerate, mean_reward, _ in progress:
        penalized = int(over.split("/")[0]) + int(degenerate.split("/")[0])
        if epsilons == "0.00-0.00" and penalized == 5:
            assert float(mean_reward) == -1.0
        seen_within_budget |= penalized < 5
    # With seed 0 the tiny mock search sees one student within 20,000 (19,214 parameters).
    assert seen_within_budget is (max_params == 20_000)

    student = Architecture.from_json((tmp_path / "student.json").read_text())
    met = student.num_params() <= max_params
    assert met is seen_within_budget
    assert ("constraint met: " if met else "constraint NOT met: ") in out
    student_row = row(out, "Student (Stage 1 & 2)")
    assert student_row[2] == f"{student.num_params():,}"
    assert student_row[4] == f"{max_params:,}" + ("" if met else " (NOT met)")
    assert row(out, "Teacher")[4] == "N/A"


def test_latency(teacher_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str]) -> None:
    """A search under a latency budget: the estimate of the student is what the budget
    was checked against, and every layer shape went into the table under N2N_HOME."""
    from n2n_env.arch import Architecture
    from n2n_env.latency_table import LatencyTable

    out = run_example("latency", ["--iterations", "2", "--latency-repeats", "2", *MOCK_FAST,
                                  "--out", str(tmp_path)], monkeypatch, capsys)
    assert "NOT REAL" in out and "action wall on" in out
    progress = [columns(line) for line in out.splitlines() if re.match(r"\s+[12]\s", line)]
    assert len(progress) == 4 and all(cells[2].endswith("%") for cells in progress)
    teacher, student = row(out, "Teacher"), row(out, "Student (Stage 1 & 2)")
    budget = float(student[5].split()[0])
    estimate = float(student[3].split()[0])
    assert float(teacher[3].split()[0]) > 0 and float(student[4].split()[0]) > 0
    met = "latency budget met: " in out
    assert met is (estimate <= budget)
    assert Architecture.from_json((tmp_path / "student.json").read_text()).num_params() == int(
        student[2].replace(",", ""))
    assert len(LatencyTable(teacher_home / "latency.sqlite")) > 0


def test_importing_the_package_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, n2n_env; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_byo_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture[str]) -> None:
    """The imported torchvision teacher is compressed, and the exported student loads."""
    from n2n_env.arch import Architecture

    out = run_example("byo_teacher", ["--dataset", "synthetic", "--teacher-epochs", "1",
                                      "--iterations", "1", *MOCK_FAST,
                                      "--out", str(tmp_path / "run")], monkeypatch, capsys)
    assert "imported resnet18: 55 layers, 8 residual blocks, 11,181,642 parameters" in out
    student = Architecture.from_json((tmp_path / "run" / "student.json").read_text())
    assert f"load_student: N2NNet with {student.num_params():,} parameters, output (1, 10)" in out
    run = tmp_path / "run"
    assert (run / "student.onnx").exists() or (run / "student.torchscript.pt").exists()
