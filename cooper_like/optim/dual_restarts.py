"""Dual restarts (Gallego-Posada et al. 2022): reset the multipliers of satisfied constraints."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cooper_like.multipliers import ExplicitMultiplier
from cooper_like.optim.row_state import reset_state_rows_


def feasible_rows(multiplier: ExplicitMultiplier) -> torch.Tensor | None:
    r"""Observed rows whose dual gradient is :math:`\le 0` (``None`` when there is no gradient).

    For the built-in formulations the dual gradient of an explicit multiplier is the strict violation
    :math:`\tilde g` (summed over repeated ids). Only observed rows are read: O(observed) for an indexed
    multiplier.
    """
    weight, grad = multiplier.weight, multiplier.weight.grad
    if grad is None:
        return None
    rows = multiplier.observed_rows()
    if rows is None:
        return (grad <= 0).reshape(weight.shape[0], -1).all(dim=1).nonzero().flatten()
    rows = rows.unique()
    row_gradients = grad.index_select(0, rows)
    if row_gradients.is_sparse:
        row_gradients = row_gradients.to_dense()
    return rows[(row_gradients <= 0).reshape(rows.shape[0], -1).all(dim=1)]


@torch.no_grad()
def restart_feasible_entries_(
    multiplier: ExplicitMultiplier, dual_optimizers: Sequence[torch.optim.Optimizer]
) -> None:
    r"""Set :math:`\lambda_i = 0` where the observed dual gradient :math:`\tilde g_i \le 0`.

    What each dual optimizer remembers of those rows is reset through its explicit interface
    (:func:`~cooper_like.optim.row_state.reset_state_rows_`), so a restarted entry starts afresh.
    """
    rows = feasible_rows(multiplier)
    if rows is None:
        return
    multiplier.weight.detach().index_fill_(0, rows, 0.0)
    for optimizer in dual_optimizers:
        reset_state_rows_(optimizer, multiplier.weight, rows)
