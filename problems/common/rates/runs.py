"""What a rate-constrained trainer does around its problem: set up, report the returned model, write outputs.

A trainer (:func:`problems.fairness.train.train`, :func:`problems.rates.train_np.train_neyman_pearson`)
calls :func:`start_run`, builds its problem and :func:`~problems.common.rates.candidates.build_optimizer`,
trains with :func:`~problems.common.rates.candidates.fit_candidates`, reports the returned model with
:func:`split_metrics` and :func:`last_iterate_metrics`, then :func:`save_outputs` and
:func:`plot_candidates`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import cooper_like as cooper
from problems.common.rates.candidates import CandidateResult
from problems.common.rates.config import RateTrainConfig
from problems.common.rates.data import LabeledSplit, RateDataset
from problems.common.rates.metrics import rate_report
from problems.scaffold.checkpoints import atomic_write_text, save_checkpoint
from problems.scaffold.plots import plot_tradeoff, plot_trajectories
from problems.scaffold.seeding import seed_everything

__all__ = [
    "data_summary",
    "last_iterate_metrics",
    "plot_candidates",
    "save_outputs",
    "split_metrics",
    "start_run",
]


def start_run(config: RateTrainConfig) -> tuple[Path, float]:
    """Start the clock, create ``config.out``, seed, set the CPU threads; return the folder and the start."""
    started = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    return out, started


def split_metrics(
    model: nn.Module,
    result: CandidateResult,
    splits: Mapping[str, LabeledSplit],
    keys: Iterable[str],
    partitions: Sequence[Sequence[int]] | None = None,
    index: int | None = None,
) -> dict[str, Any]:
    """``{split}_{key}`` for every split and :func:`~problems.common.rates.metrics.rate_report` key of the
    returned model (or of candidate ``index``)."""
    names = tuple(keys)
    metrics: dict[str, Any] = {}
    for split_name, split in splits.items():
        probability = result.positive_probability(model, split.x, index)
        report = rate_report(probability, split.y, split.membership, partitions)
        metrics.update({f"{split_name}_{name}": report[name] for name in names})
    return metrics


def last_iterate_metrics(
    model: nn.Module,
    result: CandidateResult,
    test: LabeledSplit,
    keys: Iterable[str],
    partitions: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """The last candidate's step and its ``test_{key}`` metrics (to compare with the returned model)."""
    return {
        "step": result.candidates[-1].step,
        **split_metrics(model, result, {"test": test}, keys, partitions, index=-1),
    }


def data_summary(config: RateTrainConfig, data: RateDataset) -> dict[str, Any]:
    """The split sizes and the run's configuration (the last entries of ``metrics.json``)."""
    return {
        "num_train": data.train.num_examples,
        "num_validation": 0 if data.validation is None else data.validation.num_examples,
        "num_test": data.test.num_examples,
        "config": config.model_dump(mode="json"),
    }


def save_outputs(
    out: Path,
    metrics: dict[str, Any],
    model: nn.Module,
    result: CandidateResult,
    problem: cooper.ConstrainedMinimizationProblem,
    optimizer: cooper.optim.CooperOptimizer,
    config: RateTrainConfig,
) -> None:
    """Write ``metrics.json`` and ``model.pt``: the model, the chosen candidates' states and probabilities
    (``mixture``), the multipliers, the optimizer and the configuration."""
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


def plot_candidates(
    result: CandidateResult,
    out: Path,
    *,
    violation_ylabel: str,
    columns: tuple[str, str],
    labels: tuple[str, str],
    returned_test: tuple[float, float],
    bound: float | None = None,
) -> None:
    """violations.png, multipliers.png and tradeoff.png: the candidates' row ``columns`` (x, y) on the
    selection split, the chosen ones circled, the returned model's test point and an optional x ``bound``."""
    plot_trajectories(result.history, out, violation_ylabel=violation_ylabel)
    xs = [float(row.get(columns[0], float("nan"))) for row in result.history]
    ys = [float(row.get(columns[1], float("nan"))) for row in result.history]
    plot_tradeoff(
        xs,
        ys,
        result.choice.indices,
        out / "tradeoff.png",
        xlabel=labels[0],
        ylabel=labels[1],
        title="candidates on the selection split",
        bound=bound,
        extra_points={"returned, test": returned_test},
    )
