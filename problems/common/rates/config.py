"""The configuration fields every rate-constrained trainer shares.

:class:`RateTrainConfig` holds what every rate-constrained run needs (model, primal and dual
optimizers, proxy, choice of the returned model); :class:`~problems.fairness.config.FairnessConfig`
and :class:`~problems.rates.config.NeymanPearsonConfig` add their own constraint's fields. Fields
left unset whose good value depends on the model (``epochs``, ``batch_size``, ``lr``,
``weight_decay``, ``log_every``, ``dual_lr``) are filled from
:attr:`RateTrainConfig.model_defaults` (a trainer's config may override the table).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, NamedTuple

from pydantic import Field, model_validator

from problems.scaffold.config import TrainConfig

__all__ = ["RateTrainConfig", "ResolvedSettings"]


class ResolvedSettings(NamedTuple):
    """The per-model settings of a :class:`RateTrainConfig`, with its model's defaults applied."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    log_every: int
    dual_lr: float


class RateTrainConfig(TrainConfig):
    """Fields shared by the rate-constrained trainers.

    ``log_every`` is also the interval (in optimisation steps) at which candidate iterates are kept
    for the final choice. A ``batch_size`` at least the training-set size means full batch.
    """

    model_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "logistic": {
            "epochs": 500,
            "batch_size": 1_000_000,
            "lr": 0.1,
            "weight_decay": 0.0,
            "log_every": 10,
            "dual_lr": 0.2,
        },
        "mlp": {
            "epochs": 600,
            "batch_size": 1_000_000,
            "lr": 0.01,
            "weight_decay": 3.0,
            "log_every": 10,
            "dual_lr": 0.2,
        },
    }

    model: Literal["logistic", "mlp"] = Field(default="logistic", description="scoring model")
    hidden: int = Field(default=64, ge=1, description="units per hidden layer of the MLP")
    depth: int = Field(default=1, ge=1, description="hidden layers of the MLP")
    dual_optimizer: Literal["sgd", "nupi"] = Field(default="nupi", description="multiplier updater")
    dual_lr: float | None = Field(default=None, gt=0, description="dual learning rate (default per model)")
    nupi_kp: float = Field(default=2.0, ge=0, description="proportional gain of nuPI")
    nupi_ema_nu: float = Field(default=0.0, ge=0, lt=1, description="EMA coefficient of nuPI")
    proxy: Literal["sigmoid", "hinge"] = Field(
        default="sigmoid", description="proxy of the 0-1 rates for the model"
    )
    temperature: float = Field(default=1.0, gt=0, description="temperature of the proxy")
    beta1: float = Field(default=0.5, ge=0, lt=1, description="Adam beta1 (momentum) of the model")
    lr_schedule: Literal["constant", "cosine"] = Field(
        default="cosine",
        description="primal learning rate: constant, or cosine decay to lr_final_fraction * lr",
    )
    lr_final_fraction: float = Field(
        default=0.05, gt=0, le=1, description="final lr / lr of the cosine schedule"
    )
    selection: Literal["best-feasible", "last", "mixture"] = Field(
        default="best-feasible",
        description="returned model: best feasible candidate, last iterate, m+1 mixture",
    )
    validation_fraction: float = Field(
        default=0.0,
        ge=0,
        lt=0.5,
        description="training data held out to choose the returned model (0: choose on the training data)",
    )
    split_seed: int = Field(default=0, ge=0, lt=2**32, description="seed of the validation split")
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (default: torch's choice)")
    epochs: int | None = Field(  # type: ignore[assignment]
        default=None, ge=1, description="passes over the training data (default per model)"
    )
    batch_size: int | None = Field(  # type: ignore[assignment]
        default=None, ge=1, description="mini-batch size, >= training size for full batch (default per model)"
    )
    lr: float | None = Field(
        default=None, gt=0, description="Adam learning rate of the model (default per model)"
    )
    weight_decay: float | None = Field(
        default=None, ge=0, description="decoupled (AdamW) weight decay of the model (default per model)"
    )
    log_every: int | None = Field(  # type: ignore[assignment]
        default=None,
        ge=1,
        description="keep a candidate and log a row every this many steps (default per model)",
    )

    @model_validator(mode="after")
    def _fill_model_defaults(self) -> RateTrainConfig:
        for name, value in self.model_defaults[self.model].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)  # bypasses validate_assignment (no recursion)
        return self

    def resolved(self) -> ResolvedSettings:
        """The per-model settings with the model defaults applied."""
        values = (self.epochs, self.batch_size, self.lr, self.weight_decay, self.log_every, self.dual_lr)
        if any(value is None for value in values):  # pragma: no cover - the validator fills them
            raise ValueError(f"unresolved defaults in {values}")
        epochs, batch_size, lr, weight_decay, log_every, dual_lr = values
        assert epochs is not None and batch_size is not None and lr is not None
        assert weight_decay is not None and log_every is not None and dual_lr is not None
        return ResolvedSettings(epochs, batch_size, lr, weight_decay, log_every, dual_lr)
