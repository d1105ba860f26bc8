"""Lean torch calls: ``clear_gradients`` and ``optimizer_step`` do what ``zero_grad``/``step`` do, or call them."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import cooper_like as cooper
from cooper_like.optim import torch_calls
from cooper_like.optim.plain_ascent import is_plain_ascent
from cooper_like.optim.torch_calls import clear_gradients, optimizer_step


class ToyProblem(cooper.ConstrainedMinimizationProblem):
    def __init__(self) -> None:
        super().__init__()
        self.bound = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY, multiplier=cooper.multipliers.DenseMultiplier(num_constraints=1)
        )

    def compute_cmp_state(self, x: torch.nn.Parameter) -> cooper.CMPState:
        state = cooper.ConstraintState(violation=(x.sum() - 1.0).reshape(1))
        return cooper.CMPState(loss=x.pow(2).sum(), observed_constraints={self.bound: state})


class CountingSGD(torch.optim.SGD):
    """An optimizer with its own ``zero_grad``: it must be called, not bypassed."""

    calls = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        CountingSGD.calls += 1
        super().zero_grad(set_to_none=set_to_none)


def parameters_with_gradients() -> list[torch.nn.Parameter]:
    parameters = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))]
    for parameter in parameters:
        parameter.grad = torch.ones_like(parameter)
    return parameters


def test_stock_zero_grad_is_replaced_by_setting_none() -> None:
    parameters = parameters_with_gradients()
    clear_gradients(torch.optim.SGD(parameters, lr=0.1))
    assert all(parameter.grad is None for parameter in parameters)


def test_overridden_zero_grad_is_called() -> None:
    parameters = parameters_with_gradients()
    before = CountingSGD.calls
    clear_gradients(CountingSGD(parameters, lr=0.1))
    assert CountingSGD.calls == before + 1
    assert all(parameter.grad is None for parameter in parameters)


def test_zero_grad_patched_on_the_instance_is_called() -> None:
    parameters = parameters_with_gradients()
    optimizer = torch.optim.SGD(parameters, lr=0.1)
    calls: list[Any] = []
    stock = optimizer.zero_grad
    optimizer.zero_grad = lambda set_to_none=True: (calls.append(set_to_none), stock(set_to_none))  # type: ignore[method-assign,assignment,func-returns-value]
    clear_gradients(optimizer)
    assert calls == [True]
    assert all(parameter.grad is None for parameter in parameters)


def test_a_recording_profiler_sees_the_zero_grad_range() -> None:
    parameters = parameters_with_gradients()
    optimizer = torch.optim.SGD(parameters, lr=0.1)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        clear_gradients(optimizer)
    names = {event.key for event in profiler.key_averages()}
    assert "Optimizer.zero_grad#SGD.zero_grad" in names
    assert all(parameter.grad is None for parameter in parameters)


def test_roll_clears_primal_and_dual_gradients() -> None:
    x = torch.nn.Parameter(torch.tensor([2.0, 0.5]))
    problem = ToyProblem()
    optimizer = cooper.optim.SimultaneousOptimizer(
        cmp=problem,
        primal_optimizers=torch.optim.SGD([x], lr=0.1),
        dual_optimizers=torch.optim.SGD(problem.dual_parameters(), lr=0.1, maximize=True),
    )
    optimizer.roll(compute_cmp_state_kwargs={"x": x})
    multiplier = problem.bound.multiplier
    assert x.grad is not None and multiplier is not None and multiplier.weight.grad is not None
    optimizer.zero_grad()
    assert x.grad is None and multiplier.weight.grad is None


def trained_pair(make: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]) -> tuple[Any, Any]:
    """Two identical parameter sets with identical gradients and one optimizer each."""
    pairs = []
    for _ in range(2):
        generator = torch.Generator().manual_seed(0)
        parameters = [
            torch.nn.Parameter(torch.randn(4, 3, generator=generator)),
            torch.nn.Parameter(torch.randn(3, generator=generator)),
        ]
        pairs.append((parameters, make(parameters)))
    return pairs[0], pairs[1]


@pytest.mark.parametrize(
    "make",
    [
        lambda params: torch.optim.SGD(params, lr=0.1),
        lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True),
        lambda params: torch.optim.Adam(params, lr=1e-2),
        lambda params: torch.optim.AdamW(params, lr=1e-2, foreach=False),
    ],
    ids=["sgd", "sgd-momentum", "adam", "adamw-single-tensor"],
)
def test_optimizer_step_gives_the_same_bits_as_step(make: Any) -> None:
    (mine, my_optimizer), (theirs, their_optimizer) = trained_pair(make)
    for step in range(3):
        for a, b in zip(mine, theirs):
            a.grad = torch.full_like(a, 0.1 * (step + 1))
            b.grad = torch.full_like(b, 0.1 * (step + 1))
        optimizer_step(my_optimizer)
        their_optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(mine, theirs))
    mine_state, their_state = my_optimizer.state_dict(), their_optimizer.state_dict()
    for key in their_state["state"]:
        for name, value in their_state["state"][key].items():
            assert torch.equal(torch.as_tensor(mine_state["state"][key][name]), torch.as_tensor(value))


def test_optimizer_step_runs_step_hooks() -> None:
    parameters = parameters_with_gradients()
    optimizer = torch.optim.SGD(parameters, lr=0.1)
    calls: list[str] = []
    optimizer.register_step_pre_hook(lambda *_: calls.append("pre"))
    handle = register_optimizer_step_post_hook(lambda *_: calls.append("global post"))
    try:
        optimizer_step(optimizer)
    finally:
        handle.remove()
    assert calls == ["pre", "global post"]
    assert torch.equal(parameters[0].detach(), torch.full((3,), 0.9))


def test_optimizer_step_is_counted_by_an_lr_scheduler() -> None:
    parameters = parameters_with_gradients()
    optimizer = torch.optim.SGD(parameters, lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "lr_scheduler.step() before optimizer.step()" would raise
        optimizer_step(optimizer)
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_optimizer_step_calls_an_overridden_step() -> None:
    calls: list[int] = []

    class LoggingSGD(torch.optim.SGD):
        def step(self, closure: Any = None) -> Any:
            calls.append(1)
            return super().step(closure)

    parameters = parameters_with_gradients()
    optimizer_step(LoggingSGD(parameters, lr=0.1))
    assert calls == [1]
    assert torch.equal(parameters[1].detach(), torch.full((2,), 0.9))


def test_a_recording_profiler_sees_the_step_range() -> None:
    parameters = parameters_with_gradients()
    optimizer = torch.optim.SGD(parameters, lr=0.1)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        optimizer_step(optimizer)
    assert "Optimizer.step#SGD.step" in {event.key for event in profiler.key_averages()}


def test_only_verified_torch_versions_use_private_internals() -> None:
    from cooper_like.optim.torch_calls import torch_internals_verified

    assert torch_internals_verified("2.13.0+cpu") and torch_internals_verified("2.13.1")
    assert not torch_internals_verified("2.99.0") and not torch_internals_verified("3.0.0")
    assert torch_internals_verified(torch.__version__) == torch_calls.LEAN_CALLS


def test_an_unknown_torch_version_takes_the_public_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a torch version the suite has not verified, zero_grad, step and the plain-ascent fast path
    are the public calls (seen here through a profiler range each public call opens)."""
    monkeypatch.setattr(torch_calls, "LEAN_CALLS", torch_calls.torch_internals_verified("2.99.0"))
    problem = ToyProblem()
    x = torch.nn.Parameter(torch.ones(2))
    primal = torch.optim.SGD([x], lr=0.1)
    dual = torch.optim.SGD(problem.dual_parameters(), lr=0.1, maximize=True)
    assert not is_plain_ascent(dual)
    optimizer = cooper.optim.SimultaneousOptimizer(problem, primal, dual)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        optimizer.roll({"x": x})
    names = {event.key for event in profiler.key_averages()}
    assert {"Optimizer.zero_grad#SGD.zero_grad", "Optimizer.step#SGD.step"} <= names
    # and the result is the same step: x = 1 - 0.1 * 2, λ = 0 + 0.1 * (2 - 1)
    assert torch.allclose(x.detach(), torch.full((2,), 0.8))
    assert torch.allclose(problem.bound.multiplier.weight.detach(), torch.tensor([0.1]))
