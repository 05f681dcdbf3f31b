"""A tiny two-stage run of ``n2n compress`` and readers of its files, for the pipeline
tests: the mock evaluator on ``synthetic`` data, a conv4 teacher at width 0.25."""

from __future__ import annotations

import csv

import pytest

from n2n_env import pipeline
from n2n_env.evaluators import MockEvaluator
from n2n_env.run_config import RunConfig

FAST = {"dataset": "synthetic", "evaluator": "mock", "finetune_epochs": 1}


def compress(teacher, out, *, resume=False, **settings):
    """``pipeline.compress`` of a RunConfig from ``settings`` (or ``pipeline.resume``,
    which takes only the budgets), without progress bars."""
    if resume:
        return pipeline.resume(out, iterations=settings.get("iterations"),
                               finetune_epochs=settings.get("finetune_epochs"),
                               progress=False)
    return pipeline.compress(RunConfig(teacher=str(teacher), **settings), out=out,
                             progress=False)


@pytest.fixture(scope="module", name="first_run")
def first_run_fixture(tmp_path_factory):
    """A full run from a zoo name (trains a tiny teacher under a private N2N_HOME)."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("N2N_HOME", str(home))
        result = compress("conv4", home / "run", iterations=3, teacher_width=0.25,
                          teacher_epochs=2, **FAST)
    return result, home / "teachers" / "conv4-synthetic-w0.25-s0.pt"


def column(path, name):
    with open(path, newline="") as handle:
        return [row[name] for row in csv.DictReader(handle)]


def scalars(run, stage, name):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard" / stage))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(f"{stage}/{name}")]


def interrupt_evaluation(monkeypatch, number):
    """Make the mock evaluator's ``number``-th call raise KeyboardInterrupt (a Ctrl-C)."""
    calls = []
    original = MockEvaluator.evaluate

    def interrupted(self, arch):
        calls.append(arch)
        if len(calls) == number:
            raise KeyboardInterrupt
        return original(self, arch)

    monkeypatch.setattr(MockEvaluator, "evaluate", interrupted)
