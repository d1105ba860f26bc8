"""The configuration of a feasible-learning run: every CLI flag of ``python -m problems.feasible train``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from problems.scaffold.config import TrainConfig

__all__ = ["FeasibleConfig"]


class FeasibleConfig(TrainConfig):
    """A feasible-learning run: every training example's cross-entropy must be at most ``epsilon``.

    The defaults fit MNIST-5k with an MLP 784-256-10: Adam on the model, gradient ascent on the
    per-example multipliers (sparse, O(batch) per step), multipliers starting at 1.
    """

    epsilon: float = Field(default=0.1, gt=0, description="bound on every training example's cross-entropy")
    dataset: Literal["mnist5k", "digits", "synthetic"] = Field(default="mnist5k", description="data set")
    num_examples: int = Field(
        default=1_000_000, ge=1, description="training examples of the synthetic data set"
    )
    data_seed: int = Field(default=0, ge=0, lt=2**32, description="seed of the synthetic data set")
    model: Literal["mlp", "linear"] = Field(default="mlp", description="classifier")
    hidden: int = Field(default=256, ge=1, description="hidden units of the MLP")
    objective_weight: float = Field(
        default=0.0, ge=0, description="weight of the average loss in the objective (0: pure feasibility)"
    )
    multiplier_init: float = Field(default=1.0, ge=0, description="initial value of every multiplier")
    dual_optimizer: Literal["sgd", "nupi"] = Field(default="sgd", description="multiplier updater")
    dual_lr: float = Field(default=0.5, gt=0, description="dual learning rate")
    nupi_kp: float = Field(default=1.0, ge=0, description="proportional gain of nuPI")
    lr: float = Field(default=1e-3, gt=0, description="Adam learning rate of the model")
    epochs: int = Field(default=30, ge=1, description="passes over the training set")
    batch_size: int = Field(default=128, ge=1, description="mini-batch size")
    log_every: int | None = Field(  # type: ignore[assignment]
        default=None, ge=1, description="log a row every this many steps (default: at the end of every epoch)"
    )
    out: Path = Field(default=Path("runs/feasible"), description="output directory")
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (default: torch's choice)")
