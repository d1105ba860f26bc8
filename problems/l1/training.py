r"""Training runs shared by the l1 methods (on the shared loop), evaluation, and cost accounting.

Every run cuts an epoch into :math:`k = \lceil n / B \rceil` batches of equal size
(:math:`\lfloor n/k \rfloor` or :math:`\lceil n/k \rceil` examples: the loop's
:func:`~problems.scaffold.loop.epoch_batches` with ``even=True``), not into :math:`k - 1` batches of
:math:`B` and a remainder: a small last batch has a noisier gradient, and with proximal steps that
noise turns zero weights on, so every epoch (and the returned model) would end on the densest iterate
(MNIST-5k, :math:`B = 128`: 31 batches of 128 and one of 32 gave a final density about one point above
the run's typical one; now 32 batches of 125).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import cooper_like as cooper
from cooper_like.optim.proximal import L1Strength, ProximalL1
from problems.l1.budget import Budget
from problems.l1.models import density, l1_norm, layer_densities, penalised_weights
from problems.scaffold.classification import CrossEntropy
from problems.scaffold.datasets import DataSplit
from problems.scaffold.loop import Active, LoopSettings, Moment, Stage, Task, fit

__all__ = [
    "EpochRun",
    "Evaluation",
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


class EpochRun(Task):
    """One inner run of an l1 method: ``epochs`` epochs of ``optimizer.roll`` over the training set.

    Every batch is counted in ``budget`` (its size, in per-example gradients) after its step;
    ``after_epoch`` is called with the (0-based) epoch at the end of every epoch. No rows, no checkpoints.
    """

    def __init__(
        self,
        optimizer: cooper.optim.CooperOptimizer,
        data: DataSplit,
        epochs: int,
        budget: Budget,
        after_epoch: Callable[[int], None] | None = None,
    ) -> None:
        self.optimizer, self.data, self.epochs, self.budget = optimizer, data, epochs, budget
        self.after_epoch = after_epoch
        self.problem = optimizer.cmp
        model = getattr(self.problem, "model", None)
        if not isinstance(model, nn.Module):
            raise TypeError(f"{type(self.problem).__name__} has no model attribute (an nn.Module)")
        self.model = model
        self.num_examples = len(data.x_train)
        self.examples = 0  # size of the batch of the current step

    def stages(self) -> list[Stage]:
        return [Stage("train", self.epochs, self.enter)]

    def enter(self, previous: Active | None) -> Active:
        return Active(self.optimizer, after_step=self.count, after_epoch=self.after_epoch)

    def batch(self, indices: torch.Tensor) -> dict[str, Any]:
        self.examples = len(indices)
        return {"inputs": self.data.x_train[indices], "labels": self.data.y_train[indices]}

    def count(self, moment: Moment) -> None:
        self.budget.gradients(self.examples)


def train_epochs(
    optimizer: cooper.optim.CooperOptimizer,
    data: DataSplit,
    epochs: int,
    batch_size: int,
    seed: int,
    budget: Budget,
    *,
    after_epoch: Callable[[int], None] | None = None,
) -> None:
    """``epochs`` passes of ``optimizer.roll`` over the training set (equal-size batches of a function of
    ``(seed, epoch)``); every batch is counted in ``budget``. ``epochs <= 0`` trains nothing.
    """
    if epochs <= 0:
        return
    settings = LoopSettings(seed=seed, batch_size=batch_size, even_batches=True, show_progress=False)
    fit(EpochRun(optimizer, data, epochs, budget, after_epoch), settings)


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
