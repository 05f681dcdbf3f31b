"""Teacher recipes of the paper's appendix 10.2 (pure Python, no training)."""

from __future__ import annotations

import dataclasses

import pytest

from n2n_env import data, recipes


@pytest.mark.parametrize("name", ["mnist", "mnist-10k", "fashion-mnist", "digits", "synthetic"])
def test_mnist_recipe_matches_paper(name: str) -> None:
    r = recipes.recipe_for(name)
    assert (r.epochs, r.lr, r.batch_size, r.milestones, r.gamma) == (50, 0.01, 64, (30,), 0.1)
    assert (r.optimizer, r.momentum, r.weight_decay, r.augment) == ("sgd", 0.9, 5e-4, False)


@pytest.mark.parametrize(("name", "augment"),
                         [("cifar10", True), ("cifar100", True), ("cifar10-14k", True),
                          ("svhn", False)])
def test_cifar_and_svhn_recipes_match_paper(name: str, augment: bool) -> None:
    r = recipes.recipe_for(name)
    assert (r.epochs, r.lr, r.batch_size, r.milestones) == (150, 0.001, 128, (80, 120))
    assert r.gamma == 0.1
    assert r.optimizer == "adam"
    assert r.augment is augment


def test_every_dataset_has_a_recipe_and_unknown_names_are_refused() -> None:
    for name in data.names():
        assert recipes.recipe_for(name).epochs > 0
    with pytest.raises(ValueError, match=r"known: .*cifar10"):
        recipes.recipe_for("imagenet")


def test_with_epochs_rescales_milestones_proportionally() -> None:
    mnist, cifar = recipes.recipe_for("mnist"), recipes.recipe_for("cifar10")
    assert mnist.with_epochs(10).milestones == (6,)
    assert mnist.with_epochs(100).milestones == (60,)
    assert cifar.with_epochs(15) == dataclasses.replace(cifar, epochs=15, milestones=(8, 12))
    assert cifar.with_epochs(150) == cifar
    with pytest.raises(ValueError, match="epochs"):
        mnist.with_epochs(0)


def test_recipe_validates_and_round_trips_through_a_dict() -> None:
    r = recipes.recipe_for("cifar10")
    assert recipes.Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError, match="optimizer"):
        dataclasses.replace(r, optimizer="rmsprop")
    with pytest.raises(ValueError, match="lr"):
        dataclasses.replace(r, lr=0.0)


@pytest.mark.parametrize(("epochs", "milestones"),
                         [(50, (30,)), (150, (80, 120)), (10, (3, 3)), (10, (10,)), (10, (12,)),
                          (1, ()), (10, (9,))])
def test_final_lr_is_the_rate_of_the_last_epoch_under_the_schedule(
        epochs: int, milestones: tuple[int, ...]) -> None:
    """As the training loops step the schedule: once after every epoch."""
    import torch

    from n2n_env.training import make_optimizer, make_schedule

    recipe = recipes.Recipe(epochs=epochs, lr=0.2, batch_size=8, milestones=milestones,
                            gamma=0.5)
    optimizer = make_optimizer(torch.nn.Linear(2, 2), recipe)
    schedule = make_schedule(optimizer, recipe)
    for _ in range(epochs - 1):
        optimizer.step()
        schedule.step()
    assert recipe.final_lr == pytest.approx(optimizer.param_groups[0]["lr"])
