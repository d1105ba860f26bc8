"""Scoring models for binary rate-constrained problems: a score per example, positive iff > 0."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["ModelKind", "Scorer", "build_scorer"]

ModelKind = Literal["logistic", "mlp"]


class Scorer(nn.Module):
    """Wraps a network with a single output so that it returns scores of shape ``(n,)``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network(inputs).reshape(-1)


def build_scorer(kind: ModelKind, num_features: int, hidden: int = 64, depth: int = 1) -> Scorer:
    """A logistic-regression model (``Linear(d, 1)``) or an MLP with ``depth`` ReLU layers of ``hidden`` units.

    The logistic model starts at :math:`w = 0, b = 0`, as scikit-learn's solvers do: its loss is convex,
    so the start changes the path only, and a full-batch run no longer depends on the seed. The MLP
    keeps PyTorch's random initialisation (a zero start would leave its hidden units identical).

    Raises:
        ValueError: An unknown ``kind`` or non-positive sizes.
    """
    if num_features < 1:
        raise ValueError(f"num_features must be >= 1, got {num_features}")
    if kind == "logistic":
        linear = nn.Linear(num_features, 1)
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)
        return Scorer(linear)
    if kind == "mlp":
        if hidden < 1 or depth < 1:
            raise ValueError(f"hidden and depth must be >= 1, got hidden={hidden}, depth={depth}")
        layers: list[nn.Module] = []
        width = num_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        return Scorer(nn.Sequential(*layers))
    raise ValueError(f"model must be 'logistic' or 'mlp', got {kind!r}")
