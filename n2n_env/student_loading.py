"""Load a compressed student in one line.

:func:`load_student` turns what ``n2n compress`` wrote (a run directory, or any model file
the package writes: ``NAME.pt``, a plain ``state_dict``, with its architecture in
``NAME.json`` beside it) into an :class:`~n2n_env.build.N2NNet` in eval mode. It reads
with ``torch.load(weights_only=True)`` only, so a model file never executes code. Every
way a file can be wrong (missing, damaged, foreign, a teacher checkpoint, weights that do
not fit their architecture or hold NaN) raises an error that names the file and says what
it expected. :mod:`n2n_env.export` writes the loaded student for use without n2n.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from n2n_env.arch import Architecture
from n2n_env.build import N2NNet, build_model
from n2n_env.checkpoints import CheckpointError
from n2n_env.run_files import STUDENT_FILE, architecture_path, finetuned_path

__all__ = ["OpenedStudent", "load_student", "open_student"]


@dataclass(frozen=True)
class OpenedStudent:
    """A student read from disk, and where it came from."""

    model: N2NNet
    files: tuple[Path, ...]
    """The files the student was read from (an export must not overwrite them)."""
    stem: Path
    """Default exports go to ``stem`` plus a format's suffix."""


def load_student(path: str | os.PathLike[str], *, stage: str | None = None,
                 device: str | torch.device = "cpu") -> N2NNet:
    """The student saved at ``path``, built and loaded, in eval mode on ``device``.

    ``path`` is an ``n2n compress`` run directory (its final student, ``student.pt``) or a
    model file the package wrote (``NAME.pt`` with ``NAME.json`` beside it). ``stage``
    (``removal`` or ``shrink``) picks the fine-tuned student a finished run found in that
    stage instead of its final one. Raises FileNotFoundError for a missing path or a run
    without a finished student, :class:`~n2n_env.checkpoints.CheckpointError` for a file
    that is damaged, foreign or does not fit its architecture, and ValueError for a stage
    the run did not have.
    """
    return open_student(path, stage, device).model


def open_student(path: str | os.PathLike[str], stage: str | None,
                 device: str | torch.device) -> OpenedStudent:
    """:func:`load_student`, keeping the files read and the stem of default exports."""
    where = Path(path)
    if stage is not None and not isinstance(stage, str):
        raise TypeError(f"stage must be a stage name, got {stage!r}")
    if where.is_dir():
        return _open_run(where, stage, device)
    if not where.exists():
        raise FileNotFoundError(
            f"{os.fspath(where)!r} does not exist; expected an n2n compress run directory or "
            "a student file NAME.pt (with NAME.json beside it)")
    if stage is not None:
        raise ValueError(f"a stage picks a student of a run directory; {os.fspath(where)!r} "
                         "is a file")
    weights = where.with_suffix(".pt") if where.suffix == ".json" else where
    if not weights.is_file():
        raise FileNotFoundError(f"{os.fspath(where)!r} is an architecture file without its "
                                f"weights {weights.name} beside it")
    arch_file = architecture_path(weights)
    state = _student_state(weights)
    arch = _read_architecture(arch_file, weights)
    return OpenedStudent(_build(arch, state, weights, device), (weights, arch_file),
                   weights.with_suffix(""))


def _open_run(run: Path, stage: str | None, device: str | torch.device) -> OpenedStudent:
    if stage is None:
        weights = run / STUDENT_FILE
        if not weights.is_file():
            raise FileNotFoundError(_no_student(run, STUDENT_FILE))
        arch_file = architecture_path(weights)
        state = _student_state(weights)
        arch = _read_architecture(arch_file, weights)
        return OpenedStudent(_build(arch, state, weights, device), (weights, arch_file),
                       run / "student")
    stages = _run_stages(run)
    if stage not in stages:
        raise ValueError(f"unknown stage {stage!r} for run {os.fspath(run)!r}; choose from: "
                         f"{', '.join(stages)}")
    arch = stages[stage]
    weights = finetuned_path(run, arch)
    if not weights.is_file():
        raise FileNotFoundError(f"run {os.fspath(run)!r} lacks {weights.name}, its fine-tuned "
                                f"{stage} student; was it moved or deleted?")
    record = _torch_load(weights)
    state = record.get("state_dict") if isinstance(record, dict) else None
    if not _is_state_dict(state):
        raise CheckpointError(f"{weights} is not a fine-tuned student of an n2n run (no "
                              "state_dict of tensors)")
    return OpenedStudent(_build(arch, state, weights, device), (weights,), run / f"student-{stage}")


def _no_student(run: Path, name: str) -> str:
    if (run / "state.json").is_file():
        return (f"run directory {os.fspath(run)!r} has no finished student yet (no {name}): "
                "its search or fine-tuning has not ended; finish it with: n2n compress "
                f"--resume {os.fspath(run)}")
    return (f"{os.fspath(run)!r} is not an n2n compress run directory (no {name}, no "
            "state.json); expected a run directory or a student file NAME.pt with NAME.json "
            "beside it")


def _run_stages(run: Path) -> dict[str, Architecture]:
    """Each stage of a finished run and the architecture of its fine-tuned student, from
    ``result.json`` (its rows are the teacher, then one student per stage, in order)."""
    result = run / "result.json"
    if not result.is_file():
        raise FileNotFoundError(_no_student(run, "result.json"))
    try:
        saved = json.loads(result.read_text())
        stages = saved["config"]["stages"]
        rows = saved["rows"][1:]
        if len(rows) != len(stages) or not all(isinstance(s, str) for s in stages):
            raise ValueError(f"{len(stages)} stages but {len(rows)} student rows")
        return {stage: Architecture.from_json(row["architecture"])
                for stage, row in zip(stages, rows)}
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"run result {result} is damaged or not an n2n run's "
                              f"({type(exc).__name__}: {exc})") from None


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise CheckpointError(f"could not read {path} ({reason}); it is damaged or not a "
                              "model file n2n wrote") from None


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _student_state(path: Path) -> Mapping[str, torch.Tensor]:
    payload = _torch_load(path)
    if _is_state_dict(payload):
        return payload
    if isinstance(payload, dict) and payload.get("kind") == "n2n-teacher":
        raise CheckpointError(f"{path} is a teacher checkpoint, not a student file; load it "
                              "with n2n_env.checkpoints.load_teacher")
    if isinstance(payload, dict) and "identity" in payload and "state_dict" in payload:
        raise CheckpointError(f"{path} is a fine-tuned student kept by a run; load it through "
                              "its run directory and stage (n2n export RUN --stage NAME)")
    raise CheckpointError(f"{path} is not a student file: a student file holds a plain "
                          "state_dict (names to tensors)")


def _read_architecture(path: Path, weights: Path) -> Architecture:
    if not path.is_file():
        raise CheckpointError(f"student file {weights} has no architecture {path.name} beside "
                              "it; a student file is a state_dict NAME.pt plus NAME.json")
    try:
        return Architecture.from_json(path.read_text())
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path} is not an n2n architecture: {exc}") from None


def _build(arch: Architecture, state: Mapping[str, torch.Tensor], where: Path,
           device: str | torch.device) -> N2NNet:
    try:
        model = build_model(arch, device=device)
        model.load_state_dict(state)
    except (RuntimeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{where}: the weights do not fit the architecture "
                              f"{arch.name or arch.signature()!r} ({reason})") from None
    broken = [k for k, v in state.items() if v.is_floating_point()
              and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"{where}: {len(broken)} weight tensors hold NaN or inf "
                              f"(first {broken[0]!r}); the student diverged")
    return model.eval()
