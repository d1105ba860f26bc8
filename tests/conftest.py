"""Shared test fixtures: small deterministic problems on the public API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import cooper_like as cooper


@pytest.fixture(autouse=True)
def _one_thread_and_seed() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


#: The devices a tensor-computation test runs on: the CPU always, CUDA where present (skipped otherwise).
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    """The device of a test whose subject is a tensor computation (see :data:`DEVICES`)."""
    return str(request.param)


@pytest.fixture
def default_device(device: str) -> Iterator[str]:
    """:func:`device`, also made torch's default device for the test (tensors are created on it)."""
    torch.set_default_device(device)
    try:
        yield device
    finally:
        torch.set_default_device(None)


class QuadraticProblem(cooper.ConstrainedMinimizationProblem):
    """min ||x - target||^2 s.t. sum(x) <= bound (one inequality); x lives outside the problem."""

    def __init__(self, bound: float = 1.0, formulation=cooper.formulations.Lagrangian, penalty=None, **mkw):
        super().__init__()
        multiplier = None
        if formulation.expects_multiplier:
            multiplier = cooper.multipliers.DenseMultiplier(num_constraints=1, dtype=torch.float64, **mkw)
        self.bound = bound
        self.sum_constraint = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY,
            formulation_type=formulation,
            multiplier=multiplier,
            penalty_coefficient=penalty,
        )

    def compute_cmp_state(self, x: torch.Tensor, target: torch.Tensor) -> cooper.CMPState:
        loss = (x - target).pow(2).sum()
        state = cooper.ConstraintState(violation=x.sum() - self.bound)
        return cooper.CMPState(loss=loss, observed_constraints={self.sum_constraint: state})
