"""``n2n paper`` on the MNIST tables (1, 2 and 4): end to end, resuming, and bad inputs.

The three tables share one set of units: Table 2 prunes down to Table 1's best REINFORCE
student, and Table 4 searches the same teacher under a constraint. Table 1 therefore runs
once per module (the ``table1`` fixture), and every test that changes its work folder
changes a copy. Tiny settings throughout: ``digits`` data, a conv4 teacher at width 0.25
trained for one epoch in the module's private ``N2N_HOME``, one search iteration of the
mock evaluator, one epoch of fine-tuning. The numbers mean nothing; the tests check that
our cells are the units' results (means, spreads, per-seed values), that finished units are
never run again and unfinished ones resume, and that bad input is refused with a message
naming what is allowed. The paper ran no conv4 on digits, so its columns read dashes here;
``test_paper_tables.py`` checks the paper's side of each table. Tables 3 and 5 have units of
their own and are tested in ``test_paper_cifar.py``.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_runs import run
from paper_runs import SEARCH, md_row, paper_cmd, results, spread, stage, unit_lines

from n2n_env import cli
from n2n_env.paper import figures, runner
from n2n_env.paper.settings import PaperSettings
from n2n_env.training import model_fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")

PRUNE = ["--prune-runs", "2", "--prune-fraction", "0.2", "--prune-finetune-steps", "3",
         "--taylor-examples", "4"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("n2n-home")


@pytest.fixture(autouse=True)
def private_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test trains and caches teachers in the module's N2N_HOME, on one thread."""
    monkeypatch.setenv("N2N_HOME", str(home))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def table1(home: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Table 1 run once: conv4 on digits, REINFORCE and random search, seeds 0 and 1."""
    work = tmp_path_factory.mktemp("paper") / "work"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("N2N_HOME", str(home))
        patch.setenv("OMP_NUM_THREADS", "1")
        code = cli.main(paper_cmd("1", work, *SEARCH))
    assert code == 0
    return work, (work / "table-1.md").read_text()


def copy_of(work: Path, tmp_path: Path) -> Path:
    """A copy of a finished work folder, for a test that changes it."""
    return Path(shutil.copytree(work, tmp_path / "work"))


# ------------------------------------------------------------------ Table 1


def test_table1_prints_the_paper_beside_the_units_results(table1: tuple[Path, str]) -> None:
    work, text = table1
    records = results(work)
    teacher = records["teacher-conv4-w0.25-digits"]["result"]
    assert set(records) == {"teacher-conv4-w0.25-digits", *(
        f"compress-conv4-w0.25-digits-{agent}-seed{seed}"
        for agent in ("reinforce", "random") for seed in (0, 1))}
    assert "NOT REAL" in text and "n2n paper 1 --work" in text
    row = md_row(text, "Teacher (Conv4)")
    assert row[1:5] == ["—"] * 4  # the paper ran no conv4 on digits
    assert "so the paper's columns read —" in text
    assert row[5:7] == [f"{100 * teacher['test_accuracy']:.2f}%", f"{teacher['params']:,}"]
    for agent in ("REINFORCE", "random search"):
        key = "reinforce" if agent == "REINFORCE" else "random"
        runs = [records[f"compress-conv4-w0.25-digits-{key}-seed{seed}"] for seed in (0, 1)]
        row = md_row(text, f"Student (Stage1), {agent}")
        assert row[1:5] == ["—"] * 4
        students = [stage(r, "Student (Stage1)") for r in runs]
        mean, std = spread([s["test_accuracy"] for s in students])
        assert row[5] == f"{mean:.2f} ± {std:.2f}%"
        compressions = [teacher["params"] / s["params"] for s in students]
        assert row[8] == "{:.1f} ± {:.1f}x".format(*spread(compressions, scale=1))
        for seed, student in enumerate(students):
            assert (f"s{seed}: {100 * student['test_accuracy']:.2f}%, {student['params']:,}"
                    in row[9])
        final = md_row(text, f"Student (Stage1+Stage2), {agent}")
        assert final[1:5] == ["—"] * 4
        assert [s["params"] for s in (stage(r, "Student (Stage1+Stage2)") for r in runs)] == [
            int(cell.split(", ")[1].split(" ")[0].replace(",", ""))
            for cell in final[9].split("; ")]
    for unit in records:
        assert md_row(text, unit)[1] == "done"


def test_table1_keeps_each_searchs_curves_and_draws_them(
        table1: tuple[Path, str], tmp_path: Path) -> None:
    work = copy_of(table1[0], tmp_path)
    records = results(work)
    assert "![Table 1, per iteration](figure-1.png)" in table1[1]
    assert (work / "figure-1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    units = [u for u in records if u.startswith("compress-")]
    for unit in units:
        result = records[unit]["result"]
        for mdp in ("removal", "shrink"):
            with (work / "runs" / unit / f"metrics_{mdp}.csv").open() as handle:
                rows = list(csv.DictReader(handle))
            curves = result["curves"][mdp]
            assert curves["reward_mean"] == [float(row["reward_mean"]) for row in rows]
            assert curves["best_reward_so_far"][-1] == result["stages"][mdp]["best_reward"]
    # A finished search is drawn from its result, not from its run folder.
    kept = "compress-conv4-w0.25-digits-reinforce-seed1"
    _scale_reward_means(work / "runs" / kept / "metrics_removal.csv", 0.5)
    # An unfinished search is drawn from its run folder, or from its carried copy.
    moved = "compress-conv4-w0.25-digits-reinforce-seed0"
    (work / "units" / f"{moved}.json").unlink()
    (work / "carry").mkdir()
    shutil.move(work / "runs" / moved, work / "carry" / moved)
    _scale_reward_means(work / "carry" / moved / "metrics_removal.csv", 2.0)
    # A run folder of other settings is left out; so is one whose metrics are damaged.
    stale = "compress-conv4-w0.25-digits-random-seed0"
    (work / "units" / f"{stale}.json").unlink()
    tally = json.loads((work / "runs" / stale / "unit.json").read_text())
    tally["identity"]["spec"]["iterations"] = 7
    (work / "runs" / stale / "unit.json").write_text(json.dumps(tally))
    unfinished = "compress-conv4-w0.25-digits-random-seed1"
    (work / "units" / f"{unfinished}.json").unlink()
    settings = PaperSettings.from_dict(json.loads((work / "table-1.settings.json").read_text()))
    rows = figures.panels(settings, runner.states(settings, work), work)
    assert rows[0][0].lines["random search"] == {1: tuple(
        records[unfinished]["result"]["curves"]["removal"]["reward_mean"])}
    with (work / "runs" / unfinished / "metrics_removal.csv").open("a") as handle:
        handle.write("2,0.5\n")  # a row cut short
    (work / "figure-2.png").write_bytes(b"old")
    states = runner.states(settings, work)
    rows = figures.panels(settings, states, work)
    assert [[panel.title for panel in row] for row in rows] == [
        ["Stage1 (removal)"] * 4, ["Stage2 (shrink)"] * 4]
    reward = rows[0][0].lines
    assert list(reward) == ["REINFORCE"] and sorted(reward["REINFORCE"]) == [0, 1]
    stored = records[kept]["result"]["curves"]["removal"]["reward_mean"]
    assert reward["REINFORCE"][1] == tuple(stored)
    carried = records[moved]["result"]["curves"]["removal"]["reward_mean"]
    assert reward["REINFORCE"][0] == tuple(2.0 * value for value in carried)
    assert figures.write(settings, states, work) == work / "figure-1.png"
    table2 = PaperSettings.from_dict({**settings.to_dict(), "table": 2, "agents": None})
    assert figures.write(table2, runner.states(table2, work), work) is None
    assert not (work / "figure-2.png").exists()  # no curves: an old figure goes


def _scale_reward_means(path: Path, factor: float) -> None:
    """Multiply the reward_mean column of the metrics CSV at ``path`` by ``factor``."""
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["reward_mean"] = repr(factor * float(row["reward_mean"]))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_table1_holds_reinforce_against_random_search_over_seeds(
        table1: tuple[Path, str]) -> None:
    from n2n_env.bench import stats

    work, text = table1
    records = results(work)
    assert "## The learnt policy against random search" in text
    assert text.index("against random search") < text.index("## Reading")
    def late_mean(agent: str, seed: int, stage: str) -> float:
        path = work / "runs" / f"compress-conv4-w0.25-digits-{agent}-seed{seed}" / \
            f"metrics_{stage}.csv"
        with path.open() as handle:
            return float(np.mean([float(r["reward_mean"]) for r in csv.DictReader(handle)][-10:]))

    for stage_name, label in (("removal", "stage 1 (removal)"), ("shrink", "stage 2 (shrink)")):
        best = {agent: [records[f"compress-conv4-w0.25-digits-{agent}-seed{seed}"]["result"]
                        ["stages"][stage_name]["best_reward"] for seed in (0, 1)]
                for agent in ("reinforce", "random")}
        late = {agent: [late_mean(agent, seed, stage_name) for seed in (0, 1)]
                for agent in ("reinforce", "random")}
        # one iteration per stage here: the late window shrinks to it, and says so
        for measure, scores in (("Best reward", best), ("Mean reward, last 1 iteration", late)):
            row = md_row(text, f"{measure}, {label}")
            assert row[1] == "REINFORCE"
            assert row[2] == f"s0: {scores['reinforce'][0]:.4f}; s1: {scores['reinforce'][1]:.4f}"
            assert row[4] == f"s0: {scores['random'][0]:.4f}; s1: {scores['random'][1]:.4f}"
            assert row[3].startswith(f"{sum(scores['reinforce']) / 2:.4f}")  # IQM of 2 = mean
            wins = sum((a > b) + 0.5 * (a == b)
                       for a in scores["reinforce"] for b in scores["random"])
            assert row[6].startswith(f"{wins / 4:.4f}")
            assert row[6] == str(stats.improvement_interval(np.array(scores["reinforce"]),
                                                            np.array(scores["random"])))


def test_unit_results_are_small_and_record_time_machine_and_teacher(
        table1: tuple[Path, str]) -> None:
    work, _ = table1
    records = results(work)
    teacher_file = work / "teachers" / "teacher-conv4-w0.25-digits.pt"
    from n2n_env.checkpoints import load_teacher

    model, record = load_teacher(teacher_file)
    fingerprint = model_fingerprint(model)
    assert record.recipe.epochs == 1
    for name, unit in records.items():
        assert (work / "units" / f"{name}.json").stat().st_size < 20_000
        assert unit["seconds"] > 0 and unit["sittings"] == 1 and "CPUs" in unit["machine"]
        assert unit["command"].startswith("n2n paper 1 --work ")
        assert unit["teachers"] == {"teacher-conv4-w0.25-digits": fingerprint}
    search = records["compress-conv4-w0.25-digits-reinforce-seed0"]
    assert search["spec"]["iterations"] == 1 and search["spec"]["evaluator"] == "mock"
    assert search["result"]["stages"]["removal"]["evaluations"] + search["result"][
        "stages"]["removal"]["cache_hits"] == 5
    # The committed files hold no run folder: those stay under runs/.
    assert {p.name for p in work.iterdir()} == {"units", "teachers", "runs", "table-1.md",
                                                "table-1.settings.json", "figure-1.png"}


def test_a_second_invocation_runs_nothing(table1: tuple[Path, str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    work = copy_of(table1[0], tmp_path)
    before = {p: p.read_bytes() for p in (work / "units").glob("*.json")}
    code, out, err = run(paper_cmd("1", work, *SEARCH), capsys)
    assert code == 0, err
    assert unit_lines(out, "start|resume|finished") == []
    assert len(unit_lines(out, "done")) == 5
    assert {p: p.read_bytes() for p in (work / "units").glob("*.json")} == before


def test_deleting_one_result_reruns_only_that_unit(table1: tuple[Path, str], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    work = copy_of(table1[0], tmp_path)
    name = "compress-conv4-w0.25-digits-random-seed1"
    old = results(work)[name]
    (work / "units" / f"{name}.json").unlink()
    code, out, err = run(paper_cmd("1", work, *SEARCH), capsys)
    assert code == 0, err
    assert unit_lines(out, "start|resume") == [name]
    assert unit_lines(out, "resume") == [name]  # its finished run folder was reused
    new = results(work)[name]
    assert new["result"]["rows"] == old["result"]["rows"]
    assert new["result"]["stages"] == old["result"]["stages"]  # no candidate trained again
    assert new["sittings"] == 2


def test_a_missing_teacher_is_rebuilt_and_another_teacher_is_flagged(
        table1: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = copy_of(table1[0], tmp_path)
    fingerprint = results(work)["teacher-conv4-w0.25-digits"]["result"]["fingerprint"]
    (work / "teachers" / "teacher-conv4-w0.25-digits.pt").unlink()
    (work / "units" / "compress-conv4-w0.25-digits-reinforce-seed1.json").unlink()
    code, out, err = run(paper_cmd("1", work, *SEARCH), capsys)
    assert code == 0, err
    assert "again    teacher-conv4-w0.25-digits" in out
    assert (work / "teachers" / "teacher-conv4-w0.25-digits.pt").is_file()
    assert results(work)["teacher-conv4-w0.25-digits"]["result"]["fingerprint"] == fingerprint
    assert "Made with another teacher" not in out
    path = work / "units" / "compress-conv4-w0.25-digits-random-seed0.json"
    record = json.loads(path.read_text())
    record["teachers"] = {"teacher-conv4-w0.25-digits": "0" * 16}
    path.write_text(json.dumps(record))
    code, out, _ = run(paper_cmd("1", work, *SEARCH, "--report"), capsys)
    assert code == 0 and unit_lines(out, "start|resume") == []
    warning = next(line for line in out.splitlines() if "Made with another teacher" in line)
    assert "compress-conv4-w0.25-digits-random-seed0" in warning
    assert "reinforce-seed0" not in warning


def test_report_alone_rewrites_the_table_with_the_settings_it_was_made_with(
        table1: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = copy_of(table1[0], tmp_path)
    assert json.loads((work / "table-1.settings.json").read_text())["dataset"] == "digits"
    code, flagged, err = run(paper_cmd("1", work, "--report", *SEARCH), capsys)
    assert code == 0, err
    code, out, err = run(paper_cmd("1", work, "--report"), capsys)
    assert code == 0, err
    assert out == flagged and "--dataset digits" in out
    # A settings flag changes the recorded settings, and only that one.
    code, out, err = run(paper_cmd("1", work, "--report", "--data-root", "elsewhere"), capsys)
    assert code == 0, err
    assert "--data-root elsewhere" in out and "--dataset digits" in out
    assert "| `n2n paper 1" in out  # the units were made by the command without it
    assert json.loads((work / "table-1.settings.json").read_text())["data_root"] == "elsewhere"
    code, again, err = run(paper_cmd("1", work, "--report"), capsys)
    assert code == 0, err
    assert again == out
    code, _, err = run(paper_cmd("1", work, "--report", "--pairs", "vgg11:vgg19"), capsys)
    assert code == 2 and "--pairs applies to table 5" in err
    path = work / "table-1.settings.json"
    for content, message in (('{"table": 1, "colour": "blue"}', "unknown keys ['colour']"),
                             ('{"table": 3}', "does not hold table 1's n2n paper settings"),
                             ('{"table": 1, "teacher": "vgg99"}', "vgg99"),
                             ('{"table": 1', "is damaged")):
        path.write_text(content)
        code, _, err = run(paper_cmd("1", work, "--report"), capsys)
        assert code == 2, content
        assert str(path) in err and message in err, err


def test_the_table_is_written_with_the_code_the_units_ran_with(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A search runs for hours, and its files may change meanwhile (a new commit): the
    modules that write the table must already be loaded when the units start, or the
    table written at the end imports code the rest of the process never saw."""
    import n2n_env.paper

    for name in ("figures", "report"):
        monkeypatch.delitem(sys.modules, f"n2n_env.paper.{name}", raising=False)
        monkeypatch.delattr(n2n_env.paper, name, raising=False)
    loaded_when_units_start = {}

    def run_table(*args, **kwargs):
        loaded_when_units_start.update(
            {name: f"n2n_env.paper.{name}" in sys.modules for name in ("figures", "report")})
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_table", run_table)
    code, _, err = run(paper_cmd("1", tmp_path / "work", *SEARCH), capsys)
    assert code == 130, err
    assert loaded_when_units_start == {"figures": True, "report": True}
    assert (tmp_path / "work" / "table-1.md").is_file()


def test_results_of_other_settings_are_refused(table1: tuple[Path, str], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    work = copy_of(table1[0], tmp_path)
    argv = paper_cmd("1", work, *SEARCH)
    argv[argv.index("--iterations") + 1] = "2"
    code, out, err = run(argv, capsys)
    assert code == 1
    assert "units/compress-conv4-w0.25-digits-reinforce-seed0.json was made with other " \
           "settings (iterations 1 there, 2 now)" in err
    assert unit_lines(out, "start|resume") == []


def test_a_cached_teacher_of_another_length_is_refused(
        table1: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = paper_cmd("1", tmp_path / "work", *SEARCH)
    argv[argv.index("--teacher-epochs") + 1] = "2"  # the module's cache holds a 1-epoch one
    code, _, err = run(argv, capsys)
    assert code == 1
    assert "conv4-digits-w0.25-s0.pt was trained for 1 epochs, this table asks for 2" in err
    assert not (tmp_path / "work" / "units").exists()


def test_only_runs_the_selected_units_and_what_they_need(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    code, out, err = run(paper_cmd("1", work, *SEARCH, "--only", "*random-seed1"), capsys)
    assert code == 0, err
    assert unit_lines(out, "start") == ["teacher-conv4-w0.25-digits",
                                        "compress-conv4-w0.25-digits-random-seed1"]
    assert len(unit_lines(out, "skipped")) == 3
    text = (work / "table-1.md").read_text()
    assert md_row(text, "Student (Stage1), REINFORCE")[5] == "pending"
    assert md_row(text, "Student (Stage1), random search (1 of 2 seeds)")[5].endswith("%")
    assert "Units: 2 of 5 finished" in text


# ------------------------------------------------------------- Tables 2 and 4


def test_table2_prunes_against_the_best_reinforce_student(
        table1: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch_pruning")
    work = copy_of(table1[0], tmp_path)
    code, out, err = run(paper_cmd("2", work, *SEARCH, *PRUNE), capsys)
    assert code == 0, err
    assert unit_lines(out, "start") == ["prune-conv4-w0.25-digits-best-of-2"]  # table 1's reused
    records = results(work)
    pruning = records["prune-conv4-w0.25-digits-best-of-2"]["result"]
    searches = {seed: records[f"compress-conv4-w0.25-digits-reinforce-seed{seed}"]
                for seed in (0, 1)}
    best_seed = max((0, 1), key=lambda s: (stage(searches[s], "Student (Stage1)")["val_accuracy"],
                                           -stage(searches[s], "Student (Stage1)")["params"],
                                           -s))
    ref = stage(searches[best_seed], "Student (Stage1)")
    assert pruning["reference"]["unit"] == f"compress-conv4-w0.25-digits-reinforce-seed{best_seed}"
    assert pruning["reference"]["params"] == ref["params"]
    runs = pruning["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    best = max(runs, key=lambda r: (r["steps"] > 0, r["val_accuracy"], -r["params"], -r["seed"]))
    assert pruning["best_seed"] == best["seed"]
    for r in runs:  # the stopping rule: never below our student's size
        assert r["params"] >= ref["params"] and r["stop_reason"] in ("params", "accuracy",
                                                                      "exhausted", "max_steps")
    text = (work / "table-2.md").read_text()
    row = md_row(text, "Pruning (best of 2")
    assert row[1:5] == ["—"] * 4  # the paper's side: test_paper_tables.py
    assert row[5:7] == [f"{100 * best['test_accuracy']:.2f}%", f"{best['params']:,}"]
    for r in runs:  # each run's steps, and whether it pruned anything at all
        assert (f"{r['steps']} steps{' (nothing pruned)' if r['steps'] == 0 else ''}, "
                f"stopped by {r['stop_reason']}") in row[-1]
    ours = md_row(text, "Ours: Student (Stage1), REINFORCE, seed")
    assert f"seed {best_seed}, the pruning reference" in ours[0]
    assert ours[1:5] == ["—"] * 4
    assert ours[5:7] == [f"{100 * ref['test_accuracy']:.2f}%", f"{ref['params']:,}"]


@pytest.mark.filterwarnings("ignore:stage .* no valid student")
def test_table4_counts_the_seeds_within_the_constraint(
        table1: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Run after Table 1 in one command, as ``n2n paper 1 4`` does: Table 1's units are
    reused, --max-params applies to Table 4 alone, and both tables are written."""
    work = copy_of(table1[0], tmp_path)
    code, out, err = run(["paper", "1", "constraints", "--work", str(work), *SEARCH,
                          "--max-params", "3000"], capsys)
    assert code == 0, err
    def students(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("| Student")]

    assert students(table1[1]) and students((work / "table-1.md").read_text()) == students(
        table1[1])
    assert "# Table 1:" in out and "# Table 4:" in out
    assert json.loads((work / "table-1.settings.json").read_text())["max_params"] is None
    assert unit_lines(out, "start") == [f"compress-conv4-w0.25-digits-reinforce-params3000-"
                                        f"seed{seed}" for seed in (0, 1)]
    records = results(work)
    finals = [stage(records[f"compress-conv4-w0.25-digits-reinforce-params3000-seed{seed}"],
                    "Student (Stage1+Stage2)")["params"] for seed in (0, 1)]
    assert all(records[f"compress-conv4-w0.25-digits-reinforce-params3000-seed{seed}"][
        "spec"]["constraints"] == {"params": 3000} for seed in (0, 1))
    row = md_row((work / "table-4.md").read_text(), "Student (Stage 1 & 2), REINFORCE")
    assert row[1:5] == ["—"] * 4
    assert row[8] == "3,000"
    assert row[9] == f"{sum(p <= 3000 for p in finals)} of 2 seeds"
