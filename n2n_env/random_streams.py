"""The random streams of a training loop, saved with its checkpoints so that a resume is exact.

A teacher's training, a student's fine-tuning and a pruning loop each save their state
after every epoch or step, and a resumed loop must go on exactly as the unbroken one
would have: same batches, same augmentations, same draws from torch's global stream
(weight initialisation of rebuilt layers, dropout). Four streams decide that:

* ``shuffle``: a CPU generator that orders the training examples into batches;
* ``augment``: a generator on the training device for random crops and flips;
* ``torch``: torch's global CPU stream;
* ``cuda``: the device's global CUDA stream, when training on a GPU.

:class:`TrainingStreams` holds the first two, and its :meth:`~TrainingStreams.state` and
:meth:`~TrainingStreams.restore` save and put back all four as CPU tensors, which a
checkpoint stores and reads back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

__all__ = ["STREAMS", "TrainingStreams"]

STREAMS = ("shuffle", "augment", "torch", "cuda")
"""The names :meth:`TrainingStreams.state` uses, in this order (``cuda`` only on a GPU)."""


@dataclass(frozen=True)
class TrainingStreams:
    """The generators a training loop draws from, on the device it trains on."""

    shuffle: torch.Generator
    """On the CPU: the order of the training examples, batch by batch."""
    augment: torch.Generator
    """On the training device: random crops and flips of each batch."""
    device: torch.device
    """The training device: its global CUDA stream is saved and restored with the others."""

    @classmethod
    def seeded(cls, device: torch.device, shuffle_seed: int,
               augment_seed: int) -> TrainingStreams:
        """Fresh streams: ``shuffle`` seeded with ``shuffle_seed`` and ``augment`` with
        ``augment_seed`` (the global streams are the caller's to seed)."""
        return cls(torch.Generator().manual_seed(shuffle_seed),
                   torch.Generator(device=device).manual_seed(augment_seed), device)

    def state(self) -> dict[str, torch.Tensor]:
        """Every stream's state as a CPU tensor, named as in :data:`STREAMS`."""
        state = {"shuffle": self.shuffle.get_state(), "augment": self.augment.get_state().cpu(),
                 "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def restore(self, state: Mapping[str, torch.Tensor]) -> None:
        """Put back what :meth:`state` returned. A state saved on the CPU has no ``cuda``
        stream; restored on a GPU, that stream is left as it is."""
        missing = [name for name in STREAMS[:3] if name not in state]
        if missing:
            raise KeyError(f"random-stream state lacks {', '.join(missing)}; it holds "
                           f"{', '.join(sorted(state)) or 'nothing'}")
        self.shuffle.set_state(state["shuffle"])
        self.augment.set_state(state["augment"].cpu())  # a CUDA generator's too: CPU bytes
        torch.set_rng_state(state["torch"])
        if self.device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], self.device)
