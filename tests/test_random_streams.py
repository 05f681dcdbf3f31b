"""``n2n_env.random_streams``: a saved state puts every stream back where it was.

A resumed teacher, fine-tuning or pruning loop is only the same run if all four streams
(batch order, augmentation, torch's global CPU stream, the GPU's) continue exactly; a
stream left out shows as a resumed run that quietly differs from the unbroken one.
"""

from __future__ import annotations

import io

import pytest
import torch

from n2n_env.random_streams import STREAMS, TrainingStreams

CPU = torch.device("cpu")


def draws(streams: TrainingStreams) -> tuple[torch.Tensor, ...]:
    """One draw from each stream, as a training step makes them."""
    return (torch.randperm(50, generator=streams.shuffle),
            torch.rand(4, generator=streams.augment, device=streams.device),
            torch.rand(4))


def same(left: tuple[torch.Tensor, ...], right: tuple[torch.Tensor, ...]) -> bool:
    return all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(left, right, strict=True))


def test_a_restored_state_repeats_every_streams_draws_after_a_checkpoint_file() -> None:
    streams = TrainingStreams.seeded(CPU, 3, 4)
    draws(streams)  # the epochs before the checkpoint
    buffer = io.BytesIO()
    torch.save(streams.state(), buffer)
    unbroken = draws(streams)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert sorted(saved) == sorted(STREAMS[:3])  # no GPU stream on the CPU
    assert all(t.device == CPU and t.dtype == torch.uint8 for t in saved.values())
    resumed = TrainingStreams.seeded(CPU, 3, 4)  # a fresh process: seeded, then restored
    torch.manual_seed(99)  # whatever the global stream did meanwhile
    resumed.restore(saved)
    assert same(draws(resumed), unbroken)


@pytest.mark.parametrize("left_out", STREAMS[:3])
def test_each_stream_is_restored(left_out: str) -> None:
    """Restoring all but one stream makes that stream's draw differ: each one counts."""
    streams = TrainingStreams.seeded(CPU, 3, 4)
    saved = streams.state()
    unbroken = draws(streams)
    other = TrainingStreams.seeded(CPU, 30, 40).state()
    torch.rand(7)
    mixed = {name: other[name] if name == left_out else state
             for name, state in saved.items()}
    streams.restore(mixed)
    resumed = draws(streams)
    for index, name in enumerate(STREAMS[:3]):
        assert torch.equal(resumed[index], unbroken[index]) == (name != left_out), name


def test_seeds_choose_the_shuffle_and_augment_streams_separately() -> None:
    a, b = TrainingStreams.seeded(CPU, 1, 2), TrainingStreams.seeded(CPU, 1, 5)
    assert torch.equal(a.shuffle.get_state(), b.shuffle.get_state())
    assert not torch.equal(a.augment.get_state(), b.augment.get_state())


def test_a_state_missing_a_stream_is_refused_by_name() -> None:
    streams = TrainingStreams.seeded(CPU, 0, 0)
    state = streams.state()
    del state["augment"]
    with pytest.raises(KeyError, match="lacks augment; it holds shuffle, torch"):
        streams.restore(state)


def test_on_a_gpu_the_device_stream_is_saved_and_restored(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA branch, on a machine without one: the device's stream is read from and
    written to that very device, and a CPU-made state leaves it alone."""
    gpu = torch.device("cuda", 1)
    calls: list[tuple[str, object]] = []
    cuda_state = torch.arange(8, dtype=torch.uint8)
    monkeypatch.setattr(torch.cuda, "get_rng_state",
                        lambda device: calls.append(("get", device)) or cuda_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda state, device: calls.append(("set", device, state)))
    streams = TrainingStreams(torch.Generator().manual_seed(0), torch.Generator(), gpu)
    state = streams.state()
    assert state["cuda"] is cuda_state and calls == [("get", gpu)]
    streams.restore(state)
    assert calls[1] == ("set", gpu, cuda_state)
    del state["cuda"]
    streams.restore(state)
    assert len(calls) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_gpu_state_round_trips_on_a_gpu() -> None:
    gpu = torch.device("cuda", 0)
    streams = TrainingStreams.seeded(gpu, 3, 4)
    saved = streams.state()
    assert saved["augment"].device == CPU and saved["cuda"].device == CPU
    unbroken = draws(streams), torch.rand(4, device=gpu)
    streams.restore(saved)
    assert same(draws(streams), unbroken[0])
    assert torch.equal(torch.rand(4, device=gpu), unbroken[1])
