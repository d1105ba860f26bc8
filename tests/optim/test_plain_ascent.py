"""The plain-SGD dual fast path: the same update as ``torch.optim.SGD.step``, or a refusal."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from cooper_like.optim.plain_ascent import is_plain_ascent, plain_ascent_step_


def multipliers_with_gradients(sparse: bool = False) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(0)
    first = torch.nn.Parameter(torch.rand(5, generator=generator))
    second = torch.nn.Parameter(torch.rand(7, 1, generator=generator))
    first.grad = torch.randn(5, generator=generator)
    if sparse:
        rows = torch.tensor([[1, 4, 6]])
        second.grad = torch.sparse_coo_tensor(
            rows, torch.randn(3, 1, generator=generator), size=(7, 1), check_invariants=True
        )
    else:
        second.grad = torch.randn(7, 1, generator=generator)
    return [first, second]


@pytest.mark.parametrize("sparse", [False, True])
def test_same_bits_as_torch_sgd(sparse: bool) -> None:
    fast, reference = multipliers_with_gradients(sparse), multipliers_with_gradients(sparse)
    groups: Any = lambda params: [{"params": params[:1], "lr": 0.3}, {"params": params[1:], "lr": 1e-3}]  # noqa: E731
    fast_optimizer = torch.optim.SGD(groups(fast), lr=0.1, maximize=True)
    reference_optimizer = torch.optim.SGD(groups(reference), lr=0.1, maximize=True)
    with torch.no_grad():
        for _ in range(3):
            assert plain_ascent_step_(fast_optimizer)
            reference_optimizer.step()
    for mine, theirs in zip(fast, reference):
        assert torch.equal(mine, theirs)
    assert fast_optimizer.state_dict() == reference_optimizer.state_dict()


def test_ascends_and_skips_parameters_without_gradient() -> None:
    value = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    idle = torch.nn.Parameter(torch.tensor([5.0]))
    value.grad = torch.tensor([0.5, -1.0])
    optimizer = torch.optim.SGD([value, idle], lr=0.1, maximize=True)
    with torch.no_grad():
        assert plain_ascent_step_(optimizer)
    assert torch.equal(value.detach(), torch.tensor([1.05, 1.9])) and idle.item() == 5.0


def sgd(**options: Any) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], **{"lr": 0.1, "maximize": True, **options})


@pytest.mark.parametrize(
    "options",
    [
        {"momentum": 0.9},
        {"weight_decay": 0.1},
        {"momentum": 0.9, "nesterov": True},
        {"maximize": False},
        {"foreach": True},
        {"lr": torch.tensor(0.1)},
    ],
)
def test_declines_anything_but_plain_ascent(options: dict[str, Any]) -> None:
    optimizer = sgd(**options)
    optimizer.param_groups[0]["params"][0].grad = torch.ones(2)
    before = optimizer.param_groups[0]["params"][0].detach().clone()
    with torch.no_grad():
        assert not plain_ascent_step_(optimizer)
    assert torch.equal(optimizer.param_groups[0]["params"][0].detach(), before)


def test_declines_subclasses_hooks_and_patched_steps() -> None:
    class MySGD(torch.optim.SGD):
        pass

    assert is_plain_ascent(sgd())
    assert not is_plain_ascent(MySGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, maximize=True))
    hooked = sgd()
    handle = hooked.register_step_post_hook(lambda *args: None)
    assert not is_plain_ascent(hooked)
    handle.remove()
    assert is_plain_ascent(hooked)
    global_handle = register_optimizer_step_pre_hook(lambda *args: None)
    try:
        assert not is_plain_ascent(hooked)
    finally:
        global_handle.remove()
    scheduled = sgd()
    torch.optim.lr_scheduler.StepLR(scheduled, step_size=1)  # wraps .step to count the calls
    assert not is_plain_ascent(scheduled)


def test_the_dual_step_of_a_scheduled_sgd_still_counts_for_the_scheduler() -> None:
    import cooper_like as cooper

    class OneConstraint(cooper.ConstrainedMinimizationProblem):
        def __init__(self) -> None:
            super().__init__()
            self.x = torch.nn.Parameter(torch.tensor(2.0))
            multiplier = cooper.multipliers.DenseMultiplier(num_constraints=1)
            self.c = cooper.Constraint(cooper.ConstraintType.INEQUALITY, multiplier=multiplier)

        def compute_cmp_state(self) -> cooper.CMPState:
            state = cooper.ConstraintState(violation=self.x - 1.0)
            return cooper.CMPState(loss=self.x**2, observed_constraints={self.c: state})

    problem = OneConstraint()
    dual = torch.optim.SGD(problem.dual_parameters(), lr=0.5, maximize=True)
    scheduler = torch.optim.lr_scheduler.StepLR(dual, step_size=1, gamma=0.5)
    optimizer = cooper.optim.SimultaneousOptimizer(
        cmp=problem, primal_optimizers=torch.optim.SGD([problem.x], lr=0.1), dual_optimizers=dual
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "lr_scheduler.step() before optimizer.step()" would be raised
        optimizer.roll()
        scheduler.step()
    assert problem.c.multiplier.weight.item() == pytest.approx(0.5)  # [0 + 0.5 * (2 - 1)]_+


def test_works_with_gradients_enabled() -> None:
    """The update writes through ``detach()``, so no ``torch.no_grad()`` is needed (and the version bumps)."""
    value = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    value.grad = torch.tensor([0.5, -1.0])
    version = value._version
    assert torch.is_grad_enabled()
    assert plain_ascent_step_(torch.optim.SGD([value], lr=0.1, maximize=True))
    assert torch.equal(value.detach(), torch.tensor([1.05, 1.9])) and value._version > version
