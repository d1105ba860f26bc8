"""A feasible-learning run: per-example constraints, per-step timing, metrics, epoch CSV and plots."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import cooper_like as cooper
from problems.feasible.config import FeasibleConfig
from problems.feasible.data import ClassificationData, load_feasible_data
from problems.feasible.problem import FeasibleLearning
from problems.scaffold.checkpoints import atomic_write_text, save_checkpoint
from problems.scaffold.loop import Active, LoopSettings, Moment, Stage, Task, fit
from problems.scaffold.metrics_log import MetricsLogger
from problems.scaffold.plots import plot_series
from problems.scaffold.seeding import seed_everything

__all__ = ["FeasibleRun", "build_classifier", "build_feasible", "evaluate", "train_feasible"]


def build_classifier(kind: str, num_features: int, num_classes: int, hidden: int = 256) -> nn.Module:
    """``"mlp"`` (one ReLU hidden layer) or ``"linear"`` (multinomial logistic regression) on flat inputs."""
    if kind == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(num_features, num_classes))
    if kind == "mlp":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )
    raise ValueError(f"model must be 'mlp' or 'linear', got {kind!r}")


def build_feasible(
    config: FeasibleConfig, data: ClassificationData
) -> tuple[FeasibleLearning, cooper.optim.SimultaneousOptimizer]:
    """The problem (one multiplier per training example) and its simultaneous optimizer."""
    model = build_classifier(config.model, data.x_train[0].numel(), data.num_classes, config.hidden)
    problem = FeasibleLearning(
        model, len(data.y_train), config.epsilon, config.objective_weight, config.multiplier_init
    )
    primal = torch.optim.Adam(model.parameters(), lr=config.lr)
    dual: torch.optim.Optimizer
    if config.dual_optimizer == "nupi":
        dual = cooper.optim.nuPI(
            problem.dual_parameters(), lr=config.dual_lr, Kp=config.nupi_kp, maximize=True
        )
    else:
        dual = torch.optim.SGD(problem.dual_parameters(), lr=config.dual_lr, maximize=True)
    return problem, cooper.optim.SimultaneousOptimizer(problem, primal, dual)


@torch.no_grad()
def evaluate(problem: FeasibleLearning, data: ClassificationData, chunk: int = 65536) -> dict[str, float]:
    """Fraction of training examples meeting their constraint, losses, accuracies and multiplier statistics."""
    model = problem.model
    was_training = model.training
    model.eval()

    def losses_and_hits(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        losses, hits = [], []
        for start in range(0, len(y), chunk):
            logits = model(x[start : start + chunk])
            target = y[start : start + chunk]
            losses.append(nn.functional.cross_entropy(logits, target, reduction="none"))
            hits.append(logits.argmax(dim=1) == target)
        return torch.cat(losses), torch.cat(hits)

    train_losses, train_hits = losses_and_hits(data.x_train, data.y_train)
    test_losses, test_hits = losses_and_hits(data.x_test, data.y_test)
    model.train(was_training)
    multiplier = problem.per_example_loss.multiplier
    assert isinstance(multiplier, cooper.multipliers.IndexedMultiplier)
    multipliers = multiplier.weight.detach().reshape(-1)
    return {
        "train_fraction_feasible": float((train_losses <= problem.epsilon).double().mean()),
        "train_mean_loss": float(train_losses.mean()),
        "train_max_loss": float(train_losses.max()),
        "train_accuracy": float(train_hits.double().mean()),
        "test_fraction_within_epsilon": float((test_losses <= problem.epsilon).double().mean()),
        "test_mean_loss": float(test_losses.mean()),
        "test_accuracy": float(test_hits.double().mean()),
        "multiplier_mean": float(multipliers.mean()),
        "multiplier_max": float(multipliers.max()),
        "multiplier_fraction_positive": float((multipliers > 0).double().mean()),
    }


class FeasibleRun(Task):
    """A feasible-learning run on the shared loop: one stage ``"train"`` of ``config.epochs`` epochs.

    A batch is the examples' inputs, labels and ids (the rows of their multipliers); a row holds the
    step, the (1-based) epoch, the seconds since :attr:`started` and :func:`evaluate`'s measures.
    """

    problem: FeasibleLearning

    def __init__(
        self,
        problem: FeasibleLearning,
        optimizer: cooper.optim.CooperOptimizer,
        data: ClassificationData,
        epochs: int,
    ) -> None:
        self.problem, self.optimizer, self.data, self.epochs = problem, optimizer, data, epochs
        self.model = problem.model
        self.num_examples = len(data.y_train)
        self.started = time.perf_counter()

    def stages(self) -> list[Stage]:
        return [Stage("train", self.epochs, self.enter)]

    def enter(self, previous: Active | None) -> Active:
        return Active(self.optimizer)

    def batch(self, indices: torch.Tensor) -> dict[str, Any]:
        return {
            "inputs": self.data.x_train[indices],
            "labels": self.data.y_train[indices],
            "indices": indices,
        }

    def row(self, moment: Moment) -> dict[str, Any]:
        return {
            "step": moment.step,
            "epoch": moment.epoch + 1,
            "elapsed_s": time.perf_counter() - self.started,
            **evaluate(self.problem, self.data),
        }


def train_feasible(config: FeasibleConfig, data: ClassificationData | None = None) -> dict[str, Any]:
    """Train; log a row per epoch (or every ``log_every`` steps); write ``metrics.json``, ``model.pt``, plots.

    ``step_time_median_us`` is the median wall time of one ``roll()`` (forward, backward, primal and
    dual steps), which must not grow with the number of examples; ``wall_time_s`` is the whole
    training, the rows' evaluations included.
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    if data is None:
        data = load_feasible_data(config.dataset, config.num_examples, config.data_seed)
    problem, optimizer = build_feasible(config, data)
    num_examples = len(data.y_train)
    run = FeasibleRun(problem, optimizer, data, config.epochs)
    settings = LoopSettings(seed=config.seed, batch_size=config.batch_size, log_every=config.log_every)
    with MetricsLogger(out) as logger:
        result = fit(run, settings, logger=logger)
    wall_time = time.perf_counter() - run.started
    history, step_times = result.history, result.step_seconds
    metrics: dict[str, Any] = {
        **evaluate(problem, data),
        "epsilon": config.epsilon,
        "num_examples": num_examples,
        "num_constraints": num_examples,
        "steps": result.steps,
        "wall_time_s": wall_time,
        "step_time_median_us": statistics.median(step_times) * 1e6,
        "step_time_p90_us": statistics.quantiles(step_times, n=10)[-1] * 1e6
        if len(step_times) > 1
        else float("nan"),
        "dataset": config.dataset,
        "config": config.model_dump(mode="json"),
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    save_checkpoint(
        {
            "model": problem.model.state_dict(),
            "problem": problem.state_dict(),
            "config": config.model_dump(mode="json"),
        },
        out / "model.pt",
    )
    plot_series(
        history,
        ["train_fraction_feasible", "test_fraction_within_epsilon", "train_accuracy", "test_accuracy"],
        out / "feasibility.png",
        ylabel="fraction",
        title="examples meeting loss <= epsilon",
    )
    plot_series(
        history,
        ["multiplier_mean", "multiplier_max"],
        out / "multipliers.png",
        ylabel="multiplier",
        title="per-example multipliers",
    )
    plot_series(
        history,
        ["train_max_loss", "train_mean_loss"],
        out / "violations.png",
        ylabel="cross-entropy",
        title=f"per-example losses (epsilon = {config.epsilon})",
    )
    return metrics
