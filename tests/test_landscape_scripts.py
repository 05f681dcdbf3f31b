"""The landscape scripts of benchmarks/ that explain N2N-Bench's leaderboards:
policy_landscape.py (where policies settle against the table's marginals),
cem_reference.py (what a simple learner reaches on a table) and reward_plateau.py (how flat
the top of a table is). All run on made-up tables.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
from bench_tables import table_rows

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def test_policy_landscape_shows_marginals_near_optimum_and_agents_side_by_side(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Per variable: the mean true reward of each action (checked by hand for two), the
    near-optimal students' actions, and each agent's share of each action in the last
    episodes of its runs (here made-up logs whose shares are known)."""
    import numpy as np
    from bench_tables import fake_table

    from n2n_env.bench.rl import true_rewards

    table = fake_table("shrink")
    table_file = table.save(tmp_path / "shrink.npz")
    space = table.header.space_object()
    assert space.episode_length == 2
    episodes = tmp_path / "run" / "episodes"
    episodes.mkdir(parents=True)
    header = "agent,seed,episode,actions\n"
    (episodes / "ppo-seed000.csv").write_text(header + "ppo,0,1,00\nppo,0,2,37\nppo,0,3,39\n")
    (episodes / "ppo-seed001.csv").write_text(header + "ppo,1,1,99\nppo,1,2,31\nppo,1,3,31\n")
    monkeypatch.setattr(sys, "argv", ["policy_landscape.py", "shrink", str(tmp_path / "run"),
                                      "--table", str(table_file), "--last", "2", "--gap", "0"])
    runpy.run_path(str(BENCHMARKS / "policy_landscape.py"), run_name="__main__")
    out = capsys.readouterr().out
    rewards = true_rewards(table)[table.row_student]
    best = space.actions(int(np.argmax(rewards)))
    assert "1 episodes within 0" in out
    assert ("ppo: 1.5 distinct students in a run's last 2 episodes (median of 2 runs; "
            "range 1-2)") in out
    blocks = out.split("\nvariable ")[1:]
    assert len(blocks) == 2
    for variable, block in enumerate(blocks):
        lines = block.splitlines()
        marginal = [float(v) for v in lines[2].split()[-10:]]
        for action in (0, 9):
            by_hand = np.mean([rewards[e] for e in range(space.size)
                               if space.actions(e)[variable] == action])
            assert marginal[action] == pytest.approx(by_hand, abs=5e-4)
        near = [float(v) for v in lines[3].split()[-10:]]
        assert near == [100.0 if a == best[variable] else 0.0 for a in range(10)]
        shares = [float(v) for v in lines[4].split()[-10:]]
        # last 2 episodes of each run: 37, 39, 31, 31
        expected = {0: {3: 100.0}, 1: {7: 25.0, 9: 25.0, 1: 50.0}}[variable]
        assert shares == [expected.get(a, 0.0) for a in range(10)]
    monkeypatch.setattr(sys, "argv", ["policy_landscape.py", "shrink", "--table",
                                      str(table_file), "--last", "0"])
    with pytest.raises(SystemExit):
        runpy.run_path(str(BENCHMARKS / "policy_landscape.py"), run_name="__main__")
    assert "--last must be at least 1, got 0" in capsys.readouterr().err


def test_cem_reference_follows_its_elite_and_prints_its_regret_beside_uniform(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The elite pulls the sampling distribution to the high rewards of a made-up table
    (uniform sampling stays put), and the regret is that of the best student seen. The
    script prints both rows and refuses an empty elite."""
    import numpy as np
    from bench_tables import fake_table

    from n2n_env.bench.rl import true_rewards

    cem = runpy.run_path(str(BENCHMARKS / "cem_reference.py"))
    table = fake_table("shrink", noise=0.0)  # every seed alike: drawn reward = true reward
    optimum = true_rewards(table).max()
    for seed in range(5):
        learned_regret, learned = cem["run"](table, seed, 100, 10, 2, 0.5, 0.02)
        uniform_regret, uniform = cem["run"](table, seed, 100, 10, 0, 0.5, 0.02)
        assert learned_regret == pytest.approx(optimum - max(learned))
        assert uniform_regret == pytest.approx(optimum - max(uniform))
        assert len(learned) == len(uniform) == 100
        # half the made-up students are larger than the teacher (reward 0): the elite
        # leads away from them, uniform sampling keeps drawing them
        assert np.mean(learned[-20:]) > 0.6 > np.mean(uniform) + 0.2

    table_file = table.save(tmp_path / "shrink.npz")
    monkeypatch.setattr(sys, "argv", ["cem_reference.py", "shrink", "--table", str(table_file),
                                      "--seeds", "3", "--evaluations", "20", "--batch", "5",
                                      "--elite", "2"])
    runpy.run_path(str(BENCHMARKS / "cem_reference.py"), run_name="__main__")
    rows = table_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == ["cross-entropy method", "uniform (random search)"]
    assert rows[1][2] == "-"
    monkeypatch.setattr(sys, "argv", ["cem_reference.py", "shrink", "--table", str(table_file),
                                      "--elite", "0"])
    with pytest.raises(SystemExit):
        runpy.run_path(str(BENCHMARKS / "cem_reference.py"), run_name="__main__")
    assert "--elite must be in 1..--batch (20), got 0" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["cem_reference.py", "shrink", "--table", str(table_file),
                                      "--evaluations", "0"])
    with pytest.raises(SystemExit):
        runpy.run_path(str(BENCHMARKS / "cem_reference.py"), run_name="__main__")
    assert "--evaluations must be at least 1, got 0" in capsys.readouterr().err


def test_reward_plateau_splits_the_near_optimal_rewards_into_their_two_factors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The optimum's compression, the slope of C(2-C) there, and for each gap the count and
    the ranges of the near-optimal students, checked by hand on a made-up table."""
    import numpy as np
    from bench_tables import fake_table

    from n2n_env.bench.rl import true_rewards

    table = fake_table("shrink")
    table_file = table.save(tmp_path / "shrink.npz")
    monkeypatch.setattr(sys, "argv", ["reward_plateau.py", "shrink", "--table",
                                      str(table_file)])
    runpy.run_path(str(BENCHMARKS / "reward_plateau.py"), run_name="__main__")
    out = capsys.readouterr().out
    rewards = true_rewards(table)
    compression = table.compression("params")
    best = int(np.argmax(rewards))
    assert f"optimum {rewards[best]:.5f} at {1 / (1 - compression[best]):.1f}x" in out
    assert f"slope of C(2-C) there {2 * (1 - compression[best]):.3f}" in out
    halved = 1 - (1 - compression[best]) / 2
    gain = halved * (2 - halved) - compression[best] * (2 - compression[best])
    assert f"would add {gain:.4f}" in out
    rows = table_rows(out)
    assert [row[0] for row in rows] == ["0.005", "0.01", "0.02"]
    for row in rows:
        near = (rewards > 0) & (rewards >= rewards[best] - float(row[0]))
        assert int(row[1].replace(",", "")) == near.sum()
        size_factor = compression[near] * (2 - compression[near])
        assert row[3] == f"{size_factor.min():.4f}-{size_factor.max():.4f}"
        # the two factors multiply to the reward
        accuracy = table.val_accuracy[near].astype(np.float64).mean(axis=1)
        np.testing.assert_allclose(size_factor * accuracy / table.header.teacher_accuracy,
                                   rewards[near])
