"""Penalty coefficients and their updaters."""

from __future__ import annotations

import pytest
import torch

import cooper_like as cooper
from cooper_like.multipliers import DenseMultiplier, IndexedMultiplier
from cooper_like.penalty_coefficients import (
    AdditivePenaltyCoefficientUpdater,
    DensePenaltyCoefficient,
    IndexedPenaltyCoefficient,
    MultiplicativePenaltyCoefficientUpdater,
)
from tests.conftest import QuadraticProblem


@pytest.mark.parametrize(
    ("init", "error", "message"),
    [
        (torch.tensor(-0.5), ValueError, "must be >= 0"),
        (torch.tensor(float("inf")), ValueError, "must be finite"),
        (torch.tensor(float("nan")), ValueError, "must be finite"),
        (torch.zeros(2, 2), ValueError, r"scalar or 1-D tensor, got shape \(2, 2\)"),
        (1.0, TypeError, "init must be a torch.Tensor, got float"),
    ],
)
def test_coefficient_validation(init, error, message) -> None:
    with pytest.raises(error, match=message):
        DensePenaltyCoefficient(init)


def test_zero_is_a_valid_coefficient_and_value_setter_checks() -> None:
    coefficient = DensePenaltyCoefficient(torch.tensor([0.0, 1.0]))
    assert torch.equal(coefficient(), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"new value has shape \(3,\), expected \(2,\)"):
        coefficient.value = torch.zeros(3)
    with pytest.raises(ValueError, match="must not require gradients"):
        coefficient.value = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="must be >= 0"):
        coefficient.value = torch.tensor([0.0, -1.0])
    coefficient.sanity_check()
    assert "DensePenaltyCoefficient" in repr(coefficient)


def test_indexed_coefficient(default_device: str) -> None:
    coefficient = IndexedPenaltyCoefficient(torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(coefficient(torch.tensor([2, 0])), torch.tensor([3.0, 1.0]))
    assert IndexedPenaltyCoefficient(torch.tensor(5.0))(torch.tensor([0, 1])).item() == 5.0
    with pytest.raises(TypeError, match="indices must be an integer tensor, got dtype torch.float32"):
        coefficient(torch.tensor([0.0]))


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (
            lambda: MultiplicativePenaltyCoefficientUpdater(growth_factor=0.5),
            "growth_factor must be >= 1, got 0.5",
        ),
        (lambda: AdditivePenaltyCoefficientUpdater(increment=-1.0), "increment must be >= 0, got -1.0"),
        (
            lambda: MultiplicativePenaltyCoefficientUpdater(violation_tolerance=-1e-3),
            "violation_tolerance must be >= 0, got -0.001",
        ),
    ],
)
def test_updater_validation(factory, message) -> None:
    with pytest.raises(ValueError, match=message):
        factory()


def constraint_with(coefficient, constraint_type=cooper.ConstraintType.INEQUALITY, multiplier=None):
    return cooper.Constraint(
        constraint_type,
        formulation_type=cooper.formulations.AugmentedLagrangian,
        multiplier=multiplier if multiplier is not None else DenseMultiplier(num_constraints=3),
        penalty_coefficient=coefficient,
    )


def test_multiplicative_growth_restart_and_tolerance(default_device: str) -> None:
    constraint = constraint_with(DensePenaltyCoefficient(torch.tensor([1.0, 1.0, 1.0])))
    updater = MultiplicativePenaltyCoefficientUpdater(growth_factor=2.0, violation_tolerance=0.1)
    state = cooper.ConstraintState(violation=torch.tensor([0.5, 0.05, -1.0]))
    updater.step({constraint: state})
    # grows where the violation exceeds the tolerance; stays where it does not; restarts where feasible
    assert torch.equal(constraint.penalty_coefficient.value, torch.tensor([2.0, 1.0, 1.0]))
    updater.step({constraint: state})
    assert torch.equal(constraint.penalty_coefficient.value, torch.tensor([4.0, 1.0, 1.0]))
    updater.step({constraint: cooper.ConstraintState(violation=torch.tensor([-0.5, 0.05, 0.0]))})
    assert torch.equal(constraint.penalty_coefficient.value, torch.tensor([1.0, 1.0, 1.0]))


def test_additive_on_equality_uses_the_absolute_violation_and_never_restarts(default_device: str) -> None:
    constraint = constraint_with(
        DensePenaltyCoefficient(torch.tensor([1.0, 1.0, 1.0])), constraint_type=cooper.ConstraintType.EQUALITY
    )
    updater = AdditivePenaltyCoefficientUpdater(increment=0.5, violation_tolerance=0.1)
    updater.step({constraint: cooper.ConstraintState(violation=torch.tensor([-0.5, 0.0, 0.2]))})
    assert torch.equal(constraint.penalty_coefficient.value, torch.tensor([1.5, 1.0, 1.5]))


def test_scalar_coefficient_uses_the_norm_of_the_strict_violation(default_device: str) -> None:
    constraint = constraint_with(DensePenaltyCoefficient(torch.tensor(1.0)))
    updater = MultiplicativePenaltyCoefficientUpdater(growth_factor=3.0, violation_tolerance=0.5)
    # strict violation [0.3, 0.4, -1] -> relu -> norm 0.5: not above the tolerance
    state = cooper.ConstraintState(torch.zeros(3), strict_violation=torch.tensor([0.3, 0.4, -1.0]))
    updater.step({constraint: state})
    assert constraint.penalty_coefficient.value.item() == 1.0
    state = cooper.ConstraintState(torch.zeros(3), strict_violation=torch.tensor([0.3, 0.5, -1.0]))
    updater.step({constraint: state})
    assert constraint.penalty_coefficient.value.item() == 3.0


def test_indexed_coefficient_updates_only_observed_rows(default_device: str) -> None:
    constraint = constraint_with(
        IndexedPenaltyCoefficient(torch.ones(5)), multiplier=IndexedMultiplier(num_constraints=5)
    )
    updater = MultiplicativePenaltyCoefficientUpdater(growth_factor=2.0)
    state = cooper.ConstraintState(torch.tensor([1.0, -1.0]), constraint_features=torch.tensor([3, 1]))
    updater.step({constraint: state})
    assert torch.equal(constraint.penalty_coefficient.value, torch.tensor([1.0, 1.0, 1.0, 2.0, 1.0]))


def test_updater_skips_measurements_that_do_not_update_duals() -> None:
    constraint = constraint_with(DensePenaltyCoefficient(torch.ones(3)))
    updater = MultiplicativePenaltyCoefficientUpdater(growth_factor=2.0)
    state = cooper.ConstraintState(torch.ones(3), contributes_to_dual_update=False)
    updater.step({constraint: state})
    assert torch.equal(constraint.penalty_coefficient.value, torch.ones(3))


def test_updater_attached_to_the_optimizer_runs_inside_roll(default_device: str) -> None:
    problem = QuadraticProblem(
        bound=0.0,
        formulation=cooper.formulations.AugmentedLagrangian,
        penalty=DensePenaltyCoefficient(torch.tensor(1.0, dtype=torch.float64)),
    )
    x = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    optimizer = cooper.optim.AlternatingPrimalDualOptimizer(
        cmp=problem,
        primal_optimizers=torch.optim.SGD([x], lr=0.01),
        dual_optimizers=torch.optim.SGD(problem.dual_parameters(), lr=1.0, maximize=True),
        penalty_coefficient_updater=MultiplicativePenaltyCoefficientUpdater(growth_factor=2.0),
    )
    optimizer.roll({"x": x, "target": torch.zeros(1, dtype=torch.float64)})
    optimizer.roll({"x": x, "target": torch.zeros(1, dtype=torch.float64)})
    assert problem.sum_constraint.penalty_coefficient.value.item() == 4.0
    with pytest.raises(TypeError, match="must be PenaltyCoefficientUpdater"):
        cooper.optim.SimultaneousOptimizer(
            cmp=problem,
            primal_optimizers=torch.optim.SGD([x], lr=0.01),
            dual_optimizers=torch.optim.SGD(problem.dual_parameters(), lr=1.0, maximize=True),
            penalty_coefficient_updater=[object()],  # type: ignore[list-item]
        )


def test_coefficient_state_dict_and_to() -> None:
    coefficient = DensePenaltyCoefficient(torch.tensor([1.0, 2.0]))
    coefficient.value = torch.tensor([3.0, 4.0])
    fresh = DensePenaltyCoefficient(torch.tensor([1.0, 2.0]))
    fresh.load_state_dict(coefficient.state_dict())
    assert torch.equal(fresh.value, torch.tensor([3.0, 4.0])) and torch.equal(
        fresh.init, torch.tensor([1.0, 2.0])
    )
    assert fresh.to(torch.float64).value.dtype == torch.float64


def test_set_rows_needs_a_coefficient_per_row() -> None:
    scalar = cooper.penalty_coefficients.IndexedPenaltyCoefficient(torch.tensor(1.0))
    with pytest.raises(ValueError, match="the coefficient is a scalar"):
        scalar.set_rows_(torch.tensor([0]), torch.tensor([2.0]))
    vector = cooper.penalty_coefficients.IndexedPenaltyCoefficient(torch.ones(3))
    with pytest.raises(ValueError, match="must be >= 0"):
        vector.set_rows_(torch.tensor([0]), torch.tensor([-2.0]))
    with pytest.raises(IndexError, match=r"rows must lie in \[0, 3\)"):
        vector.set_rows_(torch.tensor([5]), torch.tensor([2.0]))


def test_indexed_updates_need_the_observed_ids() -> None:
    constraint = cooper.Constraint(
        cooper.ConstraintType.INEQUALITY,
        formulation_type=cooper.formulations.QuadraticPenalty,
        penalty_coefficient=cooper.penalty_coefficients.IndexedPenaltyCoefficient(torch.ones(3)),
    )
    updater = cooper.penalty_coefficients.MultiplicativePenaltyCoefficientUpdater()
    with pytest.raises(ValueError, match="constraint_features .* are required"):
        updater.update_penalty_coefficient_(constraint, cooper.ConstraintState(violation=torch.ones(2)))
