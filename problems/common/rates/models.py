r"""Scoring models for binary rate-constrained problems: a score per example, positive iff > 0.

The MLP may read its numerical inputs through :class:`PiecewiseLinearBins`, a fixed encoding built from
the training inputs: every column with more than two distinct values gets ``bins`` extra inputs, one per
interval between consecutive quantiles, each rising linearly from 0 to 1 across its interval. A column
whose most frequent value holds at least half of the rows (Adult's capital gain and loss: about 92% and
95% zeros) gets its quantiles from the other rows, plus a first interval from that value to the
smallest other one, which acts as an "is not the usual value" indicator. A ReLU layer fed with raw
standardised values needs large weights to carve such a spike and the steps above it (the income
jumps at a few capital-gain amounts); with weight decay it cannot, and the encoding gives it those
steps for free.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["ModelKind", "PiecewiseLinearBins", "Scorer", "build_scorer"]

ModelKind = Literal["logistic", "mlp"]


class Scorer(nn.Module):
    """Wraps a network with a single output so that it returns scores of shape ``(n,)``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network(inputs).reshape(-1)


class PiecewiseLinearBins(nn.Module):
    """Appends a piecewise-linear encoding of the numerical columns to the inputs (see the module docstring).

    Args:
        train_inputs: ``(n, d)`` training inputs the quantiles are taken from.
        bins: Quantile intervals per numerical column (fewer when quantiles coincide); must be >= 1.

    Attributes:
        num_outputs: ``d`` plus the number of intervals.
        columns: Per interval, the input column it encodes (a buffer, saved with the model).
        lows: Per interval, its lower end.
        widths: Per interval, its width (> 0).
    """

    columns: torch.Tensor
    lows: torch.Tensor
    widths: torch.Tensor

    def __init__(self, train_inputs: torch.Tensor, bins: int) -> None:
        super().__init__()
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        if train_inputs.dim() != 2 or train_inputs.shape[0] < 1:
            raise ValueError(
                f"train_inputs must be a non-empty (n, d) matrix, got {tuple(train_inputs.shape)}"
            )
        columns, lows, widths = [], [], []
        levels = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)
        for column in range(train_inputs.shape[1]):
            values = train_inputs[:, column].double()
            distinct, counts = torch.unique(values, return_counts=True)
            if distinct.numel() <= 2:  # a one-hot or binary column: nothing to encode
                continue
            mode = distinct[counts.argmax()]
            others = values[values != mode]
            if 2 * others.numel() <= values.numel():
                edges = torch.cat([mode.reshape(1), torch.quantile(others, levels)])
            else:
                edges = torch.quantile(values, levels)
            edges = torch.unique(edges)
            columns += [column] * (edges.numel() - 1)
            lows.append(edges[:-1])
            widths.append(edges[1:] - edges[:-1])
        self.register_buffer("columns", torch.tensor(columns, dtype=torch.long))
        self.register_buffer("lows", torch.cat(lows).float() if lows else torch.zeros(0))
        self.register_buffer("widths", torch.cat(widths).float() if widths else torch.ones(0))
        self.num_outputs = int(train_inputs.shape[1]) + len(columns)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(n, d)`` inputs -> ``(n, d + intervals)``, stored feature-major (like
        :func:`~problems.common.rates.candidates.feature_major`: the next linear layer reads contiguous columns)."""
        by_column = inputs.t()
        encoded = ((by_column[self.columns] - self.lows[:, None]) / self.widths[:, None]).clamp(0.0, 1.0)
        return torch.cat([by_column, encoded]).t()


def build_scorer(
    kind: ModelKind,
    num_features: int,
    hidden: int = 64,
    depth: int = 1,
    numeric_bins: int = 0,
    train_inputs: torch.Tensor | None = None,
) -> Scorer:
    """A logistic-regression model (``Linear(d, 1)``) or an MLP with ``depth`` ReLU layers of ``hidden`` units.

    With ``numeric_bins > 0`` the MLP first appends the :class:`PiecewiseLinearBins` encoding of
    ``train_inputs``' numerical columns to its inputs (the logistic model ignores it).

    The logistic model starts at :math:`w = 0, b = 0`, as scikit-learn's solvers do: its loss is convex,
    so the start changes the path only, and a full-batch run no longer depends on the seed. The MLP
    keeps PyTorch's random initialisation (a zero start would leave its hidden units identical).

    Raises:
        ValueError: An unknown ``kind``, non-positive sizes, or ``numeric_bins > 0`` without ``train_inputs``.
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
        if numeric_bins > 0:
            if train_inputs is None:
                raise ValueError(f"numeric_bins={numeric_bins} needs the training inputs (train_inputs=None)")
            encoding = PiecewiseLinearBins(train_inputs, numeric_bins)
            layers.append(encoding)
            width = encoding.num_outputs
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        return Scorer(nn.Sequential(*layers))
    raise ValueError(f"model must be 'logistic' or 'mlp', got {kind!r}")
