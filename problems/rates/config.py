"""The configuration of a Neyman-Pearson run: every CLI flag of ``python -m problems.rates neyman-pearson``.

The fields every rate-constrained trainer shares (model, optimizers, proxy, choice of the returned
model) are those of :class:`~problems.common.rates.config.RateTrainConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from problems.common.rates.config import RateTrainConfig

__all__ = ["NeymanPearsonConfig"]


class NeymanPearsonConfig(RateTrainConfig):
    """A Neyman-Pearson run: minimise the false-negative rate s.t. FPR <= alpha
    (``python -m problems.rates neyman-pearson``)."""

    alpha: float = Field(default=0.05, gt=0, lt=1, description="bound on the false-positive rate")
    dual_lr: float = Field(
        default=5.0, gt=0, description="dual learning rate (the FPR multiplier settles near 5-10 on adult)"
    )
    dataset: Literal["adult", "breast-cancer"] = Field(default="adult", description="data set")
    out: Path = Field(default=Path("runs/neyman-pearson"), description="output directory")
