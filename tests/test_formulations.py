"""Formulation kernels and the augmented Lagrangian, checked against hand-computed numbers."""

from __future__ import annotations

import pytest
import torch

import cooper_like as cooper
from cooper_like.formulations import augmented_lagrangian_term, lagrangian_term, quadratic_penalty_term
from cooper_like.penalty_coefficients import DensePenaltyCoefficient
from tests.conftest import QuadraticProblem

INEQ, EQ = cooper.ConstraintType.INEQUALITY, cooper.ConstraintType.EQUALITY


def test_lagrangian_term(device: str) -> None:
    lam, g = torch.tensor([2.0, 3.0], device=device), torch.tensor([1.0, -1.0], device=device)
    assert lagrangian_term(lam, g).item() == -1.0
    assert lagrangian_term(lam[:1], torch.tensor(4.0, device=device)).item() == 8.0


def test_quadratic_penalty_term(device: str) -> None:
    g = torch.tensor([2.0, -3.0], device=device)
    # inequality: 0.5 * (c1 * 2^2 + c2 * 0)
    assert quadratic_penalty_term(torch.tensor([1.0, 5.0], device=device), g, INEQ).item() == 2.0
    # equality: 0.5 * (1 * 4 + 5 * 9)
    assert quadratic_penalty_term(torch.tensor([1.0, 5.0], device=device), g, EQ).item() == 24.5


def test_augmented_lagrangian_term_values(device: str) -> None:
    lam, c, g = (
        torch.tensor([1.0, 1.0], device=device),
        torch.tensor(2.0, device=device),
        torch.tensor([0.5, -1.0], device=device),
    )
    # inequality: ([1 + 1]_+^2 - 1) / 4 + ([1 - 2]_+^2 - 1) / 4 = 0.75 - 0.25
    assert augmented_lagrangian_term(lam, c, g, INEQ).item() == pytest.approx(0.5)
    # equality: 1 * 0.5 + 1 * (-1) + 0.5 * 2 * (0.25 + 1)
    assert augmented_lagrangian_term(lam, c, g, EQ).item() == pytest.approx(0.75)


def test_augmented_lagrangian_with_zero_penalty_is_the_lagrangian_without_nan(device: str) -> None:
    lam = torch.tensor([0.0, 2.0, 3.0], device=device)
    g = torch.tensor([1.0, -0.5, 2.0], requires_grad=True, device=device)
    c = torch.tensor([0.0, 0.0, 1.0], device=device)
    value = augmented_lagrangian_term(lam, c, g, INEQ)
    value.backward()
    expected = 0.0 + 2.0 * -0.5 + ((3.0 + 2.0) ** 2 - 9.0) / 2
    assert value.item() == pytest.approx(expected)
    assert g.grad is not None and torch.isfinite(g.grad).all()
    assert torch.allclose(g.grad, torch.tensor([0.0, 2.0, 5.0], device=device))


def test_augmented_lagrangian_two_steps_by_hand() -> None:
    # min (x-2)^2 s.t. x - 1 <= 0; x0 = 3, lambda0 = 0.5, c = 2, primal SGD lr 0.1, dual SGD lr = c.
    # step 1: g = 2, [lambda + c g]_+ = 4.5, dL/dx = 2(3-2) + 4.5 = 6.5 -> x1 = 2.35
    #         dual at x1 (primal first): g = 1.35 -> lambda1 = 0.5 + 2 * 1.35 = 3.2
    # step 2: [3.2 + 2 * 1.35]_+ = 5.9, dL/dx = 2 * 0.35 + 5.9 = 6.6 -> x2 = 1.69
    #         g(x2) = 0.69 -> lambda2 = 3.2 + 2 * 0.69 = 4.58
    problem = QuadraticProblem(
        bound=1.0,
        formulation=cooper.formulations.AugmentedLagrangian,
        penalty=DensePenaltyCoefficient(torch.tensor(2.0, dtype=torch.float64)),
    )
    multiplier = problem.sum_constraint.multiplier
    with torch.no_grad():
        multiplier.weight.fill_(0.5)
    x = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    optimizer = cooper.optim.AlternatingPrimalDualOptimizer(
        cmp=problem,
        primal_optimizers=torch.optim.SGD([x], lr=0.1),
        dual_optimizers=torch.optim.SGD(problem.dual_parameters(), lr=2.0, maximize=True),
    )
    kwargs = {"x": x, "target": torch.tensor([2.0], dtype=torch.float64)}
    expected = [(2.35, 3.2), (1.69, 4.58)]
    for x_expected, lam_expected in expected:
        optimizer.roll(compute_cmp_state_kwargs=kwargs)
        assert x.item() == pytest.approx(x_expected, abs=1e-12)
        assert multiplier.weight.item() == pytest.approx(lam_expected, abs=1e-12)


def test_quadratic_penalty_has_no_dual_contribution() -> None:
    problem = QuadraticProblem(
        formulation=cooper.formulations.QuadraticPenalty, penalty=DensePenaltyCoefficient(torch.tensor(4.0))
    )
    x = torch.tensor([3.0], requires_grad=True)
    state = problem.compute_cmp_state(x=x, target=torch.zeros(1))
    dual = state.compute_dual_lagrangian()
    assert dual.lagrangian is None and not dual.multiplier_values
    primal = state.compute_primal_lagrangian()
    # 9 + 0.5 * 4 * (3 - 1)^2
    assert primal.lagrangian is not None and primal.lagrangian.item() == pytest.approx(17.0)
    assert primal.penalty_coefficient_values[problem.sum_constraint].item() == 4.0


def test_formulation_rejects_a_non_constraint_type() -> None:
    with pytest.raises(TypeError, match="constraint_type must be a ConstraintType, got 'eq'"):
        cooper.formulations.Lagrangian("eq")  # type: ignore[arg-type]


def test_dual_store_reports_lambda_t_times_strict_violation() -> None:
    problem = QuadraticProblem()
    with torch.no_grad():
        problem.sum_constraint.multiplier.weight.fill_(2.0)
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    state = problem.compute_cmp_state(x=x, target=torch.zeros(2))
    dual = state.compute_dual_lagrangian()
    with torch.no_grad():  # a later in-place change does not alter what the store reports
        problem.sum_constraint.multiplier.weight.fill_(7.0)
    assert dual.lagrangian is not None and dual.lagrangian.item() == pytest.approx(2.0 * 2.0)
    assert dual.multiplier_values[problem.sum_constraint].item() == 2.0
    assert next(iter(dual.observed_multiplier_values())).item() == 2.0
    assert "sum_constraint" in repr(dual)
