"""Tests for n2n_env.data: never the real data folder or the network; fakes live in tmp_path."""

from __future__ import annotations

import gzip
import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from n2n_env import data, data_sources
from n2n_env.data import DatasetCorruptError, DatasetNotFoundError, Split

ALL_NAMES = (
    "digits", "synthetic", "mnist-10k", "cifar10-14k",
    "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn",
)


def _idx_bytes(magic: int, arr: np.ndarray) -> bytes:
    return np.array([magic, *arr.shape], dtype=">i4").tobytes() + arr.astype(np.uint8).tobytes()


def _id_images(n: int, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 images whose first pixel pair encodes the image index (i % 256, i // 256)."""
    x = np.zeros((n, *shape), dtype=np.uint8)
    flat = x.reshape(n, -1)
    flat[:, 0] = np.arange(n) % 256
    flat[:, 1] = np.arange(n) // 256
    return x


def _write_idx_pair(
    folder: pathlib.Path, n: int, prefix: str = "t10k", gz: bool = True, offset: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    images = _id_images(n, (28, 28))
    images[:, 10:20, 10:20] = 255
    labels = ((np.arange(n) + offset) % 10).astype(np.uint8)
    for kind, magic, arr in (("images-idx3", 2051, images), ("labels-idx1", 2049, labels)):
        raw = _idx_bytes(magic, arr)
        path = folder / f"{prefix}-{kind}-ubyte"
        if gz:
            path.with_name(path.name + ".gz").write_bytes(gzip.compress(raw))
        else:
            path.write_bytes(raw)
    return images, labels


def _mnist_ids(split: Split) -> np.ndarray:
    pix = ((split.x[:, 0, 0, :2] * 0.3081 + 0.1307) * 255).round().long().numpy()
    return pix[:, 0] + 256 * pix[:, 1]


def _write_cifar(root: pathlib.Path, n_train: int = 40, n_test: int = 100, **override) -> None:
    x = _id_images(n_train + n_test, (32, 32, 3))  # HWC: id in [0, 0, 0] and [0, 0, 1]
    x[:, 3, 5, 2] = 200  # marker at channel 2, row 3, column 5
    y = np.arange(n_train + n_test, dtype=np.int64) % 10
    arrays = {"x_train": x[:n_train], "y_train": y[:n_train],
              "x_test": x[n_train:], "y_test": y[n_train:]}
    arrays.update(override)
    np.savez_compressed(root / "cifar10-subset.npz", **arrays)


def _cifar_pixels(split: Split) -> np.ndarray:
    mean = torch.tensor(data.CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(data.CIFAR10_STD).view(1, 3, 1, 1)
    return ((split.x * std + mean) * 255).round().long().numpy()


def _splits(ds: data.Dataset) -> tuple[Split, Split, Split]:
    return ds.train, ds.val, ds.test


def test_names_and_unknown_name() -> None:
    assert set(data.names()) == set(ALL_NAMES)
    for call in (data.load, data.download):
        with pytest.raises(ValueError) as info:
            call("imagenet")
        assert all(name in str(info.value) for name in ALL_NAMES)


def test_negative_seed_rejected() -> None:
    with pytest.raises(ValueError, match="seed"):
        data.load("synthetic", seed=-1)


def test_digits_shapes_sizes_and_normalisation() -> None:
    ds = data.load("digits")
    assert ds.input_shape == (1, 16, 16) and ds.num_classes == 10 and not ds.augment
    sizes = [len(s) for s in _splits(ds)]
    assert sum(sizes) == 1797 and abs(sizes[0] - 1078) <= 1
    assert all(abs(n - 359.4) < 1 for n in sizes[1:])
    for s in _splits(ds):
        assert s.x.shape[1:] == (1, 16, 16) and s.x.dtype == torch.float32
        assert s.y.dtype == torch.int64 and set(s.y.tolist()) == set(range(10))
    assert abs(ds.train.x.mean().item()) < 1e-4
    assert abs(ds.train.x.std(correction=0).item() - 1) < 1e-4
    raw = ds.test.x * ds.std[0] + ds.mean[0]  # undoing the stored normalisation gives [0, 1]
    assert raw.min() > -1e-4 and raw.max() < 1 + 1e-4 and raw.max() > 0.9
    again, other = data.load("digits"), data.load("digits", seed=1)
    assert torch.equal(ds.val.x, again.val.x) and ds.fingerprint == again.fingerprint
    assert not torch.equal(ds.val.y, other.val.y) and ds.fingerprint != other.fingerprint
    assert len(ds.fingerprint) == 16 and int(ds.fingerprint, 16) >= 0


def test_synthetic_deterministic_and_learnable() -> None:
    ds = data.load("synthetic", seed=3)
    assert [len(s) for s in _splits(ds)] == [1000, 200, 200] and ds.input_shape == (3, 8, 8)
    all_y = torch.cat([s.y for s in _splits(ds)])
    assert torch.equal(all_y.bincount(), torch.full((10,), 140))
    same, other = data.load("synthetic", seed=3), data.load("synthetic", seed=4)
    assert torch.equal(ds.train.x, same.train.x) and ds.fingerprint == same.fingerprint
    assert not torch.allclose(ds.train.x, other.train.x) and ds.fingerprint != other.fingerprint
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net; extra threads only slow it down on a busy machine
    try:
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64, 10),
        )
        opt = torch.optim.Adam(net.parameters(), 3e-3)
        for _ in range(200):
            idx = torch.randint(0, 1000, (64,))
            loss = F.cross_entropy(net(ds.train.x[idx]), ds.train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = (net(ds.val.x).argmax(1) == ds.val.y).float().mean().item()
    finally:
        torch.set_num_threads(threads)
    assert acc > 0.9  # chance is 0.1


@pytest.mark.parametrize("gz", [True, False])
def test_mnist10k_parse_split_and_fingerprint(tmp_path: pathlib.Path, gz: bool) -> None:
    images, _ = _write_idx_pair(tmp_path / "MNIST" / "raw", 100, gz=gz)
    ds = data.load("mnist-10k", root=tmp_path, seed=0)
    assert ds.input_shape == (1, 28, 28) and ds.mean == (0.1307,) and ds.std == (0.3081,)
    assert [len(s) for s in _splits(ds)] == [70, 10, 20]
    ids = [_mnist_ids(s) for s in _splits(ds)]
    assert sorted(np.concatenate(ids).tolist()) == list(range(100))  # disjoint and complete
    for s, i in zip(_splits(ds), ids, strict=True):
        assert s.y.tolist() == (i % 10).tolist()  # labels stay with their images
        pixels = ((s.x * 0.3081 + 0.1307) * 255).round().squeeze(1).numpy()
        assert np.array_equal(pixels, images[i])
    again = data.load("mnist-10k", root=tmp_path)
    other = data.load("mnist-10k", root=tmp_path, seed=1)
    assert torch.equal(ds.train.x, again.train.x) and ds.fingerprint == again.fingerprint
    assert not np.array_equal(ids[0], _mnist_ids(other.train))
    assert ds.fingerprint != other.fingerprint


def test_mnist10k_fingerprint_is_over_content(tmp_path: pathlib.Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _write_idx_pair(a / "MNIST" / "raw", 100, gz=True)
    _write_idx_pair(b / "MNIST" / "raw", 100, gz=False)
    fp = data.load("mnist-10k", root=a).fingerprint
    assert data.load("mnist-10k", root=b).fingerprint == fp  # same bytes, other file format
    _write_idx_pair(b / "MNIST" / "raw", 100, gz=False, offset=1)  # labels change
    assert data.load("mnist-10k", root=b).fingerprint != fp


def test_mnist10k_full_size_split(tmp_path: pathlib.Path) -> None:
    _write_idx_pair(tmp_path / "MNIST" / "raw", 10_000)
    ds = data.load("mnist-10k", root=tmp_path)
    assert [len(s) for s in _splits(ds)] == [7000, 1000, 2000]


def test_mnist10k_missing_files(tmp_path: pathlib.Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        data.load("mnist-10k", root=tmp_path)
    msg = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert str(tmp_path) in msg and "N2N_DATA" in msg and "download" in msg
    assert isinstance(info.value, FileNotFoundError)


def test_mnist10k_corrupt_files(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "MNIST" / "raw"
    _write_idx_pair(folder, 50)
    images_gz = folder / "t10k-images-idx3-ubyte.gz"
    full = images_gz.read_bytes()
    images_gz.write_bytes(full[: len(full) // 2])
    with pytest.raises(DatasetCorruptError, match=r"t10k-images-idx3-ubyte\.gz"):
        data.load("mnist-10k", root=tmp_path)
    raw = gzip.decompress(full)
    images_gz.write_bytes(gzip.compress(_idx_bytes(2049, np.zeros(3)) + raw[12:]))
    with pytest.raises(DatasetCorruptError, match="magic"):
        data.load("mnist-10k", root=tmp_path)
    images_gz.write_bytes(gzip.compress(raw[:-28]))  # header promises one row more than present
    with pytest.raises(DatasetCorruptError, match="data bytes"):
        data.load("mnist-10k", root=tmp_path)
    images_gz.write_bytes(gzip.compress(_idx_bytes(2051, np.zeros((49, 28, 28)))))
    with pytest.raises(DatasetCorruptError, match="disagree"):
        data.load("mnist-10k", root=tmp_path)


def test_cifar14k_layout_split_and_normalisation(tmp_path: pathlib.Path) -> None:
    _write_cifar(tmp_path)
    ds = data.load("cifar10-14k", root=tmp_path, seed=5)
    assert ds.augment and ds.input_shape == (3, 32, 32) and ds.mean == data.CIFAR10_MEAN
    assert [len(s) for s in _splits(ds)] == [100, 10, 30]  # 10/1/3 of 140
    ids = []
    for s in _splits(ds):
        pix = _cifar_pixels(s)
        assert (pix[:, 2, 3, 5] == 200).all() and (pix[:, 2, 5, 3] == 0).all()  # HWC -> CHW
        i = pix[:, 0, 0, 0] + 256 * pix[:, 1, 0, 0]
        assert s.y.tolist() == (i % 10).tolist()
        ids.append(i)
    assert sorted(np.concatenate(ids).tolist()) == list(range(140))
    again = data.load("cifar10-14k", root=tmp_path, seed=5)
    other = data.load("cifar10-14k", root=tmp_path, seed=6)
    assert torch.equal(again.val.x, ds.val.x) and again.fingerprint == ds.fingerprint
    other_val = _cifar_pixels(other.val)
    other_ids = other_val[:, 0, 0, 0] + 256 * other_val[:, 1, 0, 0]
    assert sorted(ids[1].tolist()) != sorted(other_ids.tolist())
    assert other.fingerprint != ds.fingerprint


def test_cifar14k_missing_and_corrupt(tmp_path: pathlib.Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"cifar10-subset\.npz"):
        data.load("cifar10-14k", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"cifar10-subset\.npz"):
        data.download("cifar10-14k", root=tmp_path)
    path = tmp_path / "cifar10-subset.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DatasetCorruptError, match=r"cifar10-subset\.npz"):
        data.load("cifar10-14k", root=tmp_path)
    np.savez(path, x_train=np.zeros((4, 32, 32, 3), np.uint8), y_train=np.zeros(4, np.int64))
    with pytest.raises(DatasetCorruptError, match="x_test"):
        data.load("cifar10-14k", root=tmp_path)
    _write_cifar(tmp_path, x_train=np.zeros((40, 3, 32, 32), np.uint8))  # CHW, wrong layout
    with pytest.raises(DatasetCorruptError, match="32, 32, 3"):
        data.load("cifar10-14k", root=tmp_path)
    _write_cifar(tmp_path, y_test=np.full(100, 10))
    with pytest.raises(DatasetCorruptError, match="labels"):
        data.load("cifar10-14k", root=tmp_path)


def test_root_resolution_and_env_var(tmp_path: pathlib.Path, monkeypatch) -> None:
    env_root, arg_root = tmp_path / "env", tmp_path / "arg"
    monkeypatch.setenv("N2N_DATA", str(env_root))
    assert data.resolve_root(None) == env_root == data.default_root()
    assert data.resolve_root(arg_root) == arg_root
    _write_idx_pair(env_root / "MNIST" / "raw", 30)
    assert len(data.load("mnist-10k").train) == 21
    with pytest.raises(DatasetNotFoundError, match=str(arg_root)):
        data.load("mnist-10k", root=arg_root)
    monkeypatch.delenv("N2N_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.resolve_root(None) == tmp_path / "xdg" / "n2n" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.default_root() == pathlib.Path.home() / ".cache" / "n2n" / "data"


def test_download_noop_and_local_files(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "nothing-here"
    assert data.download("digits", root=target) == target and not target.exists()
    assert data.download("synthetic", root=target) == target and not target.exists()
    with pytest.raises(DatasetNotFoundError, match="mnist"):
        data.download("mnist-10k", root=target)
    _write_idx_pair(tmp_path / "MNIST" / "raw", 20)
    assert data.download("mnist-10k", root=tmp_path) == tmp_path


def test_torchvision_missing_and_corrupt(tmp_path: pathlib.Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        data.load("cifar10", root=tmp_path, download=False)
    msg = str(info.value)
    assert "cifar-10-batches-py" in msg and "data_batch_1" in msg and str(tmp_path) in msg
    assert "download=True" in msg and "N2N_DATA" in msg
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"):
        (folder / name).write_bytes(b"garbage")
    with pytest.raises(DatasetCorruptError, match="cifar-10-batches-py"):
        data.load("cifar10", root=tmp_path)


def test_torchvision_mnist_from_fake_files(tmp_path: pathlib.Path, monkeypatch) -> None:
    folder = tmp_path / "MNIST" / "raw"
    _write_idx_pair(folder, 40)
    with pytest.raises(DatasetNotFoundError, match="mnist-10k"):
        data.load("mnist", root=tmp_path)  # only the test files: hint at mnist-10k
    _write_idx_pair(folder, 40, gz=False)
    _write_idx_pair(folder, 5010, prefix="train", gz=False, offset=3)
    ds = data.load("mnist", root=tmp_path, seed=2)
    assert [len(s) for s in _splits(ds)] == [10, 5000, 40] and ds.input_shape == (1, 28, 28)
    train_ids, val_ids, test_ids = (_mnist_ids(s) for s in _splits(ds))
    assert sorted([*train_ids, *val_ids]) == list(range(5010))
    assert test_ids.tolist() == list(range(40))  # the official test set, in order
    assert ds.train.y.tolist() == ((train_ids + 3) % 10).tolist()
    assert ds.test.y.tolist() == (test_ids % 10).tolist()
    assert data.load("mnist", root=tmp_path, seed=2).fingerprint == ds.fingerprint
    monkeypatch.setattr(data_sources, "VAL_SIZE", 4999)  # same data and seed, other split indices
    changed = data.load("mnist", root=tmp_path, seed=2)
    assert len(changed.val) == 4999 and changed.fingerprint != ds.fingerprint


def test_split_validation_and_to_device() -> None:
    with pytest.raises(ValueError):
        Split(torch.zeros(3, 1, 2, 2), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError):
        Split(torch.zeros(2, 1, 2, 2), torch.zeros(2))
    ds = data.load("synthetic")
    moved = ds.to("meta")
    assert all(s.x.device.type == "meta" and s.y.device.type == "meta" for s in _splits(moved))
    assert moved.fingerprint == ds.fingerprint and moved.mean == ds.mean
    assert len(moved.val) == 200 and ds.train.x.device.type == "cpu"


def _reference_crop_flip(x: torch.Tensor, seed: int, padding: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = x.shape
    flips = torch.rand(n, generator=g) < 0.5
    offs = torch.randint(0, 2 * padding + 1, (n, 2), generator=g)
    out = torch.empty_like(x)
    for i in range(n):
        canvas = torch.zeros(c, h + 2 * padding, w + 2 * padding, dtype=x.dtype)
        img = x[i].flip(-1) if flips[i] else x[i]
        canvas[:, padding : padding + h, padding : padding + w] = img
        dy, dx = offs[i].tolist()
        out[i] = canvas[:, dy : dy + h, dx : dx + w]
    return out


@pytest.mark.parametrize("padding", [0, 2, 4])
def test_random_crop_flip_matches_reference(padding: int) -> None:
    x = torch.randn(32, 3, 6, 10)
    before = x.clone()
    out = data.random_crop_flip(x, torch.Generator().manual_seed(7), padding=padding)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.equal(x, before)
    assert torch.equal(out, _reference_crop_flip(x, 7, padding))


def test_random_crop_flip_flips_and_shifts() -> None:
    x = torch.arange(1.0, 64 * 2 * 5 * 7 + 1).view(64, 2, 5, 7)  # all values distinct, no zeros
    out = data.random_crop_flip(x, torch.Generator().manual_seed(0), padding=0)
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)]
    assert all(f or torch.equal(o, xi) for f, o, xi in zip(flipped, out, x, strict=True))
    assert 10 < sum(flipped) < 54
    expected = torch.rand(64, generator=torch.Generator().manual_seed(0)) < 0.5
    assert flipped == expected.tolist()
    out = data.random_crop_flip(x, torch.Generator().manual_seed(1), padding=3)
    shifts = set()
    for o, xi in zip(out, x, strict=True):
        padded = {f: F.pad(xi.flip(-1) if f else xi, (3, 3, 3, 3)) for f in (False, True)}
        matches = [
            (f, dy, dx) for f in (False, True) for dy in range(7) for dx in range(7)
            if torch.equal(o, padded[f][:, dy : dy + 5, dx : dx + 7])
        ]
        assert len(matches) == 1
        shifts.add(matches[0][1:])
    assert len(shifts) > 10  # offsets vary per sample
    again = data.random_crop_flip(x, torch.Generator().manual_seed(1), padding=3)
    assert torch.equal(out, again)
    assert data.random_crop_flip(x).shape == x.shape  # global RNG works too


@pytest.mark.parametrize("name", data.names())
def test_info_matches_loaded_shape_without_reading_files(name: str) -> None:
    shape, classes = data.info(name)
    assert len(shape) == 3 and classes in (10, 100)
    if name in ("digits", "synthetic"):
        loaded = data.load(name)
        assert (loaded.input_shape, loaded.num_classes) == (shape, classes)
