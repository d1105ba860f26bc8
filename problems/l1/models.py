r"""Models of the l1 problems and the two measures of a weight vector: :math:`\|\theta\|_1` and density.

The penalised parameters are the *weights* of the ``nn.Linear`` layers; biases are neither penalised
nor counted (as usual for the lasso and in both papers).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

__all__ = [
    "IrisModel",
    "build_model",
    "density",
    "l1_norm",
    "layer_densities",
    "mlp",
    "penalised_weights",
]

IrisModel = Literal["mlp", "logistic"]


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """A ReLU MLP with the given layer sizes, e.g. ``[784, 20, 20, 10]``."""
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least an input and an output size, got {list(sizes)}")
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        if index > 0:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)


def build_model(dataset: str, iris_model: IrisModel = "mlp") -> nn.Sequential:
    """MNIST-5k: MLP 784-20-20-10 (Amakor et al.). Iris: MLP 4-8-3, or multinomial logistic regression."""
    if dataset == "mnist5k":
        return mlp([784, 20, 20, 10])
    if dataset == "iris":
        return mlp([4, 8, 3]) if iris_model == "mlp" else mlp([4, 3])
    raise ValueError(f"dataset must be 'iris' or 'mnist5k', got {dataset!r}")


def penalised_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weight matrix of every ``nn.Linear`` layer, in order (one proximal group per layer)."""
    return [module.weight for module in model.modules() if isinstance(module, nn.Linear)]


@torch.no_grad()
def l1_norm(weights: Sequence[torch.Tensor]) -> float:
    r""":math:`\|\theta\|_1 = \sum_j |\theta_j|` over the penalised weights."""
    return float(sum(float(w.abs().sum()) for w in weights))


@torch.no_grad()
def layer_densities(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    r"""Fraction of non-zero entries of each weight tensor: :math:`\|\theta_{(l)}\|_0 / n_l`."""
    return torch.tensor([float((w != 0).sum()) / w.numel() for w in weights], dtype=torch.float64)


@torch.no_grad()
def density(weights: Sequence[torch.Tensor]) -> float:
    r"""Fraction of non-zero penalised weights, :math:`\|\theta\|_0 / n` (exact zeros only)."""
    nonzero = sum(int((w != 0).sum()) for w in weights)
    return nonzero / sum(w.numel() for w in weights)
