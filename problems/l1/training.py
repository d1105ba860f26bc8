"""Training loops shared by the l1 methods: mini-batches, evaluation, and cost accounting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import cooper_like as cooper
from cooper_like.optim.proximal import L1Strength, ProximalL1
from problems.l1.budget import Budget
from problems.l1.models import density, l1_norm, layer_densities, penalised_weights
from problems.l1.problem import CrossEntropy
from problems.scaffold.datasets import DataSplit

__all__ = [
    "Evaluation",
    "epoch_batches",
    "evaluate",
    "proximal_sgd",
    "train_epochs",
    "train_with_penalty",
]


def proximal_sgd(
    model: nn.Module, lr: float, momentum: float, strength: L1Strength, *, layerwise_groups: bool = True
) -> ProximalL1:
    """SGD on every parameter, soft-thresholding the ``nn.Linear`` weights (one proximal group per layer)."""
    sgd = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, dampening=momentum)
    weights = penalised_weights(model)
    params: list[torch.Tensor] | list[list[torch.Tensor]] = weights if layerwise_groups else [weights]
    return ProximalL1(sgd, params, strength)


def epoch_batches(num_samples: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    r"""Mini-batch indices of one epoch, a function of ``(seed, epoch)`` only; one batch when it covers all.

    A random permutation of the :math:`n` examples is cut into :math:`k = \lceil n / B \rceil` batches of
    equal size (:math:`\lfloor n/k \rfloor` or :math:`\lceil n/k \rceil` examples), not into :math:`k - 1`
    batches of :math:`B` and a remainder: a small last batch has a noisier gradient, and with proximal
    steps that noise turns zero weights on, so every epoch (and the returned model) would end on the
    densest iterate (MNIST-5k, :math:`B = 128`: 31 batches of 128 and one of 32 gave a final density about
    one point above the run's typical one; now 32 batches of 125).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batch_size >= num_samples:
        return [torch.arange(num_samples)]
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    count = -(-num_samples // batch_size)
    return list(torch.randperm(num_samples, generator=generator).tensor_split(count))


def train_epochs(
    optimizer: cooper.optim.CooperOptimizer,
    data: DataSplit,
    epochs: int,
    batch_size: int,
    seed: int,
    budget: Budget,
    *,
    first_epoch: int = 0,
    after_epoch: Callable[[int], None] | None = None,
) -> None:
    """``epochs`` passes of ``optimizer.roll`` over the training set; every batch is counted in ``budget``."""
    for epoch in range(first_epoch, first_epoch + epochs):
        for batch in epoch_batches(len(data.x_train), batch_size, seed, epoch):
            optimizer.roll({"inputs": data.x_train[batch], "labels": data.y_train[batch]})
            budget.gradients(len(batch))
        if after_epoch is not None:
            after_epoch(epoch)


def train_with_penalty(
    model: nn.Module,
    data: DataSplit,
    strength: L1Strength,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    seed: int,
    budget: Budget,
) -> ProximalL1:
    r"""Proximal SGD on :math:`f + \lambda\|\theta\|_1` (``strength`` = :math:`\lambda`, one or one per layer)."""
    primal = proximal_sgd(model, lr, momentum, strength)
    optimizer = cooper.optim.UnconstrainedOptimizer(cmp=CrossEntropy(model), primal_optimizers=primal)
    train_epochs(optimizer, data, epochs, batch_size, seed, budget)
    return primal


@dataclass(frozen=True)
class Evaluation:
    """A model's measures: training loss, accuracies, density (overall and per layer) and l1 norm."""

    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    density: float
    layer_densities: tuple[float, ...]
    l1_norm: float

    def as_dict(self) -> dict[str, float | list[float]]:
        return {
            "train_loss": self.train_loss,
            "train_accuracy": self.train_accuracy,
            "test_loss": self.test_loss,
            "test_accuracy": self.test_accuracy,
            "density": self.density,
            "layer_densities": list(self.layer_densities),
            "l1_norm": self.l1_norm,
        }


@torch.no_grad()
def loss_and_accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over the whole set (not counted as gradient evaluations)."""
    logits = model(inputs)
    loss = float(nn.functional.cross_entropy(logits, labels))
    return loss, float((logits.argmax(1) == labels).double().mean())


def evaluate(model: nn.Module, data: DataSplit) -> Evaluation:
    """Measure ``model`` on the training and test sets."""
    weights = penalised_weights(model)
    train_loss, train_accuracy = loss_and_accuracy(model, data.x_train, data.y_train)
    test_loss, test_accuracy = loss_and_accuracy(model, data.x_test, data.y_test)
    return Evaluation(
        train_loss,
        train_accuracy,
        test_loss,
        test_accuracy,
        density(weights),
        tuple(layer_densities(weights).tolist()),
        l1_norm(weights),
    )
