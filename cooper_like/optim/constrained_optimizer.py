"""Base of the constrained optimizers: the dual step, its projection, restarts and penalty updates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cooper_like.constraint_state import ConstraintState
from cooper_like.constraints import Constraint
from cooper_like.multipliers import ExplicitMultiplier, Multiplier
from cooper_like.optim.cooper_optimizer import CooperOptimizer
from cooper_like.optim.dual_restarts import restart_feasible_entries_
from cooper_like.optim.non_finite import NonFinitePolicy
from cooper_like.optim.plain_ascent import plain_ascent_step_
from cooper_like.optim.row_state import moves_only_gradient_rows
from cooper_like.penalty_coefficients import PenaltyCoefficientUpdater
from cooper_like.problem import ConstrainedMinimizationProblem


class ConstrainedOptimizer(CooperOptimizer):
    """Base of the primal-dual schemes.

    Args:
        cmp: The problem.
        primal_optimizers: Optimizer(s) of the model parameters.
        dual_optimizers: Optimizer(s) of the multipliers; every param group must have ``maximize=True``.
        penalty_coefficient_updater: Optional updater(s) that ``roll()`` applies after each dual step to
            the constraints measured for it (opt-in; Cooper requires a manual call).
        non_finite: ``"raise"`` (default), ``"skip"`` or ``"off"`` — see :class:`NonFiniteGuard`.
        distributed: Multi-process training: ``None`` (default) uses the global violations for the dual
            update whenever a ``torch.distributed`` process group with more than one process is
            initialised, ``True`` requires one, ``False`` never communicates. See
            :mod:`cooper_like.distributed`.
    """

    def __init__(
        self,
        cmp: ConstrainedMinimizationProblem,
        primal_optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
        dual_optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None,
        *,
        penalty_coefficient_updater: PenaltyCoefficientUpdater
        | Sequence[PenaltyCoefficientUpdater]
        | None = None,
        non_finite: NonFinitePolicy | str = NonFinitePolicy.RAISE,
        distributed: bool | None = None,
    ) -> None:
        if dual_optimizers is None:
            raise TypeError(
                f"{type(self).__name__} needs dual_optimizers (use UnconstrainedOptimizer otherwise)"
            )
        super().__init__(
            cmp, primal_optimizers, dual_optimizers, non_finite=non_finite, distributed=distributed
        )
        assert self.dual_optimizers is not None
        for index, optimizer in enumerate(self.dual_optimizers):
            for group_index, group in enumerate(optimizer.param_groups):
                if not group.get("maximize", False):
                    raise ValueError(
                        f"dual_optimizers[{index}] ({type(optimizer).__name__}) param group {group_index} has "
                        "maximize=False: dual optimizers ascend on the Lagrangian, build them with maximize=True"
                    )
                check_eps_representable(optimizer, index, group_index, group)
        if penalty_coefficient_updater is None:
            self.penalty_coefficient_updaters: list[PenaltyCoefficientUpdater] = []
        elif isinstance(penalty_coefficient_updater, PenaltyCoefficientUpdater):
            self.penalty_coefficient_updaters = [penalty_coefficient_updater]
        else:
            self.penalty_coefficient_updaters = list(penalty_coefficient_updater)
        for updater in self.penalty_coefficient_updaters:
            if not isinstance(updater, PenaltyCoefficientUpdater):
                raise TypeError(
                    f"penalty_coefficient_updater must be PenaltyCoefficientUpdater(s), got {type(updater).__name__}"
                )
        self.custom_sanity_checks()

    def custom_sanity_checks(self) -> None:
        """Scheme-specific checks of the optimizers (none by default)."""

    def dual_step(self) -> None:
        r"""Step every dual optimizer, then restart (opt-in) and project the multipliers (:math:`\lambda \ge 0`).

        A plain ``torch.optim.SGD(maximize=True)`` is applied through :func:`plain_ascent_step_` (the
        same update, without ``Optimizer.step``'s per-call overhead).
        """
        assert self.dual_optimizers is not None
        multipliers = self.cmp.unique_multipliers()
        self.check_restart_rows_known(multipliers)
        for optimizer in self.dual_optimizers:
            if not plain_ascent_step_(optimizer):
                with torch.no_grad():
                    optimizer.step()
        self.post_process_multipliers(multipliers)

    def post_process_multipliers(self, multipliers: list[Multiplier] | None = None) -> None:
        """Restart (where enabled) and project every multiplier of the problem (or those given)."""
        assert self.dual_optimizers is not None
        for multiplier in self.cmp.unique_multipliers() if multipliers is None else multipliers:
            if not isinstance(multiplier, ExplicitMultiplier):
                multiplier.post_step_()
                continue
            if multiplier.restart_on_feasible:
                restart_feasible_entries_(multiplier, self.dual_optimizers)
            if not multiplier.tracks_observed_rows:  # every row is observed at every step
                multiplier.post_step_()
                continue
            multiplier.post_step_(observed_rows_only=self.moves_only_observed_rows(multiplier))
            multiplier.clear_observed_()  # the record served this step; never carried into the next

    def check_restart_rows_known(self, multipliers: list[Multiplier] | None = None) -> None:
        """Raise, before any update, if a restarting multiplier's observed rows cannot be known.

        That is a dense gradient of an indexed multiplier written outside
        :meth:`~cooper_like.LagrangianStore.backward` (e.g. ``store.lagrangian.backward()``): its
        unobserved rows have a zero gradient and would be taken for satisfied constraints.
        """
        for multiplier in self.cmp.unique_multipliers() if multipliers is None else multipliers:
            if (
                isinstance(multiplier, ExplicitMultiplier)
                and multiplier.restart_on_feasible
                and multiplier.tracks_observed_rows
                and multiplier.gradient() is not None
                and multiplier.observed_rows() is None
            ):
                names = [c.name for c in self.cmp.constraints() if c.multiplier is multiplier]
                raise RuntimeError(
                    f"dual restarts of constraint(s) {names}: the multiplier has a dense gradient "
                    "whose observed rows are unknown (it was not written by LagrangianStore.backward()); "
                    "call store.backward(), or build the multiplier with sparse_grad=True"
                )

    def moves_only_observed_rows(self, multiplier: ExplicitMultiplier) -> bool:
        """Whether the last dual step moved only the rows observed by ``multiplier``'s sparse gradient."""
        gradient = multiplier.gradient()
        if gradient is None or not gradient.is_sparse:
            return False
        assert self.dual_optimizers is not None
        return all(
            moves_only_gradient_rows(optimizer, multiplier.weight) for optimizer in self.dual_optimizers
        )

    def update_penalty_coefficients(self, observed_constraints: dict[Constraint, ConstraintState]) -> None:
        """Apply the attached penalty-coefficient updaters (if any) to the measured constraints."""
        for updater in self.penalty_coefficient_updaters:
            updater.step(observed_constraints)


def check_eps_representable(
    optimizer: torch.optim.Optimizer, index: int, group_index: int, group: dict[str, Any]
) -> None:
    r"""Raise if an optimizer's ``eps`` rounds to 0 in the dtype of a multiplier it updates.

    Adam-like updates divide by :math:`\sqrt{v} + \epsilon`; with :math:`\epsilon = 0` an entry whose
    gradient is 0 becomes :math:`0/0` = NaN. The default ``eps=1e-8`` is 0 in float16.
    """
    eps = group.get("eps")
    if not isinstance(eps, (int, float)) or eps <= 0:
        return
    for parameter in group["params"]:
        if parameter.dtype.is_floating_point and torch.tensor(eps, dtype=parameter.dtype).item() == 0:
            raise ValueError(
                f"dual_optimizers[{index}] ({type(optimizer).__name__}) param group {group_index}: eps={eps} "
                f"is 0 in {parameter.dtype}, so multipliers with a zero gradient would become NaN; keep the "
                "multipliers in float32 (the default) or raise eps"
            )
