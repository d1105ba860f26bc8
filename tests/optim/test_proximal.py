"""Tests of the proximal primal update (``cooper_like.optim.proximal``)."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

import cooper_like as cooper
from cooper_like.optim.proximal import ProximalL1, soft_threshold, soft_threshold_

DTYPE = torch.float64


def test_soft_threshold_matches_hand_computed_values() -> None:
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.5], dtype=DTYPE)
    expected = torch.tensor([-2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5], dtype=DTYPE)
    assert torch.equal(soft_threshold(x, 1.0), expected)
    per_entry = soft_threshold(torch.tensor([3.0, -3.0, 0.2]), torch.tensor([0.5, 2.0, 0.1]))
    assert torch.allclose(per_entry, torch.tensor([2.5, -1.0, 0.1]))
    y = x.clone()
    assert soft_threshold_(y, 1.0) is y and torch.equal(y, expected)
    assert torch.equal(soft_threshold(x, 0.0), x)


def test_soft_threshold_is_the_proximal_map() -> None:
    """S_t(x) minimises 0.5 (y - x)^2 + t |y| (checked on a fine grid)."""
    grid = torch.linspace(-4, 4, 80001, dtype=DTYPE)
    for x, t in [(1.7, 0.4), (-0.3, 0.5), (-2.2, 1.0)]:
        objective = 0.5 * (grid - x) ** 2 + t * grid.abs()
        assert abs(float(grid[objective.argmin()]) - float(soft_threshold(torch.tensor(x), t))) < 1e-3


def _lasso_fit(a: torch.Tensor, b: torch.Tensor, strength: float, steps: int) -> torch.Tensor:
    """Proximal gradient on 1/(2n) ||A x - b||^2 + strength ||x||_1 through ProximalL1(SGD)."""
    x = torch.nn.Parameter(torch.zeros(a.shape[1], dtype=DTYPE))
    lipschitz = float(torch.linalg.matrix_norm(a, ord=2) ** 2 / a.shape[0])
    optimizer = ProximalL1(torch.optim.SGD([x], lr=1.0 / lipschitz), [x], strength)
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * (a @ x - b).pow(2).mean()).backward()
        optimizer.step()
    return x.detach()


def test_proximal_updates_reach_the_closed_form_lasso_solution() -> None:
    """Orthogonal design (A^T A / n = I): the lasso solution is S_λ(A^T b / n)."""
    generator = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(40, 6, generator=generator, dtype=DTYPE))
    a = q * 40**0.5
    b = torch.randn(40, generator=generator, dtype=DTYPE)
    closed_form = soft_threshold(a.T @ b / 40, 0.15)
    fitted = _lasso_fit(a, b, 0.15, steps=50)
    assert torch.allclose(fitted, closed_form, atol=1e-10)
    assert torch.equal(fitted == 0, closed_form == 0) and bool((fitted == 0).any())


def test_proximal_updates_reach_the_scikit_learn_lasso_solution() -> None:
    lasso_cls = pytest.importorskip("sklearn.linear_model").Lasso
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(50, 8, generator=generator, dtype=DTYPE)
    b = a @ torch.tensor([2.0, 0, 0, -1.5, 0, 0.5, 0, 0], dtype=DTYPE) + 0.3 * torch.randn(
        50, generator=generator, dtype=DTYPE
    )
    reference = lasso_cls(alpha=0.1, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(
        a.numpy(), b.numpy()
    )
    fitted = _lasso_fit(a, b, 0.1, steps=3000)
    assert torch.allclose(fitted, torch.as_tensor(reference.coef_), atol=1e-6)
    assert torch.equal(fitted == 0, torch.as_tensor(reference.coef_) == 0)


def test_strength_per_group_and_unpenalised_parameters() -> None:
    first = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    second = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    free = torch.nn.Parameter(torch.tensor([0.1]))
    optimizer = ProximalL1(
        torch.optim.SGD([first, second, free], lr=0.5), [first, second], torch.tensor([0.4, 3.0])
    )
    for p in (first, second, free):
        p.grad = torch.zeros_like(p)
    optimizer.step()
    assert torch.allclose(first, torch.tensor([0.8, -0.8]))  # threshold 0.5 * 0.4
    assert torch.equal(second, torch.zeros(2))  # threshold 1.5
    assert torch.equal(free, torch.tensor([0.1]))  # not penalised


def test_none_params_means_one_group_per_param_group() -> None:
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    sgd = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 1.0}], lr=1.0)
    optimizer = ProximalL1(sgd, None, torch.tensor([1.0, 0.5]))
    a.grad, b.grad = torch.zeros(2), torch.zeros(2)
    optimizer.step()
    assert torch.allclose(a, torch.full((2,), 0.9)) and torch.allclose(b, torch.full((2,), 0.5))


def test_strength_read_from_a_multiplier_and_lr_scheduler_moves_the_threshold() -> None:
    multiplier = cooper.multipliers.DenseMultiplier(init=torch.tensor([2.0]))
    x = torch.nn.Parameter(torch.tensor([10.0]))
    optimizer = ProximalL1(torch.optim.SGD([x], lr=1.0), [x], multiplier)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    x.grad = torch.zeros(1)
    optimizer.step()  # threshold 1 * 2
    assert float(x.detach()) == 8.0
    scheduler.step()
    with torch.no_grad():
        multiplier.weight.fill_(4.0)
    optimizer.step()  # threshold 0.5 * 4
    assert float(x.detach()) == 6.0
    optimizer.strength = lambda: multiplier.weight * 0  # a plain callable
    optimizer.step()
    assert float(x.detach()) == 6.0


@pytest.mark.parametrize(
    ("strength", "message"),
    [
        (-1.0, ">= 0"),
        (float("nan"), "finite"),
        (torch.tensor([1.0, 2.0, 3.0]), "1 entry or one per group"),
        (torch.tensor([-0.5]), ">= 0"),
        ("big", "strength must be"),
    ],
)
def test_invalid_strength_raises(strength: object, message: str) -> None:
    x = torch.nn.Parameter(torch.ones(2))
    y = torch.nn.Parameter(torch.ones(2))
    with pytest.raises((ValueError, TypeError), match=message):
        ProximalL1(torch.optim.SGD([x, y], lr=0.1), [x, y], strength)  # type: ignore[arg-type]


def test_invalid_construction_raises() -> None:
    x = torch.nn.Parameter(torch.ones(2))
    stranger = torch.nn.Parameter(torch.ones(2))
    sgd = torch.optim.SGD([x], lr=0.1)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        ProximalL1(object(), [x], 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a parameter of the wrapped optimizer"):
        ProximalL1(sgd, [stranger], 0.1)
    with pytest.raises(ValueError, match="appears twice"):
        ProximalL1(sgd, [[x], [x]], 0.1)
    with pytest.raises(TypeError, match="single tensor"):
        ProximalL1(sgd, x, 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        ProximalL1(sgd, [], 0.1)
    optimizer = ProximalL1(sgd, [x], lambda: torch.tensor([-1.0]))
    x.grad = torch.zeros(2)
    with pytest.raises(ValueError, match=">= 0"):
        optimizer.step()
    optimizer.strength = lambda: 3.0  # type: ignore[assignment, return-value]
    with pytest.raises(TypeError, match="must return a tensor"):
        optimizer.step()


def _trajectory(optimizer: ProximalL1, x: torch.Tensor, steps: int) -> list[torch.Tensor]:
    points = []
    for step in range(steps):
        optimizer.zero_grad()
        ((x - torch.arange(3.0)).pow(2).sum() * (1 + step % 2)).backward()
        optimizer.step()
        points.append(x.detach().clone())
    return points


def test_state_dict_round_trips_through_weights_only_load() -> None:
    x = torch.nn.Parameter(torch.tensor([0.3, -2.0, 1.0]))
    optimizer = ProximalL1(torch.optim.SGD([x], lr=0.1, momentum=0.9), [x], 0.7)
    _trajectory(optimizer, x, 3)
    buffer = io.BytesIO()
    torch.save({"x": x.detach().clone(), "optimizer": optimizer.state_dict()}, buffer)
    expected = _trajectory(optimizer, x, 4)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    y = torch.nn.Parameter(saved["x"])
    restored = ProximalL1(torch.optim.SGD([y], lr=0.1, momentum=0.9), [y], 0.0)
    restored.load_state_dict(saved["optimizer"])
    assert torch.equal(restored.current_strength(), torch.tensor([0.7]))
    for want, got in zip(expected, _trajectory(restored, y, 4)):
        assert torch.equal(want, got)
    other = ProximalL1(torch.optim.SGD([y, x], lr=0.1), [[y], [x]], 0.0)
    with pytest.raises(ValueError, match="proximal groups"):
        other.load_state_dict(saved["optimizer"])


def test_copies_and_pickles_keep_the_wrapped_optimizer() -> None:
    x = torch.nn.Parameter(torch.ones(2))
    optimizer = ProximalL1(torch.optim.SGD([x], lr=0.1), [x], 0.5)
    for clone in (copy.deepcopy(optimizer), pickle.loads(pickle.dumps(optimizer))):
        assert isinstance(clone.optimizer, torch.optim.SGD) and clone.num_groups == 1
    assert "ProximalL1" in repr(optimizer)
    assert not callable(getattr(optimizer, "extrapolation", None))


class _SparseQuadratic(cooper.ConstrainedMinimizationProblem):
    """min ||x - c||^2 s.t. ||x||_1 <= 1, the multiplier being the soft-threshold level."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.x = x
        self.ball = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY,
            multiplier=cooper.multipliers.DenseMultiplier(num_constraints=1, dtype=DTYPE),
        )

    def compute_cmp_state(self) -> cooper.CMPState:
        loss = (self.x - torch.tensor([2.0, 0.5, -0.2], dtype=DTYPE)).pow(2).sum()
        violation = (self.x.detach().abs().sum() - 1.0).reshape(1)
        state = cooper.ConstraintState(violation=violation, contributes_to_primal_update=False)
        return cooper.CMPState(loss=loss, observed_constraints={self.ball: state})


@pytest.mark.parametrize("scheme", ["simultaneous", "alternating", "extrapolation"])
def test_works_as_the_primal_optimizer_of_constrained_schemes(scheme: str) -> None:
    """The l1-ball projection of c = (2, .5, -.2) onto ||x||_1 <= 1 is (1, 0, 0) (λ* = 2 for f = ||x - c||²)."""
    x = torch.nn.Parameter(torch.zeros(3, dtype=DTYPE))
    problem = _SparseQuadratic(x)
    multiplier = problem.ball.multiplier
    if scheme == "extrapolation":
        primal = ProximalL1(cooper.optim.ExtraSGD([x], lr=0.05), [x], multiplier)
        dual: torch.optim.Optimizer = cooper.optim.ExtraSGD(problem.dual_parameters(), lr=0.2, maximize=True)
        optimizer: cooper.optim.ConstrainedOptimizer = cooper.optim.ExtrapolationConstrainedOptimizer(
            problem, primal, dual
        )
    else:
        primal = ProximalL1(torch.optim.SGD([x], lr=0.05), [x], multiplier)
        dual = torch.optim.SGD(problem.dual_parameters(), lr=0.2, maximize=True)
        kind = (
            cooper.optim.SimultaneousOptimizer
            if scheme == "simultaneous"
            else cooper.optim.AlternatingDualPrimalOptimizer
        )
        optimizer = kind(problem, primal, dual)
    for _ in range(1500):
        optimizer.roll()
    assert torch.allclose(x.detach(), torch.tensor([1.0, 0.0, 0.0], dtype=DTYPE), atol=1e-3)
    assert bool((x.detach()[1:] == 0).all())
    assert abs(float(problem.ball.multiplier.weight.detach()) - 2.0) < 1e-2
    restored = ProximalL1(torch.optim.SGD([x], lr=0.05), [x], multiplier)
    restored.load_state_dict(primal.state_dict())
