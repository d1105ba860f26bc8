r"""Three ways to trace the l1 regularization path: the front of (training loss, :math:`\|\theta\|_1`).

- ``continuation`` (after Amakor, Sonntag & Peitz): start near :math:`\theta = 0`, reach the front with
  multiobjective proximal gradient (MOPG, :mod:`problems.l1.mopg`) steps, then alternate a *predictor*
  -- a gradient step on the loss, whose length is chosen so that :math:`\|\theta\|_1` reaches the next
  value of the grid :math:`\tau_k` -- and a *corrector*, a few MOPG iterations back to the front.
- ``epsilon-constraint``: :math:`\min f` s.t. :math:`\|\theta\|_1 \le \tau_k` with this library
  (:class:`~problems.l1.problem.L1BallConstrained`, the multiplier as the soft-threshold level) for
  the same grid of :math:`\tau_k`, warm-starting the weights *and* the multiplier from the previous point.
  The weights' warm start is a secant predictor (:func:`secant_step`): from the last point, along the
  path's last direction :math:`\theta_{k-1} - \theta_{k-2}`, until :math:`\|\theta\|_1` reaches the new
  bound -- no gradient evaluation, and the few constrained updates per point start near the next point
  instead of one grid step behind it.
- ``weighted-sum``: proximal SGD on :math:`f + \lambda_k\|\theta\|_1` for a geometric grid of
  :math:`\lambda_k`, every point trained from the same initialisation.

All three start from the same initial model (the default initialisation scaled by ``init_scale``) and
are charged the same way (:class:`~problems.l1.budget.Budget`): per-example gradients, plus forward
passes of line searches separately.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import cooper_like as cooper
from problems.l1.budget import Budget
from problems.l1.config import PathConfig
from problems.l1.models import build_model, penalised_weights
from problems.l1.mopg import mopg_direction
from problems.l1.problem import L1BallConstrained
from problems.l1.training import evaluate, proximal_sgd, train_with_penalty
from problems.scaffold.datasets import DataSplit
from problems.scaffold.loop import epoch_batches
from problems.scaffold.seeding import seed_everything

__all__ = ["PathResult", "l1_grid", "run_path", "secant_step", "step_to_norm"]

Logger = Callable[[dict[str, Any]], None]


@dataclass
class PathResult:
    """The points of a path (in the order computed) and the cost."""

    method: str
    points: list[dict[str, Any]]
    budget: Budget
    extra: dict[str, Any] = field(default_factory=dict)

    def front(self) -> list[tuple[float, float]]:
        """``(l1 norm, training loss)`` of every point."""
        return [(point["l1_norm"], point["train_loss"]) for point in self.points]


# ---------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------


def l1_grid(l1_max: float, points: int) -> list[float]:
    r"""The bounds :math:`\tau_k = \tau_{\max}\, k / N`, :math:`k = 1, \dots, N`."""
    return [l1_max * k / points for k in range(1, points + 1)]


def step_to_norm(
    theta: torch.Tensor,
    grad: torch.Tensor,
    penalised: torch.Tensor,
    target: float,
    max_step: float,
    iterations: int = 50,
) -> float:
    r"""A step :math:`\eta \in [0, \eta_{\max}]` with :math:`\|(\theta - \eta\nabla f)_P\|_1 \approx` ``target``.

    :math:`\eta \mapsto \|(\theta - \eta g)_P\|_1` is convex and piecewise linear; it is bisected on
    :math:`[0, \eta_{\max}]` (returns :math:`\eta_{\max}` when even that step stays below ``target``,
    0 when the norm is already above it).
    """

    def norm(step: float) -> float:
        return float((theta - step * grad)[penalised].abs().sum())

    if norm(0.0) >= target:
        return 0.0
    if norm(max_step) <= target:
        return max_step
    low, high = 0.0, max_step
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        if norm(middle) < target:
            low = middle
        else:
            high = middle
    return high


def secant_step(
    before: torch.Tensor,
    last: torch.Tensor,
    penalised: torch.Tensor,
    target: float,
    max_step: float,
) -> torch.Tensor:
    r"""Predict the next point of a path from its last two: a step along the secant to the next norm.

    .. math::
        \hat\theta = \theta_{k-1} + s\,(\theta_{k-1} - \theta_{k-2}), \qquad s \in [0, s_{\max}]
        \ \text{with}\ \|\hat\theta_P\|_1 \approx \tau_k

    (:func:`step_to_norm` along :math:`-(\theta_{k-1} - \theta_{k-2})`). :math:`s_{\max}` is the plain
    secant step :math:`(\tau_k - \tau_{k-1}) / (\tau_{k-1} - \tau_{k-2})`, so the prediction never goes
    further than linear extrapolation and stops short where the norm reaches :math:`\tau_k` first;
    :math:`s = 0` (no move) when :math:`\|\theta_{k-1}\|_1` is already at :math:`\tau_k`.
    """
    direction = last - before
    return last + step_to_norm(last, -direction, penalised, target, max_step) * direction


# ---------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------


def initial_model(config: PathConfig) -> nn.Sequential:
    """The common starting point: the default initialisation scaled by ``init_scale`` (near 0)."""
    seed_everything(config.seed)
    model = build_model(config.dataset, config.iris_model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(config.init_scale)
    return model


def point_record(model: nn.Module, data: DataSplit, budget: Budget, **extra: Any) -> dict[str, Any]:
    measures = evaluate(model, data)
    return {
        "l1_norm": measures.l1_norm,
        "train_loss": measures.train_loss,
        "test_accuracy": measures.test_accuracy,
        "train_accuracy": measures.train_accuracy,
        "density": measures.density,
        "gradient_evaluations": budget.gradient_evaluations,
        **extra,
    }


class FlatView:
    """The model's parameters as one flat vector, with the mask of the penalised (weight) entries."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.params = list(model.parameters())
        weights = {id(w) for w in penalised_weights(model)}
        self.penalised = torch.cat(
            [torch.full((p.numel(),), id(p) in weights, dtype=torch.bool) for p in self.params]
        )

    def vector(self) -> torch.Tensor:
        return nn.utils.parameters_to_vector(self.params).detach().clone()

    def assign(self, vector: torch.Tensor) -> None:
        with torch.no_grad():
            nn.utils.vector_to_parameters(vector, self.params)

    def loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> float:
        with torch.no_grad():
            return float(nn.functional.cross_entropy(self.model(inputs), labels))

    def gradient(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
        self.model.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.model(inputs), labels)
        loss.backward()
        grad = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self.params]
        )
        self.model.zero_grad(set_to_none=True)
        return float(loss.detach()), grad.detach()


class BatchStream:
    """Endless mini-batches (or the full batch) of the training set, epoch after epoch."""

    def __init__(self, data: DataSplit, batch_size: int, seed: int) -> None:
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.epoch = 0
        self.pending: list[torch.Tensor] = []

    @property
    def full_batch(self) -> bool:
        return self.batch_size >= len(self.data.x_train)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.pending:
            self.pending = epoch_batches(
                len(self.data.x_train), self.batch_size, self.seed, self.epoch, even=True
            )
            self.epoch += 1
        batch = self.pending.pop(0)
        return self.data.x_train[batch], self.data.y_train[batch]


# ---------------------------------------------------------------------------------------------------
# The three methods
# ---------------------------------------------------------------------------------------------------


def mopg_iteration(view: FlatView, stream: BatchStream, t: float, budget: Budget) -> float:
    """One MOPG step (Armijo line search on the full batch, the plain step on mini-batches); returns its criticality."""
    inputs, labels = stream.next()
    loss, grad = view.gradient(inputs, labels)
    budget.gradients(len(inputs))
    theta = view.vector()
    result = mopg_direction(theta, grad, view.penalised, t)
    if not stream.full_batch or result.criticality >= 0:
        view.assign(theta + result.direction)
        return result.criticality
    l1 = float(theta[view.penalised].abs().sum())
    step, accepted = 1.0, False
    for _ in range(30):
        candidate = theta + step * result.direction
        view.assign(candidate)
        new_loss = view.loss(inputs, labels)
        budget.losses(len(inputs))
        new_l1 = float(candidate[view.penalised].abs().sum())
        bound = 1e-4 * step * result.criticality
        if new_loss <= loss + bound and new_l1 <= l1 + bound:
            accepted = True
            break
        step *= 0.5
    if not accepted:
        view.assign(theta)
    return result.criticality


def run_continuation(config: PathConfig, data: DataSplit, log: Logger) -> PathResult:
    """Predictor (loss-gradient step to the next norm) and corrector (MOPG iterations), from near 0."""
    budget = Budget(runs=1)
    model = initial_model(config)
    view = FlatView(model)
    stream = BatchStream(data, config.batch_size, config.seed)
    t = config.lr
    initial = 0
    for initial in range(1, config.initial_steps + 1):  # noqa: B007 - the count is reported
        if mopg_iteration(view, stream, t, budget) > -config.criticality_tolerance:
            break
    points = [point_record(model, data, budget, index=0, tau=float("nan"))]
    log(points[-1])
    assert config.l1_max is not None
    grid = [config.l1_max * k / (config.points - 1) for k in range(1, config.points)]
    for index, tau in enumerate(grid, start=1):
        inputs, labels = stream.next()
        _, grad = view.gradient(inputs, labels)
        budget.gradients(len(inputs))
        theta = view.vector()
        step = step_to_norm(theta, grad, view.penalised, tau, max_step=config.max_predictor_step)
        view.assign(theta - step * grad)
        for _ in range(config.corrector_steps):
            mopg_iteration(view, stream, t, budget)
        points.append(point_record(model, data, budget, index=index, tau=tau, predictor_step=step))
        log(points[-1])
    budget.stop()
    return PathResult("continuation", points, budget, {"initial_mopg_iterations": initial})


def run_epsilon_constraint(config: PathConfig, data: DataSplit, log: Logger) -> PathResult:
    """``min f s.t. ||θ||₁ <= τ_k`` for the grid of τ, warm-starting weights (secant predictor) and multiplier."""
    budget = Budget(runs=1)
    model = initial_model(config)
    assert config.l1_max is not None and config.dual_lr is not None
    grid = l1_grid(config.l1_max, config.points)
    problem = L1BallConstrained(model, grid[0])
    primal = proximal_sgd(model, config.lr, config.momentum, problem.threshold_level, layerwise_groups=False)
    dual: torch.optim.Optimizer
    if config.dual_optimizer == "nupi":
        dual = cooper.optim.nuPI(
            problem.dual_parameters(), lr=config.dual_lr, Kp=config.nupi_kp, maximize=True
        )
    else:
        dual = torch.optim.SGD(problem.dual_parameters(), lr=config.dual_lr, maximize=True)
    scheme = (
        cooper.optim.AlternatingDualPrimalOptimizer
        if config.scheme == "alternating"
        else cooper.optim.SimultaneousOptimizer
    )
    optimizer = scheme(cmp=problem, primal_optimizers=primal, dual_optimizers=dual)
    stream = BatchStream(data, config.batch_size, config.seed)
    view = FlatView(model)
    solutions: list[torch.Tensor] = []
    points = []
    for index, tau in enumerate(grid):
        problem.tau = tau
        if config.secant_predictor and index >= 2:
            ratio = (tau - grid[index - 1]) / (grid[index - 1] - grid[index - 2])
            view.assign(secant_step(solutions[-2], solutions[-1], view.penalised, tau, max_step=ratio))
        for _ in range(config.steps_per_point):
            inputs, labels = stream.next()
            optimizer.roll({"inputs": inputs, "labels": labels})
            budget.gradients(len(inputs))
        solutions = [*solutions[-1:], view.vector()]
        points.append(
            point_record(
                model, data, budget, index=index, tau=tau, multiplier=float(problem.threshold_level()[0])
            )
        )
        log(points[-1])
    budget.stop()
    return PathResult("epsilon-constraint", points, budget)


def run_weighted_sum(config: PathConfig, data: DataSplit, log: Logger) -> PathResult:
    r"""Proximal SGD on :math:`f + \lambda_k \|\theta\|_1`, each point from the same start.

    The grid is geometric, from :math:`\lambda_{\max} = \max_j |\partial_j f|` at the default (unscaled)
    initialisation -- the level that keeps a freshly initialised network at zero -- down to
    ``lambda_ratio`` times it.
    """
    budget = Budget()
    seed_everything(config.seed)
    view = FlatView(build_model(config.dataset, config.iris_model))  # the default initialisation, unscaled
    _, grad = view.gradient(data.x_train, data.y_train)
    budget.gradients(len(data.x_train))
    lambda_max = float(grad[view.penalised].abs().max())
    lambdas = [lambda_max * config.lambda_ratio ** (k / (config.points - 1)) for k in range(config.points)]
    points = []
    for index, strength in enumerate(lambdas):
        model = initial_model(config)
        budget.runs += 1
        train_with_penalty(
            model,
            data,
            strength,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            momentum=config.momentum,
            seed=config.seed,
            budget=budget,
        )
        points.append(point_record(model, data, budget, index=index, strength=strength))
        log(points[-1])
    budget.stop()
    return PathResult("weighted-sum", points, budget, {"lambda_max": lambda_max})


def run_path(config: PathConfig, data: DataSplit, log: Logger | None = None) -> PathResult:
    """Dispatch on ``config.method``."""
    sink: Logger = log if log is not None else (lambda _: None)
    torch.set_num_threads(1)
    if config.method == "continuation":
        return run_continuation(config, data, sink)
    if config.method == "epsilon-constraint":
        return run_epsilon_constraint(config, data, sink)
    return run_weighted_sum(config, data, sink)
