"""Training runs of the sparsity problem: constrained (this library), penalized L0, magnitude pruning.

A run is resumable at any step: checkpoints are written atomically every ``checkpoint_every`` steps and
at the end of every epoch (the latest two are kept, each with a digest), and the batch order of an
epoch is a function of ``(seed, epoch)``, so ``--resume DIR`` continues mid-epoch exactly where the
checkpoint was taken. With ``distributed`` the run spans ``torchrun``'s processes (gloo,
DistributedDataParallel on the model, each process training on its shard of every batch, the
multipliers updated from the global violation); rank 0 writes every file.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import cooper_like as cooper
from cooper_like.reporting import metrics_row
from problems.scaffold.checkpoints import atomic_write_text
from problems.scaffold.datasets import DataSplit, load_digits_split, mnist5k_split, validation_split
from problems.scaffold.ddp import Session, start_session
from problems.scaffold.metrics_log import MetricsLogger
from problems.scaffold.progress import progress
from problems.scaffold.resumable import (
    load_latest_checkpoint,
    remove_stale_temporaries,
    save_rotating_checkpoint,
)
from problems.scaffold.seeding import rng_state, seed_everything, set_rng_state
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

CHECKPOINT = "checkpoint.pt"


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


def build_constrained(
    config: SparsityConfig, model: nn.Module, forward: nn.Module | None = None
) -> tuple[ControlledSparsity, cooper.optim.CooperOptimizer, dict[str, Any]]:
    """The constrained problem, its optimizer, and the companions chosen automatically (recorded).

    ``forward`` is the module the problem calls (``model`` itself, or a DDP / autocast wrapper of it).
    """
    companions: dict[str, Any] = {}
    penalty = config.dual_lr
    if config.formulation == "augmented-lagrangian":
        companions["penalty_coefficient"] = penalty
        companions["note"] = "dual lr = penalty coefficient: the classical multiplier update"
    problem = ControlledSparsity(
        model if forward is None else forward,
        config.target_density if config.layerwise else config.target_density[0],
        layerwise=config.layerwise,
        formulation=config.formulation,
        strict=config.strict,
        dual_restarts=config.dual_restarts,
        penalty=penalty,
        floor_gap=config.floor_gap,
    )
    extrapolating = config.scheme == "extrapolation"
    primal = primal_optimizer(config, model, extrapolating)
    dual: torch.optim.Optimizer
    if extrapolating:
        if config.dual_optimizer == "nupi":
            raise ValueError(
                "scheme 'extrapolation' needs an extrapolating dual optimizer; nuPI is not one (use sgd)"
            )
        dual = cooper.optim.ExtraSGD(problem.dual_parameters(), lr=config.dual_lr, maximize=True)
        companions.update(primal_optimizer="ExtraAdam", dual_optimizer="ExtraSGD")
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
    optimizer = scheme(
        cmp=problem,
        primal_optimizers=primal,
        dual_optimizers=dual,
        non_finite=config.non_finite,
        distributed=config.distributed,
    )
    return problem, optimizer, companions


@torch.no_grad()
def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of the deterministic (eval-mode) model."""
    was_training = model.training
    model.eval()
    correct = sum(
        int((model(inputs[i : i + 1024]).argmax(1) == labels[i : i + 1024]).sum())
        for i in range(0, len(inputs), 1024)
    )
    model.train(was_training)
    return correct / len(inputs)


def epoch_batches(config: SparsityConfig, epoch: int, num_samples: int) -> list[torch.Tensor]:
    """Mini-batch indices of one epoch, a function of (seed, epoch) only, so that a resumed run sees the same."""
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = torch.randperm(num_samples, generator=generator)
    return list(order.split(config.batch_size))


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


class CrossEntropy(cooper.ConstrainedMinimizationProblem):
    """The unconstrained problem of the dense/pruned baseline."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def compute_cmp_state(self, inputs: torch.Tensor, labels: torch.Tensor) -> cooper.CMPState:
        logits = self.model(inputs)
        return cooper.CMPState(loss=nn.functional.cross_entropy(logits, labels))


class AutocastForward(nn.Module):
    """Runs the wrapped model's forward pass under ``torch.autocast("cpu", dtype=torch.bfloat16)``.

    The outputs are cast back to float32, so the loss, the constraints (computed outside, from the
    float32 gate parameters) and the multipliers stay in float32; backward runs outside autocast.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = self.module(inputs)
        return outputs.float()


@dataclass
class Run:
    """Everything a training run steps and checkpoints.

    ``model`` is the bare network (checkpoints, evaluation); the problem calls ``forward``, which is
    ``model`` wrapped for autocast and/or DistributedDataParallel when the config asks for them.
    """

    config: SparsityConfig
    model: nn.Module
    problem: cooper.ConstrainedMinimizationProblem
    optimizer: cooper.optim.CooperOptimizer
    companions: dict[str, Any]
    masks: dict[str, torch.Tensor] | None = None
    forward: nn.Module | None = None
    #: ``"warmup"`` (dense, gates held open), ``"train"`` or ``"finetune"`` (gates frozen).
    phase: str = "train"
    #: The gated run's optimizer and forward module, set aside while the warm-up trains the dense network.
    gated: tuple[cooper.optim.CooperOptimizer, nn.Module] | None = None


def wrap_forward(config: SparsityConfig, model: nn.Module, session: Session) -> nn.Module:
    """The module the problem calls: ``model``, under autocast and/or DistributedDataParallel if asked."""
    return session.wrap(AutocastForward(model) if config.autocast else model)


def build_run(config: SparsityConfig, num_features: int, session: Session | None = None) -> Run:
    session = session or Session()
    model = build_model(config, num_features, gated=config.method != "magnitude")
    forward = wrap_forward(config, model, session)
    guard: dict[str, Any] = {"non_finite": config.non_finite, "distributed": config.distributed}
    if config.method == "constrained":
        problem, optimizer, companions = build_constrained(config, model, forward)
        return begin_warmup(Run(config, model, problem, optimizer, companions, forward=forward), session)
    if config.method == "penalized":
        penalized = PenalizedL0(forward, config.lmbda)
        optimizer = cooper.optim.UnconstrainedOptimizer(
            cmp=penalized, primal_optimizers=primal_optimizer(config, model, False), **guard
        )
        run = Run(config, model, penalized, optimizer, {"lmbda": config.lmbda}, forward=forward)
        return begin_warmup(run, session)
    plain = CrossEntropy(forward)
    adam = torch.optim.Adam(model.parameters(), lr=config.weight_lr)
    return Run(
        config,
        model,
        plain,
        cooper.optim.UnconstrainedOptimizer(cmp=plain, primal_optimizers=adam, **guard),
        {"finetune_epochs": config.finetune_epochs},
        forward=forward,
    )


def begin_warmup(run: Run, session: Session) -> Run:
    """With ``warmup_epochs``: hold the gates open and train the dense network with Adam on the weights
    (plain cross-entropy); the gated run's optimizer and forward module wait in ``gated``. The warm-up
    gets its own forward wrapper, so that DistributedDataParallel sees the gates without gradient."""
    if not run.config.warmup_epochs:
        return run
    assert run.forward is not None
    run.gated = (run.optimizer, run.forward)
    hold_gates_open(run.model)
    run.forward = wrap_forward(run.config, run.model, session)
    weights = [p for p in run.model.parameters() if p.requires_grad]
    run.optimizer = cooper.optim.UnconstrainedOptimizer(
        cmp=CrossEntropy(run.forward),
        primal_optimizers=torch.optim.Adam(weights, lr=run.config.weight_lr),
        non_finite=run.config.non_finite,
        distributed=run.config.distributed,
    )
    run.phase = "warmup"
    return run


def end_warmup(run: Run, start: bool = True) -> None:
    """Start the gates (``gate_init``; with ``start=False`` only their gradient: a resumed run has its
    log α already) and hand over to the gated run's optimizer (the gates' Adam state and the multipliers
    start here; the weights' Adam too, unless ``continue_adam``)."""
    assert run.gated is not None, "only a run in its warm-up"
    config = run.config
    if start:
        start_gates(run.model, config.resolved_gate_init, config.target_density, config.layerwise)
    else:
        for gate in gates(run.model):
            gate.log_alpha.requires_grad_(True)
    skipped = run.optimizer.skipped_steps
    warmup_optimizer = run.optimizer
    (run.optimizer, run.forward), run.gated = run.gated, None
    if config.continue_adam:
        carry_weight_moments(warmup_optimizer, run.optimizer)
    run.optimizer.guard.skipped_steps = skipped  # one count for the whole run
    run.phase = "train"


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


@dataclass
class Position:
    """Where a run stands: the next (epoch, batch) to train and what has been accumulated so far.

    ``batch_losses`` holds, for each batch of the current epoch, the sum of the per-process mean
    losses weighted by the shard sizes and the batch size (``[loss * n, n]``, summed over the
    processes); ``pending`` holds this process's rows not yet summed over the processes.
    """

    epoch: int = 0
    batch: int = 0
    step: int = 0
    wall_time: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    batch_losses: list[list[float]] = field(default_factory=list)
    pending: list[list[float]] = field(default_factory=list)

    def flush(self) -> None:
        """Sum the pending loss rows over the processes (a collective: every process calls it together)."""
        if self.pending:
            summed = cooper.distributed.global_sum(torch.tensor(self.pending, dtype=torch.float64))
            self.batch_losses.extend(summed.tolist())
            self.pending = []

    def epoch_loss(self) -> float:
        """Mean over the epoch's batches of the batch loss, skipped (non-finite) batches left out."""
        self.flush()
        means = [total / count for total, count in self.batch_losses if count > 0]
        finite = [mean for mean in means if math.isfinite(mean)]
        return sum(finite) / len(finite) if finite else float("nan")


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
    run = build_run(config, data.x_train.shape[1], session)
    total_epochs = config.epochs + config.finetune_epochs
    position = Position()
    if config.resume is not None:
        position = restore(run, Path(config.resume) / CHECKPOINT, session)

    logger = MetricsLogger(out) if session.writes else None
    try:
        for row in position.history:
            if logger is not None:
                logger.log(**row)
        for epoch in progress(
            range(position.epoch, total_epochs), desc="epochs", initial=position.epoch, total=total_epochs
        ):
            train_epoch(run, data, session, position, epoch, logger, on_step)
    finally:
        if logger is not None:
            logger.close()

    metrics = final_metrics(run, data, total_epochs, position.wall_time)
    if config.finetune_epochs and len(position.history) > config.epochs:
        metrics["test_accuracy_before_finetune"] = position.history[config.epochs - 1]["test_accuracy"]
    if session.writes:
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        plot_history(position.history, config, out)
    return metrics


def train_epoch(
    run: Run,
    data: DataSplit,
    session: Session,
    position: Position,
    epoch: int,
    logger: MetricsLogger | None,
    on_step: StepCallback | None,
) -> None:
    """Train the rest of ``epoch`` from ``position.batch``; log and checkpoint at its end."""
    config, out = run.config, Path(run.config.out)
    started = time.perf_counter()
    if run.phase == "warmup" and epoch == config.warmup_epochs and position.batch == 0:
        end_warmup(run)
    if epoch == config.epochs and position.batch == 0:
        if config.method == "magnitude":
            prune_by_magnitude(run)
        else:
            start_finetuning(run, session)
    assert run.forward is not None
    run.forward.train()
    if run.phase != "train":  # warm-up: gates held open; fine-tuning: frozen at ẑ
        freeze_gates(run.model)
    batches = epoch_batches(config, epoch, len(data.x_train))
    for index in range(position.batch, len(batches)):
        batch = batches[index]
        if epoch >= config.epochs and config.finetune_schedule == "cosine":
            set_weight_lr(run, finetune_lr_at(config, epoch - config.epochs, index, len(batches)))
        if len(batch) >= session.world:  # a last batch smaller than the number of processes is dropped
            local = session.shard(batch)
            roll_out = run.optimizer.roll({"inputs": data.x_train[local], "labels": data.y_train[local]})
            if run.masks is not None:
                apply_masks(run)
            loss = float(roll_out.loss.detach()) if roll_out.loss is not None else float("nan")
            position.pending.append([loss * len(local), float(len(local))])
        position.batch, position.step = index + 1, position.step + 1
        if on_step is not None:
            on_step(run, position.step)
        if (
            config.checkpoint_every
            and position.step % config.checkpoint_every == 0
            and index + 1 < len(batches)
        ):
            position.wall_time += time.perf_counter() - started
            started = time.perf_counter()
            checkpoint(run, session, position, out)
    position.wall_time += time.perf_counter() - started
    train_loss = position.epoch_loss()
    position.epoch, position.batch, position.batch_losses = epoch + 1, 0, []
    if session.writes:
        row = epoch_row(run, data, epoch, train_loss)
        position.history.append(row)
        assert logger is not None
        logger.log(**row)
    checkpoint(run, session, position, out)


def finetune_lr_at(config: SparsityConfig, epoch: int, batch: int, batches: int) -> float:
    """The cosine-decayed weight learning rate of fine-tuning step ``(epoch, batch)`` (epochs counted from 0)."""
    progress_ = (epoch * batches + batch) / max(1, config.finetune_epochs * batches)
    return config.weight_finetune_lr * 0.5 * (1.0 + math.cos(math.pi * progress_))


def set_weight_lr(run: Run, lr: float) -> None:
    """Set the learning rate of every parameter group of the (fine-tuning) primal optimizers."""
    for optimizer in run.optimizer.primal_optimizers:
        for group in optimizer.param_groups:
            group["lr"] = lr


def checkpoint(run: Run, session: Session, position: Position, out: Path) -> None:
    """Write the run's checkpoint (rank 0), keeping the previous one."""
    position.flush()
    if session.writes:
        save_rotating_checkpoint(checkpoint_payload(run, position), out / CHECKPOINT)


def prune_by_magnitude(run: Run) -> None:
    """Prune to the target by magnitude; fine-tuning continues the same Adam at ``finetune_lr``."""
    run.masks = magnitude_masks(run.model, run.config.target_density, run.config.layerwise)
    apply_masks(run)
    set_weight_lr(run, run.config.weight_finetune_lr)


def gates(model: nn.Module) -> list[HardConcreteGate]:
    return [module for module in model.modules() if isinstance(module, HardConcreteGate)]


def freeze_gates(model: nn.Module) -> None:
    """Put every gate in eval mode (the deterministic test-time gate ẑ) and stop its gradient."""
    for gate in gates(model):
        gate.eval()
        gate.log_alpha.requires_grad_(False)


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


def start_finetuning(run: Run, session: Session) -> None:
    """Fine-tune the network that ships: gates frozen at ẑ (the density no longer moves), weights trained.

    The problem (and its multipliers) is kept for the logs and checkpoints; the optimizer becomes Adam
    on the weights alone (fresh, or with the training's moments when ``continue_adam``). The forward
    wrapper is rebuilt so that DistributedDataParallel sees the frozen gates.
    """
    freeze_gates(run.model)
    run.forward = wrap_forward(run.config, run.model, session)
    weights = [p for p in run.model.parameters() if p.requires_grad]
    adam = torch.optim.Adam(weights, lr=run.config.weight_finetune_lr)
    plain = CrossEntropy(run.forward)
    skipped = run.optimizer.skipped_steps
    training_optimizer = run.optimizer
    run.optimizer = cooper.optim.UnconstrainedOptimizer(
        cmp=plain,
        primal_optimizers=adam,
        non_finite=run.config.non_finite,
        distributed=run.config.distributed,
    )
    if run.config.continue_adam:
        carry_weight_moments(training_optimizer, run.optimizer)
    run.optimizer.guard.skipped_steps = skipped  # one count for the whole run
    run.phase = "finetune"


@torch.no_grad()
def apply_masks(run: Run) -> None:
    assert run.masks is not None
    for name, layer in dense_weight_layers(run.model):
        layer.weight.mul_(run.masks[name])


def epoch_row(run: Run, data: DataSplit, epoch: int, train_loss: float) -> dict[str, Any]:
    densities = density_report(run)
    row: dict[str, Any] = {
        "step": epoch + 1,
        "epoch": epoch + 1,
        "train_loss": train_loss,
        # every 4th training example (1,000 of MNIST-5k's 4,000): the per-epoch curve at a quarter of the cost
        "train_accuracy": accuracy(run.model, data.x_train[::4], data.y_train[::4]),
        "test_accuracy": accuracy(run.model, data.x_test, data.y_test),
        "expected_density": densities["expected_density"],
        "test_time_density": densities["test_time_density"],
        "test_time_density_median_gate": densities["test_time_density_median_gate"],
    }
    for name, value in densities["per_layer_density"].items():
        row[f"density/{name}"] = value
    row.update(constraint_columns(run))
    return row


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


def checkpoint_payload(run: Run, position: Position) -> dict[str, Any]:
    """Everything needed to continue the run exactly (weights-only loadable)."""
    payload: dict[str, Any] = {
        "model": run.model.state_dict(),
        "problem": run.problem.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "epoch": position.epoch,
        "batch": position.batch,
        "step": position.step,
        "batch_losses": position.batch_losses,
        "wall_time_s": position.wall_time,
        "rng": rng_state(),
        "history": position.history,
        "config": run.config.model_dump(mode="json"),
    }
    if run.masks is not None:
        payload["masks"] = run.masks
    payload["phase"] = run.phase
    return payload


def restore(run: Run, path: Path, session: Session | None = None) -> Position:
    """Load the newest intact checkpoint at ``path`` (or the one before it) into ``run``; return its position.

    A damaged checkpoint is reported and set aside (by rank 0); every process must resume from the
    same step, or the run stops with an error.
    """
    session = session or Session()
    state, source = load_latest_checkpoint(path, set_aside=session.writes)
    run.model.load_state_dict(state["model"])
    run.problem.load_state_dict(state["problem"])
    phase = state.get("phase", "train")
    if run.phase == "warmup" and phase != "warmup":
        end_warmup(run, start=False)
    if phase == "finetune":
        start_finetuning(run, session)
    run.optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    run.masks = state.get("masks")
    position = Position(
        epoch=int(state["epoch"]),
        batch=int(state.get("batch", 0)),
        step=int(state.get("step", 0)),
        wall_time=float(state["wall_time_s"]),
        history=list(state["history"]),
        batch_losses=[list(row) for row in state.get("batch_losses", [])],
    )
    if session.distributed:
        steps = cooper.distributed.global_sum(torch.tensor([position.step], dtype=torch.int64))
        if int(steps) != position.step * session.world:
            raise RuntimeError(
                f"the processes resumed from different checkpoints (rank {session.rank} read {source}, "
                f"step {position.step}); resume from a directory every process sees the same way"
            )
    return position


def plot_history(history: list[dict[str, Any]], config: SparsityConfig, out: Path) -> None:
    """density vs target, multipliers, and accuracy over training (PNG; needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the 'problems' extra is not installed: no plots
        return
    epochs = [row["epoch"] for row in history]
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot(epochs, [row["test_time_density"] for row in history], label="test-time density")
    axis.plot(epochs, [row["expected_density"] for row in history], label="expected density", linestyle="--")
    for target in sorted(set(config.target_density)):
        axis.axhline(target, color="black", linewidth=0.8, linestyle=":")
    axis.set(xlabel="epoch", ylabel="density", title="density vs target")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "density.png", dpi=100)
    plt.close(figure)

    keys = sorted({key for row in history for key in row if key.startswith("multiplier/")})
    if keys:
        figure, axis = plt.subplots(figsize=(5, 3.5))
        for key in keys:
            axis.plot(epochs, [row.get(key, float("nan")) for row in history], label=key)
        axis.set(xlabel="epoch", ylabel="multiplier", title="multipliers (end of epoch)")
        axis.legend()
        figure.tight_layout()
        figure.savefig(out / "multipliers.png", dpi=100)
        plt.close(figure)

    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot(epochs, [row["train_accuracy"] for row in history], label="train")
    axis.plot(epochs, [row["test_accuracy"] for row in history], label="test")
    axis.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "accuracy.png", dpi=100)
    plt.close(figure)


__all__ = ["L0Layer", "Run", "build_run", "gated_layers", "train"]
