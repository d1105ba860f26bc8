r"""The l1 problems as constrained minimization problems of this library.

In both constrained problems the :math:`\ell_1` term never goes through autograd: the primal optimizer
is a :class:`~cooper_like.optim.proximal.ProximalL1` whose soft-threshold level *is* the constraint's
Lagrange multiplier, so the primal step is the proximal gradient step on the Lagrangian
:math:`f(\theta) + \lambda \|\theta\|_1` and exact zeros appear while training. The constraint's state
is therefore marked ``contributes_to_primal_update=False``; it only drives the multiplier.

- :class:`DensityConstrained`: :math:`\min f(\theta)` s.t. :math:`\|\theta\|_0 / n \le \rho` (per model, or
  per layer). :math:`\|\theta\|_1` is the convex surrogate of the count that the primal step shrinks;
  the dual step :math:`\lambda \leftarrow [\lambda + \eta_\lambda (\|\theta\|_0/n - \rho)]_+` is driven by
  the *true* count (the strict violation), so the multiplier settles where the count meets the target.
  With ``scale="log"`` the same constraint is written :math:`\log(\|\theta\|_0/n) \le \log\rho`: the
  violation is the log-ratio :math:`\log(\hat\rho/\rho)`, relative and symmetric, which a multiplicative
  dual update (:class:`~problems.l1.dual.ExponentiatedAscent`) turns into
  :math:`\lambda \leftarrow \lambda\,(\hat\rho/\rho)^{\eta}`, one gain for every target.
- :class:`L1BallConstrained`: :math:`\min f(\theta)` s.t. :math:`\|\theta\|_1 \le \tau` -- the
  epsilon-constraint scalarization of the regularization path; here the constraint *is* the proximal
  term, and the pair (primal prox step, dual ascent) is the exact Lagrangian method.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

import cooper_like as cooper
from problems.l1.models import penalised_weights

__all__ = ["DensityConstrained", "DensityScale", "L1BallConstrained", "density_violation"]

DensityScale = Literal["linear", "log"]
"""How :class:`DensityConstrained` measures its violation: a difference or a log-ratio of densities."""


def density_violation(
    density: torch.Tensor, target: float, smallest: torch.Tensor, scale: DensityScale
) -> torch.Tensor:
    r"""Violation of :math:`\hat\rho \le \rho`, as a difference or as a log-ratio.

    .. math::
        g_{\text{linear}} = \hat\rho - \rho, \qquad
        g_{\text{log}} = \log \frac{\max(\hat\rho, \rho_{\min})}{\rho}

    Both are :math:`\le 0` exactly when :math:`\hat\rho \le \rho`. The log-ratio reads a density of zero
    as :math:`\rho_{\min}` (one non-zero weight, ``smallest``) so that it stays finite.

    Args:
        density: :math:`\hat\rho`, any shape.
        target: :math:`\rho > 0`.
        smallest: :math:`\rho_{\min} > 0`, broadcastable to ``density``.
        scale: ``"linear"`` or ``"log"``.
    """
    if scale == "linear":
        return density - target
    if scale == "log":
        return torch.log(torch.maximum(density, smallest) / target)
    raise ValueError(f"scale must be 'linear' or 'log', got {scale!r}")


class DensityConstrained(cooper.ConstrainedMinimizationProblem):
    r"""Cross-entropy subject to density :math:`\le` target, the multiplier being the soft-threshold level.

    Args:
        model: The network; the weights of its ``nn.Linear`` layers are constrained (biases are not).
        target_density: :math:`\rho \in (0, 1]`, for the model or (``layerwise``) for every layer.
        layerwise: One constraint (and one multiplier, one threshold) per layer.
        scale: The violation: ``"linear"`` (default), :math:`\hat\rho - \rho`, for additive dual updates;
            ``"log"``, :math:`\log(\hat\rho / \rho)`, for multiplicative ones (:func:`density_violation`).
    """

    def __init__(
        self,
        model: nn.Module,
        target_density: float,
        *,
        layerwise: bool = False,
        scale: DensityScale = "linear",
    ) -> None:
        super().__init__()
        if not 0.0 < target_density <= 1.0:
            raise ValueError(f"target_density must lie in (0, 1], got {target_density}")
        if scale not in ("linear", "log"):
            raise ValueError(f"scale must be 'linear' or 'log', got {scale!r}")
        self.scale: DensityScale = scale
        self.model = model
        self.weights = penalised_weights(model)
        if not self.weights:
            raise ValueError(f"model ({type(model).__name__}) has no nn.Linear layer to sparsify")
        self.layerwise = layerwise
        self.target_density = float(target_density)
        count = len(self.weights) if layerwise else 1
        self.sizes = torch.tensor([float(w.numel()) for w in self.weights], dtype=torch.float64)
        self.density = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY,
            multiplier=cooper.multipliers.DenseMultiplier(num_constraints=count, dtype=torch.float64),
        )
        #: While ``False`` (a dense warm-up), the constraint is measured but its multiplier does not move.
        self.dual_active = True

    @property
    def multiplier(self) -> cooper.multipliers.DenseMultiplier:
        multiplier = self.density.multiplier
        assert isinstance(multiplier, cooper.multipliers.DenseMultiplier)
        return multiplier

    def threshold_level(self) -> torch.Tensor:
        r"""The soft-threshold level :math:`\lambda` (one entry, or one per layer): the multiplier."""
        return self.multiplier.weight.detach()

    @torch.no_grad()
    def measured_density(self) -> torch.Tensor:
        r""":math:`\|\theta\|_0/n` of the model (shape ``(1,)``) or of each layer."""
        nonzero = torch.tensor([float((w != 0).sum()) for w in self.weights], dtype=torch.float64)
        if self.layerwise:
            return nonzero / self.sizes
        return (nonzero.sum() / self.sizes.sum()).reshape(1)

    def density_state(self) -> cooper.ConstraintState:
        sizes = self.sizes if self.layerwise else self.sizes.sum().reshape(1)
        violation = density_violation(self.measured_density(), self.target_density, 1.0 / sizes, self.scale)
        return cooper.ConstraintState(
            violation=violation,
            strict_violation=violation,
            contributes_to_primal_update=False,
            contributes_to_dual_update=self.dual_active,
        )

    def compute_cmp_state(self, inputs: torch.Tensor, labels: torch.Tensor) -> cooper.CMPState:
        logits = self.model(inputs)
        loss = nn.functional.cross_entropy(logits, labels)
        return cooper.CMPState(loss=loss, observed_constraints={self.density: self.density_state()})

    def compute_violations(self) -> cooper.CMPState:
        """The density constraint only (no forward pass): the count of the weights as they are now."""
        return cooper.CMPState(loss=None, observed_constraints={self.density: self.density_state()})


class L1BallConstrained(cooper.ConstrainedMinimizationProblem):
    r"""Cross-entropy subject to :math:`\|\theta\|_1 \le \tau` (the weights of every ``nn.Linear`` layer).

    The bound ``tau`` is an attribute: the epsilon-constraint sweep moves it between points and keeps the
    multiplier (warm start).
    """

    def __init__(self, model: nn.Module, tau: float) -> None:
        super().__init__()
        self.model = model
        self.weights: Sequence[torch.Tensor] = penalised_weights(model)
        self.tau = float(tau)
        self.l1_ball = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY,
            multiplier=cooper.multipliers.DenseMultiplier(num_constraints=1, dtype=torch.float64),
        )

    @property
    def multiplier(self) -> cooper.multipliers.DenseMultiplier:
        multiplier = self.l1_ball.multiplier
        assert isinstance(multiplier, cooper.multipliers.DenseMultiplier)
        return multiplier

    def threshold_level(self) -> torch.Tensor:
        return self.multiplier.weight.detach()

    @torch.no_grad()
    def l1_state(self) -> cooper.ConstraintState:
        norm = sum(w.abs().sum(dtype=torch.float64) for w in self.weights)
        violation = torch.as_tensor(norm, dtype=torch.float64).reshape(1) - self.tau
        return cooper.ConstraintState(
            violation=violation, strict_violation=violation, contributes_to_primal_update=False
        )

    def compute_cmp_state(self, inputs: torch.Tensor, labels: torch.Tensor) -> cooper.CMPState:
        logits = self.model(inputs)
        loss = nn.functional.cross_entropy(logits, labels)
        return cooper.CMPState(loss=loss, observed_constraints={self.l1_ball: self.l1_state()})
