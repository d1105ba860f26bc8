r"""Controlled sparsity as a constrained problem (Gallego-Posada et al., 2022).

.. math::
    \min_{\theta, \log\alpha} \ \mathbb E_z\big[\mathrm{CE}(f(x; \theta \odot z), y)\big]
    \quad \text{s.t.} \quad d_l(\log\alpha) \le \tau_l, \quad d_l(\log\alpha) \ge \tau_l - \delta

where :math:`d` is the expected density :math:`\mathbb E[\|z\|_0]/n` of the whole model (model-wise,
one constraint) or of each gated layer (layer-wise, one constraint per layer). The expected density
moves the gates; with ``strict="test-time"`` the multiplier reacts to the density the model will
*ship* with (the deterministic test-time gates, a non-differentiable count) through
``ConstraintState.strict_violation``.

The floor :math:`d \ge \tau - \delta` (``floor_gap`` :math:`\delta`) makes the control two-sided:
with the upper bound alone, a network that fits its data with fewer weights settles below the target
(the constraint is inactive, its multiplier restarts at 0, and gates that closed in the first descent
get almost no gradient back); the floor's multiplier reopens the most useful gates until the shipped
density is back in :math:`[\tau - \delta, \tau]`. ``floor_gap >= target`` leaves the floor inactive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

import cooper_like as cooper
from problems.sparsity.layers import L0Layer
from problems.sparsity.models import gated_layers

StrictMode = Literal["expected", "test-time"]


def density_targets(targets: float | Sequence[float], num_layers: int, layerwise: bool) -> torch.Tensor:
    """One target for the model, or one per layer (a single value applies to every layer)."""
    values = [float(targets)] if isinstance(targets, (int, float)) else [float(t) for t in targets]
    if not layerwise and len(values) != 1:
        raise ValueError(f"model-wise sparsity takes one target density, got {len(values)}: {values}")
    if layerwise and len(values) == 1:
        values = values * num_layers
    if layerwise and len(values) != num_layers:
        raise ValueError(f"layer-wise sparsity needs 1 or {num_layers} target densities, got {len(values)}")
    for value in values:
        if not 0.0 < value <= 1.0:
            raise ValueError(f"target densities must lie in (0, 1], got {value}")
    return torch.tensor(values)


def layer_densities(layers: Sequence[L0Layer], layerwise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(expected density, test-time density) per layer, or size-weighted for the model."""
    expected = torch.stack([layer.expected_active() for layer in layers])
    with torch.no_grad():
        shipped = torch.tensor([float(layer.deterministic_active()) for layer in layers])
    sizes = torch.tensor([float(layer.weight_numel) for layer in layers])
    if layerwise:
        return expected / sizes, shipped / sizes
    return expected.sum().reshape(1) / sizes.sum(), shipped.sum().reshape(1) / sizes.sum()


class ControlledSparsity(cooper.ConstrainedMinimizationProblem):
    r"""Cross-entropy of a gated model subject to density <= target (and >= target - floor_gap).

    Args:
        model: A model with :class:`L0Linear` / :class:`L0Conv2d` layers.
        target_density: One target, or one per gated layer (``layerwise``).
        layerwise: One constraint per layer instead of one for the whole model.
        formulation: ``"lagrangian"`` or ``"augmented-lagrangian"`` (with ``penalty`` as coefficient).
        strict: What drives the multiplier: the ``"expected"`` density or the ``"test-time"`` density.
        dual_restarts: Reset a layer's multiplier to 0 whenever its constraint is satisfied.
        penalty: Initial penalty coefficient of the augmented Lagrangian.
        floor_gap: :math:`\delta` of the floor constraint density >= target - floor_gap (>= 0).
    """

    def __init__(
        self,
        model: nn.Module,
        target_density: float | Sequence[float],
        *,
        layerwise: bool = False,
        formulation: Literal["lagrangian", "augmented-lagrangian"] = "lagrangian",
        strict: StrictMode = "test-time",
        dual_restarts: bool = True,
        penalty: float = 1.0,
        floor_gap: float = 0.005,
    ) -> None:
        super().__init__()
        self.model = model
        self.layers = [layer for _, layer in gated_layers(model)]
        if not self.layers:
            raise ValueError(f"model ({type(model).__name__}) has no gated layers (L0Linear / L0Conv2d)")
        self.layerwise = layerwise
        self.targets = density_targets(target_density, len(self.layers), layerwise)
        if strict not in ("expected", "test-time"):
            raise ValueError(f"strict must be 'expected' or 'test-time', got {strict!r}")
        self.strict = strict
        if formulation not in ("lagrangian", "augmented-lagrangian"):
            raise ValueError(
                f"formulation must be 'lagrangian' or 'augmented-lagrangian', got {formulation!r}"
            )
        if not floor_gap >= 0:
            raise ValueError(f"floor_gap must be >= 0, got {floor_gap!r}")
        self.floors = self.targets - float(floor_gap)
        self.density = density_constraint(len(self.targets), formulation, dual_restarts, penalty)
        self.has_floor = bool((self.floors > 0).any())
        if self.has_floor:
            self.density_floor = density_constraint(len(self.targets), formulation, dual_restarts, penalty)

    def density_states(self) -> dict[cooper.Constraint, cooper.ConstraintState]:
        r"""The measurements of the density constraints: expected density (proxy), test-time density (strict).

        Upper bound :math:`d - \tau \le 0`; floor :math:`(\tau - \delta) - d \le 0`.
        """
        expected, shipped = layer_densities(self.layers, self.layerwise)
        measured = shipped if self.strict == "test-time" else expected.detach()
        states = {
            self.density: cooper.ConstraintState(
                violation=expected - self.targets, strict_violation=measured - self.targets
            )
        }
        if self.has_floor:
            states[self.density_floor] = cooper.ConstraintState(
                violation=self.floors - expected, strict_violation=self.floors - measured
            )
        return states

    def compute_cmp_state(self, inputs: torch.Tensor, labels: torch.Tensor) -> cooper.CMPState:
        logits = self.model(inputs)
        loss = nn.functional.cross_entropy(logits, labels)
        return cooper.CMPState(
            loss=loss, observed_constraints=self.density_states(), misc={"logits": logits.detach()}
        )

    def compute_violations(self) -> cooper.CMPState:
        return cooper.CMPState(observed_constraints=self.density_states())


def density_constraint(
    num_constraints: int, formulation: str, dual_restarts: bool, penalty: float
) -> cooper.Constraint:
    """An inequality constraint per target with its own multiplier (and penalty for the augmented Lagrangian)."""
    multiplier = cooper.multipliers.DenseMultiplier(
        num_constraints=num_constraints, restart_on_feasible=dual_restarts
    )
    if formulation == "lagrangian":
        return cooper.Constraint(cooper.ConstraintType.INEQUALITY, multiplier=multiplier)
    return cooper.Constraint(
        cooper.ConstraintType.INEQUALITY,
        formulation_type=cooper.formulations.AugmentedLagrangian,
        multiplier=multiplier,
        penalty_coefficient=cooper.penalty_coefficients.DensePenaltyCoefficient(
            torch.full((num_constraints,), float(penalty))
        ),
    )


class PenalizedL0(cooper.ConstrainedMinimizationProblem):
    r"""The penalized baseline of Louizos et al.: :math:`\mathrm{CE} + \lambda\,\mathbb E[\|z\|_0]/n`.

    (The L0 term is the expected density, so :math:`\lambda` is comparable across models.)
    """

    def __init__(self, model: nn.Module, lmbda: float) -> None:
        super().__init__()
        if not lmbda >= 0:
            raise ValueError(f"lmbda must be >= 0, got {lmbda}")
        self.model = model
        self.lmbda = lmbda
        self.layers = [layer for _, layer in gated_layers(model)]

    def compute_cmp_state(self, inputs: torch.Tensor, labels: torch.Tensor) -> cooper.CMPState:
        logits = self.model(inputs)
        expected, _ = layer_densities(self.layers, layerwise=False)
        loss = nn.functional.cross_entropy(logits, labels) + self.lmbda * expected.sum()
        return cooper.CMPState(loss=loss, misc={"logits": logits.detach()})
