"""Teacher training recipes (paper, appendix 10.2).

Kept apart from :mod:`n2n_env.teacher` (training) and :mod:`n2n_env.checkpoints`
(storage) because both need :class:`Recipe`: checkpoints store the recipe a teacher was
trained with. Pure Python, no torch import.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from n2n_env import validate

MNIST_LIKE = ("mnist", "mnist-10k", "fashion-mnist", "digits", "synthetic")
CIFAR_LIKE = ("cifar10", "cifar100", "cifar10-14k")
SVHN_LIKE = ("svhn",)


@dataclass(frozen=True)
class Recipe:
    """How a teacher is trained (paper, appendix 10.2).

    The paper gives epochs, learning rate, schedule and batch size but not the optimizer;
    we use SGD (momentum 0.9, weight decay 5e-4) for the lr-0.01 recipes and Adam for the
    lr-0.001 recipes, the usual pairing for those learning rates.
    """

    epochs: int
    """Number of passes over the training split."""
    lr: float
    """Initial learning rate."""
    batch_size: int
    """Mini-batch size."""
    milestones: tuple[int, ...] = ()
    """Epoch counts after which the learning rate is multiplied by ``gamma``
    (``MultiStepLR`` semantics; a repeated entry decays twice)."""
    gamma: float = 0.1
    """Learning-rate decay factor applied at each milestone."""
    optimizer: str = "sgd"
    """``"sgd"`` or ``"adam"``."""
    momentum: float = 0.9
    """SGD momentum, or Adam's beta1."""
    weight_decay: float = 5e-4
    """L2 penalty passed to the optimizer."""
    augment: bool = False
    """Random horizontal flip and 4-pixel-padded random crop of each training batch."""

    def __post_init__(self) -> None:
        validate.integer("epochs", self.epochs, minimum=1)
        validate.number("lr", self.lr, above=0)
        validate.integer("batch_size", self.batch_size, minimum=1)
        validate.number("gamma", self.gamma, above=0)
        validate.choice("optimizer", self.optimizer, ("sgd", "adam"))
        validate.number("momentum", self.momentum, at_least=0, at_most=1)
        validate.number("weight_decay", self.weight_decay, at_least=0)
        validate.flag("augment", self.augment)
        object.__setattr__(self, "milestones", tuple(sorted(
            validate.integer("milestone", m, minimum=1) for m in self.milestones)))

    def with_epochs(self, epochs: int) -> Recipe:
        """The same recipe over ``epochs`` epochs, with milestones rescaled proportionally.

        For example the MNIST recipe (50 epochs, decay at 30) with 10 epochs decays at 6.
        Milestones keep their multiplicity, so the final learning rate is unchanged.
        """
        validate.integer("epochs", epochs, minimum=1)
        scaled = tuple(max(1, round(m * epochs / self.epochs)) for m in self.milestones)
        return dataclasses.replace(self, epochs=epochs, milestones=scaled)

    @property
    def final_lr(self) -> float:
        """The learning rate of the last epoch: ``lr`` times ``gamma`` for every milestone
        before the end (a milestone at or after ``epochs`` never takes effect)."""
        return self.lr * self.gamma ** sum(m < self.epochs for m in self.milestones)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form, as stored in checkpoints."""
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Recipe:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**values, "milestones": tuple(values.get("milestones", ()))})


def recipe_for(dataset_name: str) -> Recipe:
    """The paper's teacher recipe for ``dataset_name`` (appendix 10.2).

    MNIST-like data: 50 epochs, lr 0.01 (SGD), x0.1 after epoch 30, batch 64.
    CIFAR-10/100: 150 epochs, lr 0.001 (Adam), x0.1 after epochs 80 and 120, batch 128,
    flip + crop augmentation. SVHN: the CIFAR recipe without augmentation.
    """
    if dataset_name in MNIST_LIKE:
        return Recipe(epochs=50, lr=0.01, batch_size=64, milestones=(30,))
    if dataset_name in CIFAR_LIKE + SVHN_LIKE:
        return Recipe(
            epochs=150, lr=0.001, batch_size=128, milestones=(80, 120), optimizer="adam",
            weight_decay=0.0, augment=dataset_name in CIFAR_LIKE,
        )
    allowed = ", ".join(MNIST_LIKE + CIFAR_LIKE + SVHN_LIKE)
    raise ValueError(f"no teacher recipe for dataset {dataset_name!r}; known: {allowed}")
