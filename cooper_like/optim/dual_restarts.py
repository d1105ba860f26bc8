"""Dual restarts (Gallego-Posada et al. 2022): reset the multipliers of satisfied constraints."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cooper_like.multipliers import ExplicitMultiplier


@torch.no_grad()
def restart_feasible_entries_(multiplier: ExplicitMultiplier, dual_optimizers: Sequence[torch.optim.Optimizer]) -> None:
    r"""Set :math:`\lambda_i = 0` where the observed strict violation :math:`\tilde g_i \le 0`.

    The strict violation is read from ``weight.grad`` (for an explicit multiplier it *is* the dual
    gradient). Every dual-optimizer state tensor shaped like ``weight`` (momenta, nuPI's error EMA and
    its initialisation mask, ...) is cleared at the same entries, so a restarted entry starts afresh.
    Cost: O(observed rows) for a sparse gradient.
    """
    weight = multiplier.weight
    grad = weight.grad
    if grad is None:
        return
    if grad.is_sparse:
        grad = grad.coalesce()
        rows = grad.indices()[0][(grad.values() <= 0).reshape(grad.values().shape[0], -1).all(dim=1)]
        weight.index_fill_(0, rows, 0.0)
        for state in optimizer_states(weight, dual_optimizers):
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.shape == weight.shape:
                    value.index_fill_(0, rows, False if value.dtype == torch.bool else 0)
        return
    feasible = grad <= 0
    weight.masked_fill_(feasible, 0.0)
    for state in optimizer_states(weight, dual_optimizers):
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.shape == weight.shape:
                value.masked_fill_(feasible, False if value.dtype == torch.bool else 0)


def optimizer_states(
    parameter: torch.Tensor, optimizers: Sequence[torch.optim.Optimizer]
) -> list[dict[str, object]]:
    """The per-parameter states that ``optimizers`` hold for ``parameter``."""
    return [optimizer.state[parameter] for optimizer in optimizers if parameter in optimizer.state]
