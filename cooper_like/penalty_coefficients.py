r"""Penalty coefficients :math:`c \ge 0` of the quadratic-penalty and augmented-Lagrangian formulations,
and the rules that grow them while a constraint stays violated.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, Protocol

import torch

from cooper_like.constraint_state import ConstraintState, ConstraintType
from cooper_like.exceptions import ArgumentTypeError
from cooper_like.multipliers import check_row_bounds


class PenaltyCoefficient(abc.ABC):
    """A non-trainable, non-negative coefficient (a scalar or one entry per constraint).

    Args:
        init: Initial value, a 0-D or 1-D tensor with finite entries ``>= 0`` (0 is allowed).
    """

    expects_constraint_features: bool = False

    def __init__(self, init: torch.Tensor) -> None:
        if not isinstance(init, torch.Tensor):
            raise TypeError(f"{type(self).__name__}: init must be a torch.Tensor, got {type(init).__name__}")
        if init.requires_grad:
            raise ValueError(
                f"{type(self).__name__}: init must not require gradients (a penalty coefficient is not "
                "trained); pass init.detach()"
            )
        if init.dim() > 1:
            raise ValueError(
                f"{type(self).__name__}: init must be a scalar or 1-D tensor, got shape {tuple(init.shape)}"
            )
        self._value = validated_penalty_value(type(self).__name__, init.detach().clone())
        self.init = self._value.clone()

    @property
    def value(self) -> torch.Tensor:
        """The current coefficient(s)."""
        return self._value

    @value.setter
    def value(self, value: torch.Tensor) -> None:
        if value.requires_grad:
            raise ValueError(f"{type(self).__name__}: a penalty coefficient must not require gradients")
        if value.shape != self._value.shape:
            raise ValueError(
                f"{type(self).__name__}: new value has shape {tuple(value.shape)}, "
                f"expected {tuple(self._value.shape)}"
            )
        self._value = validated_penalty_value(type(self).__name__, value.clone())

    def sanity_check(self) -> None:
        """Raise if any entry is negative or not finite."""
        validated_penalty_value(type(self).__name__, self._value)

    def to(self, *args: Any, **kwargs: Any) -> PenaltyCoefficient:
        """Move/cast the value (and the initial value used by restarts) like ``Tensor.to``."""
        self._value = self._value.to(*args, **kwargs)
        self.init = self.init.to(*args, **kwargs)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"value": self._value.clone(), "init": self.init.clone()}

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.value = state_dict["value"].to(self._value.device)
        if "init" in state_dict:
            self.init = state_dict["init"].to(self._value.device).clone()

    @abc.abstractmethod
    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Return the coefficient(s) of the observed constraints."""

    def __repr__(self) -> str:
        shown = self._value if self._value.numel() <= 10 else f"shape={tuple(self._value.shape)}"
        return f"{type(self).__name__}({shown})"


class DensePenaltyCoefficient(PenaltyCoefficient):
    """Coefficient(s) of constraints that are all observed at every step."""

    def __call__(self) -> torch.Tensor:
        return self._value.clone()


class IndexedPenaltyCoefficient(PenaltyCoefficient):
    """Coefficients indexed by constraint id (see :class:`~cooper_like.multipliers.IndexedMultiplier`)."""

    expects_constraint_features = True

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        if indices.dtype not in (torch.int64, torch.int32):
            raise ArgumentTypeError(
                f"IndexedPenaltyCoefficient: indices must be an integer tensor, got dtype {indices.dtype}"
            )
        if self._value.dim() == 0:
            return self._value.clone()
        return self._value.index_select(0, indices.reshape(-1)).reshape(indices.shape)

    @torch.no_grad()
    def set_rows_(self, rows: torch.Tensor, values: torch.Tensor) -> None:
        """Set the coefficients of ``rows`` (unique ids) to ``values`` in place: O(len(rows)).

        Only the new values are validated (finite, ``>= 0``); the other rows are neither read nor copied.
        """
        if self._value.dim() == 0:
            raise ValueError("IndexedPenaltyCoefficient.set_rows_: the coefficient is a scalar (no rows)")
        check_row_bounds(rows, self._value.shape[0], "IndexedPenaltyCoefficient: rows")
        new = validated_penalty_value(type(self).__name__, values.to(self._value.dtype))
        self._value.index_copy_(0, rows, new)


def validated_penalty_value(owner: str, value: torch.Tensor) -> torch.Tensor:
    """Return ``value`` after checking that it is finite and non-negative."""
    if not value.dtype.is_floating_point:
        value = value.to(torch.get_default_dtype())
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{owner}: penalty coefficients must be finite, got {value}")
    if bool((value < 0).any()):
        raise ValueError(f"{owner}: penalty coefficients must be >= 0, got {value}")
    return value


class UsesMultiplier(Protocol):
    """The part of a formulation an updater reads."""

    @property
    def expects_multiplier(self) -> bool: ...


class PenalizedConstraint(Protocol):
    """What an updater reads from a constraint: a :class:`~cooper_like.Constraint` has all of it.

    (A structural type, so that this module does not import the constraints, which import it.)
    """

    @property
    def constraint_type(self) -> ConstraintType: ...

    @property
    def formulation(self) -> UsesMultiplier: ...

    @property
    def penalty_coefficient(self) -> PenaltyCoefficient | None: ...


class PenaltyCoefficientUpdater(abc.ABC):
    """Updates the penalty coefficients of the observed constraints after a dual step.

    Call :meth:`step` by hand, or attach the updater to a constrained optimizer
    (``penalty_coefficient_updater=...``) so that ``roll()`` applies it.
    """

    def step(self, observed_constraints: Mapping[Any, ConstraintState]) -> None:
        """Update the coefficient of every observed constraint that has one.

        A constraint with a multiplier is updated when its measurement contributes to the dual update
        (or to the primal one with a strict violation); a penalty-only constraint when it contributes to
        the primal update.
        """
        for constraint, state in observed_constraints.items():
            if constraint.penalty_coefficient is None:
                continue
            check_is_penalty_coefficient(constraint.penalty_coefficient)
            if constraint.formulation.expects_multiplier:
                should_update = state.contributes_to_dual_update or (
                    state.contributes_to_primal_update and state.strict_violation is not None
                )
            else:
                should_update = state.contributes_to_primal_update
            if should_update:
                self.update_penalty_coefficient_(constraint, state)

    @abc.abstractmethod
    def update_penalty_coefficient_(
        self, constraint: PenalizedConstraint, constraint_state: ConstraintState
    ) -> None:
        """Update ``constraint.penalty_coefficient`` in place from one measurement."""


class FeasibilityDrivenPenaltyCoefficientUpdater(PenaltyCoefficientUpdater):
    """Grows a coefficient while its (strict) violation exceeds ``violation_tolerance``.

    The violation measure is :math:`|[g]_+|` per entry (inequality) or :math:`|h|` (equality); for a
    scalar coefficient shared by several constraints, the norm of the violation vector. With
    ``has_restart`` an inequality coefficient returns to its initial value once the constraint is
    satisfied (measure exactly 0).
    """

    def __init__(self, violation_tolerance: float = 1e-4, has_restart: bool = True) -> None:
        if not violation_tolerance >= 0.0:
            raise ValueError(
                f"{type(self).__name__}: violation_tolerance must be >= 0, got {violation_tolerance}"
            )
        self.violation_tolerance = violation_tolerance
        self.has_restart = has_restart

    @abc.abstractmethod
    def grown(self, value: torch.Tensor) -> torch.Tensor:
        """Return the coefficient after one growth step."""

    @torch.no_grad()
    def update_penalty_coefficient_(
        self, constraint: PenalizedConstraint, constraint_state: ConstraintState
    ) -> None:
        coefficient = check_is_penalty_coefficient(constraint.penalty_coefficient)
        _, strict_violation = constraint_state.extract_violations()
        _, features = constraint_state.extract_constraint_features()
        if constraint.constraint_type == ConstraintType.INEQUALITY:
            strict_violation = strict_violation.relu()

        if isinstance(coefficient, IndexedPenaltyCoefficient) and coefficient.value.dim() > 0:
            if features is None:
                raise ValueError(
                    "IndexedPenaltyCoefficient: constraint_features (the observed constraint ids) are required"
                )
            rows, measure = max_measure_per_row(features, strict_violation)
            current, initial = coefficient.value.index_select(0, rows), coefficient.init.index_select(0, rows)
            coefficient.set_rows_(rows, self.updated(current, initial, measure, constraint.constraint_type))
            return
        current, initial = coefficient.value, coefficient.init
        measure = (
            strict_violation.norm() if current.dim() == 0 else strict_violation.abs().reshape(current.shape)
        )

        new = self.updated(current, initial, measure, constraint.constraint_type)
        coefficient.value = new.to(coefficient.value.dtype)

    def updated(
        self,
        current: torch.Tensor,
        initial: torch.Tensor,
        measure: torch.Tensor,
        constraint_type: ConstraintType,
    ) -> torch.Tensor:
        """Grown where ``measure`` exceeds the tolerance; back to ``initial`` where an inequality is satisfied."""
        new = torch.where(measure > self.violation_tolerance, self.grown(current), current)
        if self.has_restart and constraint_type == ConstraintType.INEQUALITY:
            new = torch.where(measure == 0, initial, new)
        return new


def check_is_penalty_coefficient(coefficient: object) -> PenaltyCoefficient:
    """``coefficient`` if it is a :class:`PenaltyCoefficient`; ``TypeError`` naming its type otherwise."""
    if not isinstance(coefficient, PenaltyCoefficient):
        raise TypeError(
            "penalty-coefficient updater: the constraint's penalty_coefficient must be a PenaltyCoefficient, "
            f"got {type(coefficient).__name__}"
        )
    return coefficient


def max_measure_per_row(features: torch.Tensor, measure: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The unique observed ids and, per id, the largest :math:`|\text{measure}|` of its observations.

    A row observed several times in one step grows once if any observation is violated, and restarts
    only if every observation is exactly satisfied. O(observed), whatever the number of rows.
    """
    rows, position = features.reshape(-1).long().unique(return_inverse=True)
    per_observation = measure.reshape(-1).abs()
    largest = per_observation.new_zeros(rows.shape[0])
    largest.scatter_reduce_(0, position, per_observation, reduce="amax", include_self=False)
    return rows, largest


class MultiplicativePenaltyCoefficientUpdater(FeasibilityDrivenPenaltyCoefficientUpdater):
    r"""Multiply by ``growth_factor`` while violated: :math:`c \leftarrow \gamma c` (Nocedal & Wright, Alg. 17.4).

    Args:
        growth_factor: :math:`\gamma \ge 1`.
        violation_tolerance: No growth while the violation measure is at most this.
        has_restart: Reset inequality coefficients to their initial value when feasible.
    """

    def __init__(
        self, growth_factor: float = 1.01, violation_tolerance: float = 1e-4, has_restart: bool = True
    ) -> None:
        super().__init__(violation_tolerance, has_restart)
        if not growth_factor >= 1.0:
            raise ValueError(
                f"MultiplicativePenaltyCoefficientUpdater: growth_factor must be >= 1, got {growth_factor}"
            )
        self.growth_factor = growth_factor

    def grown(self, value: torch.Tensor) -> torch.Tensor:
        return value * self.growth_factor


class AdditivePenaltyCoefficientUpdater(FeasibilityDrivenPenaltyCoefficientUpdater):
    r"""Add ``increment`` while violated: :math:`c \leftarrow c + \delta`.

    Args:
        increment: :math:`\delta \ge 0`.
        violation_tolerance: No growth while the violation measure is at most this.
        has_restart: Reset inequality coefficients to their initial value when feasible.
    """

    def __init__(
        self, increment: float = 1.0, violation_tolerance: float = 1e-4, has_restart: bool = True
    ) -> None:
        super().__init__(violation_tolerance, has_restart)
        if not increment >= 0.0:
            raise ValueError(f"AdditivePenaltyCoefficientUpdater: increment must be >= 0, got {increment}")
        self.increment = increment

    def grown(self, value: torch.Tensor) -> torch.Tensor:
        return value + self.increment
