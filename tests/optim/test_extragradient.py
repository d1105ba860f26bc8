"""Tests of the extragradient optimizers (``cooper_like.optim.extragradient``)."""

from __future__ import annotations

import copy
import io
import pickle
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch

from cooper_like.optim.extragradient import (
    ExtraAdam,
    ExtragradientOptimizer,
    ExtraSGD,
    adam_update,
    sgd_update,
)

DTYPE = torch.float64

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled")


def _save_load(state_dict: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _bilinear_players() -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    """The players x and y of the bilinear game, both starting at 1."""
    return torch.nn.Parameter(torch.tensor(1.0, dtype=DTYPE)), torch.nn.Parameter(
        torch.tensor(1.0, dtype=DTYPE)
    )


def _bilinear_grads(x: torch.Tensor, y: torch.Tensor) -> None:
    """Gradients of L(x, y) = x * y, the game min_x max_y L."""
    x.grad, y.grad = None, None
    (x * y).backward()


def _bilinear_eg(lr: float) -> tuple[torch.nn.Parameter, torch.nn.Parameter, ExtraSGD]:
    x, y = _bilinear_players()
    groups: list[dict[str, Any]] = [{"params": [x]}, {"params": [y], "maximize": True}]
    optimizer = ExtraSGD(groups, lr=lr)
    return x, y, optimizer


# ---------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------


def test_kernel_sgd_update_by_hand() -> None:
    grad, param = torch.tensor([2.0]), torch.tensor([1.0])
    # plain: u = -0.1 * 2 = -0.2; with wd 0.5: u = -0.1 * (2 + 0.5) = -0.25; maximise: u = -0.1 * (-2) = 0.2
    update, buffer = sgd_update(grad, param, None, 0.1, 0.0, 0.0, 0.0, False, False)
    torch.testing.assert_close(update, torch.tensor([-0.2]))
    assert buffer is None
    update, _ = sgd_update(grad, param, None, 0.1, 0.0, 0.0, 0.5, False, False)
    torch.testing.assert_close(update, torch.tensor([-0.25]))
    update, _ = sgd_update(grad, param, None, 0.1, 0.0, 0.0, 0.0, False, True)
    torch.testing.assert_close(update, torch.tensor([0.2]))
    # momentum 0.9, dampening 0.5, old buffer 1: b = 0.9 * 1 + 0.5 * 2 = 1.9
    #   heavy ball: u = -0.1 * 1.9 = -0.19;  first step (no buffer): b = g = 2, u = -0.2
    update, buffer = sgd_update(grad, param, torch.tensor([1.0]), 0.1, 0.9, 0.5, 0.0, False, False)
    torch.testing.assert_close(update, torch.tensor([-0.19]))
    torch.testing.assert_close(buffer, torch.tensor([1.9]))
    update, buffer = sgd_update(grad, param, None, 0.1, 0.9, 0.5, 0.0, False, False)
    torch.testing.assert_close(update, torch.tensor([-0.2]))
    # Nesterov, momentum 0.5, old buffer 1: b = 0.5 + 2 = 2.5; u = -0.1 * (2 + 0.5 * 2.5) = -0.325
    update, _ = sgd_update(grad, param, torch.tensor([1.0]), 0.1, 0.5, 0.0, 0.0, True, False)
    torch.testing.assert_close(update, torch.tensor([-0.325]))


def test_kernel_adam_update_first_step_is_sign_times_lr() -> None:
    # At t = 1: m = 0.1 g, v = 0.001 g^2, m_hat = g, v_hat = g^2  ->  u = -lr * g / (|g| + eps) ~ -lr sign(g)
    grad = torch.tensor([3.0, -0.5], dtype=DTYPE)
    zeros = torch.zeros(2, dtype=DTYPE)
    update, m, v, max_v = adam_update(grad, zeros, zeros, None, 1, 0.01, 0.9, 0.999, 0.0)
    torch.testing.assert_close(update, torch.tensor([-0.01, 0.01], dtype=DTYPE))
    torch.testing.assert_close(m, 0.1 * grad)
    torch.testing.assert_close(v, 0.001 * grad**2)
    assert max_v is None


# ---------------------------------------------------------------------------------------------------
# Semantics
# ---------------------------------------------------------------------------------------------------


def test_bilinear_game_two_iterations_by_hand() -> None:
    # L = x * y, dL/dx = y, dL/dy = x; x descends, y ascends; lr = 0.1, start (1, 1).
    # iteration 1: half = (1 - 0.1*1, 1 + 0.1*1) = (0.9, 1.1)
    #              new  = (1 - 0.1*1.1, 1 + 0.1*0.9) = (0.89, 1.09)
    # iteration 2: half = (0.89 - 0.1*1.09, 1.09 + 0.1*0.89) = (0.781, 1.179)
    #              new  = (0.89 - 0.1*1.179, 1.09 + 0.1*0.781) = (0.7721, 1.1681)
    x, y, optimizer = _bilinear_eg(lr=0.1)
    expected = [((0.9, 1.1), (0.89, 1.09)), ((0.781, 1.179), (0.7721, 1.1681))]
    for (x_half, y_half), (x_new, y_new) in expected:
        _bilinear_grads(x, y)
        optimizer.extrapolation()
        assert x.item() == pytest.approx(x_half, abs=1e-12)
        assert y.item() == pytest.approx(y_half, abs=1e-12)
        _bilinear_grads(x, y)
        optimizer.step()
        assert x.item() == pytest.approx(x_new, abs=1e-12)
        assert y.item() == pytest.approx(y_new, abs=1e-12)


def test_extragradient_converges_where_gda_diverges() -> None:
    lr, iterations = 0.2, 500
    x, y, optimizer = _bilinear_eg(lr)
    for _ in range(iterations):
        _bilinear_grads(x, y)
        optimizer.extrapolation()
        _bilinear_grads(x, y)
        optimizer.step()
    # Per iteration EG multiplies |z|^2 by 1 - lr^2 + lr^4 = 0.9616, so |z| ~ sqrt(2) * 0.9616^250 ~ 8e-5.
    assert torch.hypot(x, y).item() < 1e-3

    gx, gy = _bilinear_players()
    groups: list[dict[str, Any]] = [{"params": [gx]}, {"params": [gy], "maximize": True}]
    gda = torch.optim.SGD(groups, lr=lr)
    for _ in range(iterations):
        _bilinear_grads(gx, gy)
        gda.step()
    # Simultaneous GDA multiplies |z|^2 by 1 + lr^2 = 1.04 per iteration: it spirals outwards.
    assert torch.hypot(gx, gy).item() > 100 * 2**0.5


def _quadratic() -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=DTYPE)
    b = torch.tensor([1.0, -1.0], dtype=DTYPE)
    return a, b


def _quadratic_grad(param: torch.Tensor) -> None:
    """Gradient of f(theta) = 0.5 theta^T A theta - b^T theta, i.e. A theta - b."""
    a, b = _quadratic()
    param.grad = None
    (0.5 * param @ a @ param - b @ param).backward()


@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_extra_sgd_on_a_quadratic_matches_the_closed_form(weight_decay: float) -> None:
    a, b = _quadratic()
    lr = 0.1

    def field(theta: torch.Tensor) -> torch.Tensor:  # gradient of f plus the L2 term
        return a @ theta - b + weight_decay * theta

    theta = torch.tensor([1.0, 2.0], dtype=DTYPE)
    param = torch.nn.Parameter(theta.clone())
    optimizer = ExtraSGD([param], lr=lr, weight_decay=weight_decay)
    for _ in range(3):
        _quadratic_grad(param)
        optimizer.extrapolation()
        _quadratic_grad(param)
        optimizer.step()
        theta = theta - lr * field(theta - lr * field(theta))
        torch.testing.assert_close(param.detach(), theta)


@pytest.mark.parametrize(
    "settings",
    [
        {"lr": 0.05},
        {"lr": 0.05, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "maximize": True},
        {"lr": 0.05, "momentum": 0.7, "nesterov": True},
    ],
    ids=["plain", "momentum", "dampening_maximize", "nesterov"],
)
def test_extra_sgd_matches_torch_sgd_applied_from_the_remembered_iterate(settings: dict[str, Any]) -> None:
    start = torch.tensor([1.0, 2.0], dtype=DTYPE)
    param, reference = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    optimizer, torch_sgd = ExtraSGD([param], **settings), torch.optim.SGD([reference], **settings)
    for _ in range(4):
        _quadratic_grad(param)
        optimizer.extrapolation()
        _quadratic_grad(param)
        optimizer.step()

        origin = reference.detach().clone()
        _quadratic_grad(reference)
        torch_sgd.step()  # extrapolation: torch SGD from theta_t
        _quadratic_grad(reference)
        with torch.no_grad():
            reference.copy_(origin)
        torch_sgd.step()  # update: torch SGD from theta_t with the look-ahead gradient
        torch.testing.assert_close(param.detach(), reference.detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("maximize", [False, True])
def test_extra_adam_first_extrapolation_equals_torch_adam_first_step(
    weight_decay: float, maximize: bool
) -> None:
    start = torch.tensor([1.0, -2.0, 0.5], dtype=DTYPE)
    param, reference = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    settings: dict[str, Any] = {"lr": 0.01, "weight_decay": weight_decay, "maximize": maximize}
    grad = torch.tensor([0.3, -4.0, 1e-3], dtype=DTYPE)
    param.grad, reference.grad = grad.clone(), grad.clone()
    ExtraAdam([param], **settings).extrapolation()
    torch.optim.Adam([reference], **settings).step()
    torch.testing.assert_close(param.detach(), reference.detach(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_extra_adam_matches_torch_adam_applied_from_the_remembered_iterate(amsgrad: bool) -> None:
    start = torch.tensor([1.0, 2.0], dtype=DTYPE)
    param, reference = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    settings: dict[str, Any] = {"lr": 0.1, "betas": (0.8, 0.9), "amsgrad": amsgrad, "maximize": True}
    optimizer, torch_adam = ExtraAdam([param], **settings), torch.optim.Adam([reference], **settings)
    for _ in range(4):
        _quadratic_grad(param)
        optimizer.extrapolation()
        _quadratic_grad(param)
        optimizer.step()

        origin = reference.detach().clone()
        _quadratic_grad(reference)
        torch_adam.step()
        _quadratic_grad(reference)
        with torch.no_grad():
            reference.copy_(origin)
        torch_adam.step()
        torch.testing.assert_close(param.detach(), reference.detach(), rtol=1e-12, atol=1e-14)
    assert optimizer.state[param]["step"] == 8  # both calls advance the step count


def test_repeated_extrapolations_keep_the_first_iterate() -> None:
    # f = 0.5 * theta^2, lr = 0.5, theta_0 = 4: grads 4 -> theta 2 -> grad 2 -> theta 1.
    # step with the gradient at theta = 1: theta_1 = 4 - 0.5 * 1 = 3.5
    param = torch.nn.Parameter(torch.tensor([4.0], dtype=DTYPE))
    optimizer = ExtraSGD([param], lr=0.5)
    for _ in range(2):
        param.grad = param.detach().clone()
        optimizer.extrapolation()
    assert param.item() == 1.0
    param.grad = param.detach().clone()
    optimizer.step()
    assert param.item() == 3.5
    assert "extrapolation_origin" not in optimizer.state[param]


def test_params_without_gradient_are_skipped() -> None:
    a = torch.nn.Parameter(torch.tensor([1.0]))
    b = torch.nn.Parameter(torch.tensor([5.0]))
    c = torch.nn.Parameter(torch.tensor([7.0]))
    optimizer = ExtraSGD([a, b, c], lr=0.5)
    # Extrapolation: a and c have gradients, b has none.
    a.grad, c.grad = torch.tensor([1.0]), torch.tensor([2.0])
    optimizer.extrapolation()
    assert (a.item(), b.item(), c.item()) == (0.5, 5.0, 6.0)
    assert b not in optimizer.state
    # Step: only a has a gradient. c has no update, so it returns to its remembered iterate.
    a.grad, c.grad = torch.tensor([3.0]), None
    optimizer.step()
    assert (a.item(), b.item(), c.item()) == (-0.5, 5.0, 7.0)  # a: 1 - 0.5 * 3
    assert "extrapolation_origin" not in optimizer.state[c]


def test_cancel_extrapolation_restores_the_iterate() -> None:
    # Dense row: 1 - 0.5 * 2 = 0 after extrapolation; sparse parameter: row 1 moves 3 -> 2.
    dense = torch.nn.Parameter(torch.tensor([1.0]))
    sparse = torch.nn.Parameter(torch.tensor([[0.0], [3.0]]))
    optimizer = ExtraSGD([dense, sparse], lr=0.5)
    dense.grad = torch.tensor([2.0])
    sparse.grad = torch.sparse_coo_tensor(torch.tensor([[1]]), torch.tensor([[2.0]]), (2, 1))
    optimizer.extrapolation()
    assert (dense.item(), sparse[1].item()) == (0.0, 2.0)
    optimizer.cancel_extrapolation()
    assert (dense.item(), sparse.detach().flatten().tolist()) == (1.0, [0.0, 3.0])
    with pytest.raises(RuntimeError, match="without a preceding extrapolation"):
        optimizer.step()
    optimizer.cancel_extrapolation()  # nothing remembered: no-op
    assert dense.item() == 1.0


def test_closure_is_evaluated_in_step() -> None:
    param = torch.nn.Parameter(torch.tensor([2.0]))
    optimizer = ExtraSGD([param], lr=0.25)

    def closure() -> float:
        optimizer.zero_grad()
        loss = (param**2).sum()
        loss.backward()
        return loss.item()

    closure()
    optimizer.extrapolation()  # 2 - 0.25 * 4 = 1
    assert optimizer.step(closure) == 1.0  # loss at the extrapolated point
    assert param.item() == 1.5  # 2 - 0.25 * 2


# ---------------------------------------------------------------------------------------------------
# Sparse gradients
# ---------------------------------------------------------------------------------------------------


def _embedding_grad(table: torch.Tensor, rows: list[int], upstream: torch.Tensor) -> None:
    table.grad = None
    (torch.nn.functional.embedding(torch.tensor(rows), table, sparse=True) * upstream).sum().backward()


def test_extra_sgd_sparse_equals_dense_when_every_row_is_observed() -> None:
    torch.manual_seed(0)
    start = torch.randn(4, 3, dtype=DTYPE)
    sparse, dense = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    settings: dict[str, Any] = {"lr": 0.1, "weight_decay": 0.2, "maximize": True}
    sparse_opt, dense_opt = ExtraSGD([sparse], **settings), ExtraSGD([dense], **settings)
    for _ in range(3):
        for call in ("extrapolation", "step"):
            rows = [0, 1, 2, 3, 2, 0]
            upstream = torch.randn(len(rows), 3, dtype=DTYPE)
            _embedding_grad(sparse, rows, upstream)
            assert sparse.grad is not None and sparse.grad.is_sparse
            dense.grad = sparse.grad.to_dense()
            getattr(sparse_opt, call)()
            getattr(dense_opt, call)()
            assert torch.equal(sparse, dense)


def test_extra_sgd_sparse_remembers_and_restores_only_observed_rows() -> None:
    # lr = 1, theta_0 = (0, 10, 20, 30, 40) (one column), descent.
    # extrapolation 1: rows 0, 2 with grads 1, 2  -> theta = (-1, 10, 18, 30, 40)
    # extrapolation 2: rows 2, 3 with grads 1, 1  -> theta = (-1, 10, 17, 29, 40); row 2 keeps origin 20
    # step: row 3 with grad 5 -> rows 0, 2 return to 0, 20; row 3 = 30 - 5 = 25; rows 1, 4 untouched
    param = torch.nn.Parameter(torch.tensor([[0.0], [10.0], [20.0], [30.0], [40.0]], dtype=DTYPE))
    optimizer = ExtraSGD([param], lr=1.0)

    def sparse(rows: list[int], values: list[float]) -> torch.Tensor:
        return torch.sparse_coo_tensor(
            torch.tensor([rows]), torch.tensor(values, dtype=DTYPE)[:, None], (5, 1)
        )

    param.grad = sparse([0, 2], [1.0, 2.0])
    optimizer.extrapolation()
    param.grad = sparse([2, 3], [1.0, 1.0])
    optimizer.extrapolation()
    assert param.detach().flatten().tolist() == [-1.0, 10.0, 17.0, 29.0, 40.0]
    state = optimizer.state[param]
    assert sorted(state["extrapolation_origin_rows"].tolist()) == [0, 2, 3]
    assert state["extrapolation_origin"].shape == (3, 1)
    param.grad = sparse([3], [5.0])
    optimizer.step()
    assert param.detach().flatten().tolist() == [0.0, 10.0, 20.0, 25.0, 40.0]
    assert "extrapolation_origin" not in state and "extrapolation_origin_rows" not in state


def test_extra_sgd_dense_extrapolation_after_sparse_one_keeps_the_original_rows() -> None:
    # lr = 1: sparse extrapolation moves row 0 from 1 to 0; dense extrapolation moves both rows by -1;
    # a step with a zero gradient must return to the very first iterate (1, 2).
    param = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=DTYPE))
    optimizer = ExtraSGD([param], lr=1.0)
    param.grad = torch.sparse_coo_tensor(torch.tensor([[0]]), torch.tensor([1.0], dtype=DTYPE), (2,))
    optimizer.extrapolation()
    param.grad = torch.ones(2, dtype=DTYPE)
    optimizer.extrapolation()
    assert param.detach().tolist() == [-1.0, 1.0]
    param.grad = torch.zeros(2, dtype=DTYPE)
    optimizer.step()
    assert param.detach().tolist() == [1.0, 2.0]


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------


def test_step_without_extrapolation_raises() -> None:
    param = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = ExtraSGD([param], lr=0.1)
    param.grad = torch.tensor([1.0])
    message = "ExtraSGD: step() was called without a preceding extrapolation()"
    with pytest.raises(RuntimeError, match=re.escape(message)):
        optimizer.step()
    optimizer.extrapolation()
    optimizer.step()
    with pytest.raises(RuntimeError, match="without a preceding extrapolation"):
        optimizer.step()  # the remembered iterate was consumed by the previous step


def test_base_class_requires_update() -> None:
    param = torch.nn.Parameter(torch.tensor([1.0]))
    param.grad = torch.tensor([1.0])
    optimizer = ExtragradientOptimizer([param], {"lr": 0.1})
    message = "ExtragradientOptimizer must implement update(p, group)"
    with pytest.raises(NotImplementedError, match=re.escape(message)):
        optimizer.extrapolation()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -0.1}, "ExtraSGD: lr must be >= 0, got -0.1"),
        ({"momentum": -0.5}, "ExtraSGD: momentum must be >= 0, got -0.5"),
        ({"weight_decay": -1e-3}, "ExtraSGD: weight_decay must be >= 0, got -0.001"),
        ({"nesterov": True}, "ExtraSGD: nesterov=True requires momentum > 0, got 0"),
        (
            {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
            "ExtraSGD: nesterov=True requires dampening == 0, got 0.1",
        ),
    ],
)
def test_extra_sgd_invalid_hyperparameters_raise(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ExtraSGD([torch.nn.Parameter(torch.zeros(2))], **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -0.1}, "ExtraAdam: lr must be >= 0, got -0.1"),
        ({"eps": -1e-8}, "ExtraAdam: eps must be >= 0, got -1e-08"),
        ({"weight_decay": -0.5}, "ExtraAdam: weight_decay must be >= 0, got -0.5"),
        ({"betas": (1.0, 0.999)}, "ExtraAdam: betas[0] must be in [0, 1), got 1.0"),
        ({"betas": (0.9, -0.1)}, "ExtraAdam: betas[1] must be in [0, 1), got -0.1"),
    ],
)
def test_extra_adam_invalid_hyperparameters_raise(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ExtraAdam([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_invalid_param_group_is_rejected() -> None:
    optimizer = ExtraSGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match=re.escape("ExtraSGD: lr must be >= 0, got -2.0")):
        optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": -2.0})
    assert len(optimizer.param_groups) == 1


def test_extra_adam_rejects_sparse_gradients() -> None:
    param = torch.nn.Parameter(torch.zeros(3, 2))
    _embedding_grad(param, [0, 2], torch.ones(2, 2))
    with pytest.raises(RuntimeError, match="ExtraAdam: sparse gradients are not supported"):
        ExtraAdam([param]).extrapolation()


def test_extra_sgd_rejects_sparse_gradients_with_momentum() -> None:
    param = torch.nn.Parameter(torch.zeros(3, 2))
    _embedding_grad(param, [0, 2], torch.ones(2, 2))
    message = "ExtraSGD: sparse gradients are only supported with momentum == 0, got 0.9"
    with pytest.raises(RuntimeError, match=re.escape(message)):
        ExtraSGD([param], momentum=0.9).extrapolation()


# ---------------------------------------------------------------------------------------------------
# Checkpoints and copies between extrapolation and step
# ---------------------------------------------------------------------------------------------------


def _make_optimizer(kind: str, param: torch.Tensor) -> ExtragradientOptimizer:
    if kind == "sgd":
        return ExtraSGD([param], lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    if kind == "sparse_sgd":
        return ExtraSGD([param], lr=0.05, weight_decay=0.01, maximize=True)
    return ExtraAdam([param], lr=0.05, amsgrad=True, weight_decay=0.01)


def _set_grad(kind: str, param: torch.Tensor, generator: torch.Generator) -> None:
    """Deterministic pseudo-gradient that depends on the current parameter values."""
    noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
    if kind == "sparse_sgd":
        rows = torch.randint(0, param.shape[0], (2,), generator=generator)
        values = param.detach().index_select(0, rows) + noise[:2]
        param.grad = torch.sparse_coo_tensor(rows[None], values, param.shape)
    else:
        param.grad = param.detach() * 2 + noise


def _iterate(optimizer: ExtragradientOptimizer, kind: str, param: torch.Tensor, gen: torch.Generator) -> None:
    _set_grad(kind, param, gen)
    optimizer.extrapolation()
    _set_grad(kind, param, gen)
    optimizer.step()


KINDS = ["sgd", "sparse_sgd", "adam"]


def _resumed_run(
    kind: str, clone: Callable[[ExtragradientOptimizer, torch.Tensor], tuple[Any, torch.Tensor]]
) -> None:
    """Interrupts a run after an extrapolation, resumes it with ``clone`` and compares to the original."""
    start = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    param = torch.nn.Parameter(start.clone())
    optimizer = _make_optimizer(kind, param)
    gen = torch.Generator().manual_seed(2)
    for _ in range(2):
        _iterate(optimizer, kind, param, gen)
    _set_grad(kind, param, gen)
    optimizer.extrapolation()
    assert "extrapolation_origin" in optimizer.state[param]

    twin_opt, twin = clone(optimizer, param)
    twin_gen = torch.Generator()
    twin_gen.set_state(gen.get_state())
    _set_grad(kind, param, gen)
    optimizer.step()
    _set_grad(kind, twin, twin_gen)
    twin_opt.step()
    assert torch.equal(param, twin)
    _iterate(optimizer, kind, param, gen)
    _iterate(twin_opt, kind, twin, twin_gen)
    assert torch.equal(param, twin)


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_between_extrapolation_and_step_resumes_exactly(kind: str) -> None:
    def via_state_dict(optimizer: ExtragradientOptimizer, param: torch.Tensor) -> tuple[Any, torch.Tensor]:
        loaded = _save_load(optimizer.state_dict())
        twin = torch.nn.Parameter(param.detach().clone())
        twin_opt = _make_optimizer(kind, twin)
        twin_opt.load_state_dict(loaded)
        if kind == "sparse_sgd":
            assert twin_opt.state[twin]["extrapolation_origin_rows"].dtype == torch.int64
        return twin_opt, twin

    _resumed_run(kind, via_state_dict)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_deepcopy_and_pickle_between_extrapolation_and_step(kind: str, how: str) -> None:
    def via_copy(optimizer: ExtragradientOptimizer, param: torch.Tensor) -> tuple[Any, torch.Tensor]:
        twin_opt = copy.deepcopy(optimizer) if how == "deepcopy" else pickle.loads(pickle.dumps(optimizer))
        twin = twin_opt.param_groups[0]["params"][0]
        assert twin is not param
        return twin_opt, twin

    _resumed_run(kind, via_copy)
