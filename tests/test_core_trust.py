"""Regression tests of combinations that once gave silently wrong results, each as a user would write it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import cooper_like as cooper
from cooper_like.formulations import ContributionStore
from cooper_like.multipliers import DenseMultiplier, IndexedMultiplier
from tests.oracle_reference import DataWritingAscent

INEQUALITY, EQUALITY = cooper.ConstraintType.INEQUALITY, cooper.ConstraintType.EQUALITY


class FixedViolations(cooper.ConstrainedMinimizationProblem):
    """One indexed inequality with constant violations at given rows, and a trivial loss."""

    def __init__(self, init: torch.Tensor, **multiplier_kwargs: Any) -> None:
        super().__init__()
        self.rows = cooper.Constraint(
            INEQUALITY, multiplier=IndexedMultiplier(init=init, **multiplier_kwargs)
        )

    def compute_cmp_state(
        self, x: torch.Tensor, ids: torch.Tensor, violation: torch.Tensor
    ) -> cooper.CMPState:
        state = cooper.ConstraintState(violation=violation + 0 * x.sum(), constraint_features=ids)
        return cooper.CMPState(loss=x.pow(2).sum(), observed_constraints={self.rows: state})


def test_restarts_with_extragradient_restore_the_origin_onto_the_right_rows() -> None:
    """Defect 1: every row observed; the restart must not touch the extragradient's remembered rows."""
    problem = FixedViolations(torch.full((3,), 5.0), restart_on_feasible=True)
    x = torch.zeros(1, requires_grad=True)
    optimizer = cooper.optim.ExtrapolationConstrainedOptimizer(
        problem,
        cooper.optim.ExtraSGD([x], lr=0.1),
        cooper.optim.ExtraSGD(problem.dual_parameters(), lr=0.1, maximize=True),
    )
    kwargs = {"x": x, "ids": torch.tensor([0, 1, 2]), "violation": torch.tensor([1.0, -1.0, -1.0])}
    optimizer.roll(kwargs)
    assert problem.rows.multiplier.weight.detach().flatten().tolist() == pytest.approx([5.1, 0.0, 0.0])


def test_a_features_buffer_refilled_in_place_reads_the_new_rows() -> None:
    """Defect 2: a preallocated id buffer refilled between two measurements."""
    problem = FixedViolations(torch.tensor([10.0, 20.0, 30.0, 40.0]))
    x = torch.zeros(1, requires_grad=True)
    buffer = torch.tensor([0, 1])
    first = problem.compute_cmp_state(x, buffer, torch.ones(2)).compute_primal_lagrangian()
    buffer.copy_(torch.tensor([2, 3]))
    second = problem.compute_cmp_state(x, buffer, torch.ones(2)).compute_primal_lagrangian()
    assert first.multiplier_values[problem.rows].tolist() == [10.0, 20.0]
    assert second.multiplier_values[problem.rows].tolist() == [30.0, 40.0]
    assert second.lagrangian is not None and second.lagrangian.item() == 70.0


class EqualityAtOne(cooper.ConstrainedMinimizationProblem):
    """min x² s.t. x - 1 = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.at_one = cooper.Constraint(EQUALITY, multiplier=DenseMultiplier(num_constraints=1))

    def compute_cmp_state(self, x: torch.Tensor) -> cooper.CMPState:
        state = cooper.ConstraintState(violation=(x - 1).reshape(1))
        return cooper.CMPState(loss=x.pow(2).sum(), observed_constraints={self.at_one: state})


def test_dual_primal_scheme_uses_the_new_multiplier_after_a_data_write() -> None:
    """Defect 3: λ₁ = 0 + 0.5·(2 - 1) = 0.5, then x₁ = 2 - 0.1·(2·2 + 0.5) = 1.55 (not 1.60 from λ₀)."""
    problem = EqualityAtOne()
    x = torch.tensor([2.0], requires_grad=True)
    optimizer = cooper.optim.AlternatingDualPrimalOptimizer(
        problem, torch.optim.SGD([x], lr=0.1), DataWritingAscent(problem.dual_parameters(), lr=0.5)
    )
    optimizer.roll({"x": x})
    assert x.item() == pytest.approx(1.55)
    assert problem.at_one.multiplier.weight.item() == pytest.approx(0.5)


class DoubledDualLagrangian(cooper.formulations.Lagrangian):
    """A user's formulation, written with Cooper 1.0's signature: dual contribution 2·λᵀg."""

    def compute_contribution_to_dual_lagrangian(self, constraint_state, multiplier):  # type: ignore[no-untyped-def,override]
        value = multiplier()
        violation = constraint_state.violation.detach()
        return ContributionStore(2 * (value * violation).sum(), value)


def test_an_overridden_dual_contribution_is_honoured() -> None:
    """Defect 4: the multiplier's gradient is that of the override (2g), not the violation g."""

    class Problem(cooper.ConstrainedMinimizationProblem):
        def __init__(self) -> None:
            super().__init__()
            self.c = cooper.Constraint(
                INEQUALITY,
                formulation_type=DoubledDualLagrangian,
                multiplier=DenseMultiplier(num_constraints=2),
            )

        def compute_cmp_state(self, x: torch.Tensor) -> cooper.CMPState:
            return cooper.CMPState(
                loss=x.sum(), observed_constraints={self.c: cooper.ConstraintState(x * 1.0)}
            )

    problem = Problem()
    x = torch.tensor([1.5, -0.5], requires_grad=True)
    store = problem.compute_cmp_state(x).compute_dual_lagrangian()
    store.backward()
    assert problem.c.multiplier.weight.grad.tolist() == [3.0, -1.0]
    # Cooper's entry point on the constraint calls the override with Cooper's keyword arguments too
    contribution = problem.c.compute_contribution_to_lagrangian(cooper.ConstraintState(x * 1.0), "dual")
    assert contribution is not None and contribution.lagrangian_contribution.item() == pytest.approx(0.0)


def test_a_modified_primal_lagrangian_is_what_is_back_propagated() -> None:
    """Defect 5: the added term's gradient (100) reaches x: 2·2 + 100 = 104."""
    problem = EqualityAtOne()
    x = torch.tensor([2.0], requires_grad=True)
    store = problem.compute_cmp_state(x).compute_primal_lagrangian()
    store.lagrangian = store.lagrangian + 100 * x.sum()
    store.backward()
    assert x.grad is not None and x.grad.item() == pytest.approx(104.0)


def test_a_modified_dual_lagrangian_is_what_is_back_propagated() -> None:
    """The dual store too: reading and changing the value sends the change through autograd."""
    problem = EqualityAtOne()
    x = torch.tensor([2.0], requires_grad=True)
    store = problem.compute_cmp_state(x).compute_dual_lagrangian()
    weight = problem.at_one.multiplier.weight
    store.lagrangian = 3 * store.lagrangian + weight.sum()
    store.backward()
    assert weight.grad is not None and weight.grad.item() == pytest.approx(3 * 1.0 + 1.0)


def test_compute_violations_assigned_on_the_instance_is_used() -> None:
    """Defect 6: the alternating scheme re-measures with the instance's compute_violations."""
    problem = EqualityAtOne()
    calls = {"cmp_state": 0, "violations": 0}
    measure = problem.compute_cmp_state

    def counted_cmp_state(x: torch.Tensor) -> cooper.CMPState:
        calls["cmp_state"] += 1
        return measure(x)

    def violations_only(x: torch.Tensor) -> cooper.CMPState:
        calls["violations"] += 1
        return cooper.CMPState(observed_constraints=measure(x).observed_constraints)

    problem.compute_cmp_state = counted_cmp_state  # type: ignore[method-assign]
    problem.compute_violations = violations_only  # type: ignore[method-assign]
    x = torch.tensor([2.0], requires_grad=True)
    optimizer = cooper.optim.AlternatingPrimalDualOptimizer(
        problem,
        torch.optim.SGD([x], lr=0.1),
        torch.optim.SGD(problem.dual_parameters(), lr=0.5, maximize=True),
    )
    optimizer.roll({"x": x}, {"x": x})
    assert calls == {"cmp_state": 1, "violations": 1}


ROW_OPS = {"index_select", "index_copy", "index_copy_", "index_fill_", "index_put_", "index"}


class ElementCounter(TorchDispatchMode):
    """Counts the elements each op reads and writes; a row-indexing op counts only its rows."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0
        self.largest: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.__name__.split(".")[0]
        tensors_in = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        tensors_out = [
            o for o in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(o, torch.Tensor)
        ]
        if name in ROW_OPS:  # reads/writes the indexed rows only: count the index and the values
            touched = sum(t.numel() for t in tensors_in[1:] if isinstance(t, torch.Tensor))
        else:
            touched = sum(t.numel() for t in tensors_in) + sum(t.numel() for t in tensors_out)
        self.elements += touched
        self.largest[name] = max(self.largest.get(name, 0), touched)
        return out


def elements_of_one_update(num_rows: int) -> int:
    coefficient = cooper.penalty_coefficients.IndexedPenaltyCoefficient(torch.ones(num_rows))
    multiplier = IndexedMultiplier(num_constraints=num_rows)
    constraint = cooper.Constraint(
        INEQUALITY,
        formulation_type=cooper.formulations.AugmentedLagrangian,
        multiplier=multiplier,
        penalty_coefficient=coefficient,
    )
    rows = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    violation = torch.tensor([-1.0, 0.5, -0.5, -0.2, 0.3, 0.4, 0.6, 1.0])
    state = cooper.ConstraintState(violation=violation, constraint_features=rows)
    updater = cooper.penalty_coefficients.MultiplicativePenaltyCoefficientUpdater(growth_factor=2.0)
    with ElementCounter() as counter:
        updater.step({constraint: state})
    grown = coefficient.value[torch.tensor([1, 2, 5, 6, 9])]
    assert grown.tolist() == [2.0] * 5  # violated rows grew once (row 1, seen twice, violated once)
    assert coefficient.value[torch.tensor([3, 4])].tolist() == [1.0, 1.0]  # satisfied: back to init
    assert coefficient.value[0].item() == 1.0 and coefficient.value[-1].item() == 1.0  # never observed
    return counter.elements


def test_indexed_penalty_updates_touch_only_the_observed_rows() -> None:
    """Defect 7: the elements an update reads or writes do not grow with the number of rows."""
    assert elements_of_one_update(10_000) == elements_of_one_update(1_000_000)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
def test_cuda_raise_comes_before_any_update() -> None:
    """Defect 8: on CUDA the default policy raises at the step itself, with nothing updated."""
    problem = EqualityAtOne().to("cuda")
    x = torch.tensor([2.0], device="cuda", requires_grad=True)
    optimizer = cooper.optim.SimultaneousOptimizer(
        problem,
        torch.optim.SGD([x], lr=0.1),
        torch.optim.SGD(problem.dual_parameters(), lr=0.5, maximize=True),
    )
    with pytest.raises(cooper.optim.NonFiniteError):
        optimizer.roll({"x": x * float("nan")})
    assert x.item() == 2.0 and problem.at_one.multiplier.weight.item() == 0.0


CUDA_OUT_OF_RANGE = """
import torch
from cooper_like.multipliers import IndexedMultiplier
multiplier = IndexedMultiplier(num_constraints=4, device="cuda")
multiplier.check_observation(torch.zeros(1, device="cuda"), torch.tensor([7], device="cuda"))
torch.cuda.synchronize()
"""


@cuda
def test_cuda_out_of_range_ids_are_stopped() -> None:
    """Defect 8: an id out of range stops the program (a device-side assertion), never silent UB."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", CUDA_OUT_OF_RANGE], capture_output=True, text=True)
    assert result.returncode != 0
    assert "must lie in [0, 4)" in result.stderr or "device-side assert" in result.stderr


def test_lagrangian_store_is_a_dataclass() -> None:
    problem = EqualityAtOne()
    x = torch.tensor([2.0], requires_grad=True)
    store = problem.compute_cmp_state(x).compute_primal_lagrangian()
    assert [field.name for field in dataclasses.fields(store)] == [
        "lagrangian",
        "multiplier_values",
        "penalty_coefficient_values",
    ]
    with torch.no_grad():  # asdict deep-copies, which torch allows for tensors outside a graph
        reported = problem.compute_cmp_state(x).compute_primal_lagrangian()
    assert dataclasses.asdict(reported)["lagrangian"].item() == pytest.approx(4.0)
    replaced = dataclasses.replace(store, lagrangian=store.lagrangian + 100 * x.sum())
    replaced.backward()
    assert x.grad is not None and x.grad.item() == pytest.approx(104.0)


def test_a_replaced_dual_store_keeps_the_multiplier_gradient() -> None:
    problem = EqualityAtOne()
    x = torch.tensor([2.0], requires_grad=True)
    store = problem.compute_cmp_state(x).compute_dual_lagrangian()
    dataclasses.replace(store).backward()
    assert problem.at_one.multiplier.weight.grad.tolist() == [1.0]


# --- Found in review: paths around LagrangianStore.backward() ------------------------------------------


def indexed_problem(sparse_grad: bool = True, restart: bool = False) -> FixedViolations:
    return FixedViolations(
        torch.tensor([1.0, 1.0, 1.0]), sparse_grad=sparse_grad, restart_on_feasible=restart
    )


def simultaneous_sgd(
    problem: FixedViolations, dual_lr: float
) -> tuple[torch.Tensor, torch.optim.SGD, cooper.optim.SimultaneousOptimizer]:
    """A primal point ``x``, a plain ascending SGD on the multipliers, and the scheme over both."""
    x = torch.zeros(1, requires_grad=True)
    dual = torch.optim.SGD(problem.dual_parameters(), lr=dual_lr, maximize=True)
    return x, dual, cooper.optim.SimultaneousOptimizer(problem, torch.optim.SGD([x], lr=0.1), dual)


def test_reading_the_dual_value_under_no_grad_keeps_its_gradient() -> None:
    problem = indexed_problem()
    x = torch.zeros(1, requires_grad=True)
    store = problem.compute_cmp_state(x, torch.tensor([1]), torch.tensor([2.0])).compute_dual_lagrangian()
    with torch.no_grad():
        assert store.lagrangian.item() == 2.0  # λ₁ g₁ = 1 · 2, read for logging
    store.backward()
    assert problem.rows.multiplier.weight.grad.to_dense().flatten().tolist() == [0.0, 2.0, 0.0]
    assert store.lagrangian.item() == 2.0  # after backward the term is a constant of the value


@pytest.mark.parametrize("route", ["lagrangian.backward()", "dataclasses.replace"])
def test_the_projection_covers_the_rows_the_gradient_names(route: str) -> None:
    """A gradient written outside store.backward() still names its rows: they are projected."""
    problem = indexed_problem()
    x, _, optimizer = simultaneous_sgd(problem, dual_lr=1.0)
    store = problem.compute_cmp_state(x, torch.tensor([2]), torch.tensor([-5.0])).compute_dual_lagrangian()
    if route == "lagrangian.backward()":
        store.lagrangian.backward()
    else:
        dataclasses.replace(store).backward()
    optimizer.dual_step()
    assert problem.rows.multiplier.weight.flatten().tolist() == [1.0, 1.0, 0.0]


def test_restarts_without_known_rows_stop_before_any_update() -> None:
    problem = indexed_problem(sparse_grad=False, restart=True)
    x, _, optimizer = simultaneous_sgd(problem, dual_lr=1.0)
    store = problem.compute_cmp_state(x, torch.tensor([2]), torch.tensor([-5.0])).compute_dual_lagrangian()
    store.lagrangian.backward()  # a dense gradient: rows 0 and 1 look "satisfied" (gradient 0)
    with pytest.raises(
        RuntimeError, match=r"dual restarts of constraint\(s\) \['rows'\].*call store.backward"
    ):
        optimizer.dual_step()
    assert problem.rows.multiplier.weight.flatten().tolist() == [1.0, 1.0, 1.0]


def test_restarts_leave_earlier_rows_alone_when_gradients_are_zeroed_in_place() -> None:
    """zero_grad(set_to_none=False) keeps a gradient tensor: rows observed last step are not observed now."""
    problem = indexed_problem(sparse_grad=False, restart=True)
    x, dual, optimizer = simultaneous_sgd(problem, dual_lr=0.5)
    for rows, violation in (
        (torch.tensor([0]), torch.tensor([1.0])),
        (torch.tensor([1]), torch.tensor([1.0])),
    ):
        dual.zero_grad(set_to_none=False)
        problem.compute_cmp_state(x, rows, violation).compute_dual_lagrangian().backward()
        optimizer.dual_step()
    # row 0 was observed (and violated) at the first step only: not restarted at the second
    assert problem.rows.multiplier.weight.flatten().tolist() == [1.5, 1.5, 1.0]


def test_an_override_on_the_instance_or_through_a_wrapper_is_honoured() -> None:
    import functools

    class Problem(cooper.ConstrainedMinimizationProblem):
        def __init__(self) -> None:
            super().__init__()
            self.c = cooper.Constraint(INEQUALITY, multiplier=DenseMultiplier(num_constraints=2))

        def compute_cmp_state(self, x: torch.Tensor) -> cooper.CMPState:
            return cooper.CMPState(
                loss=x.sum(), observed_constraints={self.c: cooper.ConstraintState(x * 1.0)}
            )

    def doubled(**kwargs: Any) -> ContributionStore:
        store = cooper.formulations.Lagrangian.compute_contribution_to_dual_lagrangian(formulation, **kwargs)
        return ContributionStore(2 * store.lagrangian_contribution, store.multiplier_value)

    class Wrapped(cooper.formulations.Lagrangian):
        @functools.wraps(cooper.formulations.Lagrangian.compute_contribution_to_dual_lagrangian)
        def compute_contribution_to_dual_lagrangian(self, *args: Any, **kwargs: Any) -> ContributionStore:
            store = super().compute_contribution_to_dual_lagrangian(*args, **kwargs)
            return ContributionStore(2 * store.lagrangian_contribution, store.multiplier_value)

    for variant in ("instance", "wrapper"):
        problem = Problem()
        if variant == "wrapper":
            problem.c.formulation = Wrapped(INEQUALITY)
        formulation = problem.c.formulation
        if variant == "instance":
            formulation.compute_contribution_to_dual_lagrangian = doubled  # type: ignore[method-assign]
        assert not formulation.dual_gradient_is_violation
        x = torch.tensor([1.5, -0.5], requires_grad=True)
        problem.compute_cmp_state(x).compute_dual_lagrangian().backward()
        assert problem.c.multiplier.weight.grad.tolist() == [3.0, -1.0], variant
