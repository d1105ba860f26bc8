"""Multipliers: construction checks, values, direct dual gradients, projection, observed rows."""

from __future__ import annotations

import pytest
import torch

import cooper_like as cooper
from cooper_like.multipliers import DenseMultiplier, ImplicitMultiplier, IndexedMultiplier
from cooper_like.optim.row_state import moves_only_gradient_rows


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, ValueError, "give num_constraints or init"),
        ({"num_constraints": 0}, ValueError, "num_constraints must be a positive int, got 0"),
        ({"num_constraints": 2.5}, ValueError, "num_constraints must be a positive int, got 2.5"),
        ({"init": [1.0]}, TypeError, "init must be a torch.Tensor, got list"),
        ({"init": torch.zeros(2, 2)}, ValueError, r"init must be 1-D .* got shape \(2, 2\)"),
        (
            {"num_constraints": 3, "init": torch.zeros(2)},
            ValueError,
            r"num_constraints=3 does not match init",
        ),
        ({"init": torch.tensor([0.0, float("nan")])}, ValueError, "init must be finite"),
        (
            {"num_constraints": 2, "dtype": torch.int64},
            TypeError,
            "dtype must be a floating dtype, got torch.int64",
        ),
    ],
)
def test_construction_errors(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        DenseMultiplier(**kwargs)


def test_inequality_multiplier_must_start_non_negative() -> None:
    with pytest.raises(ValueError, match="must be >= 0, got min -1.0"):
        cooper.Constraint(
            cooper.ConstraintType.INEQUALITY, multiplier=DenseMultiplier(init=torch.tensor([-1.0]))
        )
    # an equality multiplier may be negative
    cooper.Constraint(cooper.ConstraintType.EQUALITY, multiplier=DenseMultiplier(init=torch.tensor([-1.0])))


def test_restarts_only_for_inequalities() -> None:
    with pytest.raises(ValueError, match="restart_on_feasible=True only applies to inequality"):
        cooper.Constraint(
            cooper.ConstraintType.EQUALITY, multiplier=DenseMultiplier(2, restart_on_feasible=True)
        )


def test_dense_values_are_snapshots(default_device: str) -> None:
    multiplier = DenseMultiplier(init=torch.tensor([1.0, 2.0]))
    value = multiplier()
    assert value.requires_grad and value.data_ptr() != multiplier.weight.data_ptr()
    snapshot = multiplier.detached_value()
    with torch.no_grad():
        multiplier.weight.add_(1.0)
    assert torch.equal(snapshot, torch.tensor([1.0, 2.0]))


def test_dense_dual_gradient_is_a_copy_of_the_violation(default_device: str) -> None:
    multiplier = DenseMultiplier(num_constraints=2)
    violation = torch.tensor([0.5, -1.0])
    multiplier.add_dual_gradient_(violation, None)
    multiplier.add_dual_gradient_(violation, None)
    assert multiplier.weight.grad is not None
    assert torch.equal(multiplier.weight.grad, torch.tensor([1.0, -2.0]))
    multiplier.weight.grad.mul_(0)  # e.g. in-place clipping must not reach the user's tensor
    assert torch.equal(violation, torch.tensor([0.5, -1.0]))


def test_dense_shape_mismatch_names_both_sizes() -> None:
    with pytest.raises(
        ValueError, match=r"violation has 3 entries \(shape \(3,\)\) but the multiplier has 2"
    ):
        DenseMultiplier(num_constraints=2).check_observation(torch.zeros(3), None)


def test_projection_of_dense_inequality_multiplier(default_device: str) -> None:
    constraint = cooper.Constraint(
        cooper.ConstraintType.INEQUALITY, multiplier=DenseMultiplier(num_constraints=2)
    )
    multiplier = constraint.multiplier
    assert isinstance(multiplier, DenseMultiplier)
    with torch.no_grad():
        multiplier.weight.copy_(torch.tensor([-1.0, 2.0]))
    multiplier.post_step_()  # no gradient this step: nothing was updated, nothing to project
    assert torch.equal(multiplier.weight.detach(), torch.tensor([-1.0, 2.0]))
    multiplier.weight.grad = torch.zeros(2)
    multiplier.post_step_()
    assert torch.equal(multiplier.weight.detach(), torch.tensor([0.0, 2.0]))


@pytest.mark.parametrize("sparse_grad", [True, False])
def test_indexed_gradient_and_projection_touch_observed_rows_only(
    sparse_grad: bool, default_device: str
) -> None:
    constraint = cooper.Constraint(
        cooper.ConstraintType.INEQUALITY,
        multiplier=IndexedMultiplier(init=torch.zeros(6), sparse_grad=sparse_grad),
    )
    multiplier = constraint.multiplier
    assert isinstance(multiplier, IndexedMultiplier) and multiplier.weight.shape == (6, 1)
    with torch.no_grad():
        multiplier.weight.copy_(torch.tensor([[-5.0], [0.1], [0.2], [0.3], [-5.0], [0.5]]))
    rows = torch.tensor([1, 3, 1])
    multiplier.note_observed_(rows)
    multiplier.add_dual_gradient_(torch.tensor([-1.0, 2.0, -0.5]), rows)
    grad = multiplier.weight.grad
    assert grad is not None and grad.is_sparse == sparse_grad
    expected = torch.tensor([[0.0], [-1.5], [0.0], [2.0], [0.0], [0.0]])
    assert torch.equal(grad.to_dense(), expected)
    optimizer = torch.optim.SGD(multiplier.parameters(), lr=1.0, maximize=True)
    optimizer.step()
    # the schemes project only the observed rows when the gradient is sparse and the optimizer declares
    # that it moved no other row (plain SGD does); rows 0 and 4 are then left alone (still negative)
    observed_only = sparse_grad and moves_only_gradient_rows(optimizer, multiplier.weight)
    multiplier.post_step_(observed_rows_only=observed_only)
    unobserved = -5.0 if sparse_grad else 0.0
    expected_weight = torch.tensor([unobserved, 0.0, 0.2, 2.3, unobserved, 0.5])
    assert torch.equal(multiplier.weight.detach().flatten(), expected_weight)
    multiplier.post_step_()  # by hand, without a declaration: every row is projected
    assert bool((multiplier.weight >= 0).all())


def test_dense_gradient_momentum_never_leaves_unobserved_rows_negative(default_device: str) -> None:
    """Adam keeps moving a row after it was observed; with dense gradients every row is projected."""
    constraint = cooper.Constraint(
        cooper.ConstraintType.INEQUALITY, multiplier=IndexedMultiplier(num_constraints=4, sparse_grad=False)
    )
    multiplier = constraint.multiplier
    assert isinstance(multiplier, IndexedMultiplier)
    optimizer = torch.optim.Adam(multiplier.parameters(), lr=0.1, maximize=True)
    for rows, values in (
        (torch.tensor([0]), torch.tensor([-1.0])),
        (torch.zeros(0, dtype=torch.long), torch.zeros(0)),
    ):
        multiplier.weight.grad = None
        multiplier.add_dual_gradient_(values, rows)
        optimizer.step()
        multiplier.post_step_()
        assert bool((multiplier.weight >= 0).all()), multiplier.weight


def test_indexed_values_and_feature_checks(default_device: str) -> None:
    multiplier = IndexedMultiplier(init=torch.arange(5.0))
    rows = torch.tensor([[4, 0], [2, 2]])
    assert torch.equal(multiplier(rows).detach(), torch.tensor([[4.0, 0.0], [2.0, 2.0]]))
    assert torch.equal(multiplier.detached_value(rows), torch.tensor([[4.0, 0.0], [2.0, 2.0]]))
    with pytest.raises(TypeError, match="must be an integer tensor .* got dtype torch.float32"):
        multiplier(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="constraint_features .* are required"):
        multiplier.check_observation(torch.zeros(2), None)
    with pytest.raises(IndexError, match=r"must lie in \[0, 5\), got values in \[-1, 2\]"):
        multiplier.check_observation(torch.zeros(2), torch.tensor([-1, 2]))
    with pytest.raises(IndexError, match=r"must lie in \[0, 5\), got values in \[0, 5\]"):
        multiplier.check_observation(torch.zeros(2), torch.tensor([0, 5]))
    with pytest.raises(
        ValueError, match=r"violation shape \(3,\) does not match constraint_features shape \(2,\)"
    ):
        multiplier.check_observation(torch.zeros(3), torch.tensor([0, 1]))


def test_indexed_dense_and_sparse_modes_give_identical_training(default_device: str) -> None:
    results = []
    for sparse_grad in (True, False):
        multiplier = IndexedMultiplier(num_constraints=50, sparse_grad=sparse_grad)
        cooper.Constraint(cooper.ConstraintType.INEQUALITY, multiplier=multiplier)
        optimizer = torch.optim.SGD(multiplier.parameters(), lr=0.1, maximize=True)
        generator = torch.Generator(device=default_device).manual_seed(3)
        for _ in range(20):
            optimizer.zero_grad(set_to_none=True)
            rows = torch.randint(0, 50, (8,), generator=generator)
            multiplier.add_dual_gradient_(torch.randn(8, generator=generator), rows)
            optimizer.step()
            multiplier.post_step_()
        results.append(multiplier.weight.detach().clone())
    assert torch.allclose(results[0], results[1], atol=1e-6)
    assert bool((results[0] >= 0).all())


class SoftplusMultiplier(ImplicitMultiplier):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, constraint_features: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(self.linear(constraint_features)).flatten()


def test_implicit_multiplier_is_trained_through_autograd(default_device: str) -> None:
    class Problem(cooper.ConstrainedMinimizationProblem):
        def __init__(self) -> None:
            super().__init__()
            self.c = cooper.Constraint(cooper.ConstraintType.INEQUALITY, multiplier=SoftplusMultiplier())

        def compute_cmp_state(self) -> cooper.CMPState:
            return cooper.CMPState()

    problem = Problem()
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    violation = torch.tensor([0.3, -0.2])
    state = cooper.CMPState(
        observed_constraints={problem.c: cooper.ConstraintState(violation, constraint_features=features)}
    )
    store = state.compute_dual_lagrangian()
    store.backward()
    multiplier = problem.c.multiplier
    assert isinstance(multiplier, SoftplusMultiplier)
    # d/dW sum_i softplus(w.f_i + b) g_i = sum_i sigmoid(w.f_i + b) g_i f_i
    with torch.no_grad():
        slopes = torch.sigmoid(multiplier.linear(features)).flatten() * violation
    assert multiplier.linear.weight.grad is not None
    assert torch.allclose(multiplier.linear.weight.grad.flatten(), slopes @ features)
    assert store.lagrangian is not None and torch.allclose(
        store.lagrangian, (multiplier(features) * violation).sum()
    )
    multiplier.post_step_()  # a no-op by default


class _TwoConstraints(cooper.ConstrainedMinimizationProblem):
    """One dense and one indexed multiplier, measured at a fixed violation."""

    def __init__(self) -> None:
        super().__init__()
        ineq = cooper.ConstraintType.INEQUALITY
        self.dense = cooper.Constraint(ineq, multiplier=DenseMultiplier(init=torch.tensor([1.0, 2.0])))
        self.rows = cooper.Constraint(ineq, multiplier=IndexedMultiplier(init=torch.tensor([3.0, 4.0, 5.0])))
        self.x = torch.nn.Parameter(torch.ones(2))

    def compute_cmp_state(self) -> cooper.CMPState:
        dense = cooper.ConstraintState(self.x - 2.0)
        rows = cooper.ConstraintState(self.x.sum().reshape(1) - 1.0, constraint_features=torch.tensor([2]))
        return cooper.CMPState(
            loss=self.x.pow(2).sum(), observed_constraints={self.dense: dense, self.rows: rows}
        )


def test_a_measurements_two_lagrangians_share_one_dense_snapshot_taken_at_build_time(
    default_device: str,
) -> None:
    problem = _TwoConstraints()
    primal, dual = problem.compute_cmp_state().compute_lagrangians()
    dense = problem.dense.multiplier
    assert primal.multiplier_values[problem.dense] is dual.multiplier_values[problem.dense]
    assert primal.multiplier_values[problem.rows] is not dual.multiplier_values[problem.rows]
    with torch.no_grad():
        dense.weight.add_(10.0)
        problem.rows.multiplier.weight.add_(10.0)
    # Snapshots: the stores keep the values of the measurement; the scope is closed afterwards.
    assert primal.multiplier_values[problem.dense].tolist() == [1.0, 2.0]
    assert dual.multiplier_values[problem.rows].flatten().tolist() == [5.0]
    assert dense.detached_value().tolist() == [11.0, 12.0]
    assert dense.detached_value() is not dense.detached_value()
    # The values the stores hold are the ones the Lagrangians are built from.
    assert float(primal.lagrangian.detach()) == pytest.approx(2.0 + 1.0 * -1.0 + 2.0 * -1.0 + 5.0 * 1.0)
    assert float(dual.lagrangian.detach()) == pytest.approx(1.0 * -1.0 + 2.0 * -1.0 + 5.0 * 1.0)


def test_the_shared_snapshot_scope_closes_when_building_raises() -> None:
    problem = _TwoConstraints()
    state = problem.compute_cmp_state()
    state.observed_constraints[problem.rows] = cooper.ConstraintState(
        torch.zeros(1), constraint_features=torch.tensor([7])
    )
    with pytest.raises(IndexError):
        state.compute_lagrangians()
    dense = problem.dense.multiplier
    first = dense.detached_value()
    with torch.no_grad():
        dense.weight.add_(1.0)
    assert dense.detached_value().tolist() == [v + 1.0 for v in first.tolist()]


def test_sharing_the_snapshot_of_an_indexed_multiplier_raises() -> None:
    with pytest.raises(ValueError, match="IndexedMultiplier: its snapshot depends on the observed features"):
        IndexedMultiplier(num_constraints=3).share_snapshot_(True)
