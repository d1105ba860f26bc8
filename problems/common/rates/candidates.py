r"""Rate problems with candidate iterates: the task of the shared loop, its optimizers, the returned model.

A rate-constrained run (fairness, Neyman-Pearson) trains through :func:`problems.scaffold.loop.fit`
with :class:`CandidateRun`: every ``log_every`` optimisation steps (and after the last one) the task
copies the model as a :class:`~problems.common.rates.selection.Candidate`, measured on the selection
split (validation, or train without one), and logs its row. After training,
:func:`~problems.common.rates.selection.choose` picks the model to return (:func:`fit_candidates`).
:attr:`CandidateResult.wall_time_s` covers the optimisation steps, the candidate measurements and the
choice; the trainers report the time from their configuration to the returned model (setup included),
never the data loading nor the final test evaluation.

Full-batch inputs are stored feature-major once (:func:`feature_major`): a linear layer's forward
:math:`Xw` and backward :math:`X^\top g` then read contiguous columns, 2-3 times faster on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

import cooper_like as cooper
from cooper_like.reporting import metrics_row
from problems.common.rates.config import RateTrainConfig
from problems.common.rates.data import LabeledSplit, RateDataset
from problems.common.rates.selection import Candidate, Choice, choose
from problems.scaffold.loop import Active, LoopSettings, Moment, Stage, Task, fit
from problems.scaffold.metrics_log import MetricsLogger

__all__ = [
    "CandidateResult",
    "CandidateRun",
    "DualOptimizerKind",
    "RowMetrics",
    "Schedulers",
    "SelectionMeasure",
    "build_dual_optimizer",
    "build_optimizer",
    "build_primal_optimizer",
    "build_schedulers",
    "chosen_positive_probability",
    "feature_major",
    "fit_candidates",
    "multiplier_values",
    "positive_probability",
    "steps_per_epoch",
]

DualOptimizerKind = Literal["sgd", "nupi"]

Schedulers = list[torch.optim.lr_scheduler.LRScheduler]

SelectionMeasure = Callable[[torch.Tensor, LabeledSplit], tuple[float, np.ndarray]]
"""``(positive_probability, split) -> (objective, constraint values)`` of a classifier on a split.

``positive_probability`` is the probability of predicting positive per example (0/1 for one model);
constraint values are ``<= 0`` when satisfied and must be linear in it (rates are) for the mixture
choice to be exact."""

RowMetrics = Callable[[torch.Tensor, LabeledSplit], dict[str, float]]
"""``(positive_probability, split) -> columns``: extra columns of a candidate's row."""


def multiplier_values(problem: cooper.ConstrainedMinimizationProblem) -> dict[str, list[float]]:
    """Current values of every explicit multiplier of ``problem``, by constraint name."""
    return {
        name: multiplier.weight.detach().reshape(-1).tolist()
        for name, multiplier in problem.named_multipliers()
        if isinstance(multiplier, cooper.multipliers.ExplicitMultiplier)
    }


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
) -> Schedulers:
    """``[]`` for a constant learning rate, or a cosine decay to ``final_fraction`` of it over ``total_steps``."""
    if schedule == "constant":
        return []
    if schedule == "cosine":
        final = [group["lr"] * final_fraction for group in optimizer.param_groups]
        return [
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1), eta_min=final[0])
        ]
    raise ValueError(f"lr schedule must be 'constant' or 'cosine', got {schedule!r}")


def build_optimizer(
    config: RateTrainConfig,
    problem: cooper.ConstrainedMinimizationProblem,
    model: nn.Module,
    num_examples: int,
) -> tuple[cooper.optim.SimultaneousOptimizer, Schedulers]:
    """AdamW on ``model``, SGD or nuPI on the multipliers, and the primal lr schedulers of ``config``.

    ``num_examples``: training examples (the cosine schedule spans every step of the run).
    """
    settings = config.resolved()
    primal = build_primal_optimizer(model.parameters(), settings.lr, config.beta1, settings.weight_decay)
    dual = build_dual_optimizer(
        config.dual_optimizer, problem.dual_parameters(), settings.dual_lr, config.nupi_kp, config.nupi_ema_nu
    )
    total = settings.epochs * steps_per_epoch(num_examples, settings.batch_size)
    schedulers = build_schedulers(primal, config.lr_schedule, total, config.lr_final_fraction)
    return cooper.optim.SimultaneousOptimizer(problem, primal, dual), schedulers


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


class CandidateRun(Task):
    """A rate problem on the shared loop: one stage ``"train"``; a row and a :class:`Candidate` per log.

    ``problem.compute_cmp_state`` must accept ``inputs``, ``labels`` and ``membership``. A batch covering
    the whole training split is the precomputed full batch (inputs stored feature-major); a mini-batch
    indexes the training split. The learning-rate ``schedulers`` step after every optimisation step.

    Args:
        problem: The constrained problem.
        optimizer: Its constrained optimizer.
        model: The model trained by ``optimizer`` (copied into the candidates).
        data: Train / selection splits.
        epochs: Passes over the training split.
        batch_size: Mini-batch size (``>= train.num_examples``: full batch, one step per epoch).
        measure: Objective and constraint values of a classifier on the selection split.
        row_metrics: Optional extra columns of a candidate's row, from its predictions on the
            selection split.
        schedulers: Learning-rate schedulers stepped after every optimisation step.

    Attributes:
        candidates: The kept candidates, in order.
        started: When the run was set up (the rows' ``elapsed_s`` count from it).
    """

    def __init__(
        self,
        problem: cooper.ConstrainedMinimizationProblem,
        optimizer: cooper.optim.CooperOptimizer,
        model: nn.Module,
        data: RateDataset,
        epochs: int,
        batch_size: int,
        measure: SelectionMeasure,
        row_metrics: RowMetrics | None = None,
        schedulers: Schedulers | None = None,
    ) -> None:
        if epochs < 1 or batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
        self.started = time.perf_counter()
        self.problem, self.optimizer, self.model = problem, optimizer, model
        self.epochs, self.measure, self.row_metrics = epochs, measure, row_metrics
        self.schedulers = list(schedulers or ())
        self.train, self.selection = data.train, data.selection_split
        self.num_examples = self.train.num_examples
        full_batch = steps_per_epoch(self.num_examples, batch_size) == 1
        full_inputs = feature_major(self.train.x) if full_batch else self.train.x
        self.full = {"inputs": full_inputs, "labels": self.train.y, "membership": self.train.membership}
        self.selection_inputs = (
            full_inputs if self.selection is self.train else feature_major(self.selection.x)
        )
        self.candidates: list[Candidate] = []

    def stages(self) -> list[Stage]:
        return [Stage("train", self.epochs, self.enter)]

    def enter(self, previous: Active | None) -> Active:
        return Active(self.optimizer, forward=self.model, after_step=self.step_schedulers)

    def step_schedulers(self, moment: Moment) -> None:
        for scheduler in self.schedulers:
            scheduler.step()

    def batch(self, indices: torch.Tensor) -> dict[str, Any]:
        if len(indices) == self.num_examples:
            return self.full
        return {
            "inputs": self.train.x[indices],
            "labels": self.train.y[indices],
            "membership": self.train.membership[:, indices],
        }

    def row(self, moment: Moment) -> dict[str, Any]:
        """Measure the model on the selection split, keep it as a candidate and return its row."""
        roll_out = moment.roll_out
        if roll_out is None:  # pragma: no cover - rows are asked for right after a step
            raise RuntimeError("a candidate row needs the step's roll-out")
        probability = positive_probability(self.model, self.selection_inputs)
        objective, violations = self.measure(probability, self.selection)
        row: dict[str, Any] = {
            "step": moment.step,
            "epoch": moment.epoch + 1,
            "elapsed_s": time.perf_counter() - self.started,
            "train_batch_loss": float(roll_out.loss.detach()) if roll_out.loss is not None else float("nan"),
            "selection_objective": objective,
            "selection_max_violation": float(np.max(violations)) if np.size(violations) else 0.0,
            **metrics_row(roll_out, self.problem, self.optimizer),  # violation/, multiplier/, lr/...
            **{
                f"batch_max_violation/{name}": float(strict.max())
                for name, strict in roll_out.cmp_state.named_observed_strict_violations()
            },
        }
        if self.row_metrics is not None:
            row.update(self.row_metrics(probability, self.selection))
        state = {name: value.detach().clone() for name, value in self.model.state_dict().items()}
        self.candidates.append(Candidate(moment.step, objective, np.asarray(violations), state, row))
        return row


@dataclass
class CandidateResult:
    """What :func:`fit_candidates` returns: the candidates, the choice, the rows, the time and the steps."""

    candidates: list[Candidate]
    choice: Choice
    history: list[dict[str, Any]]
    wall_time_s: float
    steps: int

    def positive_probability(
        self, model: nn.Module, inputs: torch.Tensor, index: int | None = None
    ) -> torch.Tensor:
        """P(predict positive) of the returned model on ``inputs``, or of candidate ``index`` (-1: the last)."""
        choice: Choice | int = self.choice if index is None else index % len(self.candidates)
        return chosen_positive_probability(model, self.candidates, choice, inputs)

    def summary(self, wall_time_s: float | None = None) -> dict[str, Any]:
        """``returned``, ``deterministic``, ``wall_time_s`` (default: :attr:`wall_time_s`) and ``steps``."""
        return {
            "returned": self.choice.describe(self.candidates),
            "deterministic": len(self.choice.indices) == 1,
            "wall_time_s": self.wall_time_s if wall_time_s is None else wall_time_s,
            "steps": self.steps,
        }


def fit_candidates(
    config: RateTrainConfig,
    problem: cooper.ConstrainedMinimizationProblem,
    optimizer: cooper.optim.CooperOptimizer,
    model: nn.Module,
    data: RateDataset,
    measure: SelectionMeasure,
    row_metrics: RowMetrics | None = None,
    schedulers: Schedulers | None = None,
    out: Path | None = None,
) -> CandidateResult:
    """Train on ``data.train`` through the shared loop, choose the model to return and load it.

    ``config`` gives the epochs, the batch size, the candidate interval (``log_every``), the seed of
    the batch order and the selection mode. A single chosen candidate is loaded into ``model``; a
    mixture leaves the last iterate there (its states are in the candidates). With ``out``, the rows
    are logged there (:class:`~problems.scaffold.metrics_log.MetricsLogger`: ``metrics.csv``...).
    """
    settings = config.resolved()
    run = CandidateRun(
        problem,
        optimizer,
        model,
        data,
        settings.epochs,
        settings.batch_size,
        measure,
        row_metrics,
        schedulers,
    )
    loop = LoopSettings(
        seed=config.seed,
        batch_size=settings.batch_size,
        log_every=settings.log_every,
        out=None,
        show_progress=True,
    )
    with MetricsLogger(out) if out is not None else contextlib.nullcontext() as logger:
        fitted = fit(run, loop, logger=logger)
    choice = choose(run.candidates, config.selection)
    wall_time = time.perf_counter() - run.started
    if len(choice.indices) == 1:
        model.load_state_dict(run.candidates[choice.indices[0]].state)
    return CandidateResult(run.candidates, choice, fitted.history, wall_time, fitted.steps)
