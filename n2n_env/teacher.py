"""Teacher networks: the paper's training recipes, a resumable trainer, checkpoints, a cache.

N2N compresses a trained *teacher*; every student is judged relative to it. This module
trains teachers with the recipes of the paper's appendix 10.2, stores them as plain
``state_dict`` + architecture-JSON checkpoints (loaded with ``weights_only=True``, so a
checkpoint can never execute code), and caches them under :func:`n2n_home`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from n2n_env import data as data_mod
from n2n_env import zoo
from n2n_env.arch import Architecture
from n2n_env.build import build_model
from n2n_env.device import (
    autocast_context,
    inference_mode,
    memory_format,
    prepare_model,
    resolve_device,
)

FORMAT_VERSION = 1
"""Version of the checkpoint dict written by :func:`save_teacher`."""

MNIST_LIKE = ("mnist", "mnist-10k", "fashion-mnist", "digits", "synthetic")
CIFAR_LIKE = ("cifar10", "cifar100", "cifar10-14k")
SVHN_LIKE = ("svhn",)


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, malformed, or does not match what was expected."""


@dataclass(frozen=True)
class Recipe:
    """How a teacher is trained (paper, appendix 10.2).

    The paper gives epochs, learning rate, schedule and batch size but not the optimizer;
    we use SGD (momentum 0.9, weight decay 5e-4) for the lr-0.01 recipes and Adam for the
    lr-0.001 recipes, the usual pairing for those learning rates.
    """

    epochs: int
    """Number of passes over the training split."""
    lr: float
    """Initial learning rate."""
    batch_size: int
    """Mini-batch size."""
    milestones: tuple[int, ...] = ()
    """Epoch counts after which the learning rate is multiplied by ``gamma``
    (``MultiStepLR`` semantics; a repeated entry decays twice)."""
    gamma: float = 0.1
    """Learning-rate decay factor applied at each milestone."""
    optimizer: str = "sgd"
    """``"sgd"`` or ``"adam"``."""
    momentum: float = 0.9
    """SGD momentum, or Adam's beta1."""
    weight_decay: float = 5e-4
    """L2 penalty passed to the optimizer."""
    augment: bool = False
    """Random horizontal flip and 4-pixel-padded random crop of each training batch."""

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        object.__setattr__(self, "milestones", tuple(sorted(int(m) for m in self.milestones)))

    def with_epochs(self, epochs: int) -> Recipe:
        """The same recipe over ``epochs`` epochs, with milestones rescaled proportionally.

        For example the MNIST recipe (50 epochs, decay at 30) with 10 epochs decays at 6.
        Milestones keep their multiplicity, so the final learning rate is unchanged.
        """
        if epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs}")
        scaled = tuple(max(1, round(m * epochs / self.epochs)) for m in self.milestones)
        return dataclasses.replace(self, epochs=epochs, milestones=scaled)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form, as stored in checkpoints."""
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Recipe:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**values, "milestones": tuple(values.get("milestones", ()))})


def recipe_for(dataset_name: str) -> Recipe:
    """The paper's teacher recipe for ``dataset_name`` (appendix 10.2).

    MNIST-like data: 50 epochs, lr 0.01 (SGD), x0.1 after epoch 30, batch 64.
    CIFAR-10/100: 150 epochs, lr 0.001 (Adam), x0.1 after epochs 80 and 120, batch 128,
    flip + crop augmentation. SVHN: the CIFAR recipe without augmentation.
    """
    if dataset_name in MNIST_LIKE:
        return Recipe(epochs=50, lr=0.01, batch_size=64, milestones=(30,))
    if dataset_name in CIFAR_LIKE + SVHN_LIKE:
        return Recipe(
            epochs=150, lr=0.001, batch_size=128, milestones=(80, 120), optimizer="adam",
            weight_decay=0.0, augment=dataset_name in CIFAR_LIKE,
        )
    allowed = ", ".join(MNIST_LIKE + CIFAR_LIKE + SVHN_LIKE)
    raise ValueError(f"no teacher recipe for dataset {dataset_name!r}; known: {allowed}")


@dataclass(frozen=True)
class TrainedTeacher:
    """Result of :func:`train_teacher`. Accuracies are fractions in [0, 1]."""

    model: torch.nn.Module
    val_accuracy: float
    test_accuracy: float
    epochs: int
    seconds: float


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


def evaluate_accuracy(
    model: torch.nn.Module, split: data_mod.Split, batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of ``model`` on ``split``, in batches.

    Runs where the model's parameters live unless ``device`` is given (then the model is
    moved there). The model's train/eval mode is restored afterwards.
    """
    if len(split) == 0:
        raise ValueError("cannot evaluate accuracy on an empty split")
    dev = next(model.parameters()).device if device is None else resolve_device(device)
    model.to(dev)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    with inference_mode(model), autocast_context(dev):
        for start in range(0, len(split), batch_size):
            xb = split.x[start : start + batch_size].to(dev, non_blocking=True)
            yb = split.y[start : start + batch_size].to(dev, non_blocking=True)
            xb = xb.contiguous(memory_format=memory_format(dev))
            correct += (model(xb).argmax(dim=1) == yb).sum()
    return correct.item() / len(split)


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The optimizer ``recipe`` names (SGD or Adam) over all of ``model``'s parameters."""
    params, lr, wd = model.parameters(), recipe.lr, recipe.weight_decay
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(recipe.momentum, 0.999), weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, momentum=recipe.momentum, weight_decay=wd)


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


def train_teacher(
    arch: Architecture, data: data_mod.Dataset, recipe: Recipe, *,
    device: str | torch.device | None = None, seed: int = 0, progress: bool = True,
    resume_path: str | os.PathLike[str] | None = None,
) -> TrainedTeacher:
    """Train a fresh network of architecture ``arch`` on ``data.train`` with ``recipe``.

    The training split stays on the device as one tensor and is shuffled by a seeded
    generator: much faster than a DataLoader for these small datasets, and reproducible.
    With ``resume_path``, a partial checkpoint (weights, optimizer, scheduler, epoch and
    RNG states) is written after every epoch, and training continues from an existing one
    that matches this architecture, dataset, recipe and seed; on CPU the result is
    bit-identical to an uninterrupted run. The caller deletes the partial file after
    saving the final checkpoint. The global torch RNG is left as it was found, and so is
    torch's CPU thread count (the ``n2n`` command raises it to every available core).
    """
    dev = resolve_device(device)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        model = prepare_model(build_model(arch), dev)
        optimizer = make_optimizer(model, recipe)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(recipe.milestones), gamma=recipe.gamma
        )
        shuffle = torch.Generator().manual_seed(seed)
        augment_rng = torch.Generator(device=dev).manual_seed(seed + 1)
        identity = {"architecture": arch.signature(), "dataset_fingerprint": data.fingerprint,
                    "recipe": recipe.to_dict(), "seed": seed}
        start_epoch, val_acc = 0, float("nan")
        partial = Path(resume_path) if resume_path is not None else None
        state = _load_partial(partial, identity) if partial is not None else None
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            shuffle.set_state(state["shuffle_rng"])
            augment_rng.set_state(state["augment_rng"])
            torch.set_rng_state(state["torch_rng"])
            if dev.type == "cuda" and "cuda_rng" in state:
                torch.cuda.set_rng_state(state["cuda_rng"], dev)
            start_epoch, val_acc = state["epoch"], state["val_accuracy"]
            started -= state["seconds"]

        train = data.train.to(dev)
        bar = tqdm(range(start_epoch, recipe.epochs), total=recipe.epochs, initial=start_epoch,
                   desc=f"teacher {arch.name}/{data.name}", unit="epoch", disable=not progress,
                   dynamic_ncols=True)
        for epoch in bar:  # the bar closes itself when the loop ends
            loss = _train_epoch(model, optimizer, train, recipe, shuffle, augment_rng)
            scheduler.step()
            val_acc = evaluate_accuracy(model, data.val)
            bar.set_postfix(loss=f"{loss:.4f}", val_acc=f"{val_acc:.4f}")
            if not math.isfinite(loss):
                raise RuntimeError(f"teacher training diverged at epoch {epoch + 1} (loss "
                                   f"{loss}); try a smaller learning rate (--lr)")
            if partial is not None:
                snapshot = {
                    "kind": "n2n-teacher-partial", "format_version": FORMAT_VERSION, **identity,
                    "epoch": epoch + 1, "val_accuracy": val_acc,
                    "seconds": time.perf_counter() - started,
                    "model": _cpu_state(model.state_dict()),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "shuffle_rng": shuffle.get_state(),
                    "augment_rng": augment_rng.get_state().cpu(),
                    "torch_rng": torch.get_rng_state(),
                }
                if dev.type == "cuda":
                    snapshot["cuda_rng"] = torch.cuda.get_rng_state(dev)
                _atomic_save(snapshot, partial)
    test_acc = evaluate_accuracy(model, data.test)
    return TrainedTeacher(model=model.eval(), val_accuracy=val_acc, test_accuracy=test_acc,
                          epochs=recipe.epochs, seconds=time.perf_counter() - started)


def _train_epoch(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, train: data_mod.Split,
    recipe: Recipe, shuffle: torch.Generator, augment_rng: torch.Generator,
) -> float:
    """One pass over ``train`` in shuffled mini-batches; returns the mean training loss."""
    dev = train.x.device
    model.train()
    order = torch.randperm(len(train), generator=shuffle).to(dev)
    loss_sum, seen = torch.zeros((), device=dev), 0
    for start in range(0, len(train), recipe.batch_size):
        idx = order[start : start + recipe.batch_size]
        if idx.numel() < 2:  # BatchNorm cannot train on a single example
            continue
        xb, yb = train.x[idx], train.y[idx]
        if recipe.augment:
            xb = data_mod.random_crop_flip(xb, generator=augment_rng)
        with autocast_context(dev):
            loss = F.cross_entropy(model(xb.contiguous(memory_format=memory_format(dev))), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach().float() * idx.numel()
        seen += idx.numel()
    return loss_sum.item() / max(seen, 1)


def _load_partial(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The partial checkpoint at ``path`` if it exists and belongs to this run."""
    if not path.exists():
        return None
    try:
        state = _read_checkpoint(path, "cpu")
    except CheckpointError as exc:
        warnings.warn(f"ignoring partial checkpoint: {exc}", stacklevel=3)
        return None
    if state.get("kind") != "n2n-teacher-partial" or any(
        state.get(key) != value for key, value in identity.items()
    ):
        warnings.warn(f"ignoring partial checkpoint {path}: it belongs to another run "
                      "(architecture, dataset, recipe or seed differ)", stacklevel=3)
        return None
    return state


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
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"teacher checkpoint {path}: weights do not fit architecture {found.name}: {exc}"
        ) from exc
    return prepare_model(model, dev).eval(), record


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


def get_teacher(
    model_name: str, dataset_name: str, *, width: float = 1.0, seed: int = 0,
    data_root: str | os.PathLike[str] | None = None, device: str | torch.device | None = None,
    epochs: int | None = None, train_if_missing: bool = True, progress: bool = True,
) -> tuple[torch.nn.Module, TeacherRecord]:
    """The cached teacher for ``model_name`` on ``dataset_name``, training it on first use.

    The cached checkpoint must match the zoo architecture and the fingerprint of the
    dataset as loaded now; otherwise :class:`CheckpointError` explains how to fix it.
    ``epochs`` shortens the recipe and only matters when the teacher has to be trained.
    An interrupted first training resumes where it stopped on the next call.
    """
    dataset = data_mod.load(dataset_name, root=data_root)
    shape, classes = dataset.input_shape, dataset.num_classes
    arch = zoo.get(model_name, input_shape=shape, num_classes=classes, width=width)
    path = teacher_path(model_name, dataset_name, width, seed)
    if not path.exists() and not train_if_missing:
        raise FileNotFoundError(
            f"no cached teacher at {path}; train it with: n2n teacher train --model "
            f"{model_name} --dataset {dataset_name} --width {width:g} --seed {seed}"
        )
    if path.exists():
        return load_teacher(path, architecture=arch, dataset_fingerprint=dataset.fingerprint,
                            device=resolve_device(device))
    recipe = recipe_for(dataset_name)
    if epochs is not None:
        recipe = recipe.with_epochs(epochs)
    resume = partial_path(path)
    trained = train_teacher(arch, dataset, recipe, device=device, seed=seed, progress=progress,
                            resume_path=resume)
    record = TeacherRecord(
        architecture=arch, dataset=dataset_name, dataset_fingerprint=dataset.fingerprint,
        val_accuracy=trained.val_accuracy, test_accuracy=trained.test_accuracy,
        recipe=recipe, model_name=model_name, width=width, seed=seed, seconds=trained.seconds,
    )
    save_teacher(path, trained.model, record)
    resume.unlink(missing_ok=True)
    return trained.model, record
