r"""Formulations: how a constraint enters the primal and the dual Lagrangians.

Each formulation is a thin class over small pure kernels (the ``*_term`` functions below). The primal
Lagrangian :math:`\mathcal{L}_p` is differentiated with respect to the model parameters (multipliers
detached); the dual Lagrangian :math:`\mathcal{L}_d = \sum_i \lambda_i \tilde g_i` with respect to the
multipliers (violations detached), where :math:`\tilde g` is the strict violation when one is given.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import torch

from cooper_like.constraint_state import ConstraintState, ConstraintType
from cooper_like.exceptions import ArgumentTypeError
from cooper_like.multipliers import ExplicitMultiplier, Multiplier
from cooper_like.penalty_coefficients import PenaltyCoefficient

# ---------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------


def lagrangian_term(multiplier_value: torch.Tensor, violation: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_i \lambda_i g_i` (``multiplier_value`` has one entry per entry of ``violation``)."""
    if violation.dim() == 0:  # one constraint: the product is the sum
        return multiplier_value.reshape(()) * violation
    if multiplier_value.shape != violation.shape:
        multiplier_value = multiplier_value.reshape(violation.shape)
    return (multiplier_value * violation).sum()


def quadratic_penalty_term(
    penalty_value: torch.Tensor, violation: torch.Tensor, constraint_type: ConstraintType
) -> torch.Tensor:
    r""":math:`\tfrac12 \sum_i c_i [g_i]_+^2` for inequalities, :math:`\tfrac12 \sum_i c_i h_i^2` for equalities."""
    clipped = violation.relu() if constraint_type == ConstraintType.INEQUALITY else violation
    return 0.5 * (penalty_value * clipped.pow(2)).sum()


def augmented_lagrangian_term(
    multiplier_value: torch.Tensor,
    penalty_value: torch.Tensor,
    violation: torch.Tensor,
    constraint_type: ConstraintType,
) -> torch.Tensor:
    r"""Primal augmented-Lagrangian contribution (Nocedal & Wright, eqs. 17.36 and 17.65).

    Equality: :math:`\sum_i \mu_i h_i + \tfrac{c_i}{2} h_i^2`.
    Inequality: :math:`\sum_i \frac{[\lambda_i + c_i g_i]_+^2 - \lambda_i^2}{2 c_i}`, whose limit as
    :math:`c_i \to 0` is :math:`\lambda_i g_i` — used exactly where :math:`c_i = 0`, so a zero
    coefficient gives the plain Lagrangian (never ``0/0``).
    """
    multiplier_value = multiplier_value.reshape(violation.shape)
    if constraint_type == ConstraintType.EQUALITY:
        return (multiplier_value * violation).sum() + quadratic_penalty_term(
            penalty_value, violation, constraint_type
        )
    penalty_value = penalty_value.expand_as(violation) if penalty_value.dim() == 0 else penalty_value
    penalty_value = penalty_value.reshape(violation.shape)
    is_positive = penalty_value > 0
    safe_penalty = torch.where(is_positive, penalty_value, torch.ones_like(penalty_value))
    shifted = (multiplier_value + safe_penalty * violation).relu()
    augmented = (shifted.pow(2) - multiplier_value.pow(2)) / (2 * safe_penalty)
    return torch.where(is_positive, augmented, multiplier_value * violation).sum()


# ---------------------------------------------------------------------------------------------------
# Formulations
# ---------------------------------------------------------------------------------------------------


#: The functions declared by :func:`violation_is_dual_gradient` (by identity: a wrapper of one is not).
_VIOLATION_GRADIENT_METHODS: set[Callable[..., Any]] = set()

DualContribution = TypeVar("DualContribution", bound=Callable[..., Any])


def violation_is_dual_gradient(method: DualContribution) -> DualContribution:
    r"""Declare that a ``compute_contribution_to_dual_lagrangian`` returns :math:`\sum_i \lambda_i \tilde g_i`.

    The library then writes an explicit multiplier's gradient :math:`\tilde g` directly instead of
    back-propagating the contribution (same result, no autograd graph). Undeclared overrides go through
    autograd.
    """
    _VIOLATION_GRADIENT_METHODS.add(method)
    return method


def contribution_kwargs(
    formulation: Formulation,
    constraint_state: ConstraintState,
    multiplier: Multiplier | None,
    penalty_coefficient: PenaltyCoefficient | None,
) -> dict[str, Any]:
    """Keyword arguments of a contribution call: the state, plus what the formulation expects (as Cooper)."""
    kwargs: dict[str, Any] = {"constraint_state": constraint_state}
    if formulation.expects_multiplier:
        kwargs["multiplier"] = multiplier
    if formulation.expects_penalty_coefficient:
        kwargs["penalty_coefficient"] = penalty_coefficient
    return kwargs


class ContributionStore(NamedTuple):
    """One constraint's contribution to a Lagrangian, with the factor values that produced it."""

    lagrangian_contribution: torch.Tensor
    multiplier_value: torch.Tensor | None = None
    penalty_coefficient_value: torch.Tensor | None = None


class Formulation(abc.ABC):
    """How one constraint contributes to the primal and dual Lagrangians.

    Args:
        constraint_type: :attr:`ConstraintType.INEQUALITY` or :attr:`ConstraintType.EQUALITY`.
    """

    expects_multiplier: bool
    expects_penalty_coefficient: bool
    #: The primal contribution can be finite while the violation is not (a penalty clips
    #: :math:`[-\infty]_+ = 0`), so the NaN/Inf guard checks the violation itself. Only the plain
    #: Lagrangian, whose :math:`\lambda^\top g` is NaN/Inf whenever :math:`g` is, sets it to ``False``.
    may_hide_non_finite_violation: bool = True

    def __init__(self, constraint_type: ConstraintType) -> None:
        if not isinstance(constraint_type, ConstraintType):
            raise ArgumentTypeError(
                f"{type(self).__name__}: constraint_type must be a ConstraintType, got {constraint_type!r}"
            )
        self.constraint_type = constraint_type

    def __repr__(self) -> str:
        return f"{type(self).__name__}(constraint_type={self.constraint_type})"

    @property
    def dual_gradient_is_violation(self) -> bool:
        r"""Whether this formulation's dual contribution is declared to be :math:`\sum_i \lambda_i \tilde g_i`.

        Then an explicit multiplier's dual gradient is the strict violation :math:`\tilde g` and is written
        without autograd. The declaration belongs to the method (:func:`violation_is_dual_gradient`): a
        subclass that overrides :meth:`compute_contribution_to_dual_lagrangian` goes through autograd
        on what its override returns, unless it declares the same.
        """
        if "compute_contribution_to_dual_lagrangian" in vars(self):  # overridden on the instance
            return False
        return type(self).compute_contribution_to_dual_lagrangian in _VIOLATION_GRADIENT_METHODS

    def sanity_check_multiplier(self, multiplier: Multiplier | None) -> None:
        """Raise unless a multiplier is given exactly when the formulation uses one."""
        if self.expects_multiplier and multiplier is None:
            raise ValueError(
                f"{type(self).__name__} needs a multiplier: pass multiplier=... to the Constraint"
            )
        if not self.expects_multiplier and multiplier is not None:
            raise ValueError(f"{type(self).__name__} has no multiplier: got multiplier={multiplier!r}")
        if multiplier is not None and not isinstance(multiplier, Multiplier):
            raise TypeError(f"multiplier must be a cooper_like Multiplier, got {type(multiplier).__name__}")

    def sanity_check_penalty_coefficient(self, penalty_coefficient: PenaltyCoefficient | None) -> None:
        """Raise unless a penalty coefficient is given exactly when the formulation uses one."""
        if self.expects_penalty_coefficient and penalty_coefficient is None:
            raise ValueError(
                f"{type(self).__name__} needs a penalty coefficient: pass penalty_coefficient=... to the Constraint"
            )
        if not self.expects_penalty_coefficient and penalty_coefficient is not None:
            raise ValueError(
                f"{type(self).__name__} has no penalty coefficient: got penalty_coefficient={penalty_coefficient!r}"
            )
        if penalty_coefficient is not None and not isinstance(penalty_coefficient, PenaltyCoefficient):
            raise TypeError(
                f"penalty_coefficient must be a PenaltyCoefficient, got {type(penalty_coefficient).__name__}"
            )

    @abc.abstractmethod
    def compute_contribution_to_primal_lagrangian(
        self,
        constraint_state: ConstraintState,
        multiplier: Multiplier | None = None,
        penalty_coefficient: PenaltyCoefficient | None = None,
    ) -> ContributionStore | None:
        """Differentiable (in the primal parameters) contribution; ``None`` if it does not contribute."""

    @abc.abstractmethod
    def compute_contribution_to_dual_lagrangian(
        self,
        constraint_state: ConstraintState,
        multiplier: Multiplier | None = None,
        penalty_coefficient: PenaltyCoefficient | None = None,
    ) -> ContributionStore | None:
        """Differentiable (in the multipliers) contribution; ``None`` if it does not contribute."""


def primal_multiplier_value(multiplier: Multiplier, state: ConstraintState) -> torch.Tensor:
    """Detached multiplier values of the observed constraints of ``state`` (after validating it)."""
    if isinstance(multiplier, ExplicitMultiplier):
        multiplier.check_observation(state.violation, state.constraint_features)
        return multiplier.detached_value(state.constraint_features)
    with torch.no_grad():
        return multiplier(state.constraint_features)


def dual_multiplier_value(
    multiplier: Multiplier, violation: torch.Tensor, features: torch.Tensor | None
) -> torch.Tensor:
    """Multiplier values matching a strict violation (after validating it), differentiable in the multiplier."""
    if isinstance(multiplier, ExplicitMultiplier):
        multiplier.check_observation(violation, features)
    return multiplier(features) if multiplier.expects_constraint_features else multiplier()


def penalty_value(penalty_coefficient: PenaltyCoefficient, features: torch.Tensor | None) -> torch.Tensor:
    """Penalty coefficients of the observed constraints."""
    if penalty_coefficient.expects_constraint_features:
        if features is None:
            raise ValueError(
                f"{type(penalty_coefficient).__name__}: constraint_features (the observed constraint ids) "
                "are required"
            )
        return penalty_coefficient(features)
    return penalty_coefficient()


def checked_penalty_value(
    penalty_coefficient: PenaltyCoefficient, constraint_state: ConstraintState
) -> torch.Tensor:
    """:func:`penalty_value` for ``constraint_state``; raise unless it is one value or one per violation entry."""
    value = penalty_value(penalty_coefficient, constraint_state.constraint_features)
    violation = constraint_state.violation
    if value.numel() != 1 and value.numel() != violation.numel():
        raise ValueError(
            f"{type(penalty_coefficient).__name__}: {value.numel()} penalty coefficients for a violation "
            f"of shape {tuple(violation.shape)}; give one coefficient or one per violation entry"
        )
    return value


def multiplier_dual_contribution(
    multiplier: Multiplier | None, constraint_state: ConstraintState
) -> ContributionStore | None:
    r"""The dual contribution :math:`\sum_i \lambda_i \tilde g_i` shared by every multiplier formulation."""
    if not constraint_state.contributes_to_dual_update:
        return None
    assert multiplier is not None
    _, strict_violation = constraint_state.extract_violations(do_unsqueeze=False)
    _, features = constraint_state.extract_constraint_features()
    value = dual_multiplier_value(multiplier, strict_violation, features)
    return ContributionStore(lagrangian_term(value, strict_violation.detach()), value, None)


class Lagrangian(Formulation):
    r"""The Lagrangian :math:`\mathcal{L}(\theta, \lambda) = f(\theta) + \sum_i \lambda_i g_i(\theta)`."""

    expects_multiplier = True
    expects_penalty_coefficient = False
    may_hide_non_finite_violation = False

    def compute_contribution_to_primal_lagrangian(
        self,
        constraint_state: ConstraintState,
        multiplier: Multiplier | None = None,
        penalty_coefficient: PenaltyCoefficient | None = None,
    ) -> ContributionStore | None:
        if not constraint_state.contributes_to_primal_update:
            return None
        assert multiplier is not None
        value = primal_multiplier_value(multiplier, constraint_state)
        return ContributionStore(lagrangian_term(value, constraint_state.violation), value, None)

    @violation_is_dual_gradient
    def compute_contribution_to_dual_lagrangian(
        self,
        constraint_state: ConstraintState,
        multiplier: Multiplier | None = None,
        penalty_coefficient: PenaltyCoefficient | None = None,
    ) -> ContributionStore | None:
        return multiplier_dual_contribution(multiplier, constraint_state)


class QuadraticPenalty(Formulation):
    r"""The quadratic penalty :math:`f(\theta) + \tfrac12 \sum_i c_i [g_i(\theta)]_+^2`: no multipliers."""

    expects_multiplier = False
    expects_penalty_coefficient = True

    def compute_contribution_to_primal_lagrangian(
        self,
        constraint_state: ConstraintState,
        multiplier: Multiplier | None = None,
        penalty_coefficient: PenaltyCoefficient | None = None,
    ) -> ContributionStore | None:
        if not constraint_state.contributes_to_primal_update:
            return None
        assert penalty_coefficient is not None
        coefficient = checked_penalty_value(penalty_coefficient, constraint_state)
        term = quadratic_penalty_term(coefficient, constraint_state.violation, self.constraint_type)
        return ContributionStore(term, None, coefficient)

    def compute_contribution_to_dual_lagrangian(
        self,
        constraint_state: ConstraintState,
        multiplier: Multiplier | None = None,
        penalty_coefficient: PenaltyCoefficient | None = None,
    ) -> ContributionStore | None:
        """No dual variables: always ``None``."""
        return None


class AugmentedLagrangian(Formulation):
    r"""The augmented Lagrangian (see :func:`augmented_lagrangian_term` for the primal contribution).

    The dual step follows Cooper: the dual optimizer ascends on the violation itself,
    :math:`\lambda \leftarrow [\lambda + \eta\, g]_+` for SGD, so choosing the dual learning rate
    :math:`\eta = c` gives the classical method-of-multipliers update :math:`[\lambda + c\,g]_+`.
    """

    expects_multiplier = True
    expects_penalty_coefficient = True

    def compute_contribution_to_primal_lagrangian(
        self,
        constraint_state: ConstraintState,
        multiplier: Multiplier | None = None,
        penalty_coefficient: PenaltyCoefficient | None = None,
    ) -> ContributionStore | None:
        if not constraint_state.contributes_to_primal_update:
            return None
        assert multiplier is not None and penalty_coefficient is not None
        value = primal_multiplier_value(multiplier, constraint_state)
        coefficient = checked_penalty_value(penalty_coefficient, constraint_state)
        term = augmented_lagrangian_term(value, coefficient, constraint_state.violation, self.constraint_type)
        return ContributionStore(term, value, coefficient)

    @violation_is_dual_gradient
    def compute_contribution_to_dual_lagrangian(
        self,
        constraint_state: ConstraintState,
        multiplier: Multiplier | None = None,
        penalty_coefficient: PenaltyCoefficient | None = None,
    ) -> ContributionStore | None:
        return multiplier_dual_contribution(multiplier, constraint_state)
