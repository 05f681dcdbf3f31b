"""Timing one part of a forward pass, or a whole model, on one device: the torch side of
:mod:`n2n_env.latency`.

A part (a layer, a projection shortcut, a residual addition) is built on its own, through
:func:`n2n_env.build._make_layer` for layers (so every layer kind the architecture model
knows is timed the same way as ``build_model`` builds it), in eval mode, and fed a random
batch of its input shape, laid out and computed as n2n's evaluators run inference:
channels-last tensors, float32 on the CPU and bf16 autocast on CUDA, no gradients. After
``warmup`` calls, each sample times enough back-to-back calls to last at least
:data:`MIN_SAMPLE_SECONDS` (so a 5-microsecond ReLU is not lost in the timer's resolution)
and reports milliseconds per call; CUDA is synchronised before the clock is read. On the
CPU the intra-op thread count is fixed while timing (``threads``) and restored after.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from n2n_env.arch import Architecture, Layer
from n2n_env.build import _conv_class, _make_layer, build_model
from n2n_env.device import autocast_context, in_memory_format, prepare_model

if TYPE_CHECKING:
    from n2n_env.latency import LatencyPart

MIN_SAMPLE_SECONDS = 2e-3
"""Shortest wall time of one timed sample; quick parts repeat their call to fill it. On
the loaded 2-core machine, 2 ms samples moved a resnet18 table's parts by a median 3-11%
between two runs where 0.5 ms samples moved them by 18-31% (docs/benchmarks.md)."""
MAX_CALLS_PER_SAMPLE = 10_000
TIMING_METHOD = "median-of-samples/v1"
"""Names this module's way of timing in the table's keys: a change to it must change this."""


@dataclass(frozen=True)
class TimingSetup:
    """Where and how to time: a resolved torch device (``cpu``, ``cuda:0``), the batch
    size, the timed samples (``repeats``) after ``warmup`` untimed calls, and the CPU
    threads while timing (None: leave torch's count as it is)."""

    device: str
    batch_size: int
    repeats: int
    warmup: int
    threads: int | None


def conditions(setup: TimingSetup) -> dict[str, Any]:
    """Everything besides the part itself that changes its timing under ``setup``: the
    device's kind and model, the batch size, the CPU threads, torch's version, the
    precision and memory layout, and this module's method. Repeats and warm-up are not
    among them: they change the noise of a timing, not what is timed."""
    device = torch.device(setup.device)
    threads = None
    if device.type == "cpu":
        threads = setup.threads or torch.get_num_threads()
    return {"device": device.type, "device_name": device_name(device),
            "batch_size": setup.batch_size, "threads": threads, "torch": torch.__version__,
            "precision": "bf16-autocast" if device.type == "cuda" else "float32",
            "memory_format": "channels_last", "method": TIMING_METHOD}


def device_name(device: torch.device) -> str:
    """The model of ``device``: the GPU's name, or the CPU's as the kernel reports it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown cpu"


def time_part(part: LatencyPart, setup: TimingSetup) -> list[float]:
    """``setup.repeats`` samples of one forward call of ``part``, in milliseconds."""
    device = torch.device(setup.device)
    generator = torch.Generator().manual_seed(0)

    def batch(shape: tuple[int, ...]) -> torch.Tensor:
        inputs = torch.randn(setup.batch_size, *shape, generator=generator)
        return in_memory_format(inputs.to(device), device)

    if part.op == "add":
        left, right = batch(part.input_shape), batch(part.input_shape)
        return _samples(lambda: left + right, device, setup)
    module = _module(part, device)
    inputs = batch(part.input_shape)
    return _samples(lambda: module(inputs), device, setup)


def time_model(arch: Architecture, setup: TimingSetup) -> list[float]:
    """``setup.repeats`` samples of one forward call of the whole ``build_model(arch)``,
    in milliseconds (what the per-part estimate is compared with)."""
    device = torch.device(setup.device)
    model = prepare_model(build_model(arch, device=device), device).eval()
    inputs = torch.randn(setup.batch_size, *arch.input_shape,
                         generator=torch.Generator().manual_seed(0))
    inputs = in_memory_format(inputs.to(device), device)
    return _samples(lambda: model(inputs), device, setup)


def _module(part: LatencyPart, device: torch.device) -> nn.Module:
    config = json.loads(part.config)
    if part.op == "projection":
        module: nn.Module = nn.Sequential(
            _conv_class(part.input_shape[0], 1, config["stride"], 0)(
                part.input_shape[0], config["out"], 1, config["stride"], bias=False),
            nn.BatchNorm2d(config["out"]))
    elif part.op == "layer":
        module = _make_layer(Layer(**config), part.input_shape, "cpu")
    else:
        raise ValueError(f"unknown latency part {part.op!r}; allowed: layer, projection, add")
    return prepare_model(module, device).eval()


def _samples(call: Callable[[], Any], device: torch.device, setup: TimingSetup) -> list[float]:
    """Warm up, choose the calls per sample, then time ``setup.repeats`` samples."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with _threads(device, setup.threads), torch.inference_mode(), autocast_context(device):
        for _ in range(setup.warmup):
            call()
        sync()
        start = time.perf_counter()
        call()
        sync()
        once = max(time.perf_counter() - start, 1e-7)
        calls = min(MAX_CALLS_PER_SAMPLE, max(1, math.ceil(MIN_SAMPLE_SECONDS / once)))
        samples = []
        for _ in range(setup.repeats):
            start = time.perf_counter()
            for _ in range(calls):
                call()
            sync()
            samples.append((time.perf_counter() - start) * 1000.0 / calls)
    return samples


@contextlib.contextmanager
def _threads(device: torch.device, threads: int | None) -> Iterator[None]:
    """Run with ``threads`` intra-op CPU threads (on the CPU only), restoring the count."""
    if device.type != "cpu" or threads is None or threads == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
