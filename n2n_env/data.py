"""In-memory datasets held as tensors, for fast student training.

The reward of the N2N environment comes from training many small students, so every
dataset is loaded once into normalised float32 CPU tensors and moved to the training device
with ``Dataset.to``: no ``DataLoader``, no PIL, no per-sample Python work.  Each
:class:`Dataset` has a ``train`` split, a ``val`` split (the only one an RL reward may see)
and a ``test`` split (final reports only).  Splits are deterministic for a given
``(name, seed)`` and disjoint. Where the raw arrays come from, and how each source is
split, is :mod:`n2n_env.data_sources`.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from n2n_env.data_sources import (
    TORCHVISION,
    DatasetCorruptError,
    DatasetNotFoundError,
    Loader,
    Pool,
    load_cifar14k,
    load_digits,
    load_mnist10k,
    load_synthetic,
    load_torchvision,
    open_torchvision,
)

__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "MNIST_MEAN", "MNIST_STD", "PREPROCESSING_VERSION",
    "Dataset", "DatasetCorruptError", "DatasetNotFoundError", "Split", "default_root",
    "download", "info", "load", "names", "random_crop_flip", "resolve_root",
]

Device = torch.device | str

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


@dataclass(frozen=True, eq=False)
class Split:
    """One split: normalised float images ``x`` (N, C, H, W) and int64 labels ``y`` (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        x, y = self.x, self.y
        if (x.ndim != 4 or y.ndim != 1 or x.shape[0] != y.shape[0] or not x.is_floating_point()
                or y.dtype != torch.int64):
            raise ValueError(f"Split needs float x (N, C, H, W) and int64 y (N,); got {x.dtype} "
                             f"{tuple(x.shape)} and {y.dtype} {tuple(y.shape)}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: Device) -> Split:
        """Return this split with both tensors on ``device`` (no copy if already there)."""
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True, eq=False)
class Dataset:
    """A fully loaded dataset; ``mean``/``std`` are the per-channel normalisation applied.

    ``augment`` says whether the paper's recipe trains with flip+crop augmentation
    (see :func:`random_crop_flip`).  ``fingerprint`` is 16 hex chars of a sha256 over the
    name, the seed, the raw data bytes and the split indices: use it as a cache key.
    """

    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool
    fingerprint: str

    def to(self, device: Device) -> Dataset:
        """Return the dataset with every split on ``device``."""
        return replace(
            self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device)
        )


@dataclass(frozen=True)
class _Spec:
    loader: Loader
    num_classes: int
    mean: tuple[float, ...] | None  # None: computed from the train split
    std: tuple[float, ...] | None
    input_shape: tuple[int, int, int]
    augment: bool = False


def info(name: str) -> tuple[tuple[int, int, int], int]:
    """``(input_shape, num_classes)`` of a dataset, without reading its files."""
    spec = _spec(name)
    return spec.input_shape, spec.num_classes


def default_root() -> pathlib.Path:
    """``$N2N_DATA`` if set, else ``$XDG_CACHE_HOME/n2n/data``, else ``~/.cache/n2n/data``."""
    env = os.environ.get("N2N_DATA")
    if env:
        return pathlib.Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache"
    return (base / "n2n" / "data").absolute()


def resolve_root(root: str | os.PathLike[str] | None) -> pathlib.Path:
    """The data root to use: ``root`` if given, else ``$N2N_DATA``, else :func:`default_root`."""
    if root is not None and os.fspath(root) != "":
        return pathlib.Path(root).expanduser().absolute()
    return default_root()


def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(names())}")
    return _SPECS[name]


def names() -> tuple[str, ...]:
    """All dataset names that :func:`load` accepts."""
    return tuple(_SPECS)


def load(
    name: str, root: str | os.PathLike[str] | None = None, seed: int = 0, download: bool = False
) -> Dataset:
    """Load dataset ``name`` into CPU tensors, split deterministically by ``seed`` (>= 0).

    Raises ``ValueError`` for an unknown name, :class:`DatasetNotFoundError` when files are
    missing and :class:`DatasetCorruptError` when a file cannot be parsed.
    """
    spec = _spec(name)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    pool = spec.loader(name, resolve_root(root), int(seed), download)
    return _build(name, int(seed), pool, spec)


def check_root(name: str, root: str | os.PathLike[str] | None) -> None:
    """Refuse now, before any training, a data root that does not exist when ``name``
    reads files from it (:class:`DatasetNotFoundError`); a no-op for generated datasets."""
    spec = _spec(name)
    if spec.loader in (load_digits, load_synthetic):
        return
    path = resolve_root(root)
    if not path.is_dir():
        raise DatasetNotFoundError(
            f"data root {path} does not exist; dataset {name!r} reads its files from there "
            "(pass data_root / --data-root, set N2N_DATA, or see n2n data download)")


def download(name: str, root: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Fetch the files of ``name`` into the root (torchvision datasets only) and return the root.

    ``digits`` and ``synthetic`` need no files (no-op).  ``mnist-10k`` and ``cifar10-14k``
    are local files: they are checked and :class:`DatasetNotFoundError` explains how to
    get them when missing.
    """
    spec = _spec(name)
    path = resolve_root(root)
    if name in TORCHVISION:
        open_torchvision(name, path, download=True)
    elif spec.loader in (load_mnist10k, load_cifar14k):
        spec.loader(name, path, 0, False)
    return path


def random_crop_flip(
    x: torch.Tensor, generator: torch.Generator | None = None, padding: int = 4
) -> torch.Tensor:
    """Random horizontal flip (p=0.5) and random crop with zero ``padding``, per sample.

    Vectorised for a batch ``x`` (N, C, H, W) on any device; returns a new tensor.  Random
    draws, in order: ``torch.rand(N)`` (flip where < 0.5), then ``torch.randint(0, 2 *
    padding + 1, (N, 2))`` (row, column offset into the padded image).  They are made on the
    generator's device (default: ``x``'s device) and moved to ``x``'s device.
    """
    if x.ndim != 4 or padding < 0:
        raise ValueError(f"need x (N, C, H, W) and padding >= 0; got {tuple(x.shape)}, {padding}")
    n, c, h, w = x.shape
    dev = generator.device if generator is not None else x.device
    flip = (torch.rand(n, generator=generator, device=dev) < 0.5).to(x.device)
    offs = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=dev)
    offs = offs.to(x.device)
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = (offs[:, 0:1] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (offs[:, 1:2] + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chans = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, chans, rows, cols]


PREPROCESSING_VERSION = 1
"""Part of every fingerprint: bump it when normalisation or resizing changes, so cached
teachers and rewards computed on the old tensors are refused."""


def _fingerprint(name: str, seed: int, arrays: Sequence[np.ndarray]) -> str:
    h = hashlib.sha256(f"n2n-data-v{PREPROCESSING_VERSION}|{name}|{seed}".encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"|{a.dtype.str}{a.shape}|".encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()[:16]


def _build(name: str, seed: int, pool: Pool, spec: _Spec) -> Dataset:
    x, y = pool.x, torch.as_tensor(pool.y, dtype=torch.int64)
    scale = 255.0 if x.dtype == torch.uint8 else 1.0
    mean, std = spec.mean, spec.std
    if mean is None or std is None:
        xt = x[torch.from_numpy(pool.splits[0])].to(torch.float64) / scale
        mean = tuple(xt.mean(dim=(0, 2, 3)).tolist())
        std = tuple(xt.std(dim=(0, 2, 3), correction=0).tolist())
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def split(idx: np.ndarray) -> Split:
        t = torch.from_numpy(idx)
        xs = x[t].to(torch.float32).div_(scale).sub_(m).div_(s)
        return Split(xs, y[t])

    train, val, test = (split(i) for i in pool.splits)
    fp = _fingerprint(name, seed, (*pool.raw, *pool.splits))
    shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
    if shape != spec.input_shape:
        raise DatasetCorruptError(f"{name}: images are {shape}, expected {spec.input_shape}")
    return Dataset(name, train, val, test, shape, spec.num_classes, mean, std, spec.augment, fp)


_SPECS: dict[str, _Spec] = {
    "digits": _Spec(load_digits, 10, None, None, (1, 16, 16)),
    "synthetic": _Spec(load_synthetic, 10, None, None, (3, 8, 8)),
    "mnist-10k": _Spec(load_mnist10k, 10, MNIST_MEAN, MNIST_STD, (1, 28, 28)),
    "cifar10-14k": _Spec(
        load_cifar14k, 10, CIFAR10_MEAN, CIFAR10_STD, (3, 32, 32), augment=True
    ),
    "mnist": _Spec(load_torchvision, 10, MNIST_MEAN, MNIST_STD, (1, 28, 28)),
    "fashion-mnist": _Spec(load_torchvision, 10, (0.2860,), (0.3530,), (1, 28, 28)),
    "cifar10": _Spec(
        load_torchvision, 10, CIFAR10_MEAN, CIFAR10_STD, (3, 32, 32), augment=True
    ),
    "cifar100": _Spec(
        load_torchvision, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), (3, 32, 32),
        augment=True,
    ),
    "svhn": _Spec(
        load_torchvision, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), (3, 32, 32)
    ),
}
