"""The evaluator stack: typed settings in, a ready evaluator out.

Every terminal reward of an N2N environment comes from one evaluator, assembled here in
three layers::

    student trainer   DistillationEvaluator (real) or MockEvaluator (instant, NOT REAL)
    backend           local (in this process) | processes (N workers) | ray (N actors)
    cache             CachedEvaluator: SQLite, kept by the driver; workers never touch it

The environments receive the result and never build one themselves, so that a driver
(``n2n compress``) loads the teacher and the data once and shares one stack between its
stages. :func:`assemble` is lazy: the teacher architecture is known at once, but nothing
is trained, loaded or started before the first evaluation, which keeps ``gym.make``
instant. :mod:`n2n_env.env_factory` turns ``gym.make`` keyword arguments into
:class:`EvaluatorSettings`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from n2n_env import validate, zoo
from n2n_env.arch import MAX_CLASSIFIER_INPUTS, Architecture
from n2n_env.evaluators import Evaluation, Evaluator, MockEvaluator, evaluate_each
from n2n_env.latency import LatencyEvaluator, LatencyMeter, LatencySettings
from n2n_env.teacher_spec import (
    cache_name,
    check_teacher_name,
    check_teacher_weights,
    parse_teacher_spec,
)

if TYPE_CHECKING:
    import torch

    from n2n_env.data import Dataset
    from n2n_env.distill import DistillRecipe

EVALUATORS = ("distill", "mock")
"""Student trainers a stack can be built on by name."""
BACKENDS = ("local", "processes", "ray")
"""Where a batch of students trains: in this process one at a time, in worker processes,
or in Ray actors."""
MOCK_OPTIONS = ("teacher_accuracy", "capacity_scale", "depth_penalty")
"""Keyword arguments of :class:`~n2n_env.evaluators.MockEvaluator` (besides
``max_classifier_inputs``, a setting of its own)."""
MEASURED = ("accuracy", "flops", "params")
"""What the distillation and mock evaluators measure, so what constraints may bound."""
IN_MEMORY = "<in-memory model>"
"""``EvaluatorSettings.teacher`` of a teacher handed to :func:`assemble` as a model."""


@dataclass(frozen=True)
class BackendSettings:
    """Where students train. ``local`` trains one at a time in this process;
    ``processes`` and ``ray`` train a batch on ``workers`` workers at once, each holding
    the teacher, its logits and the data once."""

    kind: str = "local"
    """``local``, ``processes`` or ``ray``."""
    workers: int = 1
    """Worker processes or Ray actors (1 for ``local``)."""
    ray_address: str | None = None
    """``auto``, ``HOST:PORT``, or None to start a local Ray (``ray`` only)."""
    gpus_per_student: float = 0.0
    """GPUs each Ray actor asks for; below 1, several students share a GPU (``ray`` only)."""

    def __post_init__(self) -> None:
        validate.choice("backend", self.kind, BACKENDS)
        validate.integer("workers", self.workers, minimum=1)
        validate.number("gpus_per_student", self.gpus_per_student, at_least=0)
        if self.kind == "local" and self.workers != 1:
            raise ValueError(f"workers={self.workers} needs backend 'processes' or 'ray'; the "
                             "local backend trains one student at a time")
        if self.kind != "ray" and (self.ray_address is not None or self.gpus_per_student):
            raise ValueError("ray_address and gpus_per_student apply to backend 'ray' only")


@dataclass(frozen=True)
class EvaluatorSettings:
    """Everything that decides how a student is scored, and where it is trained."""

    teacher: str = "conv4"
    """A zoo name (trained on first use and cached), a teacher checkpoint ``.pt``, or
    :data:`IN_MEMORY` for a model given to :func:`assemble` (local backend only)."""
    dataset: str = "digits"
    data_root: str | None = None
    """Folder holding the dataset's files (None: the package's default places)."""
    evaluator: str = "distill"
    """``distill`` (real training) or ``mock`` (instant, NOT REAL)."""
    recipe: DistillRecipe = field(default_factory=lambda: _recipe_class()())
    """How each student is distilled before it is scored (``distill`` only)."""
    seed: int = 0
    """Seed of every student's training (``distill`` only)."""
    max_classifier_inputs: int | None = None
    """Largest classifier input a student may have (None: the architecture's default)."""
    mock_options: Mapping[str, float] = field(default_factory=dict)
    """MockEvaluator keyword arguments (``mock`` only)."""
    cache: str | None = None
    """SQLite file of the reward cache (None: no cache)."""
    device: str | None = None
    """``auto``/None, ``cpu``, ``cuda`` or ``cuda:N``."""
    teacher_width: float = 1.0
    """Width multiplier of a zoo or imported teacher trained here."""
    teacher_progress: bool = True
    """Show a progress bar when a zoo teacher is trained on first use."""
    backend: BackendSettings = field(default_factory=BackendSettings)
    teacher_weights: str | None = None
    """A state_dict for an imported teacher (``torchvision:NAME``, ``file.py:FUNCTION``),
    used as it is instead of training the model."""
    latency: LatencySettings | None = None
    """How students' latency is measured (None: it is not); see :mod:`n2n_env.latency`.
    The latency wrapper goes outermost, outside the reward cache."""

    def __post_init__(self) -> None:
        from n2n_env import data as data_mod

        validate.choice("evaluator", self.evaluator, EVALUATORS)
        check_teacher_name(self.teacher, zoo.names(), extra=(IN_MEMORY,))
        if self.dataset not in data_mod.names():
            raise ValueError(f"unknown dataset {self.dataset!r}; allowed: "
                             f"{', '.join(data_mod.names())}")
        if not isinstance(self.recipe, _recipe_class()):
            raise TypeError(f"recipe must be a DistillRecipe, got {self.recipe!r}")
        validate.integer("seed", self.seed, minimum=0)
        if self.max_classifier_inputs is not None:
            validate.integer("max_classifier_inputs", self.max_classifier_inputs, minimum=1)
        validate.known_keys("mock_options", self.mock_options, MOCK_OPTIONS)
        if self.mock_options and self.evaluator != "mock":
            raise ValueError("mock_options apply to evaluator='mock' only")
        if self.cache is not None and not isinstance(self.cache, str):
            raise TypeError(f"cache must be a file path or None, got {self.cache!r}")
        validate.number("teacher_width", self.teacher_width, above=0)
        check_teacher_weights(self.teacher, self.teacher_weights, self.teacher_width)
        validate.flag("teacher_progress", self.teacher_progress)
        if not isinstance(self.backend, BackendSettings):
            raise TypeError(f"backend must be BackendSettings, got {self.backend!r}")
        if self.latency is not None and not isinstance(self.latency, LatencySettings):
            raise TypeError(f"latency must be LatencySettings or None, got {self.latency!r}")
        from n2n_env.device import resolve_device

        resolve_device(self.device)  # a bad or missing device fails now, not after training
        if self.evaluator == "distill":
            data_mod.check_root(self.dataset, self.data_root)
        if self.teacher == IN_MEMORY and self.backend.kind != "local":
            raise ValueError("a teacher given as a model trains students in this process "
                             "only; save it as a checkpoint (n2n_env.checkpoints.save_teacher) "
                             "to use worker processes or Ray")

    @property
    def checkpoint(self) -> Path:
        """The teacher's checkpoint: the given path, or where a zoo or imported teacher is
        cached."""
        if self.teacher.endswith(".pt"):
            return Path(self.teacher)
        from n2n_env.checkpoints import teacher_path

        return teacher_path(cache_name(self.teacher, self.teacher_weights), self.dataset,
                            self.teacher_width)


def _recipe_class() -> type[DistillRecipe]:
    from n2n_env.distill import DistillRecipe

    return DistillRecipe


@dataclass(frozen=True)
class LoadedTeacher:
    """A teacher already in memory (a driver loads it once and hands it to the stack)."""

    model: torch.nn.Module
    accuracy: float | None = None
    """Its validation accuracy, when known (else it is measured)."""


def teacher_architecture(settings: EvaluatorSettings) -> Architecture:
    """The teacher's architecture, without loading weights or data."""
    if settings.teacher.endswith(".pt"):
        from n2n_env.checkpoints import read_teacher_record

        return read_teacher_record(settings.teacher)[0].architecture
    from n2n_env import data as data_mod

    shape, classes = data_mod.info(settings.dataset)
    if parse_teacher_spec(settings.teacher) is None:
        return zoo.get(settings.teacher, shape, classes, width=settings.teacher_width)
    from n2n_env.teacher import teacher_architecture as named_architecture

    return named_architecture(settings.teacher, shape, classes, settings.teacher_width)


def assemble(settings: EvaluatorSettings | Evaluator, *,
             teacher: LoadedTeacher | None = None, data: Dataset | None = None,
             cache: str | os.PathLike[str] | None = None) -> LazyEvaluator | LatencyEvaluator:
    """The evaluator stack of ``settings``, built on first use.

    ``settings`` may also be a ready evaluator (one of the user's, say): it is then only
    wrapped with the reward ``cache``. A driver that has loaded the teacher and the data
    passes them as ``teacher`` and ``data`` so they are not loaded again (worker
    processes and Ray actors still load their own copy once, from the checkpoint).
    With ``settings.latency``, the stack is wrapped, outermost, in a
    :class:`~n2n_env.latency.LatencyEvaluator`, which times students on the settings'
    device (or the evaluation device) and needs no training to estimate a latency.
    """
    if isinstance(settings, EvaluatorSettings):
        if cache is not None:
            raise ValueError("give the cache as EvaluatorSettings.cache")
        if settings.teacher == IN_MEMORY and teacher is None:
            raise ValueError(f"teacher={IN_MEMORY!r} needs the model as assemble(teacher=...)")
        build = functools.partial(_build_stack, settings, teacher, data)
        lazy = LazyEvaluator(_architecture(settings, teacher), build,
                             settings.max_classifier_inputs or MAX_CLASSIFIER_INPUTS)
        if settings.latency is None:
            return lazy
        return LatencyEvaluator(lazy, LatencyMeter(settings.latency, settings.device))
    if not is_evaluator(settings):
        raise TypeError("evaluator must be 'distill', 'mock', EvaluatorSettings or an object "
                        "with evaluate(arch), identity(), teacher_architecture and "
                        "teacher_accuracy")
    if isinstance(settings, LazyEvaluator | LatencyEvaluator) and cache is None:
        return settings  # already a stack (a driver's, shared by its environments)
    if isinstance(settings, LatencyEvaluator):  # the reward cache goes inside the latency
        return LatencyEvaluator(assemble(settings.inner, cache=cache), settings.meter)
    given = as_batch_evaluator(settings)
    if cache is None:
        return LazyEvaluator(given.teacher_architecture, lambda: given)
    return LazyEvaluator(given.teacher_architecture,
                         functools.partial(_cached, given, os.fspath(cache)))


def _architecture(settings: EvaluatorSettings, teacher: LoadedTeacher | None) -> Architecture:
    """The teacher's architecture: the loaded model's, else the one ``settings`` name."""
    if teacher is not None:
        return teacher.model.architecture  # type: ignore[return-value]
    return teacher_architecture(settings)


def is_evaluator(candidate: Any) -> bool:
    """True for an object that can score students (``evaluate_many`` is optional)."""
    return all(name in getattr(candidate, "__dict__", {}) or hasattr(type(candidate), name)
               for name in ("evaluate", "identity", "teacher_architecture", "teacher_accuracy"))


def as_batch_evaluator(evaluator: Any) -> Evaluator:
    """``evaluator`` itself if it has ``evaluate_many``, else an adapter that gives it one."""
    return evaluator if hasattr(type(evaluator), "evaluate_many") else OneAtATime(evaluator)


class OneAtATime:
    """Gives an evaluator that only has ``evaluate`` the batch method ``evaluate_many``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.teacher_architecture: Architecture = inner.teacher_architecture

    @property
    def teacher_accuracy(self) -> float:
        return float(self.inner.teacher_accuracy)

    def identity(self) -> Mapping[str, str]:
        return self.inner.identity()

    def evaluate(self, arch: Architecture) -> Evaluation:
        return self.inner.evaluate(arch)

    def evaluate_many(self, archs: Sequence[Architecture]) -> list[Evaluation]:
        return evaluate_each(self.inner, archs)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()


class LazyEvaluator:
    """An evaluator whose stack is built on first use; the teacher architecture is known
    at once. Pickles cheaply before it is built."""

    def __init__(self, teacher_architecture: Architecture,
                 build: Callable[[], Evaluator],
                 max_classifier_inputs: int | None = None) -> None:
        self.teacher_architecture = teacher_architecture
        self.max_classifier_inputs = max_classifier_inputs
        """The student trainer's limit on classifier inputs, when this stack built it
        (None for an evaluator given ready-made): an environment scores a student that
        cannot earn a reward without training it only when it knows this limit."""
        self._build = build
        self._stack: Evaluator | None = None

    @property
    def stack(self) -> Evaluator:
        """The evaluator stack, built now if it was not (this may train the teacher)."""
        if self._stack is None:
            self._stack = self._build()
        return self._stack

    @property
    def built(self) -> bool:
        return self._stack is not None

    @property
    def teacher_accuracy(self) -> float:
        return float(self.stack.teacher_accuracy)

    def identity(self) -> Mapping[str, str]:
        return self.stack.identity()

    def evaluate(self, arch: Architecture) -> Evaluation:
        return self.stack.evaluate(arch)

    def evaluate_many(self, archs: Sequence[Architecture]) -> list[Evaluation]:
        return self.stack.evaluate_many(archs)

    def close(self) -> None:
        """Close the cache's connection and stop workers, if any were started."""
        if self._stack is not None:
            close = getattr(self._stack, "close", None)
            if callable(close):
                close()


def _cached(inner: Evaluator, path: str) -> Evaluator:
    from n2n_env.cache import CachedEvaluator

    return CachedEvaluator(inner, path)


def _build_stack(settings: EvaluatorSettings, teacher: LoadedTeacher | None,
                 data: Dataset | None) -> Evaluator:
    """Trainer, backend and cache of ``settings``."""
    backend = settings.backend
    if backend.kind == "local":
        inner = build_trainer(settings, teacher, data)
    else:
        worker_settings = settings
        if settings.evaluator == "distill":
            _ensure_teacher(settings)  # train a zoo teacher once here, not in every worker
            worker_settings = replace(settings, teacher=os.fspath(settings.checkpoint),
                                      teacher_weights=None, teacher_progress=False)
        factory = functools.partial(build_trainer, worker_settings)
        inner = _backend(backend, factory)
    return inner if settings.cache is None else _cached(inner, settings.cache)


def _backend(backend: BackendSettings, factory: Callable[[], Evaluator]) -> Evaluator:
    if backend.kind == "processes":
        from n2n_env.workers import ProcessPoolEvaluator

        return ProcessPoolEvaluator(factory, workers=backend.workers)
    from n2n_env.ray_backend import RayEvaluator

    return RayEvaluator(factory, workers=backend.workers, address=backend.ray_address,
                        gpus_per_student=backend.gpus_per_student)


def _ensure_teacher(settings: EvaluatorSettings) -> None:
    if not settings.teacher.endswith(".pt") and not settings.checkpoint.exists():
        load_teacher(settings)


def load_teacher(settings: EvaluatorSettings, data: Dataset | None = None,
                 epochs: int | None = None, progress: Any = None
                 ) -> tuple[LoadedTeacher, Any]:
    """The teacher of ``settings`` and its record (a zoo teacher is trained on first use,
    for ``epochs`` epochs if given, and cached, showing ``progress`` as
    :mod:`n2n_env.progress` does; None: ``settings.teacher_progress``)."""
    from n2n_env import data as data_mod
    from n2n_env.device import resolve_device

    device = resolve_device(settings.device)
    if settings.teacher.endswith(".pt"):
        from n2n_env.checkpoints import load_teacher as load_checkpoint

        if data is None:
            data = data_mod.load(settings.dataset, root=settings.data_root)
        model, record = load_checkpoint(settings.teacher, dataset_fingerprint=data.fingerprint,
                                        device=device)
    else:
        from n2n_env.teacher import get_teacher

        model, record = get_teacher(settings.teacher, settings.dataset,
                                    width=settings.teacher_width, data_root=settings.data_root,
                                    weights=settings.teacher_weights,
                                    device=device, epochs=epochs, data=data,
                                    progress=settings.teacher_progress if progress is None
                                    else progress)
    return LoadedTeacher(model, record.val_accuracy), record


def build_trainer(settings: EvaluatorSettings, teacher: LoadedTeacher | None = None,
                  data: Dataset | None = None) -> Evaluator:
    """The student trainer of ``settings`` in this process: a DistillationEvaluator on the
    loaded teacher and data (loading them if not given), or a MockEvaluator."""
    if settings.evaluator == "mock":
        options = dict(settings.mock_options)
        if settings.max_classifier_inputs is not None:
            options["max_classifier_inputs"] = settings.max_classifier_inputs
        return MockEvaluator(_architecture(settings, teacher), **options)
    from n2n_env import data as data_mod
    from n2n_env.distill import DistillationEvaluator

    if data is None:
        data = data_mod.load(settings.dataset, root=settings.data_root)
    if teacher is None:
        teacher, _ = load_teacher(settings, data)
    extra: dict[str, Any] = {}
    if settings.max_classifier_inputs is not None:
        extra["max_classifier_inputs"] = settings.max_classifier_inputs
    return DistillationEvaluator(teacher.model, data, settings.recipe,
                                 teacher_accuracy=teacher.accuracy, device=settings.device,
                                 seed=settings.seed, **extra)
