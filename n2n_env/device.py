"""Device selection and the few per-device settings shared by all training code.

Everything that trains a network (teachers, students, the RL environments) goes through
these helpers so that one rule holds everywhere: on CUDA use bf16 autocast and
channels-last tensors, on CPU use float32 channels-last tensors on this process's share of
the machine's cores (:mod:`n2n_env.thread_budget`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch

from n2n_env import thread_budget

__all__ = [
    "ALLOWED_DEVICES",
    "DeviceUnavailableError",
    "autocast_context",
    "in_memory_format",
    "inference_batch_size",
    "inference_mode",
    "memory_format",
    "prepare_model",
    "resolve_device",
    "use_all_cores",
]

ALLOWED_DEVICES = "'auto', 'cpu', 'cuda' or 'cuda:N'"
"""Human-readable list of the device strings :func:`resolve_device` accepts."""

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


class DeviceUnavailableError(ValueError):
    """A well-formed device was requested that this machine does not have."""


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Turn a user-facing device spec into a concrete, usable :class:`torch.device`.

    ``None`` and ``"auto"`` pick CUDA when it is available and the CPU otherwise. Any
    other string must be one of :data:`ALLOWED_DEVICES`; asking for CUDA on a machine
    without it raises :class:`DeviceUnavailableError` instead of failing later inside
    the first tensor operation.
    """
    if isinstance(device, torch.device):
        spec = str(device)
    elif device is None:
        spec = "auto"
    elif isinstance(device, str):
        spec = device.strip().lower()
    else:
        raise TypeError(f"device must be a string or torch.device, not {type(device).__name__}")
    if not _DEVICE_RE.match(spec):
        raise ValueError(f"invalid device {device!r}; use {ALLOWED_DEVICES}")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(spec)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device {device!r} requested but CUDA is not available on this machine; "
                "use --device cpu or --device auto"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise DeviceUnavailableError(
                f"device {device!r} requested but only {count} CUDA device(s) exist "
                f"(valid: cuda:0 to cuda:{count - 1})"
            )
    return resolved


def autocast_context(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on CUDA (faster, no loss scaling needed); a no-op context on CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device) -> torch.memory_format:
    """channels-last everywhere: tensor cores on CUDA and oneDNN on the CPU both run
    convolutions faster in it (on the 2-core CPU machine, distillation throughput rose from
    176 to 224 GFLOP/s for conv4 and from 155 to 204 for vgg13; docs/benchmarks.md)."""
    del device
    return torch.channels_last


def in_memory_format(inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``inputs`` laid out as ``device``'s models expect: a batch of images (4-D) in
    :func:`memory_format`, any other tensor (features for a linear layer) as it is."""
    if inputs.dim() != 4:
        return inputs.contiguous()
    return inputs.contiguous(memory_format=memory_format(device))


def inference_batch_size(device: torch.device) -> int:
    """Batch size for forward-only passes (validation accuracy, teacher logits) on ``device``.

    A GPU wants large batches. On the CPU, 1,024 images make every activation a fresh
    allocation of 100-200 MB that the kernel must fault in on each call; batches of 128
    stay in the allocator's reuse range (docs/benchmarks.md measures the difference).
    """
    return 1024 if device.type == "cuda" else 128


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move ``model`` to ``device`` in that device's preferred memory format."""
    return model.to(device=device, memory_format=memory_format(device))


def use_all_cores() -> int:
    """Let torch use this process's share of the cores it may run on; returns the thread
    count.

    Alone, the share is every core (torch's default, the physical cores, leaves
    hyper-threads and cores of a restricted cgroup idle in some containers). Beside other
    n2n processes that train on the CPU, the cores are divided among them, so that they do
    not oversubscribe the machine, and rebalanced as they start and finish
    (:func:`n2n_env.thread_budget.claim`). An explicit setting wins: ``N2N_THREADS=k``
    fixes ``k`` threads, and an ``OMP_NUM_THREADS`` keeps torch's count as it is.
    """
    return thread_budget.claim()


@contextlib.contextmanager
def inference_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``model`` in eval mode without gradients, restoring its previous mode after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)
