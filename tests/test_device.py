"""Device selection and per-device settings."""

from __future__ import annotations

import pytest
import torch

from n2n_env import device


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.resolve_device(None) == torch.device("cpu")
    assert device.resolve_device("auto") == torch.device("cpu")
    assert device.resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="'cuda:N'"):
        device.resolve_device("gpu")
    with pytest.raises(device.DeviceUnavailableError, match="CUDA is not available"):
        device.resolve_device("cuda:0")
    with device.autocast_context(torch.device("cpu")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert device.memory_format(torch.device("cpu")) == torch.channels_last
    conv = device.prepare_model(torch.nn.Conv2d(4, 8, 3), torch.device("cpu"))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_inputs_take_the_device_layout_only_when_they_are_images() -> None:
    cpu = torch.device("cpu")
    images = device.in_memory_format(torch.randn(2, 3, 5, 5), cpu)
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert not images.is_contiguous()  # really re-laid out, not merely contiguous
    features = torch.randn(6, 4).t()  # a non-contiguous view
    laid_out = device.in_memory_format(features, cpu)
    assert laid_out.is_contiguous() and torch.equal(laid_out, features)
