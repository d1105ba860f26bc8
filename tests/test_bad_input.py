"""The library fixes found by the property-based suite, each pinned by a hand-written case."""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
import torch

import cooper_like as cooper
from cooper_like.optim import NonFiniteError


class OneConstraint(cooper.ConstrainedMinimizationProblem):
    """One constraint measured from ``measure`` (mutable between steps); ``scale`` is the primal parameter."""

    def __init__(self, constraint: cooper.Constraint, measure: dict[str, torch.Tensor | None]) -> None:
        super().__init__()
        self.scale = torch.ones((), requires_grad=True)
        self.constraint = constraint
        self.measure = measure

    def compute_cmp_state(self) -> cooper.CMPState:
        violation = self.measure["violation"]
        assert violation is not None
        state = cooper.ConstraintState(
            violation * self.scale.to(violation.dtype), strict_violation=self.measure.get("strict")
        )
        return cooper.CMPState(loss=self.scale.pow(2), observed_constraints={self.constraint: state})


def one_constraint_problem(
    constraint: cooper.Constraint, measure: dict[str, torch.Tensor | None]
) -> OneConstraint:
    return OneConstraint(constraint, measure)


def simultaneous(problem: OneConstraint, **kwargs: str) -> cooper.optim.SimultaneousOptimizer:
    return cooper.optim.SimultaneousOptimizer(
        problem,
        torch.optim.SGD([problem.scale], lr=0.01),
        torch.optim.SGD(problem.dual_parameters(), lr=0.1, maximize=True),
        **kwargs,  # type: ignore[arg-type]
    )


def weight(constraint: cooper.Constraint) -> torch.Tensor:
    multiplier = constraint.multiplier
    assert isinstance(multiplier, cooper.multipliers.ExplicitMultiplier)
    return multiplier.weight.detach()


def test_strict_violation_must_describe_the_same_constraints() -> None:
    with pytest.raises(ValueError, match="strict_violation has 1 entries but violation has 2"):
        cooper.ConstraintState(torch.zeros(2), strict_violation=torch.zeros(1))
    # with their own features, the strict measurement may observe other rows
    cooper.ConstraintState(
        torch.zeros(2),
        constraint_features=torch.tensor([0, 1]),
        strict_violation=torch.zeros(3),
        strict_constraint_features=torch.tensor([0, 1, 2]),
    )


def test_penalty_coefficients_must_fit_the_violation() -> None:
    dense = cooper.Constraint(
        cooper.ConstraintType.INEQUALITY,
        formulation_type=cooper.formulations.QuadraticPenalty,
        penalty_coefficient=cooper.penalty_coefficients.DensePenaltyCoefficient(torch.ones(3)),
    )
    state = cooper.ConstraintState(torch.ones(2, requires_grad=True))
    with pytest.raises(ValueError, match="3 penalty coefficients for a violation of shape \\(2,\\)"):
        cooper.CMPState(observed_constraints={dense: state}).compute_primal_lagrangian()
    indexed = cooper.Constraint(
        cooper.ConstraintType.INEQUALITY,
        formulation_type=cooper.formulations.QuadraticPenalty,
        penalty_coefficient=cooper.penalty_coefficients.IndexedPenaltyCoefficient(torch.ones(3)),
    )
    with pytest.raises(ValueError, match="IndexedPenaltyCoefficient: constraint_features .* are required"):
        cooper.CMPState(observed_constraints={indexed: state}).compute_primal_lagrangian()


def test_adam_eps_that_vanishes_in_float16_is_refused() -> None:
    constraint = cooper.Constraint(
        cooper.ConstraintType.INEQUALITY,
        multiplier=cooper.multipliers.DenseMultiplier(2, dtype=torch.float16),
    )
    problem = one_constraint_problem(constraint, {"violation": torch.zeros(2)})
    with pytest.raises(
        ValueError, match=r"dual_optimizers\[0\] \(Adam\) param group 0: eps=1e-08 is 0 in torch.float16"
    ):
        cooper.optim.SimultaneousOptimizer(
            problem,
            torch.optim.SGD([problem.scale], lr=0.01),
            torch.optim.Adam(problem.dual_parameters(), lr=0.1, maximize=True),
        )
    cooper.optim.SimultaneousOptimizer(  # a representable eps is fine
        problem,
        torch.optim.SGD([problem.scale], lr=0.01),
        torch.optim.Adam(problem.dual_parameters(), lr=0.1, eps=1e-4, maximize=True),
    )


def test_extrapolation_that_raises_leaves_the_parameters_where_they_were() -> None:
    constraint = cooper.Constraint(
        cooper.ConstraintType.INEQUALITY, multiplier=cooper.multipliers.DenseMultiplier(1)
    )
    measure: dict[str, torch.Tensor | None] = {"violation": torch.tensor([1.0])}
    problem = one_constraint_problem(constraint, measure)
    calls = {"n": 0}
    original = problem.compute_cmp_state

    def nan_at_the_extrapolated_point() -> cooper.CMPState:
        calls["n"] += 1
        measure["violation"] = torch.tensor([1.0 if calls["n"] == 1 else math.nan])
        return original()

    problem.compute_cmp_state = nan_at_the_extrapolated_point  # type: ignore[method-assign]
    optimizer = cooper.optim.ExtrapolationConstrainedOptimizer(
        problem,
        cooper.optim.ExtraSGD([problem.scale], lr=0.1),
        cooper.optim.ExtraSGD(problem.dual_parameters(), lr=0.1, maximize=True),
    )
    with pytest.raises(NonFiniteError, match="nothing was updated"):
        optimizer.roll()
    assert problem.scale.item() == 1.0
    assert weight(constraint).item() == 0.0


@pytest.mark.parametrize(
    "formulation", [cooper.formulations.AugmentedLagrangian, cooper.formulations.QuadraticPenalty]
)
def test_an_infinite_violation_clipped_by_a_penalty_is_still_caught(formulation: Any) -> None:
    multiplier = cooper.multipliers.DenseMultiplier(1) if formulation.expects_multiplier else None
    constraint = cooper.Constraint(
        cooper.ConstraintType.INEQUALITY,
        formulation_type=formulation,
        multiplier=multiplier,
        penalty_coefficient=cooper.penalty_coefficients.DensePenaltyCoefficient(torch.ones(1)),
    )
    problem = one_constraint_problem(constraint, {"violation": torch.tensor([-math.inf])})
    primal = torch.optim.SGD([problem.scale], lr=0.01)
    optimizer: cooper.optim.CooperOptimizer
    if multiplier is None:
        optimizer = cooper.optim.UnconstrainedOptimizer(problem, primal)
    else:
        optimizer = cooper.optim.SimultaneousOptimizer(
            problem, primal, torch.optim.SGD(problem.dual_parameters(), lr=0.1, maximize=True)
        )
    with pytest.raises(NonFiniteError, match="violation of constraint 'constraint'"):
        optimizer.roll()
    assert problem.scale.item() == 1.0  # a NaN gradient never landed


def test_float16_multipliers_and_large_violations() -> None:
    constraint = cooper.Constraint(
        cooper.ConstraintType.EQUALITY, multiplier=cooper.multipliers.DenseMultiplier(2, dtype=torch.float16)
    )
    measure: dict[str, torch.Tensor | None] = {"violation": torch.tensor([6e4, 6e4], dtype=torch.float16)}
    problem = one_constraint_problem(constraint, measure)
    optimizer = simultaneous(problem, non_finite="skip")
    with warnings.catch_warnings():
        warnings.simplefilter(
            "error"
        )  # large but finite float16 values: no false alarm (their sum overflows)
        optimizer.roll()
    assert optimizer.skipped_steps == 0
    measure["violation"] = torch.tensor([7e4, 0.0])  # finite in float32, infinite as a float16 dual gradient
    with pytest.warns(RuntimeWarning, match="skipping a step"):
        optimizer.roll()
    assert optimizer.skipped_steps == 1
    assert bool(torch.isfinite(weight(constraint)).all())


def test_int32_ids_are_projected_like_int64_ones() -> None:
    multiplier = cooper.multipliers.IndexedMultiplier(4)
    cooper.Constraint(cooper.ConstraintType.INEQUALITY, multiplier=multiplier)
    multiplier.add_dual_gradient_(torch.tensor([-1.0, 2.0]), torch.tensor([1, 2], dtype=torch.int32))
    torch.optim.SGD(multiplier.parameters(), lr=1.0, maximize=True).step()
    multiplier.post_step_()
    assert multiplier.weight.detach().flatten().tolist() == [0.0, 0.0, 2.0, 0.0]


def test_num_constraints_is_checked_even_with_init() -> None:
    with pytest.raises(ValueError, match="num_constraints must be a positive int, got 2.5"):
        cooper.multipliers.DenseMultiplier(num_constraints=2.5, init=torch.zeros(2))  # type: ignore[arg-type]
