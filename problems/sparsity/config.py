"""The configuration of a sparsity run: every CLI flag is a validated field."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from problems.scaffold.config import TrainConfig, comma_separated

Method = Literal["constrained", "penalized", "magnitude"]

#: Adam learning rate of the weights, per network, for every method (gated training, dense training,
#: fine-tuning): the gated MLP under-fits at 1e-3 in 30 epochs; LeNet's density control degrades at 1e-2.
DEFAULT_WEIGHT_LR = {"mlp": 1e-2, "lenet": 3e-3, "tiny": 1e-3}

#: Fine-tuning of the weights of the gated methods (gates frozen), per network: Adam's learning rate and
#: its schedule over the fine-tuning epochs. The MLP starts at 3e-3 (not its training rate 1e-2: a fresh
#: Adam at 1e-2 kicks the gated network out of its minimum, test accuracy drops 1-2 points in the first
#: fine-tuning epoch) and decays it to 0 along a cosine, so the run ships a converged network, not a
#: random draw of noisy 1e-2 steps. LeNet and the tiny MLP keep their training rate, constant (as before).
#: Magnitude pruning keeps its own protocol (see ``SparsityConfig``).
DEFAULT_FINETUNE_LR = {"mlp": 3e-3, "lenet": 3e-3, "tiny": 1e-3}
#: Dense epochs before the gates of the constrained method start: ``epochs // DEFAULT_WARMUP_DIVISOR``
#: (a third: 10 of the default 30): the gates then start from the trained weights' magnitudes
#: (``gate_init="magnitude"``). Gates trained from the first step (Louizos et al.; ``--warmup-epochs 0
#: --gate-init droprate``) shipped layer-wise models 0.5-1.3 points less accurate than magnitude
#: pruning (validation split, 6 seeds; ``benchmarks/results/sparsity_warm_start.md``).
DEFAULT_WARMUP_DIVISOR = 3

DEFAULT_FINETUNE_SCHEDULE: dict[str, Literal["constant", "cosine"]] = {
    "mlp": "cosine",
    "lenet": "constant",
    "tiny": "constant",
}

#: Whether the weights' Adam of the gated methods runs on through the changes of phase (warm-up ->
#: gated training -> fine-tuning, ``problems.sparsity.train.carry_adam_moments``) or restarts at each,
#: per network (validation split, 6 seeds, ``benchmarks/results/sparsity_warm_start.md``). LeNet
#: continues: restarted at 3e-3 constant, its test accuracy swung by 1.0-1.6 points over the fine-tuning
#: epochs (range, mean over seeds), so a run shipped whichever epoch it stopped at; continued, by 0.1-0.2,
#: at the same accuracy on average (continued - restarted: -0.04, -0.02, +0.25, -0.15 points at four
#: settings). The MLP restarts (fresh Adam at 3e-3 decayed to 0, above): continuing into the fine-tuning
#: lost 0.4-0.5 points at densities 0.5-0.7.
DEFAULT_CONTINUE_ADAM = {"mlp": False, "lenet": True, "tiny": False}


class SparsityConfig(TrainConfig):
    """A training run of the sparsity problem (``python -m problems.sparsity train``).

    The defaults are the recommended setting, the same for every target: a dense warm-up of a third of
    the training epochs (gates held open, no constraint), then the gates start from the warm-up's
    weight magnitudes with the target fraction active (``problems.sparsity.gate_start``); simultaneous
    GDA on the Lagrangian with dual restarts, the multiplier driven by the test-time density, Adam on
    the weights (``DEFAULT_WEIGHT_LR`` per network) and on log α (2e-2, no momentum: β₁ = 0, so the
    gates stop as soon as the multiplier restarts), then 10 epochs of fine-tuning with the gates frozen
    at their test-time values (the same 40-epoch budget as magnitude pruning's 30 + 10). The penalized
    baseline is Louizos et al.'s method as published: no warm-up, gates from ``droprate_init``
    (``--warmup-epochs`` applies to it too when asked).

    Fine-tuning of the gated methods (constrained and penalized) uses Adam at ``DEFAULT_FINETUNE_LR``
    with ``DEFAULT_FINETUNE_SCHEDULE``, fresh or continuing the training's moments
    (``DEFAULT_CONTINUE_ADAM``). For the MLP that is a fresh Adam at 3e-3 decayed to 0
    along a cosine instead of the training rate 1e-2 held constant: the first steps of a fresh Adam at
    1e-2 threw the trained network out of its minimum (train loss 0.007 -> 0.035, test accuracy -1 to -2
    points in the first fine-tuning epoch), and 10 noisy epochs at 1e-2 then shipped whatever epoch the
    run happened to stop at (±1 point from one epoch to the next). With the decay the constrained MLP
    gains about 0.5-1.3 points at densities 0.5-0.7. Magnitude pruning keeps its own, stronger protocol:
    the dense run's Adam continues at the training rate, constant (with the gated methods' cosine from
    3e-3 it loses 2.3 points at density 0.1: 3e-3 is too little to recover from pruning 90 % of the
    weights). LeNet fine-tunes at its training rate 3e-3, constant, continuing the training's Adam (as
    magnitude pruning does). ``--finetune-lr`` / ``--finetune-schedule`` / ``--continue-adam`` override
    the defaults for any method.
    """

    model: Literal["mlp", "lenet", "tiny"] = Field(default="mlp", description="network")
    dataset: Literal["mnist5k", "digits"] = Field(default="mnist5k", description="data set")
    target_density: list[float] = Field(
        default=[0.3], description="target density, or one per layer (comma-separated) with --layerwise"
    )
    layerwise: bool = Field(default=False, description="one density constraint per layer")
    validation: bool = Field(
        default=False,
        description="train on 80%% of the training digits and report the test_* metrics on the other 20%% "
        "(for choosing settings without the test set)",
    )
    granularity: Literal["weight", "neuron"] = Field(
        default="weight", description="gate per weight or per neuron/channel"
    )
    method: Method = Field(
        default="constrained", description="constrained, penalized (lambda * E[L0]) or magnitude pruning"
    )
    lmbda: float = Field(default=0.05, ge=0, description="penalty weight of the penalized method")
    formulation: Literal["lagrangian", "augmented-lagrangian"] = Field(
        default="lagrangian", description="formulation"
    )
    scheme: Literal["simultaneous", "alternating", "extrapolation"] = Field(
        default="simultaneous", description="update scheme"
    )
    dual_optimizer: Literal["sgd", "nupi"] = Field(default="sgd", description="multiplier updater")
    dual_lr: float = Field(default=0.05, gt=0, description="dual learning rate")
    nupi_kp: float = Field(default=1.0, ge=0, description="proportional gain of nuPI")
    strict: Literal["test-time", "expected"] = Field(
        default="test-time", description="density that drives the multiplier"
    )
    dual_restarts: bool = Field(default=True, description="reset a multiplier to 0 when its constraint holds")
    floor_gap: float = Field(
        default=0.005,
        ge=0,
        description="also require density >= target - floor_gap (two-sided control; >= target: one-sided)",
    )
    lr: float | None = Field(
        default=None,
        gt=0,
        description="Adam learning rate of the weights (default: 1e-2 for mlp, 3e-3 for lenet, 1e-3 for tiny)",
    )
    finetune_lr: float | None = Field(
        default=None,
        gt=0,
        description="Adam learning rate of the weights during fine-tuning (default: the gated methods 3e-3 for "
        "mlp and lenet, 1e-3 for tiny; magnitude pruning its training rate)",
    )
    finetune_schedule: Literal["constant", "cosine"] | None = Field(
        default=None,
        description="weight learning rate over the fine-tuning epochs: constant, or cosine decay to 0 "
        "(default: the gated methods cosine for mlp, constant for lenet and tiny; magnitude pruning constant)",
    )
    continue_adam: bool | None = Field(
        default=None,
        description="the gated methods' weight Adam keeps its moments from the warm-up into the gated "
        "epochs and into fine-tuning, instead of restarting (default: on for lenet, off for mlp and tiny)",
    )
    gate_lr: float = Field(default=2e-2, gt=0, description="Adam learning rate of log alpha")
    gate_beta1: float = Field(default=0.0, ge=0, lt=1, description="Adam beta1 of log alpha")
    droprate_init: float = Field(default=0.5, gt=0, lt=1, description="initial drop rate of the gates")
    warmup_epochs: int | None = Field(
        default=None,
        ge=0,
        description="dense epochs at the start of the training epochs (gates held open, no constraint or "
        "penalty) before the gates start (default: a third of --epochs for constrained, 0 for penalized)",
    )
    gate_init: Literal["droprate", "magnitude"] | None = Field(
        default=None,
        description="how the gates start: from --droprate-init, or from the weight magnitudes after the "
        "warm-up with the target fraction active (constrained only; default: magnitude for constrained, "
        "droprate for penalized)",
    )
    finetune_epochs: int = Field(
        default=10,
        ge=0,
        description="fine-tuning epochs after the main ones: after magnitude pruning, or with the gates frozen at their test-time values",
    )
    epochs: int = Field(default=30, ge=1, description="training epochs")
    resume: Path | None = Field(
        default=None,
        description="directory of a run to resume (mid-epoch included; the previous checkpoint if the latest is damaged)",
    )
    checkpoint_every: int = Field(
        default=0,
        ge=0,
        description="also checkpoint every this many steps (0: at the end of every epoch only)",
    )
    non_finite: Literal["raise", "skip", "off"] = Field(
        default="raise",
        description="NaN/Inf in the loss or a violation: raise, skip the step (counted), or off",
    )
    autocast: bool = Field(
        default=False,
        description="forward pass under torch.autocast (CPU, bfloat16); multipliers stay float32",
    )
    distributed: bool = Field(
        default=False,
        description="DistributedDataParallel over torchrun's processes (gloo): each takes its shard of every "
        "batch, the multipliers follow the global violation, rank 0 writes the outputs",
    )
    out: Path = Field(default=Path("runs/sparsity"), description="output directory")

    @field_validator("target_density", mode="before")
    @classmethod
    def _split_targets(cls, value: object) -> object:
        value = comma_separated(value)
        if isinstance(value, (int, float)):
            return [value]
        return value

    @field_validator("target_density")
    @classmethod
    def _targets_in_range(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("give at least one target density")
        for target in value:
            if not 0.0 < target <= 1.0:
                raise ValueError(f"target densities must lie in (0, 1], got {target}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SparsityConfig:
        if not self.layerwise and len(self.target_density) != 1:
            raise ValueError(f"target_density: one value without --layerwise, got {self.target_density}")
        if self.lr is None:
            self.lr = DEFAULT_WEIGHT_LR[self.model]
        magnitude = self.method == "magnitude"  # keeps its training rate: see the class docstring
        if self.finetune_lr is None:
            self.finetune_lr = self.lr if magnitude else DEFAULT_FINETUNE_LR[self.model]
        if self.finetune_schedule is None:
            self.finetune_schedule = "constant" if magnitude else DEFAULT_FINETUNE_SCHEDULE[self.model]
        if self.continue_adam is None:
            self.continue_adam = DEFAULT_CONTINUE_ADAM[self.model]
        self._resolve_gate_start()
        return self

    def _resolve_gate_start(self) -> None:
        constrained = self.method == "constrained"
        if self.warmup_epochs is None:
            self.warmup_epochs = self.epochs // DEFAULT_WARMUP_DIVISOR if constrained else 0
        if self.gate_init is None:
            self.gate_init = "magnitude" if constrained else "droprate"
        if self.method == "magnitude" and self.warmup_epochs:
            raise ValueError(
                f"warmup_epochs: magnitude pruning trains dense throughout, got {self.warmup_epochs} (use 0)"
            )
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs must be < epochs ({self.epochs}) so that the gates train, got {self.warmup_epochs}"
            )
        if self.gate_init == "magnitude" and not constrained:
            raise ValueError(
                f"gate_init 'magnitude' needs the target density of method 'constrained', got method {self.method!r}"
            )

    @property
    def weight_lr(self) -> float:
        """The learning rate of the weights (``lr``, resolved per model when not given)."""
        return self.lr if self.lr is not None else DEFAULT_WEIGHT_LR[self.model]

    @property
    def resolved_gate_init(self) -> str:
        """``gate_init``, resolved per method by the validator above."""
        assert self.gate_init is not None, "resolved when the config is validated"
        return self.gate_init

    @property
    def weight_finetune_lr(self) -> float:
        """The learning rate of the weights while fine-tuning (``finetune_lr``, resolved per model and method
        by the validator above: the one place that holds that rule)."""
        assert self.finetune_lr is not None, "resolved when the config is validated"
        return self.finetune_lr
