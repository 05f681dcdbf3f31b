"""Filter-pruning runs (Table 2): one seed, the best of several, and their files.

:func:`prune_filters` is one run: the pruning loop of :mod:`.pruning`, then the package's
final fine-tuning of the network it kept. :func:`prune_best_of` runs several seeds (the
paper: "Pruning is done 5 times to control for variance and the best performing model is
reported") and picks the best by validation accuracy (:func:`best_run`); the test split
is only reported, never used to choose.

A run whose first pruning step already breaks the stopping rule keeps the teacher itself
(0 steps). That is no pruned model: it is not fine-tuned again (the teacher is trained;
KD from itself would only spend hours at full width), its result is the teacher as it is,
and :func:`best_run` picks it only when no run pruned anything.

With ``directory``, a run keeps its work there, per seed, so that an interrupted table is
cheap to finish and a finished seed is never pruned again:

* ``seed-K.loop.pt``: the loop's :class:`~n2n_env.baselines.pruning.LoopCheckpoint` after
  its last step that met the stopping rule, while the loop runs (a rerun continues the
  loop from it);
* ``seed-K.pruned.pt``: the network the loop kept, with its record (written once the loop
  ends; a rerun goes straight to the fine-tuning);
* ``seed-K.finetune.partial``: the fine-tuning's per-epoch state while it runs;
* ``seed-K.pt`` and ``seed-K.json``: the final student in the package's model format (a
  ``state_dict`` and its architecture JSON: :func:`n2n_env.student_loading.load_student` reads it);
* ``seed-K.result.json``: its measures and the identity of the run (teacher fingerprint,
  data fingerprint, stopping rule, configuration, seed). Files of a run with another
  identity are ignored and overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from n2n_env import data as data_mod
from n2n_env import validate
from n2n_env.arch import Architecture
from n2n_env.baselines.pruning import (
    LoopCheckpoint,
    PruneStep,
    PruningConfig,
    StopRule,
    network,
    pruning_loop,
)
from n2n_env.build import N2NNet
from n2n_env.checkpoints import CheckpointError, _atomic_save, _read_checkpoint
from n2n_env.device import prepare_model, resolve_device
from n2n_env.finetune import finetune
from n2n_env.progress import Progress
from n2n_env.recipes import recipe_for
from n2n_env.training import evaluate_accuracy, model_fingerprint

__all__ = ["BestOf", "PruningResult", "best_run", "finished_seeds", "prune_best_of",
           "prune_filters"]

PAPER_RUNS = (0, 1, 2, 3, 4)
"""The seeds of the paper's five pruning runs."""
UNREADABLE = (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError,
              pickle.UnpicklingError, CheckpointError)
"""What a damaged or foreign run file raises when read: the run is done again instead."""


@dataclass(frozen=True)
class PruningResult:
    """One pruning run: the pruned, fine-tuned network and how it got there."""

    architecture: Architecture
    """The pruned network's architecture: the teacher's, with smaller widths."""
    model: N2NNet
    """The pruned network after the final fine-tuning, in eval mode."""
    params: int
    """Trainable parameters (``architecture.num_params()``)."""
    flops: int
    """FLOPs of one forward pass on one image (``architecture.flops()``)."""
    val_accuracy: float
    """Validation accuracy after the final fine-tuning (what :func:`best_run` ranks)."""
    test_accuracy: float
    """Test accuracy after the final fine-tuning (reported only)."""
    pruned_val_accuracy: float
    """Validation accuracy when the loop kept it, before the final fine-tuning."""
    steps: int
    """Pruning steps that produced it (0: the teacher, unpruned)."""
    stop_reason: str
    """Why pruning stopped (see :class:`~n2n_env.baselines.pruning.LoopOutcome`)."""
    history: tuple[PruneStep, ...]
    """Every pruning step measured."""
    seed: int
    """The run's seed."""
    seconds: float
    """Wall-clock time of pruning and fine-tuning (summed over interrupted attempts)."""
    lr: float
    """The fine-tuning's final learning rate (lower than the recipe's after a divergence;
    0.0 when nothing was pruned, so nothing was fine-tuned)."""
    diverged: bool = False
    """True when every restart of the final fine-tuning diverged."""

    def summary(self) -> dict[str, Any]:
        """Everything but the model, as JSON-ready values."""
        values = {field.name: getattr(self, field.name)
                  for field in dataclasses.fields(self) if field.name not in ("model",)}
        values["architecture"] = self.architecture.to_dict()
        values["history"] = [dataclasses.asdict(step) for step in self.history]
        return values


@dataclass(frozen=True)
class BestOf:
    """Several pruning runs and the best of them."""

    best: PruningResult
    """The run with the highest validation accuracy (:func:`best_run`)."""
    runs: tuple[PruningResult, ...]
    """Every run, in the order of the seeds."""


def best_run(runs: Iterable[PruningResult]) -> PruningResult:
    """The best run: among the runs that pruned something (all runs if none did), the
    highest validation accuracy, then the fewest parameters, then the lowest seed.
    Validation, not test: the test split only reports the choice. A run of 0 steps is the
    teacher, unpruned, whose accuracy no pruned network needs to beat."""
    runs = tuple(runs)
    if not runs:
        raise ValueError("best_run needs at least one run")
    return min(runs, key=lambda run: (run.steps == 0, -run.val_accuracy, run.params, run.seed))


def prune_filters(teacher: nn.Module, data: data_mod.Dataset, stop: StopRule,
                  config: PruningConfig | None = None, *, seed: int = 0,
                  device: str | torch.device | None = None, progress: Progress = False,
                  directory: str | os.PathLike[str] | None = None) -> PruningResult:
    """Prune ``teacher`` (an ``N2NNet``, as :func:`~n2n_env.teacher.get_teacher` returns)
    on ``data`` until ``stop`` ends it, then fine-tune the network kept with the KD recipe.

    ``config`` defaults to :class:`PruningConfig`'s real-run settings. With ``directory``,
    the run's files are kept there (module docstring) and a finished run is read back.
    """
    if not isinstance(teacher, N2NNet):
        raise TypeError("filter pruning needs a teacher built by n2n (an N2NNet, as "
                        f"get_teacher returns), got {type(teacher).__name__}")
    if not isinstance(stop, StopRule):
        raise TypeError(f"stop must be a StopRule, got {stop!r}")
    config = PruningConfig() if config is None else config
    if not isinstance(config, PruningConfig):
        raise TypeError(f"config must be a PruningConfig or None, got {config!r}")
    seed = validate.integer("seed", seed, minimum=0)
    dev = resolve_device(device)
    files = None if directory is None else _RunFiles(
        Path(directory), seed, _identity(teacher, data, stop, config, seed))
    if files is not None and (done := files.load_result(dev)) is not None:
        return done
    started = time.perf_counter()
    teacher = prepare_model(teacher, dev).eval()
    data = data.to(dev)
    loop = files.load_pruned(dev) if files is not None else None
    if loop is None:
        resume, earlier = files.load_loop(dev) if files is not None else (None, 0.0)

        def save_step(checkpoint: LoopCheckpoint) -> None:
            files.save_loop(checkpoint, dev, earlier + time.perf_counter() - started)  # type: ignore[union-attr]

        outcome = pruning_loop(teacher, data, stop, config, seed=seed, device=dev,  # type: ignore[arg-type]
                               progress=progress, resume=resume,
                               on_step=None if files is None else save_step)
        loop = (outcome.model, outcome.val_accuracy, outcome.steps, outcome.stop_reason,
                outcome.history, earlier + time.perf_counter() - started)
        if files is not None:
            files.save_pruned(*loop)
    model, pruned_accuracy, steps, reason, history, loop_seconds = loop
    if steps == 0:  # nothing pruned: the teacher as it is (module docstring)
        started = time.perf_counter()
        test_accuracy = evaluate_accuracy(model, data.test)
        arch = model.architecture
        result = PruningResult(arch, model.eval(), arch.num_params(), arch.flops(),
                               pruned_accuracy, test_accuracy, pruned_accuracy, 0, reason,
                               history, seed, loop_seconds + time.perf_counter() - started,
                               0.0)
    else:
        recipe = config.recipe or recipe_for(data.name)
        trained = finetune(model, teacher, data, recipe, kd_weight=config.kd_weight,
                           device=dev, seed=seed, progress=progress,
                           resume_path=None if files is None else files.partial)
        arch = trained.model.architecture
        result = PruningResult(arch, trained.model.eval(), arch.num_params(), arch.flops(),  # type: ignore[arg-type]
                               trained.val_accuracy, trained.test_accuracy, pruned_accuracy,
                               steps, reason, history, seed, loop_seconds + trained.seconds,
                               trained.lr, trained.diverged)
    if files is not None:
        files.save_result(result)
    return result


def prune_best_of(teacher: nn.Module, data: data_mod.Dataset, stop: StopRule,
                  config: PruningConfig | None = None, *, seeds: Sequence[int] = PAPER_RUNS,
                  device: str | torch.device | None = None, progress: Progress = False,
                  directory: str | os.PathLike[str] | None = None) -> BestOf:
    """:func:`prune_filters` once per seed (default: the paper's five runs) and the best
    run by validation accuracy. ``directory`` keeps every seed's files (finished seeds are
    read back, an interrupted one resumes)."""
    seeds = tuple(validate.integer("seed", seed, minimum=0) for seed in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds!r}")
    runs = tuple(prune_filters(teacher, data, stop, config, seed=seed, device=device,
                               progress=progress, directory=directory) for seed in seeds)
    return BestOf(best_run(runs), runs)


def finished_seeds(directory: str | os.PathLike[str], seeds: Iterable[int]) -> list[int]:
    """The seeds whose final student and result are in ``directory``, as a progress report
    counts them (their identity is not checked: a run of other settings is redone)."""
    return [seed for seed in seeds if _RunFiles(Path(directory), seed, {}).has_result()]


def _identity(teacher: N2NNet, data: data_mod.Dataset, stop: StopRule, config: PruningConfig,
              seed: int) -> dict[str, Any]:
    """What a run's files must match to be reused (as its JSON round trip)."""
    identity = {"kind": "n2n-filter-pruning", "teacher": model_fingerprint(teacher),
                "data": data.fingerprint, "stop": dataclasses.asdict(stop),
                "config": config.to_dict(), "seed": seed}
    return json.loads(json.dumps(identity))


class _RunFiles:
    """The files of one seed's run in a directory (module docstring)."""

    def __init__(self, directory: Path, seed: int, identity: dict[str, Any]) -> None:
        self.identity = identity
        stem = directory / f"seed-{seed}"
        self.loop = stem.with_name(f"{stem.name}.loop.pt")
        self.pruned = stem.with_name(f"{stem.name}.pruned.pt")
        self.partial = stem.with_name(f"{stem.name}.finetune.partial")
        self.weights = stem.with_name(f"{stem.name}.pt")
        self.architecture = stem.with_name(f"{stem.name}.json")
        self.result = stem.with_name(f"{stem.name}.result.json")

    def save_pruned(self, model: N2NNet, accuracy: float, steps: int, reason: str,
                    history: tuple[PruneStep, ...], seconds: float) -> None:
        _atomic_save({"kind": "n2n-pruned", "identity": self.identity,
                      "architecture": model.architecture.to_json(),
                      "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                      "val_accuracy": accuracy, "steps": steps, "stop_reason": reason,
                      "history": [dataclasses.asdict(step) for step in history],
                      "seconds": seconds}, self.pruned)
        self.loop.unlink(missing_ok=True)

    def save_loop(self, checkpoint: LoopCheckpoint, device: torch.device,
                  seconds: float) -> None:
        _atomic_save({"kind": "n2n-pruning-loop", "identity": self.identity,
                      "device_type": device.type,
                      "architecture": checkpoint.architecture.to_json(),
                      "state_dict": checkpoint.state_dict,
                      "val_accuracy": checkpoint.val_accuracy,
                      "history": [dataclasses.asdict(step) for step in checkpoint.history],
                      "random_state": checkpoint.random_state, "seconds": seconds}, self.loop)

    def load_loop(self, device: torch.device) -> tuple[LoopCheckpoint | None, float]:
        """The loop's last checkpoint and the seconds spent up to it ((None, 0.0): none
        of this run, or one made on another kind of device, whose random streams this
        device cannot take)."""
        if not self.loop.is_file():
            return None, 0.0
        try:
            saved = _read_checkpoint(self.loop)
            if (saved.get("kind") != "n2n-pruning-loop" or saved.get("identity") != self.identity
                    or saved.get("device_type") != device.type):
                return None, 0.0
            checkpoint = LoopCheckpoint(
                Architecture.from_json(saved["architecture"]), saved["state_dict"],
                saved["val_accuracy"], tuple(PruneStep(**step) for step in saved["history"]),
                saved["random_state"])
            return checkpoint, float(saved["seconds"])
        except UNREADABLE:
            return None, 0.0

    def load_pruned(self, device: torch.device) -> tuple[Any, ...] | None:
        if not self.pruned.is_file():
            return None
        try:
            saved = _read_checkpoint(self.pruned)
            if saved.get("kind") != "n2n-pruned" or saved.get("identity") != self.identity:
                return None
            model = _load(Architecture.from_json(saved["architecture"]), saved["state_dict"],
                          device)
            history = tuple(PruneStep(**step) for step in saved["history"])
            return (model, saved["val_accuracy"], saved["steps"], saved["stop_reason"],
                    history, saved["seconds"])
        except UNREADABLE:
            return None

    def save_result(self, result: PruningResult) -> None:
        self.architecture.parent.mkdir(parents=True, exist_ok=True)
        _write_text(self.architecture, result.architecture.to_json())
        _atomic_save({k: v.detach().cpu() for k, v in result.model.state_dict().items()},
                     self.weights)
        _write_text(self.result, json.dumps({"identity": self.identity, **result.summary()},
                                            indent=2))
        self.partial.unlink(missing_ok=True)
        self.loop.unlink(missing_ok=True)  # left when a kill came right after save_pruned

    def has_result(self) -> bool:
        """Whether the final student and its result are all here (of any identity)."""
        return all(path.is_file() for path in (self.result, self.weights, self.architecture))

    def load_result(self, device: torch.device) -> PruningResult | None:
        if not self.has_result():
            return None
        try:
            saved = json.loads(self.result.read_text())
            if saved.get("identity") != self.identity:
                return None
            arch = Architecture.from_json(self.architecture.read_text())
            state = torch.load(self.weights, map_location="cpu", weights_only=True)
            history = tuple(PruneStep(**step) for step in saved["history"])
            return PruningResult(arch, _load(arch, state, device), saved["params"],
                                 saved["flops"], saved["val_accuracy"], saved["test_accuracy"],
                                 saved["pruned_val_accuracy"], saved["steps"],
                                 saved["stop_reason"], history, saved["seed"],
                                 saved["seconds"], saved["lr"], saved["diverged"])
        except UNREADABLE:
            return None


def _load(arch: Architecture, state: dict[str, torch.Tensor], device: torch.device) -> N2NNet:
    return network(arch, state, device).eval()  # type: ignore[return-value]


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` beside ``path``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
