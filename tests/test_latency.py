"""Latency as a reward and a constraint: the per-layer table on disk, its keys, the
estimate, the evaluator wrapper, the reward, and the settings where they enter (gym.make,
RunConfig, the CLI).

Timings are never asserted for speed: most tests time through a fake timer whose answer
is a known function of the part, which makes the numbers exact and lets the tests count
timings; one test times every part kind for real, and checks only counts and signs.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest

import n2n_env  # noqa: F401  (registers the environments)
from n2n_env import zoo
from n2n_env.arch import Architecture, Layer
from n2n_env.cache import CachedEvaluator
from n2n_env.evaluators import MockEvaluator
from n2n_env.latency import (
    LatencyEvaluator,
    LatencyMeter,
    LatencyPart,
    LatencySettings,
    architecture_parts,
    part_key,
)
from n2n_env.latency_table import LatencyTable, LatencyTableError
from n2n_env.removal_env import N2NRemovalEnv
from n2n_env.reward import n2n_reward
from n2n_env.shrink_env import N2NShrinkEnv

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = Architecture((1, 8, 8), 10, (
    Layer("conv", out=4, kernel=3, padding=1),
    Layer("relu"),
    Layer("conv", out=2, kernel=3, padding=1),
    Layer("relu"),
    Layer("maxpool", kernel=2, stride=2),
    Layer("flatten"),
    Layer("linear", out=10),
), name="tiny")
"""Two convs, a pool and the classifier: 444 parameters (40 + 74 + 330)."""


class FakeTimer:
    """A timer whose answer is exact: a layer costs its ``out`` (conv and linear widths;
    0 for the others) times the batch size, a projection 100, an addition 1000. It counts
    the parts it timed."""

    def __init__(self) -> None:
        self.calls: Counter[LatencyPart] = Counter()

    def __call__(self, part: LatencyPart, setup: Any) -> list[float]:
        self.calls[part] += 1
        cost = {"layer": json.loads(part.config).get("out", 0), "projection": 100,
                "add": 1000}[part.op]
        return [float(cost * setup.batch_size)] * 3


def meter(tmp_path: Path, timer: FakeTimer | None = None, **settings: Any) -> LatencyMeter:
    return LatencyMeter(LatencySettings(table=str(tmp_path / "latency.sqlite"), **settings),
                        "cpu", timer=timer or FakeTimer())


def fake_latency(tmp_path: Path, teacher: Architecture = TINY, **settings: Any
                 ) -> LatencyEvaluator:
    return LatencyEvaluator(MockEvaluator(teacher), meter(tmp_path, **settings))


def small(name: str) -> Architecture:
    return zoo.get(name, (3, 16, 16), 10, width=0.125)


# ---------------------------------------------------------------- the table and its keys
def test_each_part_is_timed_once_and_never_again_even_after_reopening(tmp_path: Path) -> None:
    timer = FakeTimer()
    first = meter(tmp_path, timer)
    teacher = small("resnet18")
    first.latency_ms(teacher)
    distinct = set(architecture_parts(teacher))
    assert first.timings == len(distinct) == len(timer.calls)
    assert set(timer.calls.values()) == {1}
    first.latency_ms(teacher)
    first.latencies_ms([teacher, teacher])
    assert first.timings == len(distinct)

    reopened = meter(tmp_path, timer)  # a later run: the file answers
    assert reopened.latency_ms(teacher) == first.latency_ms(teacher)
    assert reopened.timings == 0 and set(timer.calls.values()) == {1}

    student = teacher.remove([i % 5 != 1 for i in range(len(teacher))])
    new = set(architecture_parts(student)) - distinct
    assert new, "the student has layer shapes the teacher lacks"
    reopened.latency_ms(student)
    assert reopened.timings == len(new) and set(timer.calls.values()) == {1}
    assert len(LatencyTable(tmp_path / "latency.sqlite")) == len(distinct | new)


def test_real_timing_of_every_part_kind_is_stored_once(tmp_path: Path) -> None:
    from n2n_env.latency_timing import time_model

    timed = meter(tmp_path, repeats=2, warmup=0)
    timed.timer = None  # the real clock
    teacher = small("resnet18")
    conv4 = zoo.get("conv4", (1, 8, 8), 10, width=0.125)
    estimates = timed.latencies_ms([teacher, conv4])
    kinds = {part.op for part in architecture_parts(teacher)} | {
        json.loads(part.config)["kind"] for arch in (teacher, conv4)
        for part in architecture_parts(arch) if part.op == "layer"}
    assert kinds >= {"layer", "projection", "add", "conv", "bn", "relu", "maxpool", "flatten",
                     "linear", "dropout", "avgpool"}
    parts = set(architecture_parts(teacher)) | set(architecture_parts(conv4))
    assert timed.timings == len(parts) == len(timed.table)
    assert all(ms > 0 for ms in estimates)
    rows = list(timed.table.rows())
    assert all(len(row.samples_ms) == 2 and row.median_ms > 0 for row in rows)
    assert len(time_model(conv4, timed.setup)) == 2


def test_keys_differ_when_batch_device_or_threads_differ(tmp_path: Path) -> None:
    part = architecture_parts(TINY)[0]
    one, four = meter(tmp_path), meter(tmp_path, batch_size=4)
    assert one.conditions["batch_size"] == 1 and four.conditions["batch_size"] == 4
    assert part_key(part, one.conditions) != part_key(part, four.conditions)
    for change in ({"device": "cuda", "device_name": "some GPU"}, {"threads": 2},
                   {"torch": "0.0"}):
        assert part_key(part, {**one.conditions, **change}) != part_key(part, one.conditions)
    assert part_key(part, dict(one.conditions)) == part_key(part, one.conditions)
    # The same shape under another batch size is timed again, into the same file.
    one.latency_ms(TINY)
    four.latency_ms(TINY)
    assert four.timings == one.timings == len(set(architecture_parts(TINY)))
    assert four.latency_ms(TINY) == 4 * one.latency_ms(TINY)
    # A layer's origin is no part of its timing; its other fields are.
    moved = Layer("conv", out=4, kernel=3, padding=1, origin=7)
    assert architecture_parts(TINY)[0] == architecture_parts(
        Architecture((1, 8, 8), 10, (moved, *TINY.layers[1:]), root="0" * 16))[0]
    assert architecture_parts(TINY)[0] != architecture_parts(
        Architecture((1, 8, 8), 10, (Layer("conv", out=4, kernel=3, padding=1, bias=False),
                                     *TINY.layers[1:])))[0]


def test_the_estimate_is_the_sum_of_the_table_entries(tmp_path: Path) -> None:
    measured = meter(tmp_path)
    teacher = small("resnet18")
    breakdown = measured.breakdown(teacher)
    stored = {row.key: row.median_ms for row in measured.table.rows()}
    conditions = measured.conditions
    assert measured.latency_ms(teacher) == pytest.approx(
        sum(stored[part_key(part, conditions)] for part, _ in breakdown))
    assert [ms for _, ms in breakdown] == [stored[part_key(p, conditions)] for p, _ in breakdown]
    # One part per layer, per projection shortcut, per residual addition.
    blocks = [block for block in teacher.blocks if block.start < block.end]
    projections = [block for block in teacher.blocks if block.projection is not None]
    assert len(breakdown) == len(teacher.layers) + len(blocks) + len(projections)
    # With the fake timer: conv/linear widths + 100 per projection + 1000 per addition.
    widths = sum(layer.out for layer in teacher.layers if layer.kind in ("conv", "linear"))
    assert measured.latency_ms(teacher) == widths + 100 * len(projections) + 1000 * len(blocks)


def test_parts_follow_the_forward_pass_of_a_residual_block() -> None:
    from n2n_env.arch import Block, Projection

    arch = Architecture((2, 4, 4), 3, (
        Layer("conv", out=6, kernel=3, stride=2, padding=1), Layer("relu"), Layer("flatten"),
        Layer("linear", out=3)), blocks=(Block(0, 2, stride=2, projection=Projection(6, 2)),))
    ops = [(part.op, part.input_shape) for part in architecture_parts(arch)]
    assert ops == [("layer", (2, 4, 4)), ("layer", (6, 2, 2)), ("projection", (2, 4, 4)),
                   ("add", (6, 2, 2)), ("layer", (6, 2, 2)), ("layer", (24,))]


# ---------------------------------------------------------------- the evaluator wrapper
def test_the_wrapper_adds_latency_and_its_compression(tmp_path: Path) -> None:
    evaluator = fake_latency(tmp_path)
    assert evaluator.teacher_latency_ms == 16.0  # 4 + 2 + 10
    student = TINY.remove([False, True, True, True, True, True, True])
    [evaluation] = evaluator.evaluate_many([student])
    assert evaluation.extra == {"latency_ms": 12.0, "latency_compression": 0.25}
    assert evaluator.latency_ms(student) == 12.0
    broken = TINY.remove([False, True, False, True, True, True, True])
    assert not evaluator.evaluate(broken).ok and "latency_ms" not in evaluator.evaluate(
        broken).extra
    assert evaluator.identity()["latency"] == json.dumps(
        evaluator.meter.conditions, sort_keys=True, separators=(",", ":"))
    assert evaluator.identity()["evaluator"] == "mock"


def test_a_cached_evaluation_carries_the_latency_of_the_current_settings(tmp_path: Path
                                                                          ) -> None:
    cache = tmp_path / "rewards.sqlite"
    student = TINY.remove([False, True, True, True, True, True, True])
    one = LatencyEvaluator(CachedEvaluator(MockEvaluator(TINY), cache), meter(tmp_path))
    first = one.evaluate(student)
    two = LatencyEvaluator(CachedEvaluator(MockEvaluator(TINY), cache),
                           meter(tmp_path, batch_size=2))
    again = two.evaluate(student)
    assert again.cache_hit and not first.cache_hit
    assert (first.extra["latency_ms"], again.extra["latency_ms"]) == (12.0, 24.0)
    stored = CachedEvaluator(MockEvaluator(TINY), cache).evaluate(student)
    assert "latency_ms" not in stored.extra  # the cache holds no latency at all


def test_assemble_puts_latency_outermost_and_keeps_the_stack_lazy(tmp_path: Path) -> None:
    from n2n_env.stack import EvaluatorSettings, LazyEvaluator, assemble

    settings = EvaluatorSettings(evaluator="mock", cache=str(tmp_path / "r.sqlite"),
                                 latency=LatencySettings(table=str(tmp_path / "t.sqlite")))
    evaluator = assemble(settings)
    assert isinstance(evaluator, LatencyEvaluator) and isinstance(evaluator.inner,
                                                                  LazyEvaluator)
    assert assemble(evaluator) is evaluator  # a driver's stack is shared as it is
    evaluator.meter.timer = FakeTimer()
    evaluator.latency_ms(evaluator.teacher_architecture)
    assert not evaluator.inner.built  # estimating latency trains nothing
    cached = assemble(fake_latency(tmp_path), cache=tmp_path / "c.sqlite")
    assert isinstance(cached, LatencyEvaluator) and not isinstance(cached.inner,
                                                                   LatencyEvaluator)


# ---------------------------------------------------------------- the reward
@pytest.mark.parametrize("env_class", [N2NRemovalEnv, N2NShrinkEnv])
def test_latency_constraints_are_enforced_in_the_reward(tmp_path: Path, env_class: type
                                                         ) -> None:
    env = env_class(fake_latency(tmp_path), constraints={"latency_ms": 13},
                    compression_metric="latency")
    env.reset(seed=0)
    done = False
    while not done:  # keep everything: the teacher, 16 ms
        _, reward, done, _, info = env.step(env.action_space.n - 1)
    assert reward == -1.0 and info["rewards"]["violated"] == ("latency_ms <= 13",)
    assert info["latency_ms"] == 16.0 and info["compression"] == 0.0


def test_latency_is_the_compression_of_the_reward(tmp_path: Path) -> None:
    env = N2NRemovalEnv(fake_latency(tmp_path), constraints={"latency_ms": 13},
                        compression_metric="latency")
    env.reset(seed=0)
    for action in (0, 1, 1, 1, 1, 1, 1):  # remove the first conv: 2 + 10 = 12 ms
        _, reward, done, _, info = env.step(action)
    assert done and info["latency_ms"] == 12.0 and info["compression"] == 0.25
    assert not info["rewards"]["violated"]
    assert reward == pytest.approx(n2n_reward(0.25, info["accuracy"], 0.99))


def test_gym_make_turns_latency_on_when_the_reward_needs_it(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setenv("N2N_HOME", str(tmp_path))
    env = gym.make("N2NRemoval-v0", evaluator="mock", constraints={"latency_ms": 5.0})
    evaluator = env.unwrapped.evaluator
    assert isinstance(evaluator, LatencyEvaluator)
    assert evaluator.meter.settings == LatencySettings()
    env = gym.make("N2NShrink-v0", evaluator="mock", compression_metric="latency",
                   latency={"batch_size": 8, "device": "cpu"})
    assert env.unwrapped.evaluator.meter.settings.batch_size == 8
    plain = gym.make("N2NRemoval-v0", evaluator="mock")
    assert not isinstance(plain.unwrapped.evaluator, LatencyEvaluator)


# ---------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(("settings", "error", "message"), [
    ({"device": "tpu"}, ValueError, "'cpu', 'cuda' or 'cuda:N'"),
    ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1"),
    ({"repeats": 0}, ValueError, "repeats must be an integer >= 1"),
    ({"warmup": -1}, ValueError, "warmup must be an integer >= 0"),
    ({"threads": 0}, ValueError, "threads must be an integer >= 1"),
    ({"batch_size": 1.5}, TypeError, "batch_size must be an integer"),
    ({"table": 3}, TypeError, "table must be a file path"),
])
def test_bad_latency_settings_are_refused_naming_what_is_allowed(
        settings: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        LatencySettings(**settings)
    with pytest.raises(error, match=message):
        gym.make("N2NRemoval-v0", evaluator="mock", latency=settings)


def test_latency_needs_an_evaluator_that_measures_it() -> None:
    with pytest.raises(ValueError, match="need an evaluator that measures latency"):
        N2NRemovalEnv(MockEvaluator(TINY), compression_metric="latency")
    with pytest.raises(ValueError, match="need an evaluator that measures latency"):
        N2NShrinkEnv(MockEvaluator(TINY), constraints={"latency_ms": 3})
    with pytest.raises(ValueError, match="'params', 'flops', 'latency'"):
        N2NRemovalEnv(MockEvaluator(TINY), compression_metric="time")
    with pytest.raises(ValueError, match="unknown latency settings"):
        gym.make("N2NRemoval-v0", evaluator="mock", latency={"batch": 2})


@pytest.mark.parametrize("space", ["removal", "shrink"])
def test_bench_environments_have_no_latency(space: str) -> None:
    from bench_tables import fake_table

    env_id, table = f"N2N{space.title()}Bench-v0", fake_table(space)
    with pytest.raises(ValueError, match=r"N2N-Bench tables hold no latency.*'params' or "
                                         r"'flops'"):
        gym.make(env_id, table=table, compression_metric="latency")
    with pytest.raises(ValueError, match="N2N-Bench tables hold no latency"):
        gym.make(env_id, table=table, constraints={"latency_ms": 1.0})
    with pytest.raises(ValueError, match="N2N-Bench tables hold no latency"):
        gym.make_vec(env_id, 2, vectorization_mode="vector_entry_point", table=table,
                     compression_metric="latency")
    gym.make(env_id, table=table, constraints={"params": 1e5}, action_wall=True)


def test_double_latency_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="already measures latency"):
        LatencyEvaluator(fake_latency(tmp_path))
    with pytest.raises(ValueError, match="already measures latency"):
        gym.make("N2NRemoval-v0", evaluator=fake_latency(tmp_path), latency=True)


def test_a_foreign_file_is_not_taken_for_a_table(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_text("not a database, but someone's notes")
    with pytest.raises(LatencyTableError, match="not an n2n latency table"):
        LatencyTable(path)
    assert path.read_text() == "not a database, but someone's notes"
    CachedEvaluator(MockEvaluator(TINY), tmp_path / "cache.sqlite").close()
    with pytest.raises(LatencyTableError, match="not an n2n latency table"):
        LatencyTable(tmp_path / "cache.sqlite")


# ---------------------------------------------------------------- run config and CLI
def test_run_config_stores_latency_and_reads_old_runs(tmp_path: Path) -> None:
    from n2n_env.run_config import RunConfig

    config = RunConfig(evaluator="mock", constraints={"latency_ms": 2.5}, action_wall=True)
    assert config.latency == LatencySettings() and config.compression_metric == "params"
    written = json.loads(json.dumps(config.to_dict()))
    assert RunConfig.from_dict(written) == config
    old = {k: v for k, v in written.items()
           if k not in ("latency", "compression_metric", "action_wall")}
    old["constraints"] = {}
    assert RunConfig.from_dict(old).latency is None
    with pytest.raises(ValueError, match="compression_metric must be one of"):
        RunConfig(evaluator="mock", compression_metric="time")
    with pytest.raises(ValueError, match="action_wall=True masks actions against upper bounds"):
        RunConfig(evaluator="mock", action_wall=True)


@pytest.mark.parametrize(("flags", "message"), [
    (["--constraint", "latency_ms<=fast"], "latency_ms<=N"),
    (["--latency-batch-size", "0"], "--latency-batch-size"),
])
def test_cli_refuses_bad_latency_flags(flags: list[str], message: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from n2n_env.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["compress", "--evaluator", "mock", *flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "message"), [
    (["--compression-metric", "time"], "params, flops, latency"),
    (["--latency-device", "tpu"], "'cpu', 'cuda' or 'cuda:N'"),
    (["--action-wall"], "action_wall=True masks actions against upper bounds"),
])
def test_cli_names_what_is_allowed(flags: list[str], message: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from n2n_env.cli import main

    assert main(["compress", "--evaluator", "mock", "--out", str(tmp_path / "run"),
                 *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "run").exists()


def test_cli_compress_under_a_latency_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from n2n_env.cli import main
    from n2n_env.teacher import get_teacher

    monkeypatch.setenv("N2N_HOME", str(tmp_path / "home"))
    get_teacher("conv4", "synthetic", width=0.25, epochs=1, progress=False)
    table = tmp_path / "latency.sqlite"
    args = ["compress", "--dataset", "synthetic", "--teacher-width", "0.25", "--iterations",
            "1", "--evaluator", "mock", "--finetune-epochs", "1", "--no-progress",
            "--compression-metric", "latency", "--constraint", "latency_ms<=1000",
            "--action-wall", "--latency-device", "cpu", "--latency-repeats", "2",
            "--latency-table", str(table), "--out", str(tmp_path / "run")]
    assert main(args) == 0
    config = json.loads((tmp_path / "run" / "result.json").read_text())["config"]
    assert config["compression_metric"] == "latency" and config["action_wall"] is True
    assert config["constraints"] == {"latency_ms": 1000.0}
    assert config["latency"]["device"] == "cpu" and config["latency"]["table"] == str(table)
    assert len(LatencyTable(table)) > 0
    assert "Student (Stage1+Stage2)" in capsys.readouterr().out
