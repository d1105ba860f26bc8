"""Plain minimization through the same ``roll()`` interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cooper_like.optim.cooper_optimizer import CooperOptimizer, RollOut
from cooper_like.optim.non_finite import NonFinitePolicy
from cooper_like.problem import ConstrainedMinimizationProblem, LagrangianStore


class UnconstrainedOptimizer(CooperOptimizer):
    """Minimizes the loss (plus any penalty terms) with the primal optimizer(s); no multipliers.

    Args:
        cmp: The problem.
        primal_optimizers: Optimizer(s) of the model parameters.
        dual_optimizers: Accepted for Cooper compatibility (generic code builds every optimizer alike);
            must be ``None``.
        non_finite: ``"raise"`` (default), ``"skip"`` or ``"off"``.
        distributed: ``None`` (default), ``True`` or ``False``; with a process group, NaN/Inf decisions are
            shared by every process (see :class:`~cooper_like.optim.CooperOptimizer`).
    """

    def __init__(
        self,
        cmp: ConstrainedMinimizationProblem,
        primal_optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
        dual_optimizers: None = None,
        *,
        non_finite: NonFinitePolicy | str = NonFinitePolicy.RAISE,
        distributed: bool | None = None,
    ) -> None:
        if dual_optimizers is not None:
            raise ValueError(
                "UnconstrainedOptimizer: dual_optimizers must be None (it updates no multiplier), got "
                f"{type(dual_optimizers).__name__}; use a ConstrainedOptimizer to update multipliers"
            )
        super().__init__(cmp, primal_optimizers, None, non_finite=non_finite, distributed=distributed)

    def roll(self, compute_cmp_state_kwargs: dict[str, Any] | None = None) -> RollOut:
        """One primal step on the primal Lagrangian (the loss when there are no penalty terms)."""
        self.zero_grad()
        cmp_state = self.evaluate(compute_cmp_state_kwargs, for_dual_update=False)
        primal_store = cmp_state.compute_primal_lagrangian()
        if self.guard.admits(cmp_state, primal_store):
            primal_store.backward()
            self.primal_step()
        return RollOut(cmp_state.loss, cmp_state, primal_store, LagrangianStore())
