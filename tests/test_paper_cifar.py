"""``n2n paper 3`` and ``n2n paper 5``: the paper's CIFAR-10 tables, each with its own units.

Table 3 distils the hand-designed students from a ResNet-18 teacher; Table 5 pre-trains a
policy on one teacher and transfers it to another. Neither reuses Table 1's searches, so
they run here with tiny budgets (``synthetic`` or ``digits`` data, one-epoch teachers, the
mock evaluator) in a private ``N2N_HOME``. The numbers mean nothing; the tests check that
each table holds the paper's numbers beside the units' results, and that a lost policy is
pre-trained again to the same policy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from cli_runs import run
from paper_runs import TINY, md_row, paper_cmd, results, spread, stage, unit_lines

from n2n_env import zoo
from n2n_env.paper import figures, runner
from n2n_env.paper.settings import STUDENT_NAMES, PaperSettings

pytestmark = pytest.mark.usefixtures("one_thread", "private_n2n_home")


def test_table3_distils_the_hand_designed_students(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from n2n_env.baselines import STUDENTS, make_student

    assert tuple(STUDENTS) == STUDENT_NAMES
    work = tmp_path / "work"
    code, _, err = run(paper_cmd("3", work, "--dataset", "synthetic", "--teacher-width",
                                 "0.125", "--iterations", "1", "--finetune-epochs", "1",
                                 "--teacher-epochs", "1", "--seeds", "0", "--evaluator", "mock",
                                 "--no-progress"), capsys)
    assert code == 0, err
    records = results(work)
    teacher = records["teacher-resnet18-w0.125-synthetic"]["result"]
    text = (work / "table-3.md").read_text()
    # the paper ran nothing on synthetic data: its columns read dashes (its side of the
    # table on cifar10-14k is checked in test_paper_tables.py)
    assert md_row(text, "Teacher (ResNet-18)")[1:3] == ["—", "—"]
    for name, label in (("fitnet4", "FitNet-4"), ("vgg-small", "VGG-small"),
                        ("squeezenet1_1", "SqueezeNet1.1")):
        result = records[f"kd-resnet18-w0.125-synthetic-{name}-seed0"]["result"]
        params = sum(p.numel() for p in make_student(name, (3, 8, 8), 10).parameters())
        assert result["params"] == params
        row = md_row(text, label)
        assert row[1:5] == ["—"] * 4
        assert row[5:8] == [f"{100 * result['test_accuracy']:.2f}%", f"{params:,}",
                            f"{teacher['params'] / params:.1f}x"]
    assert "more parameters than this teacher" in text  # a 0.125-wide ResNet-18 is smaller
    search = records["compress-resnet18-w0.125-synthetic-reinforce-seed0"]
    ours = md_row(text, "Ours: Student (Stage1+Stage2), REINFORCE")
    assert ours[1:5] == ["—"] * 4
    assert ours[6] == f"{stage(search, 'Student (Stage1+Stage2)')['params']:,}"


def test_table5_compares_pretrained_and_scratch_policies(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agents.reinforce import Reinforce
    from n2n_env import data

    work = tmp_path / "work"
    argv = paper_cmd("transfer", work, "--dataset", "digits", *TINY, "--pairs", "vgg11:vgg19",
                     "--pretrain-iterations", "2", "--transfer-iterations", "1")
    code, out, err = run(argv, capsys)
    assert code == 0, err
    records = results(work)
    layers = len(zoo.get("vgg19", *data.info("digits"), width=0.125))
    text = (work / "table-5.md").read_text()
    for policy, label, paper_cells in (("pretrained", "Pre-trained", ["0.52", "46.0%", "71.7%"]),
                                       ("scratch", "Scratch", ["-0.07", "20.2%", "42.5%"])):
        runs = [records[f"transfer-vgg11-vgg19-w0.125-digits-{policy}-seed{s}"]["result"]
                for s in (0, 1)]
        for result in runs:
            assert result["students"] == 5 and result["decisions"] == [layers]
            assert math.isclose(result["reward"], sum(result["iteration_rewards"]))
        row = md_row(text, f"VGG-11 → VGG-19 | {label}")
        assert row[2:5] == paper_cells
        assert row[5] == "{:.2f} ± {:.2f}".format(*spread([r["reward"] for r in runs], 1))
    assert "![Table 5, per iteration](figure-5.png)" in text
    assert (work / "figure-5.png").is_file()
    settings = PaperSettings.from_dict(json.loads((work / "table-5.settings.json").read_text()))
    ((panel,),) = figures.panels(settings, runner.states(settings, work), work)
    assert panel.title == "VGG-11 → VGG-19" and sorted(panel.lines) == ["pre-trained", "scratch"]
    for policy, label in (("pretrained", "pre-trained"), ("scratch", "scratch")):
        for seed in (0, 1):
            rewards = records[f"transfer-vgg11-vgg19-w0.125-digits-{policy}-seed{seed}"][
                "result"]["iteration_rewards"]
            assert panel.lines[label][seed] == tuple(rewards)
    for seed in (0, 1):
        policy = Reinforce.load(work / "policies" / f"pretrain-vgg11-w0.125-digits-seed{seed}.pt")
        assert policy.iterations == 2
    # A lost policy is pre-trained again when a unit that needs it runs; the mock rewards
    # and the seeds make it the same policy, so the transfer finds the same students.
    name = "transfer-vgg11-vgg19-w0.125-digits-pretrained-seed1"
    before = records[name]["result"]
    (work / "policies" / "pretrain-vgg11-w0.125-digits-seed1.pt").unlink()
    (work / "units" / f"{name}.json").unlink()
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "again    pretrain-vgg11-w0.125-digits-seed1" in out
    assert unit_lines(out, "start|resume") == [name]
    assert results(work)[name]["result"] == before
    policy = work / "policies" / "pretrain-vgg11-w0.125-digits-seed1.pt"
    saved = torch.load(policy, weights_only=True)
    assert saved["iterations"] == 2
