"""Shared helpers for the architecture, transition, feature, zoo and build tests.

Small teachers (width 0.125, 16x16 inputs) keep building and running cheap on a CPU. The
hypothesis strategies are exposed through the session fixture ``small_zoo`` so that test
modules need not import this file. Random teachers are built under a forked, seeded torch
RNG. ``one_thread`` runs a module with one intra-op torch thread (these models are tiny; on a
loaded 2-core machine two threads make every op ~100x slower) and restores the setting after.
"""

from __future__ import annotations

import functools
import os

import pytest
import torch
from hypothesis import strategies as st

from n2n_env import data, recipes, teacher, zoo
from n2n_env.arch import Architecture
from n2n_env.build import N2NNet, build_model

SMALL_WIDTH = 0.125
LEVELS = tuple(level / 10 for level in range(10, 0, -1))
"""The shrink factors 1.0, 0.9, ..., 0.1 (1.0 first, so hypothesis shrinks towards 'keep')."""


SIZES = ((16, 16), (8, 8), (12, 20))
"""Input sizes (H, W) for property tests: the default, the documented minimum, non-square."""


def small_shape(name: str, size: tuple[int, int] = SIZES[0]) -> tuple[int, int, int]:
    """MNIST-like single-channel inputs for the paper's MNIST teachers, RGB for the rest."""
    return (1 if name in ("conv4", "vgg13") else 3, *size)


@functools.cache
def small_teacher(name: str, size: tuple[int, int] = SIZES[0]) -> Architecture:
    return zoo.get(name, small_shape(name, size), num_classes=10, width=SMALL_WIDTH)


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every batch norm non-trivial affine parameters and running statistics, so that
    copying (or failing to copy) them changes the outputs; returns ``model`` in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                size = module.num_features
                module.weight.copy_(0.5 + torch.rand(size, generator=generator))
                module.bias.copy_(0.1 * torch.randn(size, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
                module.num_batches_tracked.fill_(7)
    return model.eval()


def random_model(arch: Architecture, seed: int = 0) -> N2NNet:
    """``build_model(arch)`` with seeded weights and randomized batch norms, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(arch)
    return randomize(model, seed)  # type: ignore[return-value]


@functools.cache
def small_teacher_model(name: str, size: tuple[int, int] = SIZES[0]) -> N2NNet:
    """A shared random teacher model; tests must not modify it."""
    return random_model(small_teacher(name, size), seed=1234)


def batch(arch: Architecture, size: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(size, *arch.input_shape, generator=torch.Generator().manual_seed(seed))


@st.composite
def keep_masks(draw: st.DrawFn, arch: Architecture) -> list[bool]:
    """Keep masks with fixed layers kept and a drawn removal rate (0: keep all, 10: drop all
    removable layers); everything shrinks towards keeping every layer."""
    rate = draw(st.integers(0, 10), label="removal rate")
    return [
        not removable or draw(st.integers(0, 9)) >= rate for removable in arch.removable()
    ]


def factor_lists(count: int) -> st.SearchStrategy[list[float]]:
    return st.lists(st.sampled_from(LEVELS), min_size=count, max_size=count)


class SmallZoo:
    """What the ``small_zoo`` fixture hands to tests."""

    names = zoo.names()
    levels = LEVELS
    sizes = SIZES
    shape = staticmethod(small_shape)
    arch = staticmethod(small_teacher)
    model = staticmethod(small_teacher_model)
    random_model = staticmethod(random_model)
    batch = staticmethod(batch)
    keep_masks = staticmethod(keep_masks)
    factor_lists = staticmethod(factor_lists)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist every worker runs one torch thread: the workers already fill the
    cores, and oversubscribed intra-op threads make each op far slower. ``OMP_NUM_THREADS``
    tells n2n's thread budget (and subprocesses) to keep that count."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def private_n2n_home(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """The test's own ``N2N_HOME`` (``tmp_path/home``: teachers it trains stay out of the
    user's cache and other tests'), and one thread for anything it starts."""
    monkeypatch.setenv("N2N_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path / "home"


@pytest.fixture(scope="session")
def small_zoo() -> type[SmallZoo]:
    return SmallZoo


@pytest.fixture(scope="session")
def synthetic() -> data.Dataset:
    """The generated dataset (10 classes, 3x8x8): real training in tests, no files needed."""
    return data.load("synthetic")


@pytest.fixture(scope="session")
def synthetic_teacher(synthetic: data.Dataset) -> torch.nn.Module:
    """conv4 at width 0.25 trained on ``synthetic`` (about 95% validation accuracy)."""
    arch = zoo.get("conv4", synthetic.input_shape, synthetic.num_classes, width=0.25)
    recipe = recipes.Recipe(epochs=8, lr=0.01, batch_size=64)
    trained = teacher.train_teacher(arch, synthetic, recipe, device="cpu", progress=False)
    assert trained.val_accuracy > 0.8
    return trained.model


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray for the Ray backend tests (2 CPUs, no dashboard), started once and shut
    down when the session ends; the tests that use it skip when Ray is not installed."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()
