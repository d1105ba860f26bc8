"""Configurations of the l1 runs: every CLI flag is a validated pydantic field.

Options left unset take the defaults of the chosen data set (:data:`TARGET_DEFAULTS`,
:data:`PATH_DEFAULTS`): Iris is trained full batch, MNIST-5k with mini-batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from problems.l1.models import IrisModel
from problems.scaffold.config import TrainConfig

__all__ = [
    "PATH_DEFAULTS",
    "TARGET_DEFAULTS",
    "L1Recipe",
    "PathConfig",
    "PathMethod",
    "TargetConfig",
    "TargetMethod",
]

TargetMethod = Literal["constrained", "lambda-selection", "bisection"]
PathMethod = Literal["continuation", "epsilon-constraint", "weighted-sum"]

FULL_BATCH = 1_000_000

TARGET_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist5k": {"lr": 0.2, "batch_size": 128, "epochs": 60},
    "iris": {"lr": 0.5, "batch_size": FULL_BATCH, "epochs": 500, "dual_warmup_epochs": 50},
}
"""Per-data-set defaults of :class:`TargetConfig` (options given explicitly win)."""

PATH_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist5k": {
        "lr": 0.2,
        "batch_size": 128,
        "epochs": 20,
        "l1_max": 400.0,
        "steps_per_point": 32,
        "dual_lr": 1e-4,
        "corrector_steps": 32,
        "initial_steps": 320,
        "max_predictor_step": 10.0,
    },
    "iris": {
        "lr": 1.0,
        "momentum": 0.0,
        "batch_size": FULL_BATCH,
        "epochs": 300,
        "l1_max": 15.0,
        "steps_per_point": 5,
        "dual_lr": 0.05,
        "scheme": "alternating",
        "corrector_steps": 10,
        "initial_steps": 200,
        "max_predictor_step": 5.0,
    },
}
"""Per-data-set defaults of :class:`PathConfig` (options given explicitly win)."""


class L1Recipe(TrainConfig):
    """The training recipe shared by every method (same model, data and primal optimizer).

    The primal optimizer is SGD with EMA momentum (``dampening = momentum``: the step is ``lr`` times
    an average of gradients, so the proximal fixed points are the stationary points of
    :math:`f + \\lambda\\|\\theta\\|_1`, where :math:`|\\partial_j f| \\le \\lambda` at every zero weight),
    wrapped in :class:`~cooper_like.optim.proximal.ProximalL1`.
    """

    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {}

    dataset: Literal["iris", "mnist5k"] = Field(default="mnist5k", description="data set")
    iris_model: IrisModel = Field(
        default="mlp", description="model on iris: MLP 4-8-3 or logistic regression"
    )
    lr: float = Field(default=0.2, gt=0, description="primal learning rate (default: per data set)")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="EMA momentum of the primal SGD")
    batch_size: int = Field(default=128, ge=1, description="mini-batch size (>= training set: full batch)")
    epochs: int = Field(default=60, ge=1, description="epochs of one training run (default: per data set)")
    anneal_fraction: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="target runs: fraction of the epochs (at the end) with a cosine-annealed lr",
    )
    final_lr_factor: float = Field(default=0.05, gt=0, le=1, description="lr at the end, relative to lr")
    out: Path = Field(default=Path("runs/l1"), description="output directory")

    @model_validator(mode="before")
    @classmethod
    def _dataset_defaults(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        dataset = values.get("dataset", "mnist5k")
        defaults = cls.DEFAULTS.get(dataset, {}) if isinstance(dataset, str) else {}
        return {**defaults, **values}


class TargetConfig(L1Recipe):
    """``python -m problems.l1 target``: a network with a prescribed fraction of non-zero weights."""

    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = TARGET_DEFAULTS

    method: TargetMethod = Field(default="constrained", description="how the sparsity level is reached")
    target_density: float = Field(default=0.1, gt=0, lt=1, description="fraction of non-zero weights")
    layerwise: bool = Field(default=False, description="the target holds for every layer (one lambda each)")
    tolerance: float = Field(
        default=0.01, gt=0, lt=1, description="accepted |density - target| (0.01 = 1 pt)"
    )
    max_runs: int = Field(default=12, ge=1, description="training runs allowed to lambda-selection/bisection")
    dual_lr: float = Field(
        default=1.0,
        gt=0,
        description="constrained: gain eta of the multiplicative dual update lambda <- lambda (density/target)^eta "
        "(per batch)",
    )
    dual_max_step: float = Field(
        default=0.06,
        gt=0,
        description="constrained: largest change of log(lambda) per step (0.06: at most 6%%)",
    )
    dual_warmup_epochs: int = Field(
        default=3, ge=0, description="constrained: epochs before the multiplier starts moving (dense warm-up)"
    )
    refine_epochs: int | None = Field(
        default=None,
        ge=1,
        description="lambda-selection: epochs of each warm-started refinement (default epochs/2)",
    )


class PathConfig(L1Recipe):
    """``python -m problems.l1 path``: the front (training loss vs l1 norm) with ``points`` points."""

    DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = PATH_DEFAULTS

    method: PathMethod = Field(default="continuation", description="how the front is traced")
    points: int = Field(default=30, ge=2, description="points on the front")
    l1_max: float = Field(
        default=400.0, gt=0, description="largest l1 norm of the path (default: per data set)"
    )
    init_scale: float = Field(
        default=0.01, gt=0, le=1, description="the common start: default init times this"
    )
    steps_per_point: int = Field(default=32, ge=1, description="epsilon-constraint: updates per point")
    secant_predictor: bool = Field(
        default=True,
        description="epsilon-constraint: start each point along the secant of the last two, up to the new bound",
    )
    dual_lr: float = Field(default=1e-4, gt=0, description="epsilon-constraint: multiplier step")
    dual_optimizer: Literal["sgd", "nupi"] = Field(
        default="sgd", description="epsilon-constraint: dual updater"
    )
    nupi_kp: float = Field(default=1.0, ge=0, description="epsilon-constraint: proportional gain of nuPI")
    scheme: Literal["simultaneous", "alternating"] = Field(
        default="simultaneous", description="epsilon-constraint: simultaneous or dual-then-primal updates"
    )
    corrector_steps: int = Field(default=10, ge=1, description="continuation: MOPG iterations per corrector")
    initial_steps: int = Field(
        default=200, ge=0, description="continuation: max MOPG iterations to reach the front"
    )
    criticality_tolerance: float = Field(
        default=1e-6, gt=0, description="continuation: stop the initial MOPG phase below this criticality"
    )
    max_predictor_step: float = Field(default=10.0, gt=0, description="continuation: largest predictor step")
    lambda_ratio: float = Field(
        default=1e-3, gt=0, lt=1, description="weighted-sum: smallest lambda / largest lambda of the grid"
    )
