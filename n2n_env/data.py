"""In-memory datasets held as tensors, for fast student training.

The reward of the N2N environment comes from training many small students, so every
dataset is loaded once into normalised float32 CPU tensors and moved to the training device
with ``Dataset.to``: no ``DataLoader``, no PIL, no per-sample Python work.  Each
:class:`Dataset` has a ``train`` split, a ``val`` split (the only one an RL reward may see)
and a ``test`` split (final reports only).  Splits are deterministic for a given
``(name, seed)`` and disjoint.

Pooled local files (``mnist-10k``, ``cifar10-14k``) are split by proportions of the pooled
count: 70/10/20 for ``mnist-10k`` (7,000/1,000/2,000 of the official 10,000) and 10/1/3 for
``cifar10-14k`` (10,000/1,000/3,000 of 14,000).  Validation and test sizes are rounded,
the training split takes the remainder, so other counts (small test files) also work.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import pickle
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

Device = torch.device | str

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
VAL_SIZE = 5000
SYNTHETIC_NOISE = 2.0
_ONLINE = "load({name!r}, download=True) or `n2n data download {name}` (needs internet)"
_POINT = (
    "Or point at a folder that already has them: pass root=... / --data-root, or set the "
    "N2N_DATA environment variable (for example to a checkout's ../shared/datasets)."
)


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


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not under the root; the message says which and how to get them."""


class DatasetCorruptError(ValueError):
    """A dataset file exists but cannot be parsed or fails a shape check; the message names it."""


class _Pool(NamedTuple):
    """What a loader returns: pooled images, labels, split indices, arrays to fingerprint."""

    x: torch.Tensor  # uint8 (scaled by 1/255) or float, (N, C, H, W)
    y: np.ndarray
    splits: tuple[np.ndarray, np.ndarray, np.ndarray]
    raw: tuple[np.ndarray, ...]


Loader = Callable[[str, pathlib.Path, int, bool], _Pool]


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


def download(name: str, root: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Fetch the files of ``name`` into the root (torchvision datasets only) and return the root.

    ``digits`` and ``synthetic`` need no files (no-op).  ``mnist-10k`` and ``cifar10-14k``
    are local files: they are checked and :class:`DatasetNotFoundError` explains how to
    get them when missing.
    """
    spec = _spec(name)
    path = resolve_root(root)
    if name in _TORCHVISION:
        _open_torchvision(name, path, download=True)
    elif spec.loader in (_load_mnist10k, _load_cifar14k):
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


def _proportional(n: int, parts: tuple[int, int, int]) -> tuple[int, int, int]:
    """Split sizes for ``n`` items by ``parts``: val and test rounded, train the rest."""
    total = sum(parts)
    n_val, n_test = round(n * parts[1] / total), round(n * parts[2] / total)
    return n - n_val - n_test, n_val, n_test


def _permutation_split(
    counts: tuple[int, int, int], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(sum(counts)).astype(np.int64)
    a, b = counts[0], counts[0] + counts[1]
    return perm[:a], perm[a:b], perm[b:]


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


def _build(name: str, seed: int, pool: _Pool, spec: _Spec) -> Dataset:
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


def _not_found(name: str, root: pathlib.Path, files: Sequence[pathlib.Path], how: str) -> Exception:
    listed = "\n".join(f"  {f}" for f in files)
    return DatasetNotFoundError(
        f"dataset {name!r} not found under data root {root}.\nExpected file(s):\n{listed}\n"
        f"To get them: {how}\n{_POINT}"
    )


def _load_digits(name: str, root: pathlib.Path, seed: int, download: bool) -> _Pool:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    y = d.target.astype(np.int64)
    splits = _permutation_split(_proportional(len(y), (60, 20, 20)), seed)
    return _Pool(x, y, splits, (d.images, y))


def _load_synthetic(name: str, root: pathlib.Path, seed: int, download: bool) -> _Pool:
    """10 blocky class prototypes (4x4 upsampled to 8x8, survives pooling) plus noise."""
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((10, 3, 4, 4)).repeat(2, axis=2).repeat(2, axis=3)
    y = np.arange(1400, dtype=np.int64) % 10
    x = (protos[y] + SYNTHETIC_NOISE * rng.standard_normal((1400, 3, 8, 8))).astype(np.float32)
    return _Pool(torch.from_numpy(x), y, _permutation_split((1000, 200, 200), seed), (x, y))


def _read_idx(path: pathlib.Path, magic: int, ndim: int) -> np.ndarray:
    """Parse an IDX file (gzipped or not): big-endian magic, ``ndim`` dims, uint8 data."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetCorruptError(f"cannot read IDX file {path}: {e}") from e
    head = 4 * (1 + ndim)
    if len(raw) < head:
        raise DatasetCorruptError(f"IDX file {path} is truncated ({len(raw)} bytes)")
    got, *dims = (int(v) for v in np.frombuffer(raw, ">i4", count=1 + ndim))
    if got != magic:
        raise DatasetCorruptError(f"IDX file {path} has magic number {got}, expected {magic}")
    if len(raw) - head != int(np.prod(dims)):
        raise DatasetCorruptError(f"IDX file {path}: header says shape {tuple(dims)} but "
                                  f"{len(raw) - head} data bytes follow")
    return np.frombuffer(raw, np.uint8, offset=head).reshape(dims).copy()


def _load_mnist10k(name: str, root: pathlib.Path, seed: int, download: bool) -> _Pool:
    folder = root / "MNIST" / "raw"
    stems = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    found = {s: next((p for p in (folder / f"{s}.gz", folder / s) if p.is_file()), None)
             for s in stems}
    missing = [folder / f"{s}.gz" for s, p in found.items() if p is None]
    if missing:
        how = ("these are the official MNIST test files (un-gzipped copies are accepted too); "
               + _ONLINE.format(name="mnist") + " saves them in this layout.")
        raise _not_found(name, root, missing, how)
    images = _read_idx(found[stems[0]], 2051, 3)  # type: ignore[arg-type]  # checked above
    labels = _read_idx(found[stems[1]], 2049, 1)  # type: ignore[arg-type]
    if images.shape[1:] != (28, 28) or len(images) != len(labels) or labels.max(initial=0) > 9:
        raise DatasetCorruptError(
            f"MNIST files in {folder} disagree: images {images.shape}, labels {labels.shape} "
            f"(max label {labels.max(initial=0)}); expected (N, 28, 28) images, N labels in 0..9"
        )
    return _pooled(name, images[:, None], labels, (7, 1, 2), seed, folder)


def _load_cifar14k(name: str, root: pathlib.Path, seed: int, download: bool) -> _Pool:
    path = root / "cifar10-subset.npz"
    if not path.is_file():
        how = ("it is a local file (real CIFAR-10 images packed as x_train (4000, 32, 32, 3), "
               "x_test (10000, 32, 32, 3) uint8 plus y_train, y_test) that cannot be downloaded; "
               "copy cifar10-subset.npz into the data root.")
        raise _not_found(name, root, [path], how)
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with open(path, "rb") as fh:  # np.load leaks its own handle when the zip is bad
            z = np.load(fh, allow_pickle=False)
            lacking = sorted(set(keys) - set(getattr(z, "files", ())))
            arrays = [] if lacking else [z[k] for k in keys]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DatasetCorruptError(f"cannot read {path}: {e}") from e
    if lacking:
        raise DatasetCorruptError(f"{path} lacks the array(s) {lacking}; expected {keys}")
    xa, ya, xb, yb = arrays
    for xs, ys in ((xa, ya), (xb, yb)):
        if (xs.dtype != np.uint8 or xs.shape[1:] != (32, 32, 3) or ys.shape != xs.shape[:1]
                or ys.dtype.kind not in "iu" or (ys.size and not 0 <= ys.min() <= ys.max() <= 9)):
            raise DatasetCorruptError(
                f"{path}: expected uint8 (N, 32, 32, 3) images with N integer labels in 0..9, "
                f"got {xs.dtype} {xs.shape} and {ys.dtype} {ys.shape}"
            )
    x = np.concatenate([xa, xb]).transpose(0, 3, 1, 2)
    return _pooled(name, x, np.concatenate([ya, yb]), (10, 1, 3), seed, path)


def _pooled(name: str, x: np.ndarray, y: np.ndarray, parts: tuple[int, int, int], seed: int,
            where: pathlib.Path) -> _Pool:
    """Pool of ``x`` (N, C, H, W) uint8 split by proportions ``parts`` of N."""
    counts = _proportional(len(y), parts)
    if min(counts) < 1:
        raise DatasetCorruptError(f"{where}: only {len(y)} images, too few to split {parts}")
    x, y = np.ascontiguousarray(x), y.astype(np.int64)
    return _Pool(torch.from_numpy(x), y, _permutation_split(counts, seed), (x, y))


_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR10 = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
# name -> (torchvision class, folder under root, files torchvision needs, layout of ``.data``)
_TORCHVISION: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "mnist": ("MNIST", "MNIST/raw", _IDX, "NHW"),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw", _IDX, "NHW"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", _CIFAR10, "NHWC"),
    "cifar100": ("CIFAR100", "cifar-100-python", ("train", "test", "meta"), "NHWC"),
    "svhn": ("SVHN", ".", ("train_32x32.mat", "test_32x32.mat"), "NCHW"),
}


def _open_torchvision(name: str, root: pathlib.Path, download: bool) -> list[Any]:
    """Instantiate the official train and test sets, mapping torchvision's errors to ours."""
    import torchvision.datasets as tvd

    cls_name, sub, files, _ = _TORCHVISION[name]
    cls = getattr(tvd, cls_name)
    kws: list[dict[str, object]] = (
        [{"split": "train"}, {"split": "test"}] if name == "svhn"
        else [{"train": True}, {"train": False}]
    )
    try:
        return [cls(str(root), download=download, **kw) for kw in kws]
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, pickle.UnpicklingError) as e:
        folder = root / sub
        missing = [folder / f for f in files if not (folder / f).is_file()]
        if not missing:
            raise DatasetCorruptError(
                f"dataset {name!r}: files in {folder} exist but torchvision cannot load them "
                f"({e}); delete them and download again"
            ) from e
        how = _ONLINE.format(name=name) + "."
        if download:
            how = f"the download failed ({e}); retry online, or copy the files by hand."
        if name == "mnist" and list(folder.glob("t10k-images-idx3-ubyte*")):
            how += " With only the 10,000 test images, use the dataset 'mnist-10k' instead."
        raise _not_found(name, root, missing, how) from e


def _as_nchw(data: Any, layout: str) -> np.ndarray:
    a = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if layout == "NHW":
        a = a[:, None]
    elif layout == "NHWC":
        a = a.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(a, dtype=np.uint8)


def _load_torchvision(name: str, root: pathlib.Path, seed: int, download: bool) -> _Pool:
    layout = _TORCHVISION[name][3]
    train, test = _open_torchvision(name, root, download)
    xs = [_as_nchw(ds.data, layout) for ds in (train, test)]
    ys = [np.asarray(ds.labels if name == "svhn" else ds.targets, np.int64) for ds in (train, test)]
    n_train, n_test = len(ys[0]), len(ys[1])
    if n_train <= VAL_SIZE:
        raise DatasetCorruptError(f"{name!r} under {root}: only {n_train} training images, "
                                  f"need more than the {VAL_SIZE} held out for validation")
    perm = np.random.default_rng(seed).permutation(n_train).astype(np.int64)
    splits = (perm[VAL_SIZE:], perm[:VAL_SIZE], np.arange(n_train, n_train + n_test))
    x, y = np.concatenate(xs), np.concatenate(ys)
    return _Pool(torch.from_numpy(x), y, splits, (x, y))


_SPECS: dict[str, _Spec] = {
    "digits": _Spec(_load_digits, 10, None, None, (1, 16, 16)),
    "synthetic": _Spec(_load_synthetic, 10, None, None, (3, 8, 8)),
    "mnist-10k": _Spec(_load_mnist10k, 10, MNIST_MEAN, MNIST_STD, (1, 28, 28)),
    "cifar10-14k": _Spec(
        _load_cifar14k, 10, CIFAR10_MEAN, CIFAR10_STD, (3, 32, 32), augment=True
    ),
    "mnist": _Spec(_load_torchvision, 10, MNIST_MEAN, MNIST_STD, (1, 28, 28)),
    "fashion-mnist": _Spec(_load_torchvision, 10, (0.2860,), (0.3530,), (1, 28, 28)),
    "cifar10": _Spec(
        _load_torchvision, 10, CIFAR10_MEAN, CIFAR10_STD, (3, 32, 32), augment=True
    ),
    "cifar100": _Spec(
        _load_torchvision, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), (3, 32, 32),
        augment=True,
    ),
    "svhn": _Spec(
        _load_torchvision, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), (3, 32, 32)
    ),
}
