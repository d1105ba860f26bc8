"""The core on CUDA: no host-device synchronisation where the NaN/Inf policy promises none, and ids
bounds-checked on the device. Every test here needs CUDA and skips cleanly without it; the CPU-side
twins of these computations are the rest of the suite (the differential oracle also runs on CUDA through
the ``device`` fixture).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch

import cooper_like as cooper
from cooper_like.multipliers import DenseMultiplier, IndexedMultiplier

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

NUM_ROWS = 64
BATCH = 8


class TwoKinds(cooper.ConstrainedMinimizationProblem):
    """A linear model with one dense constraint and one indexed (per-row) constraint, on CUDA."""

    def __init__(self, indexed: str) -> None:
        super().__init__()
        ineq = cooper.ConstraintType.INEQUALITY
        self.norm = cooper.Constraint(ineq, multiplier=DenseMultiplier(num_constraints=1, device="cuda"))
        if indexed != "none":
            self.rows = cooper.Constraint(
                ineq,
                multiplier=IndexedMultiplier(
                    num_constraints=NUM_ROWS, device="cuda", sparse_grad=indexed == "sparse"
                ),
            )
        self.indexed = indexed
        generator = torch.Generator(device="cuda").manual_seed(0)
        self.inputs = torch.randn(NUM_ROWS, 4, device="cuda", generator=generator)
        self.ids = [
            torch.randint(0, NUM_ROWS, (BATCH,), device="cuda", generator=generator) for _ in range(4)
        ]
        self.step = 0

    def measure(self, w: torch.Tensor) -> dict[cooper.Constraint, cooper.ConstraintState]:
        observed = {self.norm: cooper.ConstraintState((w.pow(2).sum() - 0.5).reshape(1))}
        if self.indexed != "none":
            ids = self.ids[self.step % len(self.ids)]
            per_row = self.inputs[ids] @ w - 0.1
            observed[self.rows] = cooper.ConstraintState(per_row, constraint_features=ids)
        return observed

    def compute_cmp_state(self, w: torch.Tensor) -> cooper.CMPState:
        self.step += 1
        return cooper.CMPState(
            loss=(self.inputs @ w - 1.0).pow(2).mean(), observed_constraints=self.measure(w)
        )

    def compute_violations(self, w: torch.Tensor) -> cooper.CMPState:
        return cooper.CMPState(observed_constraints=self.measure(w))


def build(scheme: str, indexed: str, non_finite: str) -> tuple[Callable[[], object], TwoKinds]:
    problem = TwoKinds(indexed)
    w = torch.nn.Parameter(torch.full((4,), 0.5, device="cuda"))
    kwargs = {"w": w}
    if scheme == "unconstrained":
        optimizer = cooper.optim.UnconstrainedOptimizer(
            problem, torch.optim.SGD([w], lr=0.01), non_finite=non_finite
        )
        return (lambda: optimizer.roll(kwargs)), problem
    schemes = {
        "simultaneous": cooper.optim.SimultaneousOptimizer,
        "alternating_primal_dual": cooper.optim.AlternatingPrimalDualOptimizer,
        "alternating_dual_primal": cooper.optim.AlternatingDualPrimalOptimizer,
        "extrapolation": cooper.optim.ExtrapolationConstrainedOptimizer,
    }
    extra = scheme == "extrapolation"
    primal = cooper.optim.ExtraSGD([w], lr=0.01) if extra else torch.optim.SGD([w], lr=0.01)
    dual_params = list(problem.dual_parameters())
    dual = (
        cooper.optim.ExtraSGD(dual_params, lr=0.05, maximize=True)
        if extra
        else torch.optim.SGD(dual_params, lr=0.05, maximize=True)
    )
    optimizer = schemes[scheme](problem, primal, dual, non_finite=non_finite)
    if scheme == "alternating_primal_dual":
        return (lambda: optimizer.roll(kwargs, kwargs)), problem
    return (lambda: optimizer.roll(kwargs)), problem


@contextmanager
def no_host_synchronisation() -> Iterator[None]:
    """Any host-device synchronisation in the block raises (``torch.cuda.set_sync_debug_mode``)."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("indexed", ["none", "dense_grad", "sparse"])
@pytest.mark.parametrize(
    "scheme",
    ["simultaneous", "alternating_primal_dual", "alternating_dual_primal", "extrapolation", "unconstrained"],
)
def test_roll_makes_no_host_synchronisation_when_the_guard_is_off(scheme: str, indexed: str) -> None:
    roll, _ = build(scheme, indexed, non_finite="off")
    for _ in range(3):  # warm-up: lazy CUDA initialisation and first optimizer states may synchronise
        roll()
    with no_host_synchronisation():
        for _ in range(3):
            roll()


@pytest.mark.parametrize("indexed", ["none", "sparse"])
def test_raise_stops_before_any_state_changes_on_cuda(indexed: str) -> None:
    roll, problem = build("simultaneous", indexed, non_finite="raise")
    roll()
    before = [p.detach().clone() for p in problem.dual_parameters()]
    problem.inputs[0, 0] = float("nan")
    with pytest.raises(cooper.optim.NonFiniteError):
        roll()
    for saved, now in zip(before, problem.dual_parameters()):
        assert torch.equal(saved, now.detach())


OUT_OF_RANGE_THROUGH_ROLL = """
import torch
import cooper_like as cooper
from cooper_like.multipliers import IndexedMultiplier

class Rows(cooper.ConstrainedMinimizationProblem):
    def __init__(self):
        super().__init__()
        self.rows = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY, multiplier=IndexedMultiplier(num_constraints=4, device="cuda")
        )

    def compute_cmp_state(self, w):
        ids = torch.tensor([1, 9], device="cuda")
        state = cooper.ConstraintState(w.repeat(2) - 1.0, constraint_features=ids)
        return cooper.CMPState(loss=w.pow(2).sum(), observed_constraints={self.rows: state})

problem = Rows()
w = torch.nn.Parameter(torch.ones(1, device="cuda"))
optimizer = cooper.optim.SimultaneousOptimizer(
    problem,
    torch.optim.SGD([w], lr=0.1),
    torch.optim.SGD(problem.dual_parameters(), lr=0.1, maximize=True),
    non_finite="off",
)
optimizer.roll({"w": w})
torch.cuda.synchronize()
print("NOT STOPPED", problem.rows.multiplier.weight.flatten().tolist())
"""


def test_out_of_range_ids_stop_a_roll_without_a_host_check() -> None:
    """With ``non_finite="off"`` the id bound is a device-side assertion: the process stops, never UB."""
    result = subprocess.run([sys.executable, "-c", OUT_OF_RANGE_THROUGH_ROLL], capture_output=True, text=True)
    assert result.returncode != 0, result.stdout
    assert "NOT STOPPED" not in result.stdout
    assert "must lie in [0, 4)" in result.stderr or "device-side assert" in result.stderr
