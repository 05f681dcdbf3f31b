"""The evaluator stack (n2n_env.stack): typed settings checked when made, a lazy stack that
builds trainer, backend and cache once, and teachers handed in by a driver."""

from __future__ import annotations

import dataclasses

import pytest

from n2n_env import data, zoo
from n2n_env.arch import Architecture
from n2n_env.cache import CachedEvaluator
from n2n_env.distill import DistillationEvaluator, DistillRecipe
from n2n_env.evaluators import Evaluation, MockEvaluator
from n2n_env.stack import (
    IN_MEMORY,
    BackendSettings,
    EvaluatorSettings,
    LazyEvaluator,
    LoadedTeacher,
    OneAtATime,
    assemble,
    build_trainer,
    teacher_architecture,
)

SYNTHETIC = data.info("synthetic")


def students(teacher: Architecture) -> list[Architecture]:
    """Three distinct valid students of ``teacher`` and a repeat of the first."""
    removable = [i for i, ok in enumerate(teacher.removable()) if ok]
    drops = ([removable[-1]], [removable[-2]], [removable[-1], removable[-2]])
    out = [teacher.remove([i not in drop for i in range(len(teacher))]) for drop in drops]
    return [*out, out[0]]


def test_settings_refuse_bad_values_naming_what_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"unknown teacher 'alexnet'.*conv4"):
        EvaluatorSettings(teacher="alexnet")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; allowed: digits"):
        EvaluatorSettings(dataset="imagenet")
    with pytest.raises(ValueError, match="evaluator must be one of 'distill', 'mock'"):
        EvaluatorSettings(evaluator="oracle")
    with pytest.raises(TypeError, match="recipe must be a DistillRecipe"):
        EvaluatorSettings(recipe={"steps": 5})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mock_options apply to evaluator='mock' only"):
        EvaluatorSettings(mock_options={"capacity_scale": 0.1})
    with pytest.raises(ValueError, match="unknown mock_options"):
        EvaluatorSettings(evaluator="mock", mock_options={"steps": 1})
    with pytest.raises(ValueError, match="workers=3 needs backend 'processes' or 'ray'"):
        BackendSettings(workers=3)
    with pytest.raises(ValueError, match="gpus_per_student must be"):
        BackendSettings("ray", 2, gpus_per_student=-1)
    with pytest.raises(ValueError, match="save it as a checkpoint"):
        EvaluatorSettings(teacher=IN_MEMORY, backend=BackendSettings("processes", 2))


def test_the_teacher_architecture_is_known_without_loading_anything(tmp_path,
                                                                    monkeypatch) -> None:
    monkeypatch.setenv("N2N_HOME", str(tmp_path))
    settings = EvaluatorSettings(teacher="vgg11", dataset="synthetic", teacher_width=0.25)
    expected = zoo.get("vgg11", *SYNTHETIC, width=0.25)
    assert teacher_architecture(settings) == expected
    lazy = assemble(settings)
    assert isinstance(lazy, LazyEvaluator) and not lazy.built
    assert lazy.teacher_architecture == expected
    assert list(tmp_path.iterdir()) == []  # no teacher trained, no file written
    assert settings.checkpoint.name == "vgg11-synthetic-w0.25-s0.pt"


def test_a_mock_stack_with_a_cache_answers_repeats_from_the_cache(tmp_path) -> None:
    settings = EvaluatorSettings(teacher="conv4", dataset="synthetic", evaluator="mock",
                                 cache=str(tmp_path / "c.sqlite"))
    lazy = assemble(settings)
    batch = students(lazy.teacher_architecture)
    results = lazy.evaluate_many(batch)
    assert lazy.built and isinstance(lazy.stack, CachedEvaluator)
    assert isinstance(lazy.stack.inner, MockEvaluator)
    assert [r.cache_hit for r in results] == [False, False, False, True]
    assert results[3].accuracy == results[0].accuracy
    again = lazy.evaluate_many(batch[:2])
    assert [r.cache_hit for r in again] == [True, True]
    lazy.close()


def test_a_driver_hands_in_its_teacher_and_data(synthetic, synthetic_teacher) -> None:
    settings = EvaluatorSettings(teacher=IN_MEMORY, dataset="synthetic",
                                 recipe=DistillRecipe(steps=2))
    loaded = LoadedTeacher(synthetic_teacher, accuracy=0.5)
    trainer = build_trainer(settings, loaded, synthetic)
    assert isinstance(trainer, DistillationEvaluator)
    assert trainer.teacher is synthetic_teacher and trainer.teacher_accuracy == 0.5
    assert trainer.recipe == DistillRecipe(steps=2)
    lazy = assemble(settings, teacher=loaded, data=synthetic)
    assert lazy.teacher_architecture == synthetic_teacher.architecture
    with pytest.raises(ValueError, match="needs the model"):
        assemble(settings)


def test_one_at_a_time_gives_evaluate_many_to_a_plain_evaluator() -> None:
    teacher = zoo.get("conv4", *SYNTHETIC)
    calls: list[Architecture] = []

    class Plain:
        teacher_architecture, teacher_accuracy = teacher, 0.9

        def identity(self) -> dict[str, str]:
            return {"evaluator": "plain"}

        def evaluate(self, arch: Architecture) -> Evaluation:
            calls.append(arch)
            return MockEvaluator(teacher).evaluate(arch)

    adapted = OneAtATime(Plain())
    batch = students(teacher)
    results = adapted.evaluate_many(batch)
    assert calls == batch[:3]  # the repeat is not evaluated again
    assert results[3] == dataclasses.replace(results[0], cache_hit=True)
    assert adapted.teacher_accuracy == 0.9
