r"""What a dual optimizer keeps per multiplier row, and the explicit interface that resets it.

Dual restarts set :math:`\lambda_i = 0` for satisfied constraints and must also forget what the dual
optimizer remembers of those rows (a momentum buffer, Adam moments, nuPI's error average). That state
is only touched through an explicit interface, never guessed from tensor shapes:

* an optimizer that defines ``reset_state_rows_(param, rows)`` resets its own state (our
  :class:`~cooper_like.optim.nuPI`, :class:`~cooper_like.optim.ExtraSGD`,
  :class:`~cooper_like.optim.ExtraAdam`, or a user's optimizer);
* torch's own optimizers are handled by their documented per-element state keys (:data:`TORCH_ROW_STATE`);
* any other optimizer that holds state for the multiplier is an error naming it.

The projection :math:`\lambda \ge 0` after a step with a sparse gradient may skip the rows that were not
observed only when the optimizer declares that such a step moves no other row
(:func:`moves_only_gradient_rows`); otherwise every row is projected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["TORCH_ROW_STATE", "moves_only_gradient_rows", "reset_state_rows_"]


def _zero(group: dict[str, Any]) -> float:
    return 0.0


def _adagrad_initial(group: dict[str, Any]) -> float:
    return float(group.get("initial_accumulator_value", 0.0))


#: Per-element state keys of torch optimizers (exact classes) and the value a reset row takes.
TORCH_ROW_STATE: dict[type[torch.optim.Optimizer], dict[str, Callable[[dict[str, Any]], float]]] = {
    torch.optim.SGD: {"momentum_buffer": _zero},
    torch.optim.Adam: {"exp_avg": _zero, "exp_avg_sq": _zero, "max_exp_avg_sq": _zero},
    torch.optim.AdamW: {"exp_avg": _zero, "exp_avg_sq": _zero, "max_exp_avg_sq": _zero},
    torch.optim.SparseAdam: {"exp_avg": _zero, "exp_avg_sq": _zero},
    torch.optim.Adamax: {"exp_avg": _zero, "exp_inf": _zero},
    torch.optim.NAdam: {"exp_avg": _zero, "exp_avg_sq": _zero},
    torch.optim.RAdam: {"exp_avg": _zero, "exp_avg_sq": _zero},
    torch.optim.RMSprop: {"square_avg": _zero, "momentum_buffer": _zero, "grad_avg": _zero},
    torch.optim.Adagrad: {"sum": _adagrad_initial},
}
#: Keys of per-parameter scalars (step counts and the like) that a row reset leaves alone.
_SCALAR_KEYS = frozenset({"step", "mu_product"})


def _group_of(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> dict[str, Any] | None:
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]):
            return group
    return None


def fill_rows_(value: torch.Tensor, rows: torch.Tensor, fill: float) -> torch.Tensor:
    """``value`` with its ``rows`` set to ``fill``: in place for a dense tensor, rebuilt for a sparse one."""
    if not value.is_sparse:
        value.index_fill_(0, rows, fill)
        return value
    if fill != 0:
        raise ValueError(f"cannot fill rows of a sparse optimizer state with {fill} (only 0)")
    value = value.coalesce()
    keep = ~torch.isin(value.indices()[0], rows)
    # a subset of valid indices is valid: no invariant check needed
    kept_indices, kept_values = value.indices()[:, keep], value.values()[keep]
    return torch.sparse_coo_tensor(kept_indices, kept_values, value.shape, check_invariants=False).coalesce()


@torch.no_grad()
def reset_state_rows_(optimizer: torch.optim.Optimizer, param: torch.Tensor, rows: torch.Tensor) -> None:
    """Forget what ``optimizer`` remembers of ``param``'s ``rows`` (see the module docstring).

    Raises:
        TypeError: If the optimizer holds state for ``param`` but neither defines ``reset_state_rows_``
            nor is a torch optimizer listed in :data:`TORCH_ROW_STATE`, or a listed key is unexpected.
    """
    own_reset = getattr(optimizer, "reset_state_rows_", None)
    if callable(own_reset):
        own_reset(param, rows)
        return
    state = optimizer.state.get(param)
    if not state:
        return  # nothing remembered: nothing to forget
    known = TORCH_ROW_STATE.get(type(optimizer))
    unknown = sorted(set(state) - set(known or {}) - _SCALAR_KEYS)
    if known is None or unknown:
        raise TypeError(
            f"dual restarts cannot reset the state of {type(optimizer).__name__} (keys {sorted(state)}): give "
            "the optimizer a reset_state_rows_(param, rows) method that forgets those rows"
        )
    group = _group_of(optimizer, param) or {}
    for key, fill in known.items():
        value = state.get(key)
        if isinstance(value, torch.Tensor):
            state[key] = fill_rows_(value, rows, fill(group))


def moves_only_gradient_rows(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> bool:
    """Whether a step of ``optimizer`` with a sparse gradient for ``param`` leaves every other row unchanged.

    An optimizer declares it with a ``moves_only_gradient_rows(param)`` method; torch's plain SGD (no
    momentum, no weight decay) and ``SparseAdam`` do so by construction. ``False`` for anything else.
    """
    declared = getattr(optimizer, "moves_only_gradient_rows", None)
    if callable(declared):
        return bool(declared(param))
    group = _group_of(optimizer, param)
    if group is None:
        return True  # the optimizer does not update this parameter
    if type(optimizer) is torch.optim.SparseAdam:
        return True
    if type(optimizer) is torch.optim.SGD:
        return group["momentum"] == 0 and group["weight_decay"] == 0
    return False
