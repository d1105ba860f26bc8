"""A constraint of a problem: its type, formulation, multiplier and penalty coefficient."""

from __future__ import annotations

from typing import Literal

from cooper_like.constraint_state import ConstraintState, ConstraintType
from cooper_like.exceptions import ArgumentTypeError
from cooper_like.formulations import ContributionStore, Formulation, Lagrangian, contribution_kwargs
from cooper_like.multipliers import Multiplier
from cooper_like.penalty_coefficients import PenaltyCoefficient


class Constraint:
    """One (vector-valued) constraint of a :class:`~cooper_like.ConstrainedMinimizationProblem`.

    Register it by assigning it as an attribute of the problem (``self.rate = Constraint(...)``); its
    name is the attribute name.

    Args:
        constraint_type: ``ConstraintType.INEQUALITY`` (:math:`g \\le 0`) or ``ConstraintType.EQUALITY``.
        formulation_type: :class:`Lagrangian` (default), :class:`QuadraticPenalty` or
            :class:`AugmentedLagrangian` — the class, not an instance.
        multiplier: Required by formulations with multipliers.
        penalty_coefficient: Required by formulations with a penalty.
    """

    def __init__(
        self,
        constraint_type: ConstraintType,
        formulation_type: type[Formulation] = Lagrangian,
        multiplier: Multiplier | None = None,
        penalty_coefficient: PenaltyCoefficient | None = None,
    ) -> None:
        if not isinstance(constraint_type, ConstraintType):
            raise ArgumentTypeError(
                f"Constraint: constraint_type must be a ConstraintType, got {constraint_type!r}"
            )
        if not (isinstance(formulation_type, type) and issubclass(formulation_type, Formulation)):
            raise TypeError(
                f"Constraint: formulation_type must be a Formulation subclass, got {formulation_type!r}"
            )
        self._name: str | None = None
        self.constraint_type = constraint_type
        self.formulation_type = formulation_type
        self.formulation = formulation_type(constraint_type=constraint_type)
        self.formulation.sanity_check_multiplier(multiplier)
        self.formulation.sanity_check_penalty_coefficient(penalty_coefficient)
        self.multiplier = multiplier
        self.penalty_coefficient = penalty_coefficient
        if multiplier is not None:
            multiplier.set_constraint_type(constraint_type)

    @property
    def name(self) -> str | None:
        """The attribute name under which the constraint was registered."""
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        if self._name is not None and self._name != name:
            raise ValueError(
                f"Constraint is already registered as {self._name!r}; cannot rename it to {name!r}"
            )
        self._name = name

    def compute_contribution_to_primal_lagrangian(
        self, constraint_state: ConstraintState
    ) -> ContributionStore | None:
        """This constraint's contribution to the primal Lagrangian."""
        return self.formulation.compute_contribution_to_primal_lagrangian(
            **contribution_kwargs(
                self.formulation, constraint_state, self.multiplier, self.penalty_coefficient
            )
        )

    def compute_contribution_to_dual_lagrangian(
        self, constraint_state: ConstraintState
    ) -> ContributionStore | None:
        """This constraint's contribution to the dual Lagrangian."""
        return self.formulation.compute_contribution_to_dual_lagrangian(
            **contribution_kwargs(
                self.formulation, constraint_state, self.multiplier, self.penalty_coefficient
            )
        )

    def compute_contribution_to_lagrangian(
        self, constraint_state: ConstraintState, primal_or_dual: Literal["primal", "dual"]
    ) -> ContributionStore | None:
        """Cooper-compatible entry point; prefer the two explicit methods above."""
        if primal_or_dual == "primal":
            return self.compute_contribution_to_primal_lagrangian(constraint_state)
        if primal_or_dual == "dual":
            return self.compute_contribution_to_dual_lagrangian(constraint_state)
        raise ValueError(f"primal_or_dual must be 'primal' or 'dual', got {primal_or_dual!r}")

    def __repr__(self) -> str:
        parts = [
            f"name={self._name!r}",
            f"constraint_type={self.constraint_type}",
            f"formulation={self.formulation}",
        ]
        if self.multiplier is not None:
            parts.append(f"multiplier={self.multiplier}")
        if self.penalty_coefficient is not None:
            parts.append(f"penalty_coefficient={self.penalty_coefficient}")
        return f"Constraint({', '.join(parts)})"
