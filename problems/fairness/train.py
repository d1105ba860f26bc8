"""A fairness run: data, problem, the shared loop with candidates, the returned model, metrics and plots."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import cooper_like as cooper
from problems.common.rates import candidates, runs
from problems.common.rates.adult import load_adult
from problems.common.rates.data import LabeledSplit, RateDataset
from problems.common.rates.kinds import RateKind
from problems.common.rates.metrics import PARITY_KINDS, rate_weights
from problems.common.rates.models import build_scorer
from problems.fairness.config import FairnessConfig
from problems.fairness.problem import CRITERIA, FairClassification

__all__ = [
    "EPSILON_SEMANTICS",
    "REPORTED_KEYS",
    "build",
    "criterion_key",
    "final_metrics",
    "load_data",
    "parity_violations",
    "plot_run",
    "split_rate_weights",
    "train",
]

REPORTED_KEYS = (
    "accuracy",
    "dp_difference",
    "tpr_difference",
    "fpr_difference",
    "eo_difference",
    "dp_max_deviation",
    "tpr_max_deviation",
    "fpr_max_deviation",
    "eo_max_deviation",
    "positive_prediction_rate",
    "true_positive_rate",
    "false_positive_rate",
)
"""Per split, the keys written to ``metrics.json`` as ``{split}_{key}``."""

EPSILON_SEMANTICS = (
    "epsilon bounds every |rate_group - rate_overall| (fairlearn's difference_bound), reported as "
    "*_max_deviation; the *_difference metrics are max_group - min_group (fairlearn's "
    "demographic_parity_difference / equalized_odds_difference) and can reach epsilon / min_g(1 - share_g), "
    "about 1.5 epsilon for groups of shares 1/3 and 2/3"
)


def criterion_key(criterion: str) -> str:
    """The headline metric prefix of a criterion: ``dp``, ``tpr`` or ``eo``."""
    return {"demographic-parity": "dp", "equal-opportunity": "tpr", "equalized-odds": "eo"}[criterion]


def split_rate_weights(kinds: Iterable[RateKind], split: LabeledSplit) -> dict[RateKind, torch.Tensor]:
    """Per rate, weights ``(G + 1, n)`` whose product with the predictions gives its rate in every group,
    then over everyone (:func:`~problems.common.rates.metrics.rate_weights`); built once per split."""
    membership = torch.cat([split.membership, torch.ones_like(split.membership[:1])])
    return {RateKind(kind): rate_weights(kind, split.y, membership) for kind in kinds}


def parity_violations(
    criterion: str,
    epsilon: float,
    positive_probability: torch.Tensor,
    split: LabeledSplit,
    weights: dict[RateKind, torch.Tensor] | None = None,
) -> np.ndarray:
    """True constraint values :math:`\\pm(r_g - r) - \\epsilon` of every group and rate (linear in the predictions).

    ``weights``: the split's :func:`split_rate_weights` (computed here when omitted).
    """
    kinds = list(CRITERIA[criterion].values())
    weights = split_rate_weights(kinds, split) if weights is None else weights
    rows = []
    for kind in kinds:
        rates = weights[kind] @ positive_probability.double()
        gaps = rates[:-1] - rates[-1]
        rows.append(torch.stack([gaps, -gaps], dim=1).reshape(-1) - epsilon)
    values = torch.cat(rows).numpy()
    return np.nan_to_num(values, nan=-epsilon)


def load_data(config: FairnessConfig) -> RateDataset:
    return load_adult(config.sensitive, config.group_mode, config.validation_fraction, config.split_seed)


def build(
    config: FairnessConfig, data: RateDataset
) -> tuple[
    FairClassification, cooper.optim.SimultaneousOptimizer, list[torch.optim.lr_scheduler.LRScheduler]
]:
    """The problem, its optimizer (AdamW on the model, SGD or nuPI on the multipliers) and the lr schedulers."""
    bins = config.numeric_bins or 0
    model = build_scorer(config.model, data.num_features, config.hidden, config.depth, bins, data.train.x)
    problem = FairClassification(
        model, config.constraint, data.groups.num_groups, config.epsilon, config.proxy, config.temperature
    )
    optimizer, schedulers = candidates.build_optimizer(config, problem, model, data.train.num_examples)
    return problem, optimizer, schedulers


def train(config: FairnessConfig, data: RateDataset | None = None) -> dict[str, Any]:
    """Train, choose the returned model, write ``metrics.json``, ``metrics.csv``, ``model.pt`` and plots.

    Args:
        config: The run's configuration.
        data: Optional data set to use instead of Adult (e.g. in tests); its groups must be non-empty.

    Returns:
        The metrics written to ``metrics.json``; ``wall_time_s`` is the time from the configuration to the
        returned model (setup, steps, candidate measurements and logs, choice), without the data loading
        and the final evaluation, outputs and plots.

    Raises:
        GroupError: A group has no member (with the needed label) in a split.
    """
    if data is None:
        data = load_data(config)
    out, started = runs.start_run(config)
    data.check_groups(list(CRITERIA[config.constraint].values()))
    problem, optimizer, schedulers = build(config, data)
    model = problem.model
    key = criterion_key(config.constraint)
    partitions = data.groups.partitions

    prefixes = ("dp",) if key == "dp" else ("tpr", "fpr")
    kinds = {*CRITERIA[config.constraint].values(), *(PARITY_KINDS[prefix] for prefix in prefixes)}
    selection = data.selection_split
    selection_weights = split_rate_weights(kinds, selection)

    def weights_of(split: LabeledSplit) -> dict[RateKind, torch.Tensor]:
        return selection_weights if split is selection else split_rate_weights(kinds, split)

    def measure(probability: torch.Tensor, split: LabeledSplit) -> tuple[float, np.ndarray]:
        error = float((probability - split.y).abs().mean())  # P(prediction != label), p in [0, 1]
        return error, parity_violations(
            config.constraint, config.epsilon, probability, split, weights_of(split)
        )

    def row_metrics(probability: torch.Tensor, split: LabeledSplit) -> dict[str, float]:
        row = {"selection_accuracy": 1.0 - float((probability - split.y).abs().mean())}
        weights = weights_of(split)
        for prefix in prefixes:
            rates = weights[PARITY_KINDS[prefix]][:-1] @ probability.double()
            row[f"selection_{prefix}_difference"] = max(
                float(rates[part].max() - rates[part].min()) for part in partitions
            )
        if key == "eo":
            row["selection_eo_difference"] = max(
                row["selection_tpr_difference"], row["selection_fpr_difference"]
            )
        return row

    result = candidates.fit_candidates(
        config, problem, optimizer, model, data, measure, row_metrics, schedulers, out
    )
    fit_seconds = time.perf_counter() - started
    metrics = final_metrics(config, data, problem, result, fit_seconds)
    runs.save_outputs(out, metrics, model, result, problem, optimizer, config)
    plot_run(config, result, metrics, out)
    return metrics


def final_metrics(
    config: FairnessConfig,
    data: RateDataset,
    problem: FairClassification,
    result: candidates.CandidateResult,
    wall_time_s: float | None = None,
) -> dict[str, Any]:
    """Metrics of the returned model (and of the last iterate, for comparison) on every split.

    ``wall_time_s``: the training time to report (default: the run's, ``result.wall_time_s``).
    """
    model, partitions = problem.model, data.groups.partitions
    metrics = runs.split_metrics(model, result, data.splits(), (*REPORTED_KEYS, "group_rates"), partitions)
    last_keys = ("accuracy", "dp_difference", "eo_difference")
    metrics["last_iterate"] = runs.last_iterate_metrics(model, result, data.test, last_keys, partitions)
    metrics.update(
        {
            **result.summary(wall_time_s),
            "skipped_group_constraints": problem.skipped,
            "multipliers": candidates.multiplier_values(problem),
            "constraint": config.constraint,
            "epsilon": config.epsilon,
            "epsilon_semantics": EPSILON_SEMANTICS,
            "groups": data.groups.names,
            "group_shares_train": (data.train.membership.double().mean(dim=1)).tolist(),
            **runs.data_summary(config, data),
        }
    )
    return metrics


def plot_run(
    config: FairnessConfig, result: candidates.CandidateResult, metrics: dict[str, Any], out: Path
) -> None:
    """violations.png, multipliers.png and tradeoff.png (accuracy vs unfairness of the candidates)."""
    key = criterion_key(config.constraint)
    runs.plot_candidates(
        result,
        out,
        violation_ylabel="max true violation (rate gap - epsilon)",
        columns=(f"selection_{key}_difference", "selection_accuracy"),
        labels=(f"{key} difference (max - min)", "accuracy"),
        returned_test=(metrics[f"test_{key}_difference"], metrics["test_accuracy"]),
    )
