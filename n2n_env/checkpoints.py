"""Teacher checkpoints and the cache directory.

A checkpoint is one ``torch.save``'d dict holding a plain ``state_dict`` and the
architecture as JSON, plus metadata (accuracies, dataset fingerprint, recipe); it is read
with ``torch.load(weights_only=True)`` only, so a checkpoint can never execute code. Cached
teachers live under :func:`n2n_home` (``$N2N_HOME``, by default ``~/.cache/n2n``). Kept
apart from training (:mod:`n2n_env.teacher`) so that reading a checkpoint does not depend
on the trainer.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from n2n_env import validate
from n2n_env.arch import Architecture
from n2n_env.build import build_model
from n2n_env.device import prepare_model, resolve_device
from n2n_env.recipes import Recipe

FORMAT_VERSION = 1
"""Version of the checkpoint dict written by :func:`save_teacher`."""


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, malformed, or does not match what was expected."""


@dataclass(frozen=True)
class TeacherRecord:
    """Metadata stored beside a teacher's weights. Accuracies are fractions in [0, 1]."""

    architecture: Architecture
    dataset: str
    dataset_fingerprint: str
    val_accuracy: float
    test_accuracy: float
    recipe: Recipe
    model_name: str = ""
    width: float = 1.0
    seed: int = 0
    seconds: float = 0.0
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.architecture, Architecture):
            raise TypeError(f"architecture must be an Architecture, got "
                            f"{type(self.architecture).__name__}")
        for name in ("dataset", "dataset_fingerprint", "model_name"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a str, got {getattr(self, name)!r}")
        if not isinstance(self.recipe, Recipe):
            raise TypeError(f"recipe must be a Recipe, got {self.recipe!r}")
        # A teacher accuracy of 0 would divide every reward by zero.
        validate.number("val_accuracy", self.val_accuracy, above=0, at_most=1)
        validate.number("test_accuracy", self.test_accuracy, above=0, at_most=1)
        validate.number("width", self.width, above=0)
        validate.integer("seed", self.seed, minimum=0)
        validate.number("seconds", self.seconds, at_least=0)


def _atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as handle:  # a fresh name per writer; honours the umask
            torch.save(obj, handle)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """``torch.load(weights_only=True)`` with errors that name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"teacher checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise CheckpointError(
            f"could not read checkpoint {path} ({reason}); delete it and retrain "
            "(n2n teacher train)"
        ) from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} is not an n2n checkpoint (top level is not a dict)")
    return payload


def _cpu_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def save_teacher(
    path: str | os.PathLike[str], model: torch.nn.Module, record: TeacherRecord
) -> Path:
    """Write ``model``'s weights and ``record`` to one file; returns the path.

    The file is a ``torch.save``'d dict of tensors and plain Python values only, so
    :func:`load_teacher` can read it with ``weights_only=True``. Written atomically.
    """
    own = getattr(model, "architecture", None)
    if own is not None and own != record.architecture:
        raise ValueError("model.architecture differs from record.architecture")
    payload = {
        "kind": "n2n-teacher", "format_version": FORMAT_VERSION,
        "state_dict": _cpu_state(model.state_dict()),
        "architecture": record.architecture.to_json(),
        "val_accuracy": float(record.val_accuracy), "test_accuracy": float(record.test_accuracy),
        "dataset": record.dataset, "dataset_fingerprint": record.dataset_fingerprint,
        "recipe": record.recipe.to_dict(), "model_name": record.model_name,
        "width": float(record.width), "seed": int(record.seed), "seconds": float(record.seconds),
    }
    _atomic_save(payload, Path(path))
    return Path(path)


def read_teacher_record(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[TeacherRecord, dict[str, torch.Tensor]]:
    """Metadata and raw ``state_dict`` of the checkpoint at ``path`` (no model built)."""
    p = Path(path)
    payload = _read_checkpoint(p, device)
    missing = {"state_dict", "architecture", "dataset", "dataset_fingerprint"} - set(payload)
    if payload.get("kind") != "n2n-teacher" or missing:
        raise CheckpointError(f"{p} is not an n2n teacher checkpoint (missing {sorted(missing)})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{p} has checkpoint format {payload.get('format_version')}, this n2n reads "
            f"format {FORMAT_VERSION}; retrain the teacher (n2n teacher train)"
        )
    try:
        arch = Architecture.from_json(payload["architecture"])
        record = TeacherRecord(
            architecture=arch, dataset=payload["dataset"],
            dataset_fingerprint=payload["dataset_fingerprint"],
            val_accuracy=payload["val_accuracy"], test_accuracy=payload["test_accuracy"],
            recipe=Recipe.from_dict(payload["recipe"]), model_name=payload.get("model_name", ""),
            width=payload.get("width", 1.0), seed=payload.get("seed", 0),
            seconds=payload.get("seconds", 0.0),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{p} has malformed teacher metadata: {exc}") from exc
    return record, payload["state_dict"]


def load_teacher(
    path: str | os.PathLike[str], *, architecture: Architecture | None = None,
    dataset_fingerprint: str | None = None, device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, TeacherRecord]:
    """Rebuild the teacher saved at ``path`` and return it (in eval mode) with its record.

    Pass ``architecture`` and/or ``dataset_fingerprint`` to refuse a checkpoint made for
    a different network or different data: a teacher's accuracy is only meaningful on the
    exact data it was trained and evaluated on.
    """
    dev = resolve_device(device)
    record, state = read_teacher_record(path, dev)
    found = record.architecture
    if architecture is not None and architecture.signature() != found.signature():
        raise CheckpointError(
            f"teacher checkpoint {path}: architecture differs: expected {architecture.name} "
            f"(signature {architecture.signature()}), found {found.name} (signature "
            f"{found.signature()}); retrain the teacher for this architecture "
            "(n2n teacher train) or ask for the architecture it was trained with"
        )
    if dataset_fingerprint is not None and dataset_fingerprint != record.dataset_fingerprint:
        raise CheckpointError(
            f"teacher checkpoint {path}: dataset fingerprint differs: expected "
            f"{dataset_fingerprint}, found {record.dataset_fingerprint} (trained on "
            f"{record.dataset!r}); retrain the teacher on this data (n2n teacher train) "
            "or pass the matching dataset (same name, data root and split seed)"
        )
    model = build_model(found)
    _check_weights(path, found, model.state_dict(), state)
    model.load_state_dict(state, strict=True)
    return prepare_model(model, dev).eval(), record


def _check_weights(path: str | os.PathLike[str], arch: Architecture,
                   expected: Mapping[str, torch.Tensor], found: Any) -> None:
    """Refuse weights that do not fit ``arch`` or are not finite, in one line."""
    where = f"teacher checkpoint {os.fspath(path)}"
    if not isinstance(found, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in found.values()):
        raise CheckpointError(f"{where}: state_dict is not a dict of tensors")
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(found)
                      if expected[k].shape != found[k].shape)
    if missing or unexpected or reshaped:
        first = (missing or unexpected or reshaped)[0]
        raise CheckpointError(
            f"{where}: weights do not fit its architecture {arch.name or arch.signature()!r} "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(reshaped)} of "
            f"another shape, first {first!r}); it was written for another network"
        )
    broken = [k for k, v in found.items() if v.is_floating_point() and not bool(
        torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"{where}: {len(broken)} weight tensors hold NaN or inf values "
                              f"(first {broken[0]!r}); the teacher diverged: retrain it")


def n2n_home() -> Path:
    """Cache root: ``$N2N_HOME``, else ``$XDG_CACHE_HOME/n2n``, else ``~/.cache/n2n``."""
    if os.environ.get("N2N_HOME"):
        return Path(os.environ["N2N_HOME"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "n2n"
    return Path.home() / ".cache" / "n2n"


def teacher_path(model_name: str, dataset_name: str, width: float = 1.0, seed: int = 0) -> Path:
    """Where the cached teacher for this model, dataset, width and seed lives."""
    return n2n_home() / "teachers" / f"{model_name}-{dataset_name}-w{width:g}-s{seed}.pt"


def partial_path(path: str | os.PathLike[str]) -> Path:
    """Partial (resume) checkpoint kept beside the final checkpoint ``path``."""
    p = Path(path)
    return p.with_name(p.name + ".partial")


def cached_teachers() -> Iterator[Path]:
    """Final teacher checkpoints in the cache directory, sorted by name."""
    yield from sorted((n2n_home() / "teachers").glob("*.pt"))
