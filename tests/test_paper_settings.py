"""``n2n paper``'s settings and plans: the defaults are the issue's real runs, a recorded
command makes the same settings, the paper's reference numbers, and bad settings refused
before anything runs. (The tables end to end are in test_paper.py and test_paper_cifar.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_runs import run

from n2n_env import cli
from n2n_env.paper import cells, plan, reference
from n2n_env.paper.settings import STUDENT_NAMES, PaperSettings

pytestmark = pytest.mark.usefixtures("private_n2n_home")  # nothing may train here


def test_the_defaults_are_the_issues_real_runs() -> None:
    one, two, three, four, five = (PaperSettings(table) for table in range(1, 6))
    assert (one.teacher, one.teacher_width, one.dataset, one.agents, one.seeds) == (
        "vgg13", 1.0, "mnist-10k", ("reinforce", "random"), (0, 1, 2))
    assert (three.teacher, three.teacher_width, three.dataset, three.students) == (
        "resnet18", 0.25, "cifar10-14k", STUDENT_NAMES)
    assert four.max_params == 20_000 and two.prune_runs == 5
    assert five.pairs == (("vgg11", "vgg19"), ("resnet18", "resnet34"))
    assert (five.pretrain_iterations, five.transfer_iterations) == (100, 10)
    units = {table: plan.plan(s) for table, s in enumerate((one, two, three, four, five), 1)}
    assert [len(units[t]) for t in range(1, 6)] == [7, 5, 7, 4, 4 + 3 * (2 + 4)]
    shared = {u.id: u for u in units[1]}
    for unit in units[2][:-1]:  # table 2's teacher and searches are table 1's
        assert shared[unit.id] == unit
    assert units[4][0] == units[1][0]
    assert units[1][0].spec["epochs"] == 50 and units[3][0].spec["epochs"] == 150
    prune = units[2][-1]
    assert prune.kind == "prune" and set(prune.needs) == {u.id for u in units[2][:-1]}


def test_the_recorded_command_makes_the_same_settings() -> None:
    settings = PaperSettings(5, dataset="digits", seeds=(0, 3), pairs=(("resnet34", "resnet18"),),
                             teacher_width=0.25, evaluator="mock")
    words = settings.command("w").split()
    assert words[:5] == ["n2n", "paper", "5", "--work", "w"]
    args = cli.build_parser().parse_args(words[1:])
    from n2n_env.paper.cli import SETTINGS

    again = PaperSettings(5, **{k: getattr(args, k) for k in SETTINGS
                                if getattr(args, k) is not None})
    assert again == settings


@pytest.mark.parametrize("table", range(1, 6))
def test_settings_written_as_json_read_back_the_same(table: int) -> None:
    settings = PaperSettings(table, dataset="digits", seeds=(2, 0), teacher_width=0.25,
                             data_root="d")
    assert PaperSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
        PaperSettings.from_dict({**settings.to_dict(), "colour": "blue"})
    with pytest.raises(ValueError, match="no 'table'"):
        PaperSettings.from_dict({"dataset": "digits"})
    other = 5 if table != 5 else 1
    misplaced = {5: ("pairs", [["vgg11", "vgg19"]]), 1: ("agents", ["reinforce"])}[other]
    with pytest.raises(ValueError, match=f"not a setting of table {table}"):
        PaperSettings.from_dict({**settings.to_dict(), misplaced[0]: misplaced[1]})


def test_reference_numbers_and_cells() -> None:
    assert [reference.count(text) for text in ("9.4M", "73K", "984K", "11.17M", "1.2M")] == [
        9_400_000, 73_000, 984_000, 11_170_000, 1_200_000]
    assert len(reference.TABLE1) == 21 and len(reference.TABLE5) == 6
    assert reference.find(reference.TABLE4, "MNIST", "VGG-13",
                          "Student (Stage 1 & 2)").params == "17K"
    assert cells.pct([0.9, 0.92]) == "91.00 ± 1.41%"
    assert cells.count([]) == cells.PENDING and cells.ratio([4.0]) == "4.0x"
    assert cells.points([-0.004, 0.002]) == "-0.10 ± 0.42"


def test_help_gives_each_tables_time(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["paper", "--help"], capsys)
    assert code == 0
    for table in ("1 compression", "2 pruning", "3 distillation", "4 constraints",
                  "5 transfer"):
        assert re.search(rf"^  {table} .*?about [\d.]+ h", out, flags=re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize(("argv", "message"), [
    (["7"], "unknown table '7'; choose from: 1 (compression), 2 (pruning), 3 (distillation), "
            "4 (constraints), 5 (transfer)"),
    (["1", "--pairs", "vgg11:vgg19"], "not a setting of table 1: --pairs applies to table 5"),
    (["2", "--agents", "random"], "--agents applies to tables 1, 3 and 4"),
    (["1", "--agents", "reinforce,foo"], "agent must be one of 'reinforce'"),
    (["3", "--students", "fitnet5"], "student must be one of 'fitnet4', 'vgg-small', "
                                     "'squeezenet1_1'"),
    (["1", "--dataset", "imagenet"], "dataset must be one of 'digits'"),
    (["1", "--teacher", "vgg12"], "teacher must be one of"),
    (["5", "--pairs", "vgg11:vgg11"], "pairs must be (source, target) pairs of two different"),
    (["1", "--evaluator", "fake"], "evaluator must be one of 'distill', 'mock'"),
    (["1", "--only", "nothing*"], "matches none of the units of this table: teacher-vgg13"),
    (["1", "1"], "give each table once, got 1 1"),
    (["1", "compression"], "give each table once, got 1 compression"),
    (["1", "2", "--pairs", "vgg11:vgg19"], "not a setting of tables 1 and 2: --pairs applies "
                                           "to table 5"),
    (["2", "4", "--only", "*random*"], "--only *random* matches none of the units of tables "
                                       "2 and 4: teacher-vgg13"),
    (["1", "5", "--seeds", "0", "--only", "nothing*"], "matches none of the units of tables "
                                                       "1 and 5"),
    (["5", "1", "--teacher-width", "0.5"], "--teacher-width would replace different defaults "
                                           "of these tables (table 5: 0.125; table 1: 1); give "
                                           "them in separate commands"),
    (["1", "4", "--agents", "reinforce"], "(table 1: reinforce,random; table 4: reinforce)"),
])
def test_bad_settings_are_refused_naming_what_is_allowed(
        argv: list[str], message: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["paper", "--work", str(tmp_path / "w"), *argv], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "w").exists()  # refused before anything ran


@pytest.mark.parametrize(("argv", "message"), [
    (["1", "--seeds", "0,0"], "expected distinct integers >= 0"),
    (["5", "--pairs", "vgg11-vgg19"], "expected SOURCE:TARGET pairs"),
    (["2", "--prune-fraction", "1.5"], "must be in (0, 1]"),
    (["1", "--iterations", "0"], "must be a positive integer"),
])
def test_bad_flag_values_are_refused(argv: list[str], message: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["paper", argv[0], "--work", str(tmp_path / "w"), *argv[1:]], capsys)
    assert code == 2 and message in err


def test_work_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["paper", "1"], capsys)
    assert code == 2 and "--work" in err


def test_tables_given_together_pool_their_units_each_once() -> None:
    one, two, four = (PaperSettings(table) for table in (1, 2, 4))
    pooled = plan.pool([four, two, one])
    ids = [unit.id for unit, _ in pooled]
    assert len(ids) == len(set(ids))
    assert set(ids) == {u.id for table in (one, two, four) for u in plan.plan(table)}
    owner = {unit.id: settings.table for unit, settings in pooled}
    assert owner["teacher-vgg13-w1-mnist-10k"] == 4  # the first table given that has it
    assert owner["compress-vgg13-w1-mnist-10k-reinforce-seed0"] == 2
    assert owner["compress-vgg13-w1-mnist-10k-random-seed0"] == 1
    assert ids[:4] == [u.id for u in plan.plan(four)]  # the tables' order, then each plan's
    with pytest.raises(ValueError, match=r"give each table once, got tables \[1, 2, 1\]"):
        plan.pool([one, two, one])
    with pytest.raises(ValueError, match="tables 1 and 2 ask unit "
                       "compress-vgg13-w1-mnist-10k-reinforce-seed0 for different things "
                       r"\(iterations 40 in one, 7 in the other\)"):
        plan.pool([one, PaperSettings(2, iterations=7), four])


def test_a_spec_difference_names_every_differing_key_once_in_order() -> None:
    saved = {"seed": 0, "iterations": 40, "dataset": "mnist-10k", "width": 1.0}
    now = {"width": 1.0, "seed": 1, "iterations": 7, "agent": "random"}
    assert plan.spec_difference(saved, now, ("there", "now")) == (
        "agent None there, 'random' now, dataset 'mnist-10k' there, None now, "
        "iterations 40 there, 7 now, seed 0 there, 1 now")
    assert plan.spec_difference(now, now) == ""
