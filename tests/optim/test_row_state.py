"""The explicit interface through which dual restarts reset an optimizer's per-row state."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

import cooper_like as cooper
from cooper_like.optim.row_state import fill_rows_, moves_only_gradient_rows, reset_state_rows_

ROWS = torch.tensor([1, 3])


def stepped(optimizer_class: type[torch.optim.Optimizer], sparse: bool = False, **kwargs: Any) -> tuple:
    weight = torch.nn.Parameter(torch.ones(4, 1))
    optimizer = optimizer_class([weight], lr=0.1, **kwargs)
    for _ in range(2):
        gradient = torch.arange(1.0, 5.0).reshape(4, 1)
        weight.grad = gradient.to_sparse() if sparse else gradient
        optimizer.step()
    return weight, optimizer


@pytest.mark.parametrize(
    ("optimizer_class", "sparse", "kwargs", "keys", "fill"),
    [
        (torch.optim.SGD, False, {"momentum": 0.9}, ("momentum_buffer",), 0.0),
        (torch.optim.SGD, True, {"momentum": 0.9}, ("momentum_buffer",), 0.0),  # a sparse buffer
        (torch.optim.Adam, False, {"amsgrad": True}, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), 0.0),
        (torch.optim.SparseAdam, True, {}, ("exp_avg", "exp_avg_sq"), 0.0),
        (
            torch.optim.RMSprop,
            False,
            {"momentum": 0.5, "centered": True},
            ("square_avg", "momentum_buffer", "grad_avg"),
            0.0,
        ),
        (torch.optim.Adagrad, False, {"initial_accumulator_value": 0.25}, ("sum",), 0.25),
    ],
)
def test_torch_optimizers_reset_their_documented_keys(
    optimizer_class: type[torch.optim.Optimizer],
    sparse: bool,
    kwargs: dict,
    keys: tuple,
    fill: float,
    default_device: str,
) -> None:
    weight, optimizer = stepped(optimizer_class, sparse, **kwargs)
    before = {key: optimizer.state[weight][key].to_dense().clone() for key in keys}
    step = optimizer.state[weight].get("step")
    step_before = step.clone() if isinstance(step, torch.Tensor) else step
    rows = ROWS.to(default_device)
    reset_state_rows_(optimizer, weight, rows)
    for key in keys:
        after = optimizer.state[weight][key].to_dense()
        assert torch.equal(after[rows], torch.full_like(after[rows], fill)), key
        kept = torch.tensor([0, 2])
        assert torch.equal(after[kept], before[key][kept]), key
    if step_before is not None:  # shared by all rows: kept
        assert optimizer.state[weight]["step"] == step_before


def test_an_optimizer_with_unknown_state_is_an_error_naming_it() -> None:
    weight, optimizer = stepped(torch.optim.Adadelta)
    with pytest.raises(TypeError, match=r"cannot reset the state of Adadelta \(keys .*reset_state_rows_"):
        reset_state_rows_(optimizer, weight, ROWS)


def test_a_stateless_or_self_resetting_optimizer_is_fine() -> None:
    weight = torch.nn.Parameter(torch.ones(4, 1))
    reset_state_rows_(torch.optim.Adadelta([weight]), weight, ROWS)  # no state yet: nothing to forget

    class Own(torch.optim.SGD):
        reset_rows: ClassVar[list[torch.Tensor]] = []

        def reset_state_rows_(self, param: torch.Tensor, rows: torch.Tensor) -> None:
            Own.reset_rows.append(rows)

    reset_state_rows_(Own([weight], lr=0.1), weight, ROWS)
    assert len(Own.reset_rows) == 1 and torch.equal(Own.reset_rows[0], ROWS)


def test_a_sparse_state_only_takes_zeros(default_device: str) -> None:
    with pytest.raises(ValueError, match="sparse optimizer state with 0.5"):
        fill_rows_(torch.ones(4, 1).to_sparse(), ROWS, 0.5)


def test_row_local_declarations() -> None:
    weight = torch.nn.Parameter(torch.ones(4, 1))
    assert moves_only_gradient_rows(torch.optim.SGD([weight], lr=0.1), weight)
    assert not moves_only_gradient_rows(torch.optim.SGD([weight], lr=0.1, momentum=0.9), weight)
    assert not moves_only_gradient_rows(torch.optim.SGD([weight], lr=0.1, weight_decay=0.1), weight)
    assert moves_only_gradient_rows(torch.optim.SparseAdam([weight], lr=0.1), weight)
    assert moves_only_gradient_rows(cooper.optim.nuPI([weight], lr=0.1), weight)
    assert moves_only_gradient_rows(cooper.optim.ExtraSGD([weight], lr=0.1), weight)
    assert not moves_only_gradient_rows(cooper.optim.ExtraAdam([weight], lr=0.1), weight)
    assert not moves_only_gradient_rows(torch.optim.Adam([weight], lr=0.1), weight)
    other = torch.nn.Parameter(torch.ones(2))
    assert moves_only_gradient_rows(torch.optim.Adam([other], lr=0.1), weight)  # does not update it
