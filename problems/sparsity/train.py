"""Training runs of the sparsity problem: constrained (this library), penalized L0, magnitude pruning.

A run is a :class:`~problems.scaffold.loop.Task` of the shared loop (:func:`~problems.scaffold.loop.fit`):
its stages are the dense warm-up (gates held open), the gated training and the fine-tuning (gates frozen
at their test-time value); magnitude pruning trains dense, then prunes and fine-tunes. The loop gives
deterministic batches by ``(seed, epoch)``, checkpoints every ``checkpoint_every`` steps and at every
epoch's end, exact resume (``--resume DIR``) and DDP (``--distributed``: gloo, each process on its shard
of every batch, the multipliers updated from the global violation; rank 0 writes every file).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import cooper_like as cooper
from cooper_like.reporting import metrics_row
from problems.scaffold.checkpoints import atomic_write_text
from problems.scaffold.classification import AutocastForward, CrossEntropy, accuracy
from problems.scaffold.datasets import DataSplit, load_digits_split, mnist5k_split, validation_split
from problems.scaffold.ddp import Session, start_session
from problems.scaffold.loop import CHECKPOINT, Active, LoopSettings, Moment, Stage, Task, fit
from problems.scaffold.metrics_log import MetricsLogger
from problems.scaffold.plots import plot_series
from problems.scaffold.resumable import remove_stale_temporaries
from problems.scaffold.seeding import seed_everything
from problems.sparsity.config import SparsityConfig
from problems.sparsity.gate_start import hold_gates_open, start_gates
from problems.sparsity.gates import HardConcreteGate
from problems.sparsity.layers import L0Layer
from problems.sparsity.models import (
    dense_lenet5_caffe,
    dense_mlp_300_100,
    dense_tiny_mlp,
    expected_density,
    gated_layers,
    lenet5_caffe,
    mlp_300_100,
    per_layer_density,
    test_time_density,
    test_time_density_median_gate,
    tiny_mlp,
)
from problems.sparsity.problem import ControlledSparsity, PenalizedL0


def load_data(config: SparsityConfig) -> DataSplit:
    """MNIST-5k (4,000 / 1,000, stratified) or scikit-learn's digits; with ``validation``, 20% of the
    training part takes the place of the test part (:func:`validation_split`)."""
    data = mnist5k_split() if config.dataset == "mnist5k" else load_digits_split()
    return validation_split(data) if config.validation else data


def build_model(config: SparsityConfig, num_features: int, gated: bool = True) -> nn.Module:
    """The gated network of the config (or its dense counterpart for magnitude pruning)."""
    if config.model == "tiny":
        if gated:
            return tiny_mlp(num_features, 32, 10, config.granularity, config.droprate_init)
        return dense_tiny_mlp(num_features, 32, 10)
    if num_features != 784:
        raise ValueError(
            f"model {config.model!r} needs 28x28 inputs (mnist5k); dataset has {num_features} features"
        )
    if config.model == "mlp":
        return mlp_300_100(config.granularity, config.droprate_init) if gated else dense_mlp_300_100()
    return lenet5_caffe(config.granularity, config.droprate_init) if gated else dense_lenet5_caffe()


def primal_optimizer(config: SparsityConfig, model: nn.Module, extrapolating: bool) -> torch.optim.Optimizer:
    """Adam on the weights; Adam without momentum (``gate_beta1``) and a larger step on log α."""
    gates = [p for name, p in model.named_parameters() if name.endswith("log_alpha")]
    weights = [p for name, p in model.named_parameters() if not name.endswith("log_alpha")]
    groups: list[dict[str, Any]] = [{"params": weights, "lr": config.weight_lr}]
    if gates:
        groups.append({"params": gates, "lr": config.gate_lr, "betas": (config.gate_beta1, 0.999)})
    if extrapolating:
        return cooper.optim.ExtraAdam(groups, lr=config.weight_lr)
    return torch.optim.Adam(groups, lr=config.weight_lr)


def build_problem(
    config: SparsityConfig, forward: nn.Module
) -> tuple[cooper.ConstrainedMinimizationProblem, dict[str, Any]]:
    """The problem of the config's method (``forward`` is the module it calls) and the companions chosen
    automatically (recorded in ``metrics.json``)."""
    if config.method == "penalized":
        return PenalizedL0(forward, config.lmbda), {"lmbda": config.lmbda}
    if config.method == "magnitude":
        return CrossEntropy(forward), {"finetune_epochs": config.finetune_epochs}
    companions: dict[str, Any] = {}
    if config.formulation == "augmented-lagrangian":
        companions["penalty_coefficient"] = config.dual_lr
        companions["note"] = "dual lr = penalty coefficient: the classical multiplier update"
    if config.scheme == "extrapolation":
        if config.dual_optimizer == "nupi":
            raise ValueError(
                "scheme 'extrapolation' needs an extrapolating dual optimizer; nuPI is not one (use sgd)"
            )
        companions.update(primal_optimizer="ExtraAdam", dual_optimizer="ExtraSGD")
    problem = ControlledSparsity(
        forward,
        config.target_density if config.layerwise else config.target_density[0],
        layerwise=config.layerwise,
        formulation=config.formulation,
        strict=config.strict,
        dual_restarts=config.dual_restarts,
        penalty=config.dual_lr,
        floor_gap=config.floor_gap,
    )
    return problem, companions


def constrained_optimizer(
    config: SparsityConfig, model: nn.Module, problem: cooper.ConstrainedMinimizationProblem
) -> cooper.optim.CooperOptimizer:
    """The optimizer of the main stage: the config's scheme, primal and dual optimizers (constrained), Adam
    on weights and gates (penalized) or on the weights (magnitude pruning's dense training)."""
    guard: dict[str, Any] = {"non_finite": config.non_finite, "distributed": config.distributed}
    if config.method == "penalized":
        primal = primal_optimizer(config, model, False)
        return cooper.optim.UnconstrainedOptimizer(cmp=problem, primal_optimizers=primal, **guard)
    if config.method == "magnitude":
        adam = torch.optim.Adam(model.parameters(), lr=config.weight_lr)
        return cooper.optim.UnconstrainedOptimizer(cmp=problem, primal_optimizers=adam, **guard)
    extrapolating = config.scheme == "extrapolation"
    primal = primal_optimizer(config, model, extrapolating)
    dual: torch.optim.Optimizer
    if extrapolating:
        dual = cooper.optim.ExtraSGD(problem.dual_parameters(), lr=config.dual_lr, maximize=True)
    elif config.dual_optimizer == "nupi":
        dual = cooper.optim.nuPI(
            problem.dual_parameters(), lr=config.dual_lr, Kp=config.nupi_kp, maximize=True
        )
    else:
        dual = torch.optim.SGD(problem.dual_parameters(), lr=config.dual_lr, maximize=True)
    scheme: Any = {
        "simultaneous": cooper.optim.SimultaneousOptimizer,
        "alternating": cooper.optim.AlternatingPrimalDualOptimizer,
        "extrapolation": cooper.optim.ExtrapolationConstrainedOptimizer,
    }[config.scheme]
    return scheme(cmp=problem, primal_optimizers=primal, dual_optimizers=dual, **guard)


def weights_optimizer(
    config: SparsityConfig, forward: nn.Module, model: nn.Module, lr: float
) -> cooper.optim.CooperOptimizer:
    """Plain cross-entropy, Adam on the weights that train (warm-up and fine-tuning)."""
    weights = [p for p in model.parameters() if p.requires_grad]
    return cooper.optim.UnconstrainedOptimizer(
        cmp=CrossEntropy(forward),
        primal_optimizers=torch.optim.Adam(weights, lr=lr),
        non_finite=config.non_finite,
        distributed=config.distributed,
    )


def dense_weight_layers(model: nn.Module) -> list[tuple[str, nn.Linear | nn.Conv2d]]:
    """The Linear/Conv2d layers of a dense model, by qualified name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def magnitude_masks(model: nn.Module, targets: list[float], layerwise: bool) -> dict[str, torch.Tensor]:
    """Keep the largest-magnitude weights: a fraction ``target`` of the model, or of each layer."""
    layers = dense_weight_layers(model)
    if layerwise:
        fractions = targets * len(layers) if len(targets) == 1 else targets
        masks = {}
        for (name, layer), fraction in zip(layers, fractions):
            weight = layer.weight.detach().abs().flatten()
            keep = max(1, round(fraction * weight.numel()))
            threshold = weight.kthvalue(weight.numel() - keep + 1).values
            masks[name] = layer.weight.detach().abs() >= threshold
        return masks
    everything = torch.cat([layer.weight.detach().abs().flatten() for _, layer in layers])
    keep = max(1, round(targets[0] * everything.numel()))
    threshold = everything.kthvalue(everything.numel() - keep + 1).values
    return {name: layer.weight.detach().abs() >= threshold for name, layer in layers}


class Run(Task):
    """A sparsity training run: the network, its problem, the stages, the rows and the shipped metrics.

    ``model`` is the bare network (checkpoints, evaluation); the problem calls ``forward``, which is
    ``model`` wrapped for autocast and/or DistributedDataParallel when the config asks for them (each
    stage builds its own wrapper, so that DistributedDataParallel sees the parameters that train).
    ``phase`` and ``optimizer`` are those of the current stage.
    """

    def __init__(self, config: SparsityConfig, data: DataSplit, session: Session | None = None) -> None:
        self.config, self.data, self.session = config, data, session or Session()
        self.num_examples = len(data.x_train)
        self.model = build_model(config, data.x_train.shape[1], gated=config.method != "magnitude")
        self.forward = self.wrap(self.model)
        self.problem, self.companions = build_problem(config, self.forward)
        self.masks: dict[str, torch.Tensor] | None = None
        self.phase = ""
        self.current: cooper.optim.CooperOptimizer | None = None

    @property
    def optimizer(self) -> cooper.optim.CooperOptimizer:
        """The current stage's optimizer."""
        assert self.current is not None, "no stage has started"
        return self.current

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module a problem calls: ``model``, under autocast and/or DistributedDataParallel if asked."""
        return self.session.wrap(AutocastForward(model) if self.config.autocast else model)

    # -- stages ---------------------------------------------------------------------------------------

    def stages(self) -> list[Stage]:
        config = self.config
        if config.method == "magnitude":
            return [
                Stage("train", config.epochs, self.enter_dense),
                Stage("finetune", config.finetune_epochs, self.enter_pruned),
            ]
        return [
            Stage("warmup", config.warmup_epochs or 0, self.enter_warmup),
            Stage("train", config.epochs - (config.warmup_epochs or 0), self.enter_gated),
            Stage("finetune", config.finetune_epochs, self.enter_finetuning),
        ]

    def begin(self, phase: str, optimizer: cooper.optim.CooperOptimizer, previous: Active | None) -> None:
        """Make ``optimizer`` the current one; the skipped-step count continues over the whole run."""
        if previous is not None:
            optimizer.guard.skipped_steps = previous.optimizer.skipped_steps
        self.phase, self.current = phase, optimizer

    def enter_dense(self, previous: Active | None) -> Active:
        """Magnitude pruning's dense training: Adam on every weight."""
        optimizer = constrained_optimizer(self.config, self.model, self.problem)
        self.begin("train", optimizer, previous)
        return Active(optimizer, forward=self.forward)

    def enter_pruned(self, previous: Active | None) -> Active:
        """Prune to the target by magnitude; fine-tuning continues the same Adam at ``finetune_lr``."""
        assert previous is not None, "pruning follows the dense training"
        self.masks = magnitude_masks(self.model, self.config.target_density, self.config.layerwise)
        self.apply_masks()
        set_weight_lr(previous.optimizer, self.config.weight_finetune_lr)
        self.begin("finetune", previous.optimizer, None)
        return Active(
            previous.optimizer,
            forward=self.forward,
            before_step=self.finetune_schedule(previous.optimizer),
            after_step=lambda _: self.apply_masks(),
        )

    def enter_warmup(self, previous: Active | None) -> Active:
        """Hold the gates open and train the dense network with Adam on the weights (plain cross-entropy)."""
        hold_gates_open(self.model)
        forward = self.wrap(self.model)
        optimizer = weights_optimizer(self.config, forward, self.model, self.config.weight_lr)
        self.begin("warmup", optimizer, previous)
        return Active(optimizer, forward=forward, start_epoch=lambda: freeze_gates(self.model))

    def enter_gated(self, previous: Active | None) -> Active:
        """Start the gates (``gate_init``) after a warm-up, and train gates, weights and multipliers.

        The gates' Adam state and the multipliers start here; the weights' Adam too, unless
        ``continue_adam`` (then it carries the warm-up's moments).
        """
        config = self.config
        if previous is not None:
            start_gates(self.model, config.resolved_gate_init, config.target_density, config.layerwise)
        optimizer = constrained_optimizer(config, self.model, self.problem)
        if previous is not None and config.continue_adam:
            carry_weight_moments(previous.optimizer, optimizer)
        self.begin("train", optimizer, previous)
        return Active(optimizer, forward=self.forward)

    def enter_finetuning(self, previous: Active | None) -> Active:
        """Fine-tune the network that ships: gates frozen at ẑ (the density no longer moves), weights trained.

        The problem (and its multipliers) is kept for the rows and checkpoints; the optimizer is Adam on
        the weights alone (fresh, or with the training's moments when ``continue_adam``).
        """
        config = self.config
        freeze_gates(self.model)
        forward = self.wrap(self.model)
        optimizer = weights_optimizer(config, forward, self.model, config.weight_finetune_lr)
        if previous is not None and config.continue_adam:
            carry_weight_moments(previous.optimizer, optimizer)
        self.begin("finetune", optimizer, previous)
        return Active(
            optimizer,
            forward=forward,
            start_epoch=lambda: freeze_gates(self.model),
            before_step=self.finetune_schedule(optimizer),
        )

    def finetune_schedule(self, optimizer: cooper.optim.CooperOptimizer) -> Callable[[Moment], None] | None:
        """With ``finetune_schedule="cosine"``, the hook that sets the weights' rate of each fine-tuning step."""
        config = self.config
        if config.finetune_schedule != "cosine":
            return None

        def cosine(moment: Moment) -> None:
            epoch = moment.epoch - config.epochs
            set_weight_lr(optimizer, finetune_lr_at(config, epoch, moment.batch, moment.batches))

        return cosine

    # -- batches, rows, state -------------------------------------------------------------------------

    def batch(self, indices: torch.Tensor) -> dict[str, Any]:
        return {"inputs": self.data.x_train[indices], "labels": self.data.y_train[indices]}

    def row(self, moment: Moment) -> dict[str, Any]:
        """The end-of-epoch row: losses, accuracies, densities, constraint columns."""
        densities = density_report(self)
        data = self.data
        row: dict[str, Any] = {
            "step": moment.epoch + 1,
            "epoch": moment.epoch + 1,
            "train_loss": moment.epoch_loss,
            # every 4th training example (1,000 of MNIST-5k's 4,000): the per-epoch curve at a quarter of the cost
            "train_accuracy": accuracy(self.model, data.x_train[::4], data.y_train[::4]),
            "test_accuracy": accuracy(self.model, data.x_test, data.y_test),
            "expected_density": densities["expected_density"],
            "test_time_density": densities["test_time_density"],
            "test_time_density_median_gate": densities["test_time_density_median_gate"],
        }
        for name, value in densities["per_layer_density"].items():
            row[f"density/{name}"] = value
        row.update(constraint_columns(self))
        return row

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"config": self.config.model_dump(mode="json")}
        if self.masks is not None:
            state["masks"] = self.masks
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks = state.get("masks")

    @torch.no_grad()
    def apply_masks(self) -> None:
        assert self.masks is not None
        for name, layer in dense_weight_layers(self.model):
            layer.weight.mul_(self.masks[name])


StepCallback = Callable[[Run, int], None]


def train(config: SparsityConfig, on_step: StepCallback | None = None) -> dict[str, Any]:
    """Train, log every epoch, checkpoint atomically, write ``metrics.json`` and plots.

    Args:
        config: The run.
        on_step: Called as ``on_step(run, step)`` after every optimisation step (tests, monitoring).
    """
    session = start_session(config.distributed)
    try:
        return train_session(config, session, on_step)
    finally:
        session.close()


def train_session(config: SparsityConfig, session: Session, on_step: StepCallback | None) -> dict[str, Any]:
    out = Path(config.out)
    if session.writes:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out / CHECKPOINT)
    seed_everything(config.seed)  # the same seed on every process: identical gate samples everywhere
    data = load_data(config)
    run = Run(config, data, session)
    settings = LoopSettings(
        seed=config.seed,
        batch_size=config.batch_size,
        out=out,
        checkpoint_every=config.checkpoint_every,
        resume=None if config.resume is None else Path(config.resume),
    )
    callback = None if on_step is None else (lambda task, active, step: on_step(run, step))
    logger = MetricsLogger(out) if session.writes else None
    try:
        result = fit(run, settings, session=session, logger=logger, on_step=callback)
    finally:
        if logger is not None:
            logger.close()
    total_epochs = config.epochs + config.finetune_epochs
    metrics = final_metrics(run, data, total_epochs, result.wall_time_s)
    if config.finetune_epochs and len(result.history) > config.epochs:
        metrics["test_accuracy_before_finetune"] = result.history[config.epochs - 1]["test_accuracy"]
    if session.writes:
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        plot_history(result.history, config, out)
    return metrics


def set_weight_lr(optimizer: cooper.optim.CooperOptimizer, lr: float) -> None:
    """Set the learning rate of every parameter group of ``optimizer``'s primal optimizers."""
    for primal in optimizer.primal_optimizers:
        for group in primal.param_groups:
            group["lr"] = lr


def gates(model: nn.Module) -> list[HardConcreteGate]:
    return [module for module in model.modules() if isinstance(module, HardConcreteGate)]


def freeze_gates(model: nn.Module) -> None:
    """Put every gate in eval mode (the deterministic test-time gate ẑ) and stop its gradient."""
    for gate in gates(model):
        gate.eval()
        gate.log_alpha.requires_grad_(False)


def finetune_lr_at(config: SparsityConfig, epoch: int, batch: int, batches: int) -> float:
    """The cosine-decayed weight learning rate of fine-tuning step ``(epoch, batch)`` (epochs counted from 0)."""
    progress_ = (epoch * batches + batch) / max(1, config.finetune_epochs * batches)
    return config.weight_finetune_lr * 0.5 * (1.0 + math.cos(math.pi * progress_))


def carry_adam_moments(source: torch.optim.Optimizer, target: torch.optim.Optimizer) -> int:
    r"""Give ``target`` (Adam or ExtraAdam) the step count and moment estimates :math:`m, v` that ``source``
    holds for each of ``target``'s parameters; return how many parameters it carried.

    So the weights' Adam continues across a change of phase instead of restarting: a fresh Adam's first
    step moves every weight by the full learning rate (:math:`\hat m / \sqrt{\hat v} = \pm 1` at step 1).
    """
    carried = 0
    for group in target.param_groups:
        for param in group["params"]:
            state = source.state.get(param, {})
            if "exp_avg" not in state or "exp_avg_sq" not in state:
                continue
            steps = float(state["step"])
            moments = {
                # torch's Adam counts steps in a tensor, ExtraAdam in an int
                "step": torch.tensor(steps) if isinstance(target, torch.optim.Adam) else int(steps),
                "exp_avg": state["exp_avg"].detach().clone(),
                "exp_avg_sq": state["exp_avg_sq"].detach().clone(),
            }
            if group.get("amsgrad"):  # the running maximum of v, or v itself if the source kept none
                moments["max_exp_avg_sq"] = state.get("max_exp_avg_sq", state["exp_avg_sq"]).detach().clone()
            target.state[param] = moments
            carried += 1
    return carried


def carry_weight_moments(source: cooper.optim.CooperOptimizer, target: cooper.optim.CooperOptimizer) -> None:
    """:func:`carry_adam_moments` from every primal optimizer of ``source`` to every one of ``target``."""
    for old in source.primal_optimizers:
        for new in target.primal_optimizers:
            carry_adam_moments(old, new)


def density_report(run: Run) -> dict[str, Any]:
    """Densities of the model as it ships (test-time gates or pruning masks)."""
    if run.masks is not None or run.config.method == "magnitude":
        layers = dense_weight_layers(run.model)
        nonzero = {name: float((layer.weight != 0).float().mean()) for name, layer in layers}
        total = sum(int((layer.weight != 0).sum()) for _, layer in layers) / sum(
            layer.weight.numel() for _, layer in layers
        )
        return {
            "expected_density": total,
            "test_time_density": total,
            "test_time_density_median_gate": total,
            "per_layer_density": nonzero,
        }
    with torch.no_grad():
        expected = float(expected_density(run.model))
    return {
        "expected_density": expected,
        "test_time_density": test_time_density(run.model),
        "test_time_density_median_gate": test_time_density_median_gate(run.model),
        "per_layer_density": per_layer_density(run.model),
    }


def multiplier_values(run: Run) -> list[float]:
    """Current multiplier values (one per density constraint), empty for the baselines."""
    return [float(v) for p in run.problem.dual_parameters() for v in p.detach().flatten()]


def final_metrics(run: Run, data: DataSplit, epochs: int, wall_time: float) -> dict[str, Any]:
    config = run.config
    densities = density_report(run)
    return {
        "test_accuracy": accuracy(run.model, data.x_test, data.y_test),
        "train_accuracy": accuracy(run.model, data.x_train, data.y_train),
        "evaluated_on": "validation" if config.validation else "test",
        **densities,
        "test_time_density_definition": "fraction of Linear/Conv weight entries whose Louizos test-time gate is > 0 "
        "(log alpha > -ln 11); biases excluded",
        "target_density": config.target_density[0] if not config.layerwise else config.target_density,
        "multipliers": multiplier_values(run),
        "wall_time_s": wall_time,
        "epochs": epochs,
        "skipped_steps": run.optimizer.skipped_steps,
        "method": config.method,
        "companions": run.companions,
        "config": config.model_dump(mode="json"),
    }


def constraint_columns(run: Run) -> dict[str, float]:
    """Each constraint's violation and strict violation (measured now), multipliers, penalty
    coefficients, learning rates and skipped steps: :func:`cooper_like.reporting.metrics_row`'s columns."""
    measured = cooper.CMPState()
    if isinstance(run.problem, ControlledSparsity):
        with torch.no_grad():
            measured = run.problem.compute_violations()
    empty = cooper.LagrangianStore()
    roll_out = cooper.optim.RollOut(None, measured, empty, empty)
    return metrics_row(roll_out, run.problem, run.optimizer)


def plot_history(history: list[dict[str, Any]], config: SparsityConfig, out: Path) -> None:
    """density vs target, multipliers, and accuracy over training, against the epoch (PNG; needs matplotlib)."""
    targets = sorted(set(config.target_density))
    plot_series(
        history,
        ["test_time_density", "expected_density"],
        out / "density.png",
        x="epoch",
        ylabel="density",
        title="density vs target",
        levels=targets,
        exact=True,
    )
    plot_series(
        history, ["multiplier/"], out / "multipliers.png", x="epoch", ylabel="multiplier", title="multipliers"
    )
    plot_series(
        history,
        ["train_accuracy", "test_accuracy"],
        out / "accuracy.png",
        x="epoch",
        ylabel="accuracy",
        title="accuracy",
        exact=True,
    )


__all__ = ["L0Layer", "Run", "build_model", "gated_layers", "load_data", "train"]
