"""Dual restarts (Gallego-Posada et al. 2022): reset the multipliers of satisfied constraints."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cooper_like.multipliers import ExplicitMultiplier


@torch.no_grad()
def restart_feasible_entries_(
    multiplier: ExplicitMultiplier, dual_optimizers: Sequence[torch.optim.Optimizer]
) -> None:
    r"""Set :math:`\lambda_i = 0` where the observed strict violation :math:`\tilde g_i \le 0`.

    The strict violation is read from ``weight.grad`` (for an explicit multiplier it *is* the dual
    gradient). Every dual-optimizer state tensor indexed by the multiplier's rows (momenta, nuPI's
    error EMA and its row mask, ...) is cleared at the same rows, so a restarted entry starts afresh.
    Only observed rows are read or written: O(observed) for an indexed multiplier.
    """
    weight, grad = multiplier.weight, multiplier.weight.grad
    if grad is None:
        return
    rows = multiplier.observed_rows()
    if rows is None:
        feasible_rows = (grad <= 0).reshape(weight.shape[0], -1).all(dim=1).nonzero().flatten()
    else:
        rows = rows.unique()
        row_gradients = grad.index_select(0, rows)
        if row_gradients.is_sparse:
            row_gradients = row_gradients.to_dense()
        feasible_rows = rows[(row_gradients <= 0).reshape(rows.shape[0], -1).all(dim=1)]
    weight.index_fill_(0, feasible_rows, 0.0)
    for optimizer in dual_optimizers:
        for value in optimizer.state.get(weight, {}).values():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == weight.shape[0]:
                value.index_fill_(0, feasible_rows, False if value.dtype == torch.bool else 0)
