"""Where each dataset's raw arrays come from.

scikit-learn's bundled ``digits``, the generated ``synthetic`` set, the local MNIST test
files (``mnist-10k``) and CIFAR-10 subset (``cifar10-14k``), and torchvision's datasets.
Every loader returns a :class:`Pool`: the pooled images and labels, the split indices for a
seed, and the raw arrays to fingerprint. :mod:`n2n_env.data` turns a pool into normalised
tensor splits; missing or unreadable files raise the errors defined here, with a message
that says which file and how to get it.

Pooled local files (``mnist-10k``, ``cifar10-14k``) are split by proportions of the pooled
count: 70/10/20 for ``mnist-10k`` (7,000/1,000/2,000 of the official 10,000) and 10/1/3 for
``cifar10-14k`` (10,000/1,000/3,000 of 14,000).  Validation and test sizes are rounded,
the training split takes the remainder, so other counts (small test files) also work.
torchvision's datasets keep their official test set and hold ``VAL_SIZE`` training
images out for validation.
"""

from __future__ import annotations

import gzip
import pathlib
import pickle
import zipfile
import zlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

VAL_SIZE = 5000
SYNTHETIC_NOISE = 2.0
_ONLINE = "load({name!r}, download=True) or `n2n data download {name}` (needs internet)"
_POINT = (
    "Or point at a folder that already has them: pass root=... / --data-root, or set the "
    "N2N_DATA environment variable (for example to a checkout's ../shared/datasets)."
)


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not under the root; the message says which and how to get them."""


class DatasetCorruptError(ValueError):
    """A dataset file exists but cannot be parsed or fails a shape check; the message names it."""


class Pool(NamedTuple):
    """What a loader returns: pooled images, labels, split indices, arrays to fingerprint."""

    x: torch.Tensor  # uint8 (scaled by 1/255) or float, (N, C, H, W)
    y: np.ndarray
    splits: tuple[np.ndarray, np.ndarray, np.ndarray]
    raw: tuple[np.ndarray, ...]


Loader = Callable[[str, pathlib.Path, int, bool], Pool]


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


def _not_found(name: str, root: pathlib.Path, files: Sequence[pathlib.Path], how: str) -> Exception:
    listed = "\n".join(f"  {f}" for f in files)
    return DatasetNotFoundError(
        f"dataset {name!r} not found under data root {root}.\nExpected file(s):\n{listed}\n"
        f"To get them: {how}\n{_POINT}"
    )


def load_digits(name: str, root: pathlib.Path, seed: int, download: bool) -> Pool:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    y = d.target.astype(np.int64)
    splits = _permutation_split(_proportional(len(y), (60, 20, 20)), seed)
    return Pool(x, y, splits, (d.images, y))


def load_synthetic(name: str, root: pathlib.Path, seed: int, download: bool) -> Pool:
    """10 blocky class prototypes (4x4 upsampled to 8x8, survives pooling) plus noise."""
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((10, 3, 4, 4)).repeat(2, axis=2).repeat(2, axis=3)
    y = np.arange(1400, dtype=np.int64) % 10
    x = (protos[y] + SYNTHETIC_NOISE * rng.standard_normal((1400, 3, 8, 8))).astype(np.float32)
    return Pool(torch.from_numpy(x), y, _permutation_split((1000, 200, 200), seed), (x, y))


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


def load_mnist10k(name: str, root: pathlib.Path, seed: int, download: bool) -> Pool:
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


def load_cifar14k(name: str, root: pathlib.Path, seed: int, download: bool) -> Pool:
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
            where: pathlib.Path) -> Pool:
    """Pool of ``x`` (N, C, H, W) uint8 split by proportions ``parts`` of N."""
    counts = _proportional(len(y), parts)
    if min(counts) < 1:
        raise DatasetCorruptError(f"{where}: only {len(y)} images, too few to split {parts}")
    x, y = np.ascontiguousarray(x), y.astype(np.int64)
    return Pool(torch.from_numpy(x), y, _permutation_split(counts, seed), (x, y))


_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR10 = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
# name -> (torchvision class, folder under root, files torchvision needs, layout of ``.data``)
TORCHVISION: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "mnist": ("MNIST", "MNIST/raw", _IDX, "NHW"),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw", _IDX, "NHW"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", _CIFAR10, "NHWC"),
    "cifar100": ("CIFAR100", "cifar-100-python", ("train", "test", "meta"), "NHWC"),
    "svhn": ("SVHN", ".", ("train_32x32.mat", "test_32x32.mat"), "NCHW"),
}


def open_torchvision(name: str, root: pathlib.Path, download: bool) -> list[Any]:
    """Instantiate the official train and test sets, mapping torchvision's errors to ours."""
    import torchvision.datasets as tvd

    cls_name, sub, files, _ = TORCHVISION[name]
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


def load_torchvision(name: str, root: pathlib.Path, seed: int, download: bool) -> Pool:
    layout = TORCHVISION[name][3]
    train, test = open_torchvision(name, root, download)
    xs = [_as_nchw(ds.data, layout) for ds in (train, test)]
    ys = [np.asarray(ds.labels if name == "svhn" else ds.targets, np.int64) for ds in (train, test)]
    n_train, n_test = len(ys[0]), len(ys[1])
    if n_train <= VAL_SIZE:
        raise DatasetCorruptError(f"{name!r} under {root}: only {n_train} training images, "
                                  f"need more than the {VAL_SIZE} held out for validation")
    perm = np.random.default_rng(seed).permutation(n_train).astype(np.int64)
    splits = (perm[VAL_SIZE:], perm[:VAL_SIZE], np.arange(n_train, n_train + n_test))
    x, y = np.concatenate(xs), np.concatenate(ys)
    return Pool(torch.from_numpy(x), y, splits, (x, y))
