"""A Neyman-Pearson run: data, problem, the shared loop with candidates, the returned model, metrics, plots."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from problems.common.rates import candidates, runs
from problems.common.rates.adult import load_adult
from problems.common.rates.data import LabeledSplit, RateDataset, load_breast_cancer_rates
from problems.common.rates.kinds import RateKind
from problems.common.rates.metrics import overall_rate
from problems.common.rates.models import build_scorer
from problems.rates.config import NeymanPearsonConfig
from problems.rates.neyman_pearson import NeymanPearson

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
    out, started = runs.start_run(config)  # the fit: setup to returned model, data loading excluded
    for split_name, split in data.splits().items():
        for label, name in ((0.0, "negative"), (1.0, "positive")):
            if not bool((split.y == label).any()):
                raise ValueError(f"the {split_name} split has no {name} example: FPR/FNR are undefined")
    model = build_scorer(config.model, data.num_features, config.hidden, config.depth)
    problem = NeymanPearson(model, config.alpha, config.proxy, config.temperature)
    optimizer, schedulers = candidates.build_optimizer(config, problem, model, data.train.num_examples)

    def measure(probability: torch.Tensor, split: LabeledSplit) -> tuple[float, np.ndarray]:
        fnr = overall_rate(RateKind.FALSE_NEGATIVE, probability, split.y)
        fpr = overall_rate(RateKind.FALSE_POSITIVE, probability, split.y)
        return fnr, np.array([fpr - config.alpha])

    def row_metrics(probability: torch.Tensor, split: LabeledSplit) -> dict[str, float]:
        return {
            "selection_false_negative_rate": overall_rate(RateKind.FALSE_NEGATIVE, probability, split.y),
            "selection_false_positive_rate": overall_rate(RateKind.FALSE_POSITIVE, probability, split.y),
        }

    result = candidates.fit_candidates(
        config, problem, optimizer, model, data, measure, row_metrics, schedulers, out
    )
    fit_seconds = time.perf_counter() - started

    metrics = runs.split_metrics(model, result, data.splits(), _REPORTED)
    last_keys = ("false_positive_rate", "false_negative_rate")
    metrics["last_iterate"] = runs.last_iterate_metrics(model, result, data.test, last_keys)
    metrics.update(
        {
            "alpha": config.alpha,
            "test_fpr_within_alpha_plus_0.01": metrics["test_false_positive_rate"] <= config.alpha + 0.01,
            **result.summary(fit_seconds),
            "skipped_constraint_batches": problem.skipped,
            "multiplier": candidates.multiplier_values(problem)["false_positive_rate"][0],
            "dataset": data.name,
            **runs.data_summary(config, data),
        }
    )
    runs.save_outputs(out, metrics, model, result, problem, optimizer, config)
    plot_np_run(config, result, metrics, out)
    return metrics


def plot_np_run(
    config: NeymanPearsonConfig, result: candidates.CandidateResult, metrics: dict[str, Any], out: Path
) -> None:
    """violations.png, multipliers.png and tradeoff.png (FNR vs FPR of the candidates)."""
    runs.plot_candidates(
        result,
        out,
        violation_ylabel="FPR - alpha (true rate)",
        columns=("selection_false_positive_rate", "selection_false_negative_rate"),
        labels=("false-positive rate", "false-negative rate"),
        returned_test=(metrics["test_false_positive_rate"], metrics["test_false_negative_rate"]),
        bound=config.alpha,
    )
