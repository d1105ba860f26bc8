"""A Neyman-Pearson training run: data, problem, primal-dual loop, the returned model, metrics and plots."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import cooper_like as cooper
from problems.rates.adult import load_adult
from problems.rates.config import NeymanPearsonConfig
from problems.rates.data import LabeledSplit, RateDataset, load_breast_cancer_rates
from problems.rates.kinds import RateKind
from problems.rates.metrics import overall_rate, rate_report
from problems.rates.models import build_scorer
from problems.rates.neyman_pearson import NeymanPearson
from problems.rates.training import (
    LoopResult,
    LoopSettings,
    build_dual_optimizer,
    build_primal_optimizer,
    build_schedulers,
    chosen_positive_probability,
    multiplier_values,
    run_primal_dual,
    steps_per_epoch,
)
from problems.scaffold.checkpoints import atomic_write_text, save_checkpoint
from problems.scaffold.metrics_log import MetricsLogger
from problems.scaffold.plots import plot_tradeoff, plot_trajectories
from problems.scaffold.seeding import seed_everything

__all__ = ["load_np_data", "train_neyman_pearson"]

_REPORTED = (
    "false_negative_rate",
    "false_positive_rate",
    "accuracy",
    "true_positive_rate",
    "positive_prediction_rate",
)


def load_np_data(config: NeymanPearsonConfig) -> RateDataset:
    """Adult (fairlearn's preprocessing, ``sex`` dropped) or scikit-learn's breast-cancer data."""
    if config.dataset == "adult":
        return load_adult(("sex",), "intersectional", config.validation_fraction, config.split_seed)
    return load_breast_cancer_rates(config.validation_fraction, config.split_seed)


def train_neyman_pearson(config: NeymanPearsonConfig, data: RateDataset | None = None) -> dict[str, Any]:
    """Train, choose the returned model, write ``metrics.json``, ``metrics.csv``, ``model.pt`` and plots.

    Args:
        config: The run's configuration.
        data: Optional data set to use instead of ``config.dataset``.

    Returns:
        The metrics written to ``metrics.json`` (``test_false_positive_rate``, ``test_false_negative_rate``,
        ``alpha``, ``returned``, ``wall_time_s`` (configuration to returned model, data loading and
        final evaluation excluded), ...).
    """
    if data is None:
        data = load_np_data(config)
    started = time.perf_counter()  # the fit: setup to returned model, data loading excluded
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    for split_name, split in data.splits().items():
        for label, name in ((0.0, "negative"), (1.0, "positive")):
            if not bool((split.y == label).any()):
                raise ValueError(f"the {split_name} split has no {name} example: FPR/FNR are undefined")
    epochs, batch_size, lr, weight_decay, log_every, dual_lr = config.resolved()
    model = build_scorer(config.model, data.num_features, config.hidden, config.depth)
    problem = NeymanPearson(model, config.alpha, config.proxy, config.temperature)
    primal = build_primal_optimizer(model.parameters(), lr, config.beta1, weight_decay)
    dual = build_dual_optimizer(
        config.dual_optimizer, problem.dual_parameters(), dual_lr, config.nupi_kp, config.nupi_ema_nu
    )
    optimizer = cooper.optim.SimultaneousOptimizer(problem, primal, dual)
    schedulers = build_schedulers(
        primal,
        config.lr_schedule,
        epochs * steps_per_epoch(data.train.num_examples, batch_size),
        config.lr_final_fraction,
    )

    def measure(probability: torch.Tensor, split: LabeledSplit) -> tuple[float, np.ndarray]:
        fnr = overall_rate(RateKind.FALSE_NEGATIVE, probability, split.y)
        fpr = overall_rate(RateKind.FALSE_POSITIVE, probability, split.y)
        return fnr, np.array([fpr - config.alpha])

    def row_metrics(probability: torch.Tensor, split: LabeledSplit) -> dict[str, float]:
        return {
            "selection_false_negative_rate": overall_rate(RateKind.FALSE_NEGATIVE, probability, split.y),
            "selection_false_positive_rate": overall_rate(RateKind.FALSE_POSITIVE, probability, split.y),
        }

    settings = LoopSettings(epochs, batch_size, log_every, config.seed, config.selection)
    with MetricsLogger(out) as logger:
        result = run_primal_dual(
            problem, optimizer, model, data, settings, measure, logger, row_metrics, schedulers
        )
    if len(result.choice.indices) == 1:
        model.load_state_dict(result.candidates[result.choice.indices[0]].state)
    fit_seconds = time.perf_counter() - started

    metrics: dict[str, Any] = {}
    for split_name, split in data.splits().items():
        chosen = chosen_positive_probability(model, result.candidates, result.choice, split.x)
        report = rate_report(chosen, split.y, split.membership)
        for name in _REPORTED:
            metrics[f"{split_name}_{name}"] = report[name]
    last = chosen_positive_probability(model, result.candidates, len(result.candidates) - 1, data.test.x)
    metrics["last_iterate"] = {
        "step": result.candidates[-1].step,
        "test_false_positive_rate": overall_rate(RateKind.FALSE_POSITIVE, last, data.test.y),
        "test_false_negative_rate": overall_rate(RateKind.FALSE_NEGATIVE, last, data.test.y),
    }
    metrics.update(
        {
            "alpha": config.alpha,
            "test_fpr_within_alpha_plus_0.01": metrics["test_false_positive_rate"] <= config.alpha + 0.01,
            "returned": result.choice.describe(result.candidates),
            "deterministic": len(result.choice.indices) == 1,
            "wall_time_s": fit_seconds,
            "steps": result.steps,
            "skipped_constraint_batches": problem.skipped,
            "multiplier": multiplier_values(problem)["false_positive_rate"][0],
            "dataset": data.name,
            "num_train": data.train.num_examples,
            "num_validation": 0 if data.validation is None else data.validation.num_examples,
            "num_test": data.test.num_examples,
            "config": config.model_dump(mode="json"),
        }
    )
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    save_checkpoint(
        {
            "model": model.state_dict(),
            "mixture": {
                "probabilities": result.choice.probabilities,
                "states": [result.candidates[i].state for i in result.choice.indices],
            },
            "problem": problem.state_dict(),
            "optimizer": optimizer.state_dict(),
            "config": config.model_dump(mode="json"),
        },
        out / "model.pt",
    )
    plot_np_run(config, result, metrics, out)
    return metrics


def plot_np_run(config: NeymanPearsonConfig, result: LoopResult, metrics: dict[str, Any], out: Path) -> None:
    """violations.png, multipliers.png and tradeoff.png (FNR vs FPR of the candidates)."""
    plot_trajectories(result.history, out, violation_ylabel="FPR - alpha (true rate)")
    xs = [float(row["selection_false_positive_rate"]) for row in result.history]
    ys = [float(row["selection_false_negative_rate"]) for row in result.history]
    plot_tradeoff(
        xs,
        ys,
        result.choice.indices,
        out / "tradeoff.png",
        xlabel="false-positive rate",
        ylabel="false-negative rate",
        title="candidates on the selection split",
        bound=config.alpha,
        extra_points={
            "returned, test": (metrics["test_false_positive_rate"], metrics["test_false_negative_rate"])
        },
    )
