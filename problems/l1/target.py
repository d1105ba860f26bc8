r"""Three ways to reach a prescribed density (fraction of non-zero weights) with l1 sparsity.

Every method trains the same model on the same data with the same primal optimizer -- proximal SGD
(:func:`~problems.l1.training.proximal_sgd`) with the recipe of :class:`~problems.l1.config.L1Recipe`
-- and differs only in how :math:`\lambda` (one, or one per layer) is chosen:

- ``constrained``: one run of :class:`~problems.l1.problem.DensityConstrained`; the multiplier is the
  soft-threshold level and the dual ascent on the true count moves it during training. The update is
  multiplicative, :math:`\lambda \leftarrow \lambda\,(\hat\rho/\rho)^{\eta}`, by at most a factor
  :math:`e^{\pm m}` per step (exponentiated ascent on the log-ratio violation,
  :class:`~problems.l1.dual.ExponentiatedAscent`): the density answers the threshold roughly as a power
  law, so in log coordinates one gain fits every target, where an additive step
  :math:`\eta(\hat\rho - \rho)` is too slow for small targets (large :math:`\lambda`) and too fast for
  large ones. Each step's dual update sees the support that the step's soft-thresholding would leave
  before it is applied (:class:`~problems.l1.lookahead.LookaheadProximalOptimizer`), which halves the
  step-to-step spread of the count, so the returned (last) iterate is close to the target too.
- ``lambda-selection`` (after Shen, Wang, Xu & Yan, 2024): at a stationary point of
  :math:`f + \lambda\|\theta\|_1`, :math:`\theta_j = 0 \iff |\partial_j f(\theta)| \le \lambda`. From the
  full-batch gradient at the current model, :func:`stationarity_scores` gives each weight the smallest
  :math:`\lambda` that would zero it, and the next :math:`\lambda` is their :math:`(1-\rho)`-quantile;
  every refinement run is warm-started from the previous model, until the density is within tolerance.
- ``bisection``: the baseline -- geometric bisection on :math:`\lambda`, each trial a full retraining
  from the same initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import cooper_like as cooper
from problems.l1.budget import Budget
from problems.l1.config import TargetConfig
from problems.l1.dual import ExponentiatedAscent
from problems.l1.lookahead import LookaheadProximalOptimizer
from problems.l1.models import build_model, penalised_weights
from problems.l1.problem import DensityConstrained
from problems.l1.training import Evaluation, evaluate, proximal_sgd, train_epochs
from problems.scaffold.classification import CrossEntropy
from problems.scaffold.datasets import DataSplit
from problems.scaffold.seeding import seed_everything

__all__ = [
    "BISECTION_BRACKET",
    "TargetResult",
    "lr_factor",
    "quantile_level",
    "run_target",
    "stationarity_scores",
    "within_tolerance",
]

BISECTION_BRACKET = (1e-4, 1e-1)
"""Initial :math:`\\lambda` bracket of the bisection baseline (gradient units of the mean cross-entropy)."""

MULTIPLIER_FLOOR = 1e-6
r"""constrained: where the multiplicative dual update starts :math:`\lambda` from after the dense warm-up
(gradient units of the mean cross-entropy; the levels reached on MNIST-5k are :math:`2 \cdot 10^{-3}` to
:math:`10^{-2}`)."""

MAX_LAMBDA_FACTOR = 2.0
r"""lambda-selection changes :math:`\lambda` by at most this factor per refinement."""

Logger = Callable[[dict[str, Any]], None]


@dataclass
class TargetResult:
    """What a target run produced: the final model's measures, the cost, and the history."""

    method: str
    evaluation: Evaluation
    budget: Budget
    strengths: list[float]
    history: list[dict[str, Any]] = field(default_factory=list)
    model_state: dict[str, torch.Tensor] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------


def lr_factor(epoch: int, epochs: int, anneal_fraction: float, final_factor: float) -> float:
    r"""Learning-rate factor of ``epoch``: 1, then a cosine from 1 to ``final_factor`` over the last epochs.

    .. math::
        \eta_e / \eta = \begin{cases} 1 & e < E_0 \\
            c + (1 - c)\,\tfrac12\big(1 + \cos(\pi\,\tfrac{e - E_0 + 1}{E - E_0})\big) & e \ge E_0 \end{cases}
        \qquad E_0 = E - \lceil a E \rceil
    """
    annealed = math.ceil(anneal_fraction * epochs)
    start = epochs - annealed
    if annealed == 0 or epoch < start:
        return 1.0
    progress = min(1.0, (epoch - start + 1) / annealed)
    return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def stationarity_scores(weight: torch.Tensor, grad: torch.Tensor, strength: float, lr: float) -> torch.Tensor:
    r"""For each weight, the smallest :math:`\lambda` at which one proximal step from here would zero it.

    .. math::
        s_j = \big|\theta_j / \eta - \partial_j f(\theta)\big|,
        \qquad S_{\eta\lambda}(\theta_j - \eta\,\partial_j f) = 0 \iff s_j \le \lambda.

    At a stationary point of :math:`f + \lambda_0\|\theta\|_1` this is :math:`|\partial_j f|` (at most
    :math:`\lambda_0`) for the zero weights -- Shen et al.'s condition -- and
    :math:`\lambda_0 + |\theta_j|/\eta` for the others, so the ranking orders the zero weights by gradient
    and the non-zero ones by magnitude. ``strength`` (:math:`\lambda_0`) is only used to keep scores of
    non-zero weights above it when the model is not exactly stationary.
    """
    scores = (weight / lr - grad).abs()
    nonzero = weight != 0
    return torch.where(
        nonzero, scores.clamp_min(strength), scores.clamp_max(strength) if strength > 0 else scores
    )


def quantile_level(scores: torch.Tensor, density: float) -> float:
    r"""The :math:`\lambda` that leaves a fraction ``density`` of the scores strictly above it."""
    flat = scores.reshape(-1).double()
    keep = max(1, round(density * flat.numel()))
    return float(flat.kthvalue(flat.numel() - keep).values) if keep < flat.numel() else 0.0


def within_tolerance(
    layer_densities: tuple[float, ...], density: float, target: float, layerwise: bool, tolerance: float
) -> bool:
    """Whether the model (or, ``layerwise``, every layer) is within ``tolerance`` of ``target``."""
    if layerwise:
        return all(abs(value - target) <= tolerance for value in layer_densities)
    return abs(density - target) <= tolerance


# ---------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------


def fresh_model(config: TargetConfig) -> nn.Sequential:
    seed_everything(config.seed)
    return build_model(config.dataset, config.iris_model)


def schedule(
    config: TargetConfig, primal: torch.optim.Optimizer, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        primal, lambda epoch: lr_factor(epoch, epochs, config.anneal_fraction, config.final_lr_factor)
    )


def epoch_row(model: nn.Module, data: DataSplit, **extra: Any) -> dict[str, Any]:
    measures = evaluate(model, data)
    row: dict[str, Any] = {**extra, **{k: v for k, v in measures.as_dict().items() if k != "layer_densities"}}
    for index, value in enumerate(measures.layer_densities):
        row[f"density/layer{index}"] = value
    return row


def full_batch_gradients(model: nn.Module, data: DataSplit, budget: Budget) -> list[torch.Tensor]:
    """Gradient of the mean training cross-entropy for every penalised weight (counted: ``n`` examples)."""
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(data.x_train), data.y_train).backward()
    budget.gradients(len(data.x_train))
    grads = [
        w.grad.detach().clone() if w.grad is not None else torch.zeros_like(w)
        for w in penalised_weights(model)
    ]
    model.zero_grad(set_to_none=True)
    return grads


def train_fixed(
    config: TargetConfig,
    model: nn.Module,
    data: DataSplit,
    strengths: list[float],
    epochs: int,
    budget: Budget,
    run_seed: int,
) -> None:
    """One proximal-SGD run with fixed strengths (one shared, or one per layer)."""
    primal = proximal_sgd(model, config.lr, config.momentum, torch.tensor(strengths, dtype=torch.float64))
    optimizer = cooper.optim.UnconstrainedOptimizer(cmp=CrossEntropy(model), primal_optimizers=primal)
    scheduler = schedule(config, primal, epochs)
    budget.runs += 1
    train_epochs(
        optimizer, data, epochs, config.batch_size, run_seed, budget, after_epoch=lambda _: scheduler.step()
    )


# ---------------------------------------------------------------------------------------------------
# The three methods
# ---------------------------------------------------------------------------------------------------


def run_constrained(config: TargetConfig, data: DataSplit, log: Logger) -> TargetResult:
    """One run of the density-constrained problem (per model or per layer), multiplicative dual update."""
    budget = Budget()
    model = fresh_model(config)
    problem = DensityConstrained(model, config.target_density, layerwise=config.layerwise, scale="log")
    primal = proximal_sgd(model, config.lr, config.momentum, problem.threshold_level)
    dual = ExponentiatedAscent(
        problem.dual_parameters(), lr=config.dual_lr, floor=MULTIPLIER_FLOOR, max_step=config.dual_max_step
    )
    optimizer = LookaheadProximalOptimizer(cmp=problem, primal_optimizers=primal, dual_optimizers=dual)
    scheduler = schedule(config, primal.optimizer, config.epochs)  # roll() steps the wrapped SGD
    problem.dual_active = config.dual_warmup_epochs == 0
    history: list[dict[str, Any]] = []

    def after_epoch(epoch: int) -> None:
        scheduler.step()
        problem.dual_active = epoch + 1 >= config.dual_warmup_epochs
        row = epoch_row(model, data, epoch=epoch + 1, gradient_evaluations=budget.gradient_evaluations)
        for index, value in enumerate(problem.threshold_level().tolist()):
            row[f"multiplier/{index}"] = value
        history.append(row)
        log(row)

    budget.runs = 1
    train_epochs(
        optimizer, data, config.epochs, config.batch_size, config.seed, budget, after_epoch=after_epoch
    )
    budget.stop()
    return TargetResult(
        "constrained",
        evaluate(model, data),
        budget,
        problem.threshold_level().tolist(),
        history,
        model.state_dict(),
    )


def initial_strengths(config: TargetConfig, model: nn.Module, data: DataSplit, budget: Budget) -> list[float]:
    """Shen et al.'s condition at the initial model: the :math:`(1-\\rho)`-quantile of :math:`|\\nabla f|`."""
    grads = full_batch_gradients(model, data, budget)
    if config.layerwise:
        return [quantile_level(g.abs(), config.target_density) for g in grads]
    return [quantile_level(torch.cat([g.abs().reshape(-1) for g in grads]), config.target_density)]


def selected_strengths(
    config: TargetConfig, model: nn.Module, data: DataSplit, strengths: list[float], budget: Budget
) -> list[float]:
    """The next strengths: the :math:`(1-\\rho)`-quantile of :func:`stationarity_scores` at the current model."""
    grads = full_batch_gradients(model, data, budget)
    weights = penalised_weights(model)
    lr = config.lr * config.final_lr_factor if config.anneal_fraction > 0 else config.lr
    shared = strengths[0]
    if config.layerwise:
        return [
            quantile_level(stationarity_scores(w.detach(), g, s, lr), config.target_density)
            for w, g, s in zip(weights, grads, strengths)
        ]
    scores = torch.cat(
        [stationarity_scores(w.detach(), g, shared, lr).reshape(-1) for w, g in zip(weights, grads)]
    )
    return [quantile_level(scores, config.target_density)]


def run_lambda_selection(config: TargetConfig, data: DataSplit, log: Logger) -> TargetResult:
    r"""Choose :math:`\lambda` from the stationarity condition; refine with warm-started runs.

    Each refinement moves :math:`\lambda` towards the quantile of :func:`stationarity_scores`, by at
    most a factor :data:`MAX_LAMBDA_FACTOR` per run. A run whose network collapsed (density below a
    tenth of the target: the all-zero network is a stationary point it cannot leave) is restarted from
    the initial model with a quarter of its :math:`\lambda`.
    """
    budget = Budget()
    model = fresh_model(config)
    initial_state = {k: v.clone() for k, v in model.state_dict().items()}
    strengths = initial_strengths(config, model, data, budget)
    refine = config.refine_epochs or max(1, config.epochs // 2)
    history: list[dict[str, Any]] = []
    measures = evaluate(model, data)
    warm = False
    for run in range(config.max_runs):
        epochs = refine if warm else config.epochs
        train_fixed(config, model, data, strengths, epochs, budget, config.seed + run)
        measures = evaluate(model, data)
        row = epoch_row(
            model, data, run=run + 1, epochs=epochs, gradient_evaluations=budget.gradient_evaluations
        )
        row.update({f"lambda/{i}": s for i, s in enumerate(strengths)})
        history.append(row)
        log(row)
        if within_tolerance(
            measures.layer_densities,
            measures.density,
            config.target_density,
            config.layerwise,
            config.tolerance,
        ):
            break
        if run + 1 == config.max_runs:
            break
        if measures.density < 0.1 * config.target_density:
            model.load_state_dict(initial_state)
            strengths = [s / 4 for s in strengths]
            warm = False
            continue
        proposed = selected_strengths(config, model, data, strengths, budget)
        strengths = [
            min(max(p, s / MAX_LAMBDA_FACTOR), s * MAX_LAMBDA_FACTOR) if s > 0 else p
            for p, s in zip(proposed, strengths)
        ]
        warm = True
    budget.stop()
    return TargetResult("lambda-selection", measures, budget, strengths, history, model.state_dict())


def run_bisection(config: TargetConfig, data: DataSplit, log: Logger) -> TargetResult:
    """Geometric bisection of :math:`\\lambda` (per layer with ``layerwise``), a full retraining per trial."""
    budget = Budget()
    groups = len(penalised_weights(build_model(config.dataset, config.iris_model))) if config.layerwise else 1
    low, high = [BISECTION_BRACKET[0]] * groups, [BISECTION_BRACKET[1]] * groups
    history: list[dict[str, Any]] = []
    best: tuple[float, Evaluation, list[float], dict[str, torch.Tensor]] | None = None
    for run in range(config.max_runs):
        strengths = [math.sqrt(lo * hi) for lo, hi in zip(low, high)]
        model = fresh_model(config)
        train_fixed(config, model, data, strengths, config.epochs, budget, config.seed)
        measures = evaluate(model, data)
        achieved = list(measures.layer_densities) if config.layerwise else [measures.density]
        error = max(abs(value - config.target_density) for value in achieved)
        if best is None or error < best[0]:
            best = (error, measures, strengths, {k: v.clone() for k, v in model.state_dict().items()})
        row = epoch_row(model, data, run=run + 1, gradient_evaluations=budget.gradient_evaluations)
        row.update({f"lambda/{i}": s for i, s in enumerate(strengths)})
        history.append(row)
        log(row)
        if error <= config.tolerance:
            break
        for index, value in enumerate(achieved):
            if value > config.target_density:
                low[index] = strengths[index]
            else:
                high[index] = strengths[index]
    assert best is not None
    budget.stop()
    return TargetResult("bisection", best[1], budget, best[2], history, best[3])


def run_target(config: TargetConfig, data: DataSplit, log: Logger | None = None) -> TargetResult:
    """Dispatch on ``config.method``."""
    sink: Logger = log if log is not None else (lambda _: None)
    torch.set_num_threads(1)
    if config.method == "constrained":
        return run_constrained(config, data, sink)
    if config.method == "lambda-selection":
        return run_lambda_selection(config, data, sink)
    return run_bisection(config, data, sink)
