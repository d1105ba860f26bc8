r"""The primal-dual loop shared by the rate-constrained problems, with candidate iterates and the final choice.

Every ``eval_every`` optimisation steps (and after the last one) the loop copies the model as a
:class:`~problems.rates.selection.Candidate`, measured on the selection split (validation, or train
without one), and logs a row. After training, :func:`~problems.rates.selection.choose` picks the model
to return. :attr:`LoopResult.wall_time_s` covers the optimisation steps, the candidate measurements and
the choice; the trainers report the time from their configuration to the returned model (setup
included), never the data loading nor the final test evaluation.

Full-batch inputs are stored feature-major once (:func:`feature_major`): a linear layer's forward
:math:`Xw` and backward :math:`X^\top g` then read contiguous columns, 2-3 times faster on CPU.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

import cooper_like as cooper
from cooper_like.reporting import metrics_row
from problems.rates.data import LabeledSplit, RateDataset
from problems.rates.selection import Candidate, Choice, SelectionMode, choose
from problems.scaffold.metrics_log import MetricsLogger
from problems.scaffold.progress import progress

__all__ = [
    "DualOptimizerKind",
    "LoopResult",
    "LoopSettings",
    "SelectionMeasure",
    "build_dual_optimizer",
    "build_primal_optimizer",
    "build_schedulers",
    "chosen_positive_probability",
    "epoch_batches",
    "feature_major",
    "multiplier_values",
    "positive_probability",
    "run_primal_dual",
    "steps_per_epoch",
]

DualOptimizerKind = Literal["sgd", "nupi"]


SelectionMeasure = Callable[[torch.Tensor, LabeledSplit], tuple[float, np.ndarray]]
"""``(positive_probability, split) -> (objective, constraint values)`` of a classifier on a split.

``positive_probability`` is the probability of predicting positive per example (0/1 for one model);
constraint values are ``<= 0`` when satisfied and must be linear in it (rates are) for the mixture
choice to be exact."""


def multiplier_values(problem: cooper.ConstrainedMinimizationProblem) -> dict[str, list[float]]:
    """Current values of every explicit multiplier of ``problem``, by constraint name."""
    return {
        name: multiplier.weight.detach().reshape(-1).tolist()
        for name, multiplier in problem.named_multipliers()
        if isinstance(multiplier, cooper.multipliers.ExplicitMultiplier)
    }


@dataclass
class LoopSettings:
    """How long to train and how to keep candidates.

    Attributes:
        epochs: Passes over the training split.
        batch_size: Mini-batch size; ``>= train.num_examples`` means full batch (one step per epoch).
        eval_every: Keep a candidate (and log a row) every this many steps.
        seed: Seed of the mini-batch order.
        selection: How to choose the returned model.
    """

    epochs: int
    batch_size: int
    eval_every: int
    seed: int = 0
    selection: SelectionMode = "best-feasible"


@dataclass
class LoopResult:
    """What :func:`run_primal_dual` returns."""

    candidates: list[Candidate]
    choice: Choice
    history: list[dict[str, Any]]
    wall_time_s: float
    steps: int


def build_dual_optimizer(
    kind: DualOptimizerKind, params: Any, lr: float, kp: float = 1.0, ema_nu: float = 0.0
) -> torch.optim.Optimizer:
    """Gradient ascent (``"sgd"``) or the nuPI controller (``"nupi"``) on the multipliers (``maximize=True``)."""
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, maximize=True)
    if kind == "nupi":
        return cooper.optim.nuPI(params, lr=lr, Kp=kp, Ki=1.0, ema_nu=ema_nu, maximize=True)
    raise ValueError(f"dual optimizer must be 'sgd' or 'nupi', got {kind!r}")


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    """Optimisation steps in one epoch (1 for full batch)."""
    return 1 if batch_size >= num_samples else math.ceil(num_samples / batch_size)


def build_primal_optimizer(
    params: Any, lr: float, beta1: float = 0.9, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """AdamW on the model (with ``weight_decay=0`` exactly Adam)."""
    return torch.optim.AdamW(params, lr=lr, betas=(beta1, 0.999), weight_decay=weight_decay)


def build_schedulers(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, final_fraction: float = 0.05
) -> list[torch.optim.lr_scheduler.LRScheduler]:
    """``[]`` for a constant learning rate, or a cosine decay to ``final_fraction`` of it over ``total_steps``."""
    if schedule == "constant":
        return []
    if schedule == "cosine":
        final = [group["lr"] * final_fraction for group in optimizer.param_groups]
        return [
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1), eta_min=final[0])
        ]
    raise ValueError(f"lr schedule must be 'constant' or 'cosine', got {schedule!r}")


def epoch_batches(num_samples: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor] | None:
    """Mini-batch indices of one epoch (a function of seed and epoch only), or ``None`` for full batch."""
    if batch_size >= num_samples:
        return None
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return list(torch.randperm(num_samples, generator=generator).split(batch_size))


def feature_major(inputs: torch.Tensor) -> torch.Tensor:
    r"""The same ``(n, d)`` matrix stored column by column (strides ``(1, n)``), values unchanged.

    With :math:`X` feature-major, :math:`Xw` and :math:`X^\top g` (a linear layer's forward and weight
    gradient) stream over contiguous columns; a row-major :math:`X^\top g` strides across rows.
    Other shapes are returned as they are.
    """
    if inputs.dim() != 2:
        return inputs
    return inputs.t().contiguous().t()


@torch.no_grad()
def positive_probability(model: nn.Module, inputs: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """1.0 where the (eval-mode) model's score is > 0, else 0.0."""
    was_training = model.training
    model.eval()
    parts = [(model(inputs[i : i + chunk]).reshape(-1) > 0).double() for i in range(0, len(inputs), chunk)]
    model.train(was_training)
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def chosen_positive_probability(
    model: nn.Module, candidates: list[Candidate], choice: Choice | int, inputs: torch.Tensor
) -> torch.Tensor:
    """P(predict positive) of the returned model (a candidate, or the mixture's expectation).

    ``choice`` may also be the index of one candidate. ``model`` provides the architecture only: the
    candidates' states are loaded into a copy of it.
    """
    if isinstance(choice, int):
        indices, probabilities = [choice], [1.0]
    else:
        indices, probabilities = choice.indices, choice.probabilities
    scratch = copy.deepcopy(model)
    total = torch.zeros(len(inputs), dtype=torch.float64)
    for index, probability in zip(indices, probabilities):
        scratch.load_state_dict(candidates[index].state)
        total += probability * positive_probability(scratch, inputs)
    return total


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _violation_columns(roll_out: cooper.optim.RollOut) -> dict[str, float]:
    row: dict[str, float] = {}
    for name, strict in roll_out.cmp_state.named_observed_strict_violations():
        row[f"batch_max_violation/{name}"] = float(strict.max())
    return row


def run_primal_dual(
    problem: cooper.ConstrainedMinimizationProblem,
    optimizer: cooper.optim.CooperOptimizer,
    model: nn.Module,
    data: RateDataset,
    settings: LoopSettings,
    measure: SelectionMeasure,
    logger: MetricsLogger | None = None,
    row_metrics: Callable[[torch.Tensor, LabeledSplit], dict[str, float]] | None = None,
    schedulers: list[torch.optim.lr_scheduler.LRScheduler] | None = None,
) -> LoopResult:
    """Train with ``optimizer.roll`` on ``data.train`` and choose the model to return.

    ``problem.compute_cmp_state`` must accept ``inputs``, ``labels`` and ``membership``.

    Args:
        problem: The constrained problem.
        optimizer: Its constrained optimizer.
        model: The model trained by ``optimizer`` (copied into the candidates).
        data: Train / selection splits.
        settings: Epochs, batch size, candidate interval, choice mode.
        measure: Objective and constraint values of a classifier on the selection split.
        logger: Optional logger receiving one row per candidate.
        row_metrics: Optional extra columns of a candidate's row, from its predictions on the
            selection split.
        schedulers: Learning-rate schedulers stepped after every optimisation step.
    """
    if settings.epochs < 1 or settings.batch_size < 1 or settings.eval_every < 1:
        raise ValueError(f"epochs, batch_size and eval_every must be >= 1, got {settings}")
    started = time.perf_counter()
    train, selection = data.train, data.selection_split
    num_samples = train.num_examples
    total_steps = settings.epochs * steps_per_epoch(num_samples, settings.batch_size)
    candidates: list[Candidate] = []
    history: list[dict[str, Any]] = []
    step = 0
    full_batch = steps_per_epoch(num_samples, settings.batch_size) == 1
    full_inputs = feature_major(train.x) if full_batch else train.x
    selection_inputs = full_inputs if selection is train else feature_major(selection.x)
    full = {"inputs": full_inputs, "labels": train.y, "membership": train.membership}
    for epoch in progress(range(settings.epochs), desc="epochs", total=settings.epochs):
        batches = epoch_batches(num_samples, settings.batch_size, settings.seed, epoch)
        for batch in batches if batches is not None else [None]:
            if batch is None:
                kwargs = full
            else:
                kwargs = {
                    "inputs": train.x[batch],
                    "labels": train.y[batch],
                    "membership": train.membership[:, batch],
                }
            model.train()
            roll_out = optimizer.roll(kwargs)
            for scheduler in schedulers or ():
                scheduler.step()
            step += 1
            if step % settings.eval_every and step != total_steps:
                continue
            probability = positive_probability(model, selection_inputs)
            objective, violations = measure(probability, selection)
            row: dict[str, Any] = {
                "step": step,
                "epoch": epoch + 1,
                "elapsed_s": time.perf_counter() - started,
                "train_batch_loss": float(roll_out.loss.detach())
                if roll_out.loss is not None
                else float("nan"),
                "selection_objective": objective,
                "selection_max_violation": float(np.max(violations)) if np.size(violations) else 0.0,
                **metrics_row(
                    roll_out, problem, optimizer
                ),  # violation/, strict_violation/, multiplier/, lr/
                **_violation_columns(roll_out),
            }
            if row_metrics is not None:
                row.update(row_metrics(probability, selection))
            candidates.append(Candidate(step, objective, np.asarray(violations), _state_copy(model), row))
            history.append(row)
            if logger is not None:
                logger.log(**row)
    choice = choose(candidates, settings.selection)
    wall_time = time.perf_counter() - started
    return LoopResult(candidates, choice, history, wall_time, step)
