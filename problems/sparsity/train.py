"""Training runs of the sparsity problem: constrained (this library), penalized L0, magnitude pruning."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import cooper_like as cooper
from problems.scaffold.checkpoints import atomic_write_text, load_checkpoint, save_checkpoint
from problems.scaffold.datasets import DataSplit, load_digits_split, mnist5k_split
from problems.scaffold.metrics_log import MetricsLogger
from problems.scaffold.progress import progress
from problems.scaffold.seeding import rng_state, seed_everything, set_rng_state
from problems.sparsity.config import SparsityConfig
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
    """MNIST-5k (4,000 / 1,000, stratified) or scikit-learn's digits."""
    return mnist5k_split() if config.dataset == "mnist5k" else load_digits_split()


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
    groups: list[dict[str, Any]] = [{"params": weights, "lr": config.lr}]
    if gates:
        groups.append({"params": gates, "lr": config.gate_lr, "betas": (config.gate_beta1, 0.999)})
    if extrapolating:
        return cooper.optim.ExtraAdam(groups, lr=config.lr)
    return torch.optim.Adam(groups, lr=config.lr)


def build_constrained(
    config: SparsityConfig, model: nn.Module
) -> tuple[ControlledSparsity, cooper.optim.CooperOptimizer, dict[str, Any]]:
    """The constrained problem, its optimizer, and the companions chosen automatically (recorded)."""
    companions: dict[str, Any] = {}
    penalty = config.dual_lr
    if config.formulation == "augmented-lagrangian":
        companions["penalty_coefficient"] = penalty
        companions["note"] = "dual lr = penalty coefficient: the classical multiplier update"
    problem = ControlledSparsity(
        model,
        config.target_density if config.layerwise else config.target_density[0],
        layerwise=config.layerwise,
        formulation=config.formulation,
        strict=config.strict,
        dual_restarts=config.dual_restarts,
        penalty=penalty,
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
    return problem, scheme(cmp=problem, primal_optimizers=primal, dual_optimizers=dual), companions


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


@dataclass
class Run:
    """Everything a training run steps and checkpoints."""

    config: SparsityConfig
    model: nn.Module
    problem: cooper.ConstrainedMinimizationProblem
    optimizer: cooper.optim.CooperOptimizer
    companions: dict[str, Any]
    masks: dict[str, torch.Tensor] | None = None


def build_run(config: SparsityConfig, num_features: int) -> Run:
    model = build_model(config, num_features, gated=config.method != "magnitude")
    if config.method == "constrained":
        problem, optimizer, companions = build_constrained(config, model)
        return Run(config, model, problem, optimizer, companions)
    if config.method == "penalized":
        penalized = PenalizedL0(model, config.lmbda)
        optimizer = cooper.optim.UnconstrainedOptimizer(
            cmp=penalized, primal_optimizers=primal_optimizer(config, model, False)
        )
        return Run(config, model, penalized, optimizer, {"lmbda": config.lmbda})
    plain = CrossEntropy(model)
    adam = torch.optim.Adam(model.parameters(), lr=config.lr)
    return Run(
        config,
        model,
        plain,
        cooper.optim.UnconstrainedOptimizer(cmp=plain, primal_optimizers=adam),
        {"finetune_epochs": config.finetune_epochs},
    )


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


def train(config: SparsityConfig) -> dict[str, Any]:
    """Train, log every epoch, checkpoint atomically every epoch, write ``metrics.json`` and plots."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    data = load_data(config)
    run = build_run(config, data.x_train.shape[1])
    total_epochs = config.epochs + (config.finetune_epochs if config.method == "magnitude" else 0)
    start_epoch, wall_time = 0, 0.0
    history: list[dict[str, Any]] = []
    if config.resume is not None:
        start_epoch, wall_time, history = restore(run, Path(config.resume) / CHECKPOINT)

    with MetricsLogger(out) as logger:
        for row in history:
            logger.log(**row)
        for epoch in progress(
            range(start_epoch, total_epochs), desc="epochs", initial=start_epoch, total=total_epochs
        ):
            started = time.perf_counter()
            if config.method == "magnitude" and epoch == config.epochs:
                prune_by_magnitude(run)
            run.model.train()
            losses = []
            for batch in epoch_batches(config, epoch, len(data.x_train)):
                roll_out = run.optimizer.roll({"inputs": data.x_train[batch], "labels": data.y_train[batch]})
                if run.masks is not None:
                    apply_masks(run)
                losses.append(float(roll_out.loss.detach()) if roll_out.loss is not None else float("nan"))
            wall_time += time.perf_counter() - started
            row = epoch_row(run, data, epoch, sum(losses) / len(losses))
            history.append(row)
            logger.log(**row)
            save_checkpoint(checkpoint_payload(run, epoch + 1, wall_time, history), out / CHECKPOINT)

    metrics = final_metrics(run, data, total_epochs, wall_time)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    plot_history(history, config, out)
    return metrics


def prune_by_magnitude(run: Run) -> None:
    run.masks = magnitude_masks(run.model, run.config.target_density, run.config.layerwise)
    apply_masks(run)


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
        "train_accuracy": accuracy(run.model, data.x_train, data.y_train),
        "test_accuracy": accuracy(run.model, data.x_test, data.y_test),
        "expected_density": densities["expected_density"],
        "test_time_density": densities["test_time_density"],
        "test_time_density_median_gate": densities["test_time_density_median_gate"],
    }
    for name, value in densities["per_layer_density"].items():
        row[f"density/{name}"] = value
    for index, value in enumerate(multiplier_values(run)):
        row[f"multiplier/{index}"] = value
    for index, group in enumerate(run.optimizer.primal_optimizers[0].param_groups):
        row[f"lr/primal_{index}"] = group["lr"]
    return row


def final_metrics(run: Run, data: DataSplit, epochs: int, wall_time: float) -> dict[str, Any]:
    config = run.config
    densities = density_report(run)
    return {
        "test_accuracy": accuracy(run.model, data.x_test, data.y_test),
        "train_accuracy": accuracy(run.model, data.x_train, data.y_train),
        **densities,
        "test_time_density_definition": "fraction of Linear/Conv weight entries whose Louizos test-time gate is > 0 "
        "(log alpha > -ln 11); biases excluded",
        "target_density": config.target_density[0] if not config.layerwise else config.target_density,
        "multipliers": multiplier_values(run),
        "wall_time_s": wall_time,
        "epochs": epochs,
        "method": config.method,
        "companions": run.companions,
        "config": config.model_dump(mode="json"),
    }


def checkpoint_payload(
    run: Run, epoch: int, wall_time: float, history: list[dict[str, Any]]
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": run.model.state_dict(),
        "problem": run.problem.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "epoch": epoch,
        "wall_time_s": wall_time,
        "rng": rng_state(),
        "history": history,
        "config": run.config.model_dump(mode="json"),
    }
    if run.masks is not None:
        payload["masks"] = run.masks
    return payload


def restore(run: Run, path: Path) -> tuple[int, float, list[dict[str, Any]]]:
    """Load a checkpoint into ``run``; return (next epoch, wall time so far, logged history)."""
    state = load_checkpoint(path)
    run.model.load_state_dict(state["model"])
    run.problem.load_state_dict(state["problem"])
    run.optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    run.masks = state.get("masks")
    return int(state["epoch"]), float(state["wall_time_s"]), list(state["history"])


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
