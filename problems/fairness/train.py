"""A fairness training run: data, problem, primal-dual loop, the returned model, metrics and plots."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import cooper_like as cooper
from problems.fairness.config import FairnessConfig
from problems.fairness.problem import CRITERIA, FairClassification
from problems.rates.adult import load_adult
from problems.rates.data import LabeledSplit, RateDataset
from problems.rates.kinds import RateKind
from problems.rates.metrics import PARITY_KINDS, rate_report, rate_weights
from problems.rates.models import build_scorer
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
    then over everyone (:func:`~problems.rates.metrics.rate_weights`); built once per split."""
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
    settings = config.resolved()
    bins = config.numeric_bins or 0
    model = build_scorer(config.model, data.num_features, config.hidden, config.depth, bins, data.train.x)
    problem = FairClassification(
        model, config.constraint, data.groups.num_groups, config.epsilon, config.proxy, config.temperature
    )
    primal = build_primal_optimizer(model.parameters(), settings.lr, config.beta1, settings.weight_decay)
    dual = build_dual_optimizer(
        config.dual_optimizer, problem.dual_parameters(), settings.dual_lr, config.nupi_kp, config.nupi_ema_nu
    )
    total = settings.epochs * steps_per_epoch(data.train.num_examples, settings.batch_size)
    schedulers = build_schedulers(primal, config.lr_schedule, total, config.lr_final_fraction)
    return problem, cooper.optim.SimultaneousOptimizer(problem, primal, dual), schedulers


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
    started = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
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

    resolved = config.resolved()
    settings = LoopSettings(
        resolved.epochs, resolved.batch_size, resolved.log_every, config.seed, config.selection
    )
    with MetricsLogger(out) as logger:
        result = run_primal_dual(
            problem, optimizer, model, data, settings, measure, logger, row_metrics, schedulers
        )

    if len(result.choice.indices) == 1:
        model.load_state_dict(result.candidates[result.choice.indices[0]].state)
    fit_seconds = time.perf_counter() - started
    metrics = final_metrics(config, data, problem, result, fit_seconds)
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
    plot_run(config, result, metrics, out)
    return metrics


def final_metrics(
    config: FairnessConfig,
    data: RateDataset,
    problem: FairClassification,
    result: LoopResult,
    wall_time_s: float | None = None,
) -> dict[str, Any]:
    """Metrics of the returned model (and of the last iterate, for comparison) on every split.

    ``wall_time_s``: the training time to report (default: the loop's, ``result.wall_time_s``).
    """
    model = problem.model
    metrics: dict[str, Any] = {}
    partitions = data.groups.partitions
    for split_name, split in data.splits().items():
        chosen = chosen_positive_probability(model, result.candidates, result.choice, split.x)
        report = rate_report(chosen, split.y, split.membership, partitions)
        for name in REPORTED_KEYS:
            metrics[f"{split_name}_{name}"] = report[name]
        metrics[f"{split_name}_group_rates"] = report["group_rates"]
    last = result.candidates[-1]
    last_probability = chosen_positive_probability(
        model, result.candidates, len(result.candidates) - 1, data.test.x
    )
    last_report = rate_report(last_probability, data.test.y, data.test.membership, partitions)
    metrics["last_iterate"] = {
        "step": last.step,
        **{f"test_{name}": last_report[name] for name in ("accuracy", "dp_difference", "eo_difference")},
    }
    metrics.update(
        {
            "returned": result.choice.describe(result.candidates),
            "deterministic": len(result.choice.indices) == 1,
            "wall_time_s": result.wall_time_s if wall_time_s is None else wall_time_s,
            "steps": result.steps,
            "skipped_group_constraints": problem.skipped,
            "multipliers": multiplier_values(problem),
            "constraint": config.constraint,
            "epsilon": config.epsilon,
            "epsilon_semantics": EPSILON_SEMANTICS,
            "groups": data.groups.names,
            "group_shares_train": (data.train.membership.double().mean(dim=1)).tolist(),
            "num_train": data.train.num_examples,
            "num_validation": 0 if data.validation is None else data.validation.num_examples,
            "num_test": data.test.num_examples,
            "config": config.model_dump(mode="json"),
        }
    )
    return metrics


def plot_run(config: FairnessConfig, result: LoopResult, metrics: dict[str, Any], out: Path) -> None:
    """violations.png, multipliers.png and tradeoff.png (accuracy vs unfairness of the candidates)."""
    plot_trajectories(result.history, out, violation_ylabel="max true violation (rate gap - epsilon)")
    key = criterion_key(config.constraint)
    xs = [float(row.get(f"selection_{key}_difference", float("nan"))) for row in result.history]
    ys = [float(row.get("selection_accuracy", float("nan"))) for row in result.history]
    plot_tradeoff(
        xs,
        ys,
        result.choice.indices,
        out / "tradeoff.png",
        xlabel=f"{key} difference (max - min)",
        ylabel="accuracy",
        title="candidates on the selection split",
        extra_points={"returned, test": (metrics[f"test_{key}_difference"], metrics["test_accuracy"])},
    )
