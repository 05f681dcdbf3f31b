"""The baselines of section 4.4: filter pruning (Table 2) and hand-designed students (Table 3).

Tiny budgets on the generated ``synthetic`` data; the pruning tests use the session's
trained conv4 teacher (``synthetic_teacher``) or a random ResNet-18 at width 0.125.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from n2n_env import zoo
from n2n_env.baselines import (
    STUDENTS,
    PruningConfig,
    PruningResult,
    StopRule,
    best_run,
    count_flops,
    distill_student,
    fitnet4,
    make_student,
    prune_best_of,
    prune_filters,
    torch_flops,
    vgg_small,
)
from n2n_env.baselines import pruning as pruning_mod
from n2n_env.baselines import runs as runs_mod
from n2n_env.baselines.pruning import LoopOutcome, pruning_loop
from n2n_env.build import build_model
from n2n_env.finetune import finetune
from n2n_env.recipes import Recipe

pytest.importorskip("torch_pruning")
pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
RECIPE = Recipe(epochs=1, lr=0.01, batch_size=64)
TINY = PruningConfig(prune_fraction=0.15, taylor_examples=8, finetune_steps=3, max_steps=4,
                     recipe=RECIPE)


def torch_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def loop(teacher: nn.Module, data, stop: StopRule, config: PruningConfig = TINY,
         seed: int = 0) -> LoopOutcome:
    return pruning_loop(copy.deepcopy(teacher), data.to(CPU), stop, config, seed=seed,
                        device=CPU)


# ------------------------------------------------------------------ pruning


def test_pruned_network_is_its_architecture_and_shrinks_every_step(synthetic_teacher,
                                                                   synthetic) -> None:
    result = prune_filters(synthetic_teacher, synthetic, StopRule(0.0, 0), TINY,
                           device="cpu")
    steps = result.history
    assert [s.step for s in steps] == list(range(len(steps))) and len(steps) == 5
    assert all(a.params > b.params and a.flops > b.flops for a, b in itertools.pairwise(steps))
    assert steps[0].params == synthetic_teacher.architecture.num_params()
    assert result.stop_reason == "max_steps" and result.steps == 4
    arch = result.architecture
    assert result.params == arch.num_params() == torch_params(result.model) == steps[-1].params
    assert result.flops == arch.flops()
    assert arch.root_signature() == synthetic_teacher.architecture.root_signature()
    # The architecture plus the state_dict is the whole network (the package's model format).
    rebuilt = build_model(arch)
    rebuilt.load_state_dict(result.model.state_dict())
    x = synthetic.val.x[:16]
    assert torch.allclose(rebuilt.eval()(x), result.model(x), atol=1e-5)
    assert 0.0 <= result.test_accuracy <= 1.0 and not result.model.training


def test_each_progress_line_shows_its_own_step(synthetic_teacher, synthetic,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    outcome = pruning_loop(copy.deepcopy(synthetic_teacher), synthetic.to(CPU),
                           StopRule(0.0, 0), TINY, seed=0, device=CPU, progress="lines")
    lines = [line for line in capsys.readouterr().err.splitlines() if ": step " in line]
    shown = [(int(m.group(1)), int(m.group(2)), float(m.group(3))) for m in (
        re.search(r"step (\d+)/\d+, params (\d+), val ([\d.]+)", line) for line in lines)]
    assert shown == [(step.step, step.params, round(step.val_accuracy, 4))
                     for step in outcome.history[1:]]


def test_residual_teacher_stays_consistent(synthetic) -> None:
    arch = zoo.get("resnet18", synthetic.input_shape, synthetic.num_classes, width=0.125)
    torch.manual_seed(0)
    teacher = build_model(arch).eval()
    config = PruningConfig(prune_fraction=0.3, taylor_examples=4, taylor_batch_size=2,
                           finetune_steps=1, max_steps=3, recipe=RECIPE)
    pruned = loop(teacher, synthetic, StopRule(0.0, 0), config).model.architecture
    assert pruned.degenerate_reason() is None
    assert pruned.num_params() == torch_params(build_model(pruned)) < arch.num_params()
    for group in pruned.width_groups():  # tied through identity shortcuts: one width each
        assert len({pruned.slot_width(slot) for slot in group}) == 1
    shortcut_groups = [g for g in arch.width_groups() if len(g) > 1]
    assert any(pruned.slot_width(g[0]) < arch.slot_width(g[0]) for g in shortcut_groups)
    model = build_model(pruned, teacher).train()
    model(synthetic.train.x[:4]).sum().backward()  # additions line up, forward and back


def test_the_taylor_criterion_removes_a_dead_filter_first(synthetic_teacher,
                                                          synthetic) -> None:
    teacher = copy.deepcopy(synthetic_teacher)
    conv, consumer = teacher.layers[0], teacher.layers[4]  # conv4: conv, bn, relu, pool, conv
    dead = 3
    with torch.no_grad():
        conv.weight[dead] = 0
        conv.bias[dead] = 0
        consumer.weight[:, dead] = 0  # nothing reads it: removing it changes nothing
    config = PruningConfig(prune_fraction=1e-6, taylor_examples=4, finetune_steps=0,
                           max_steps=1, recipe=RECIPE)
    model = loop(teacher, synthetic, StopRule(0.0, 0), config).model
    keep = [c for c in range(conv.out_channels) if c != dead]
    assert model.layers[0].out_channels == conv.out_channels - 1
    assert torch.equal(model.layers[0].weight, conv.weight[keep])
    assert torch.equal(model.layers[4].weight, consumer.weight[:, keep])


def test_stop_rule_conditions() -> None:
    rule = StopRule(reference_accuracy=0.95, reference_params=1000)
    assert rule.violation(0.94, 1000) is None  # exactly one point below: still allowed
    assert rule.violation(0.9399, 1000) == "accuracy"
    assert rule.violation(0.99, 999) == "params"
    assert rule.violation(None, 1000) is None
    assert StopRule(0.95, 0, accuracy_drop=0.0).violation(0.9499, 10) == "accuracy"
    with pytest.raises(ValueError, match="reference_accuracy"):
        StopRule(95.0, 1000)


def test_pruning_stops_before_the_parameters_go_below_the_reference(synthetic_teacher,
                                                                    synthetic) -> None:
    reference = synthetic_teacher.architecture.num_params() // 2
    outcome = loop(synthetic_teacher, synthetic, StopRule(0.0, reference),
                   PruningConfig(prune_fraction=0.1, taylor_examples=4, finetune_steps=1,
                                 max_steps=20, recipe=RECIPE))
    *accepted, last = outcome.history
    assert outcome.stop_reason == "params"
    assert last.params < reference and last.val_accuracy is None and not last.accepted
    assert all(step.accepted and step.params >= reference for step in accepted)
    kept = accepted[-1]
    assert outcome.steps == kept.step == len(accepted) - 1
    assert outcome.model.architecture.num_params() == kept.params >= reference


def test_pruning_stops_when_accuracy_falls_more_than_a_point(synthetic_teacher,
                                                             synthetic) -> None:
    teacher_accuracy = loop(synthetic_teacher, synthetic, StopRule(0.0, 0),
                            TINY).history[0].val_accuracy
    # The teacher itself misses a reference 1.5 points above it: nothing is pruned.
    outcome = loop(synthetic_teacher, synthetic, StopRule(teacher_accuracy + 0.015, 0), TINY)
    assert outcome.stop_reason == "accuracy" and outcome.steps == 0
    assert outcome.model.architecture == synthetic_teacher.architecture
    # Pruning 5% of the channels per step with 2 updates in between costs a point after a
    # few steps (after 4 on this CPU); the network before that step is kept.
    outcome = loop(synthetic_teacher, synthetic, StopRule(teacher_accuracy, 0),
                   PruningConfig(prune_fraction=0.05, taylor_examples=4, finetune_steps=2,
                                 max_steps=20, recipe=RECIPE))
    *accepted, last = outcome.history
    assert outcome.stop_reason == "accuracy" and last.val_accuracy < teacher_accuracy - 0.01
    assert outcome.steps >= 1 and outcome.model.architecture.num_params() == accepted[-1].params
    assert all(step.val_accuracy >= teacher_accuracy - 0.01 for step in accepted)
    assert outcome.steps == accepted[-1].step and outcome.val_accuracy == accepted[-1].val_accuracy


def test_updates_between_steps_run_at_the_recipes_final_rate_unless_told(
        synthetic_teacher, synthetic, monkeypatch) -> None:
    """A trained network fine-tuned at its recipe's initial rate first loses accuracy, which
    the stopping rule reads as pruning damage; the default continues where training ended."""
    rates = []
    real = pruning_mod.make_optimizer
    monkeypatch.setattr(pruning_mod, "make_optimizer",
                        lambda model, recipe: rates.append(recipe.lr) or real(model, recipe))
    recipe = Recipe(epochs=10, lr=0.08, batch_size=64, milestones=(3, 6), gamma=0.5)
    config = PruningConfig(prune_fraction=0.15, taylor_examples=4, finetune_steps=2,
                           max_steps=2, recipe=recipe)
    loop(synthetic_teacher, synthetic, StopRule(0.0, 0), config)
    assert rates == [pytest.approx(0.02)] * 2  # 0.08 halved at epochs 3 and 6
    rates.clear()
    loop(synthetic_teacher, synthetic, StopRule(0.0, 0),
         dataclasses.replace(config, step_lr=0.005))
    assert rates == [0.005] * 2
    assert PruningConfig(step_lr=0.005).to_dict()["step_lr"] == 0.005  # part of a run's identity
    with pytest.raises(ValueError, match="step_lr"):
        PruningConfig(step_lr=0.0)


def fake_run(seed: int, val_accuracy: float, params: int, steps: int = 1) -> PruningResult:
    arch = zoo.get("conv3", (3, 8, 8), 10, width=0.25)
    return PruningResult(arch, None, params, 0, val_accuracy, 0.0, val_accuracy, steps,  # type: ignore[arg-type]
                         "params", (), seed, 0.0, 0.01)


def test_best_of_n_picks_the_highest_validation_accuracy_then_the_smallest() -> None:
    runs = [fake_run(0, 0.80, 100), fake_run(1, 0.90, 300), fake_run(2, 0.90, 200),
            fake_run(3, 0.85, 50), fake_run(4, 0.90, 200)]
    assert best_run(runs).seed == 2
    assert best_run(runs[:1]).seed == 0
    with pytest.raises(ValueError):
        best_run([])
    # A run that pruned nothing is the teacher: better accuracy, but no pruned model.
    teacher_run = fake_run(5, 0.95, 1000, steps=0)
    assert best_run([*runs, teacher_run]).seed == 2
    assert best_run([teacher_run, fake_run(6, 0.99, 1000, steps=0)]).seed == 6


def test_a_run_that_prunes_nothing_is_the_teacher_and_is_not_trained_again(
        synthetic_teacher, synthetic, tmp_path: Path, monkeypatch) -> None:
    """Its first step breaks the rule: the result is the teacher as it is. Fine-tuning it
    would spend the whole final recipe (hours at full width) on a network already trained."""
    from n2n_env.training import evaluate_accuracy

    teacher_accuracy = evaluate_accuracy(synthetic_teacher, synthetic.val)
    stop = StopRule(teacher_accuracy + 0.015, 0)  # the teacher itself misses it

    def never(*args, **kwargs):
        raise AssertionError("the unpruned teacher was fine-tuned")

    monkeypatch.setattr(runs_mod, "finetune", never)
    result = prune_filters(synthetic_teacher, synthetic, stop, TINY, seed=3, device="cpu",
                           directory=tmp_path)
    assert result.steps == 0 and result.stop_reason == "accuracy" and result.lr == 0.0
    assert result.architecture == synthetic_teacher.architecture
    assert result.params == synthetic_teacher.architecture.num_params()
    assert result.val_accuracy == result.pruned_val_accuracy == teacher_accuracy
    assert result.test_accuracy == evaluate_accuracy(synthetic_teacher, synthetic.test)
    assert all(torch.equal(a, b) for a, b in zip(result.model.state_dict().values(),
                                                 synthetic_teacher.state_dict().values()))
    again = prune_filters(synthetic_teacher, synthetic, stop, TINY, seed=3, device="cpu",
                          directory=tmp_path)
    assert again.summary() == result.summary()


def test_best_of_runs_every_seed_and_reads_finished_ones_back(synthetic_teacher, synthetic,
                                                              tmp_path: Path,
                                                              monkeypatch) -> None:
    config = PruningConfig(prune_fraction=0.15, taylor_examples=4, finetune_steps=2,
                           max_steps=2, recipe=RECIPE)
    stop = StopRule(0.0, 0)
    best = prune_best_of(synthetic_teacher, synthetic, stop, config, seeds=(0, 1),
                         device="cpu", directory=tmp_path)
    assert [run.seed for run in best.runs] == [0, 1] and best.best == best_run(best.runs)
    summary = json.loads((tmp_path / "seed-1.result.json").read_text())
    assert summary["params"] == best.runs[1].params and summary["identity"]["seed"] == 1
    from n2n_env.student_loading import load_student

    assert load_student(tmp_path / "seed-0.pt").architecture == best.runs[0].architecture

    def never(*args, **kwargs):
        raise AssertionError("a finished seed was run again")

    monkeypatch.setattr(runs_mod, "pruning_loop", never)
    with monkeypatch.context() as patch:
        patch.setattr(runs_mod, "finetune", never)
        again = prune_best_of(synthetic_teacher, synthetic, stop, config, seeds=(0, 1),
                              device="cpu", directory=tmp_path)
        with pytest.raises(AssertionError, match="run again"):  # another run's files
            prune_filters(synthetic_teacher, synthetic, StopRule(0.0, 1), config,
                          device="cpu", directory=tmp_path)
    for first, second in zip(best.runs, again.runs):
        assert first.summary() == second.summary()
        assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                     second.model.state_dict().values()))
    # Interrupted during the final fine-tuning: the pruned network is read back.
    (tmp_path / "seed-0.result.json").unlink()
    resumed = prune_filters(synthetic_teacher, synthetic, stop, config, device="cpu",
                            directory=tmp_path)
    assert resumed.architecture == best.runs[0].architecture
    assert resumed.history == best.runs[0].history


class Interrupted(Exception):
    """Stands for a kill in the middle of a pruning step."""


def test_an_interrupted_pruning_loop_goes_on_from_its_last_step(synthetic_teacher, synthetic,
                                                                tmp_path: Path,
                                                                monkeypatch) -> None:
    stop = StopRule(0.0, 0)
    config = dataclasses.replace(TINY, recipe=dataclasses.replace(RECIPE, augment=True))
    whole = prune_filters(synthetic_teacher, synthetic, stop, config, device="cpu",
                          directory=tmp_path / "whole")
    real_kd_steps = pruning_mod._Pruner.kd_steps
    calls = []

    def kd_steps(self, model) -> None:
        calls.append(model.architecture.num_params())
        if len(calls) == 3 and not hasattr(self, "resumed"):
            raise Interrupted
        real_kd_steps(self, model)

    monkeypatch.setattr(pruning_mod._Pruner, "kd_steps", kd_steps)
    broken = tmp_path / "broken"
    with pytest.raises(Interrupted):
        prune_filters(synthetic_teacher, synthetic, stop, config, device="cpu",
                      directory=broken)
    assert (broken / "seed-0.loop.pt").is_file() and not (broken / "seed-0.pruned.pt").exists()
    files = runs_mod._RunFiles(broken, 0, runs_mod._identity(synthetic_teacher, synthetic,
                                                              stop, config, 0))
    checkpoint, seconds = files.load_loop(CPU)
    assert checkpoint is not None and checkpoint.step == 2 and seconds > 0
    assert checkpoint.history == whole.history[:3]
    # Another run's checkpoint, or one whose random streams live on another device, is
    # never used.
    assert runs_mod._RunFiles(broken, 0, runs_mod._identity(
        synthetic_teacher, synthetic, stop, config, 1)).load_loop(CPU) == (None, 0.0)
    assert files.load_loop(torch.device("cuda")) == (None, 0.0)

    monkeypatch.setattr(pruning_mod._Pruner, "resumed", True, raising=False)
    resumed = prune_filters(synthetic_teacher, synthetic, stop, config, device="cpu",
                            directory=broken)
    assert calls[3:] == [step.params for step in whole.history[3:]]  # steps 3 and 4 only
    assert resumed.history == whole.history and resumed.architecture == whole.architecture
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(),
                                                 resumed.model.state_dict().values()))
    assert resumed.val_accuracy == whole.val_accuracy
    loop_seconds = torch.load(broken / "seed-0.pruned.pt", weights_only=True)["seconds"]
    assert loop_seconds > seconds  # the first attempt's time is counted
    assert not (broken / "seed-0.loop.pt").exists()  # the loop ended: its network is kept


def test_the_loop_checkpoints_only_steps_that_meet_the_stopping_rule(synthetic_teacher,
                                                                    synthetic) -> None:
    teacher_params = synthetic_teacher.architecture.num_params()
    checkpoints = []
    outcome = pruning_loop(copy.deepcopy(synthetic_teacher), synthetic.to(CPU),
                           StopRule(0.0, int(teacher_params * 0.6)), TINY, device=CPU,
                           on_step=checkpoints.append)
    assert outcome.stop_reason == "params" and outcome.steps >= 1
    assert [c.step for c in checkpoints] == list(range(1, outcome.steps + 1))
    last = checkpoints[-1]
    assert last.architecture == outcome.model.architecture
    assert last.val_accuracy == outcome.val_accuracy
    assert all(torch.equal(last.state_dict[k], v) for k, v in outcome.model.state_dict().items())
    # Resumed from its last checkpoint, the loop only finds the step that breaks the rule.
    again = pruning_loop(copy.deepcopy(synthetic_teacher), synthetic.to(CPU),
                         StopRule(0.0, int(teacher_params * 0.6)), TINY, device=CPU,
                         resume=last)
    assert again.history == outcome.history and again.steps == outcome.steps


# ------------------------------------------------------------------ students

PAPER_COUNTS = {"fitnet4": 1_276_806, "vgg-small": 1_041_450, "squeezenet1_1": 727_626}
"""On 32x32x3 inputs with 10 classes (the paper: 1.2M, 1.06M, 727K)."""


@pytest.mark.parametrize("name", STUDENTS)
def test_student_parameter_counts(name: str) -> None:
    model = make_student(name, (3, 32, 32), 10)
    assert torch_params(model) == PAPER_COUNTS[name]
    arch = getattr(model, "architecture", None)
    if arch is not None:
        assert arch.num_params() == PAPER_COUNTS[name]


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 16, 16), (3, 8, 8)],
                         ids=["cifar", "digits", "synthetic"])
@pytest.mark.parametrize("name", STUDENTS)
def test_students_run_at_every_dataset_size(name: str, shape: tuple[int, int, int]) -> None:
    model = make_student(name, shape, 10).eval()
    assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_fitnet4_is_seventeen_convolutions_with_xavier_weights() -> None:
    arch = fitnet4()
    convs = [layer for layer in arch.layers if layer.kind == "conv"]
    assert len(convs) == 17 and not any(layer.kind == "bn" for layer in arch.layers)
    model = make_student("fitnet4", (3, 32, 32), 10, seed=1)
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            out, into = module.weight.shape[:2]
            bound = math.sqrt(6 / ((out + into) * module.weight[0, 0].numel()))  # Glorot
            assert module.weight.abs().max() <= bound and not module.bias.any()
    again = make_student("fitnet4", (3, 32, 32), 10, seed=1)
    other = make_student("fitnet4", (3, 32, 32), 10, seed=2)
    assert torch.equal(model.layers[1].weight, again.layers[1].weight)
    assert not torch.equal(model.layers[1].weight, other.layers[1].weight)
    weight_layers = [layer for layer in vgg_small().layers if layer.kind in ("conv", "linear")]
    assert len(weight_layers) == 10


def test_flop_counts_follow_the_architecture_rules() -> None:
    for arch in (fitnet4((1, 16, 16)), vgg_small((1, 16, 16))):
        assert count_flops(build_model(arch), arch.input_shape) == arch.flops()
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    assert count_flops(plain, (3, 8, 8)) == torch_flops(plain, (3, 8, 8))
    squeeze = make_student("squeezenet1_1", (3, 32, 32), 10)
    assert count_flops(squeeze, (3, 32, 32)) > torch_flops(squeeze, (3, 32, 32)) > 0


def test_finetune_trains_a_copy_of_a_module(synthetic_teacher, synthetic) -> None:
    student = make_student("squeezenet1_1", synthetic.input_shape, synthetic.num_classes)
    before = copy.deepcopy(student.state_dict())
    result = finetune(student, synthetic_teacher, synthetic,
                      Recipe(epochs=1, lr=0.01, batch_size=256), device="cpu", progress=False)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert result.model is not student and not result.model.training
    assert any(not torch.equal(before[k], v) for k, v in result.model.state_dict().items())


@pytest.mark.parametrize("name", STUDENTS)
def test_distilled_student_reports_its_measures(name: str, synthetic_teacher,
                                                synthetic) -> None:
    epochs = 2 if name == "vgg-small" else 1
    result = distill_student(name, synthetic_teacher, synthetic,
                             recipe=Recipe(epochs=epochs, lr=0.01, batch_size=64), seed=0,
                             device="cpu")
    assert result.name == name and result.params == torch_params(result.model)
    shape = synthetic.input_shape
    assert result.flops == count_flops(result.model, shape) > 0
    if result.architecture is not None:
        assert result.flops == result.architecture.flops()
    assert 0.0 <= result.val_accuracy <= 1.0 and 0.0 <= result.test_accuracy <= 1.0
    if name == "vgg-small":  # learns within two epochs; the others need longer
        assert result.val_accuracy > 0.3 and result.test_accuracy > 0.3  # chance: 0.1
