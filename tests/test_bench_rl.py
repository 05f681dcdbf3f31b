"""`n2n bench rl`, `validate` and `info` on small generated tables."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
from bench_tables import fake_table

from n2n_env.bench import report
from n2n_env.bench.landscape import describe, landscape
from n2n_env.bench.replay import validate
from n2n_env.bench.rl import RunSpec, read_logs, run, true_rewards, write_log
from n2n_env.cli import main
from n2n_env.reward import n2n_reward

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def table_file(tmp_path_factory):
    return fake_table("removal").save(tmp_path_factory.mktemp("table") / "removal.npz")


@pytest.fixture(scope="module")
def table():
    return fake_table("removal")


def test_true_rewards_use_the_mean_accuracy_and_punish_degenerate_students(table):
    rewards = true_rewards(table)
    compression = table.compression()
    student = table.student_of(table.num_episodes - 1)
    mean = float(table.val_accuracy[student].astype(np.float64).mean())
    assert rewards[student] == pytest.approx(
        n2n_reward(compression[student], mean, table.header.teacher_accuracy))
    assert (rewards[table.status >= 0] == -1).all()


def records(agent, seed, pairs):
    """Episode records from (observed reward, true reward) pairs."""
    return [{"agent": agent, "seed": seed, "episode": i + 1, "reward": observed,
             "true_reward": true, "test_accuracy": 0.9, "compression": 0.5,
             "simulated_seconds": 1.0, "simulated_seconds_total": float(i + 1)}
            for i, (observed, true) in enumerate(pairs)]


def test_regret_follows_the_incumbent_chosen_by_observed_reward(table):
    optimum = float(true_rewards(table).max())
    # the agent sees 0.5, then a noisy 0.9 (true 0.6), then 0.8 (true optimum): it keeps the
    # 0.9 student, whose true reward is 0.6
    run_records = records("x", 0, [(0.5, 0.5), (0.9, 0.6), (0.8, optimum)])
    np.testing.assert_allclose(report.incumbent_curve(run_records), [0.5, 0.6, 0.6])
    regret = report.regret_by_evaluations({0: run_records}, optimum, 4)
    np.testing.assert_allclose(regret, [[optimum - 0.5, optimum - 0.6, optimum - 0.6,
                                         optimum - 0.6]])
    by_time = report.regret_by_seconds({0: run_records}, optimum, np.array([0.5, 1.0, 2.5]))
    np.testing.assert_allclose(by_time, [[optimum + 1, optimum - 0.5, optimum - 0.6]])


def test_summary_matches_a_hand_computed_case(table):
    optimum = float(true_rewards(table).max())
    finals = {"random": [0.1, 0.2, 0.3, 0.4], "agent": [0.0, 0.05, 0.25, 0.5]}
    logged = [record for agent, regrets in finals.items()
              for seed, regret in enumerate(regrets)
              for record in records(agent, seed, [(0.1, -1.0), (0.2, optimum - regret)])]
    summaries = {s.agent: s for s in report.summarize(logged, table)}
    # IQM of four runs: the mean of the middle two
    assert summaries["random"].final_regret.point == pytest.approx(0.25)
    assert summaries["agent"].final_regret.point == pytest.approx(0.15)
    # agent beats random in: 0.0 and 0.05 beat all four (8), 0.25 beats 2, 0.5 beats none
    assert summaries["agent"].improvement_over_random.point == pytest.approx(10 / 16)
    assert summaries["random"].improvement_over_random is None
    assert summaries["agent"].found_optimum == 1
    interval = summaries["agent"].final_regret
    assert interval.low <= interval.point <= interval.high
    text = report.markdown(list(summaries.values()), table, "2 evaluations", "cmd")
    assert "| agent | 4 | 0.1500 [" in text and "0.6250 [" in text


def test_identical_specs_give_identical_runs(table_file):
    spec = RunSpec("random", 3, str(table_file), evaluations=12)
    first, second = run(spec), run(spec)
    assert repr(first) == repr(second) and len(first) == 12  # repr: NaN equals NaN
    assert repr(run(RunSpec("random", 4, str(table_file), evaluations=12))) != repr(first)


def test_a_seconds_budget_stops_at_the_first_episode_past_it(table_file):
    logged = run(RunSpec("random", 0, str(table_file), evaluations=None, seconds=3.0))
    totals = [r["simulated_seconds_total"] for r in logged]
    assert totals[-1] >= 3.0 > totals[-2]


def test_logs_round_trip_and_validate(table, table_file, tmp_path):
    logged = run(RunSpec("reinforce", 0, str(table_file), evaluations=10))
    path = tmp_path / "log.csv"
    write_log(path, logged)
    assert repr(read_logs([path])) == repr(logged)  # repr: NaN equals NaN
    assert validate(read_logs([path]), table) == []


@pytest.mark.parametrize(("column", "value", "field"), [
    ("reward", "0.123", "reward"), ("student", "0", "student"),
    ("simulated_seconds", "9.5", "simulated_seconds"), ("table_seed", "7", "table_seed"),
])
def test_validate_catches_a_tampered_log(table, table_file, tmp_path, column, value, field):
    logged = run(RunSpec("random", 1, str(table_file), evaluations=8))
    logged = [r for r in logged if r["table_seed"] is not None]  # trained students only
    path = tmp_path / "log.csv"
    write_log(path, logged)
    rows = list(csv.DictReader(path.open()))
    rows[2][column] = value
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, rows[0].keys())
        writer.writeheader()
        writer.writerows(rows)
    mismatches = validate(read_logs([path]), table)
    assert [m.field for m in mismatches] == [field]
    assert mismatches[0].episode == logged[2]["episode"]


def test_landscape_of_a_generated_table(table):
    shape = landscape(table)
    rewards = true_rewards(table)
    assert shape.optimum == pytest.approx(rewards.max())
    assert shape.students == 64 and shape.degenerate == int((table.status >= 0).sum())
    assert shape.plateau[0.0] == 1
    assert shape.random_draws[0.0] == pytest.approx(64.0)  # one episode of 64 is optimal
    assert table.header.space_object().index(shape.optimum_actions) == int(
        np.flatnonzero(table.row_student == shape.optimum_student)[0])


def test_a_run_logged_twice_is_refused_not_merged(table):
    run_records = records("random", 0, [(0.1, 0.2), (0.3, 0.4)])
    assert [r["episode"] for r in report.group_runs(run_records)["random"][0]] == [1, 2]
    with pytest.raises(ValueError, match=r"random seed 0 .* logged twice"):
        report.summarize(run_records + run_records, table)
    with pytest.raises(ValueError, match="random seed 0"):
        report.group_runs(run_records[1:])


def test_a_tables_notes_reach_info_and_the_report(table):
    noted = dataclasses.replace(table, header=dataclasses.replace(
        table.header, extra={"provisional": "imputed; not for reporting"}))
    assert "note:         provisional: imputed; not for reporting" in describe(noted)
    assert "note:" not in describe(table)
    summaries = report.summarize(records("random", 0, [(0.1, 0.2)]), noted)
    assert "**Table note (provisional)**: imputed; not for reporting" in report.markdown(
        summaries, noted, "1 evaluation", "cmd")


@pytest.mark.slow
def test_cli_runs_reports_resumes_and_validates(table_file, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["bench", "rl", "removal", "--table", str(table_file), "--agents",
            "random,reinforce", "--seeds", "3", "--evaluations", "10", "--out", str(out),
            "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| reinforce | 3 |" in printed and "| random | 3 |" in printed
    for name in ("results.md", "summary.json", "run.json", "regret_evaluations.png",
                 "regret_seconds.png", "performance_profile.png"):
        assert (out / name).exists(), name
    logs = sorted((out / "episodes").glob("*.csv"))
    assert len(logs) == 6
    stamps = [log.stat().st_mtime_ns for log in logs]
    assert main(argv) == 0  # resumed: every run is finished, none is played again
    assert [log.stat().st_mtime_ns for log in logs] == stamps
    capsys.readouterr()
    assert main(["bench", "validate", str(out)]) == 0
    assert "60 episodes of 6 logs replayed" in capsys.readouterr().out
    changed = [*argv[:-3], "--evaluations", "11", "--out", str(out)]
    assert main(changed) == 2
    assert "other settings" in capsys.readouterr().err


def test_cli_runs_one_agent_under_several_settings(table_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["bench", "rl", "removal", "--table", str(table_file), "--agents", "random",
                 "reinforce:rollouts_per_update=2,learning_rate=0.05",
                 "reinforce:learning_rate=0.05,rollouts_per_update=2",  # the same spec
                 "--seeds", "2", "--evaluations", "6", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    label = "reinforce:learning_rate=0.05,rollouts_per_update=2"
    assert f"| {label} | 2 |" in printed and "| random | 2 |" in printed
    logs = sorted(p.name for p in (out / "episodes").glob("*.csv"))
    assert logs == ["random-seed000.csv", "random-seed001.csv",
                    "reinforce_learning_rate=0.05_rollouts_per_update=2-seed000.csv",
                    "reinforce_learning_rate=0.05_rollouts_per_update=2-seed001.csv"]
    records = read_logs([out / "episodes" / logs[2]])
    assert {r["agent"] for r in records} == {label} and len(records) == 6
    assert "--agents random " + label in (out / "run.json").read_text()


def test_cli_reports_a_single_seed_without_intervals(table_file, tmp_path, capsys):
    """One seed is a quick check, not an error: the report gives each estimate alone and
    summary.json holds nulls (a bootstrap of one run used to crash the report)."""
    import json

    out = tmp_path / "run"
    assert main(["bench", "rl", "removal", "--table", str(table_file), "--agents",
                 "random,reinforce", "--seeds", "1", "--evaluations", "5", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| reinforce | 1 |" in printed and "[no interval: one run]" in printed
    summary = {row["agent"]: row for row in json.loads((out / "summary.json").read_text())}
    assert summary["reinforce"]["final_regret"]["low"] is None
    assert summary["reinforce"]["improvement_over_random"]["high"] is None


def test_cli_refuses_unknown_agents_and_damaged_tables(table_file, tmp_path, capsys):
    assert main(["bench", "rl", "removal", "--table", str(table_file), "--agents", "dqn",
                 "--out", str(tmp_path / "r")]) == 2
    assert "unknown agent 'dqn'" in capsys.readouterr().err
    assert main(["bench", "rl", "removal", "--table", str(table_file), "--agents",
                 "reinforce:lr=1", "--out", str(tmp_path / "r")]) == 2
    assert "no setting 'lr'; allowed:" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a table")
    assert main(["bench", "info", "removal", "--table", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.npz" in err and len(err.strip().splitlines()) == 1
    assert main(["bench", "rl", "shrink", "--table", str(table_file), "--out",
                 str(tmp_path / "r")]) == 2
    assert "is a removal table" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_run_on_the_shipped_table_records_no_path_and_validates_against_its_digest(
        table_file, tmp_path, capsys, monkeypatch):
    """run.json names the shipped table by its digest, not by this installation's path to
    it, so a committed run directory validates on any machine; another table is refused."""
    import json

    import n2n_env.bench.lookup as lookup

    monkeypatch.setattr(lookup, "shipped_table_path", lambda space: table_file)
    out = tmp_path / "run"
    assert main(["bench", "rl", "removal", "--agents", "random", "--seeds", "2",
                 "--evaluations", "5", "--out", str(out), "--no-progress"]) == 0
    run_settings = json.loads((out / "run.json").read_text())
    assert run_settings["table"] is None and run_settings["space"] == "removal"
    assert str(table_file) not in (out / "run.json").read_text()
    capsys.readouterr()
    assert main(["bench", "validate", str(out)]) == 0
    other = fake_table("removal", noise=0.02).save(tmp_path / "other.npz")
    monkeypatch.setattr(lookup, "shipped_table_path", lambda space: other)
    assert main(["bench", "validate", str(out)]) == 1
    assert "digest" in capsys.readouterr().err


def test_validate_checks_the_digest_of_a_table_passed_by_hand(table_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["bench", "rl", "removal", "--table", str(table_file), "--agents", "random",
                 "--seeds", "1", "--evaluations", "4", "--out", str(out), "--no-progress"]) == 0
    other = fake_table("removal", noise=0.02).save(tmp_path / "other.npz")
    capsys.readouterr()
    assert main(["bench", "validate", str(out), "--table", str(other)]) == 1
    assert "digest" in capsys.readouterr().err
    assert main(["bench", "validate", str(out), "--table", str(table_file)]) == 0
