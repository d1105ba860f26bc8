"""Alternating updates: primal then dual, or dual then primal."""

from __future__ import annotations

from typing import Any

import torch

from cooper_like.optim.constrained_optimizer import ConstrainedOptimizer
from cooper_like.optim.cooper_optimizer import RollOut
from cooper_like.problem import CMPState, ConstrainedMinimizationProblem, LagrangianStore


def overrides_compute_violations(cmp: ConstrainedMinimizationProblem) -> bool:
    """Whether the problem implements the optional ``compute_violations`` (on its class or the instance)."""
    method = cmp.compute_violations
    return getattr(method, "__func__", method) is not ConstrainedMinimizationProblem.compute_violations


class AlternatingPrimalDualOptimizer(ConstrainedOptimizer):
    r"""Primal step first, then a dual step on the violations *at the new point*.

    .. math::
        \theta_{t+1} = \mathrm{primal\_update}(\theta_t, \nabla_\theta \mathcal{L}_p(\theta_t, \lambda_t)),
        \qquad
        \lambda_{t+1} = \big[\mathrm{dual\_update}(\lambda_t, \tilde g(\theta_{t+1}))\big]_+

    The constraints are measured twice. If the problem implements ``compute_violations`` only the
    constraints are re-measured (under ``torch.no_grad``); otherwise ``compute_cmp_state`` is called again.
    With ``non_finite="skip"``, a non-finite re-measurement skips the dual half only (the primal step
    has happened by then).
    """

    def roll(
        self,
        compute_cmp_state_kwargs: dict[str, Any] | None = None,
        compute_violations_kwargs: dict[str, Any] | None = None,
    ) -> RollOut:
        """Primal step at :math:`\\theta_t`, then dual step at :math:`\\theta_{t+1}`.

        Returns the state at :math:`\\theta_{t+1}`; its loss is :math:`f(\\theta_{t+1})` when
        ``compute_cmp_state`` was re-run, else :math:`f(\\theta_t)`.
        """
        self.zero_grad()
        cmp_state = self.evaluate(compute_cmp_state_kwargs, for_dual_update=False)
        primal_store = cmp_state.compute_primal_lagrangian()
        if not self.guard.admits(cmp_state, primal_store, None):
            return RollOut(cmp_state.loss, cmp_state, primal_store, cmp_state.compute_dual_lagrangian())
        primal_store.backward()
        self.primal_step()

        with torch.no_grad():
            new_state = self.measure_violations(compute_cmp_state_kwargs, compute_violations_kwargs)
        dual_store = self.dual_update_at(new_state, already_applied="primal step")
        loss = new_state.loss if new_state.loss is not None else cmp_state.loss
        return RollOut(loss, new_state, primal_store, dual_store)

    def dual_update_at(self, cmp_state: CMPState, already_applied: str) -> LagrangianStore:
        """The dual half-step from a measurement taken after the primal half-step (``already_applied``).

        Builds the dual Lagrangian, and unless the NaN/Inf guard stops it, steps the multipliers and the
        attached penalty-coefficient updaters. Returns the dual store.
        """
        dual_store = cmp_state.compute_dual_lagrangian()
        if self.guard.admits(cmp_state, None, dual_store, already_applied=already_applied):
            dual_store.backward()
            self.dual_step()
            self.update_penalty_coefficients(cmp_state.observed_constraints)
        return dual_store

    def measure_violations(
        self,
        compute_cmp_state_kwargs: dict[str, Any] | None,
        compute_violations_kwargs: dict[str, Any] | None,
    ) -> CMPState:
        if not overrides_compute_violations(self.cmp):
            return self.evaluate(compute_cmp_state_kwargs, for_primal_update=False)
        state = self.cmp.compute_violations(**(compute_violations_kwargs or {}))
        self.check_measurement(state, "compute_violations", for_primal_update=False)
        if state.loss is not None:
            raise RuntimeError(
                f"{type(self.cmp).__name__}.compute_violations must leave loss=None (it measures constraints only)"
            )
        return self.synchronize(state)


class AlternatingDualPrimalOptimizer(ConstrainedOptimizer):
    r"""Dual step first, then a primal step with the *new* multipliers, from one measurement.

    .. math::
        \lambda_{t+1} = \big[\mathrm{dual\_update}(\lambda_t, \tilde g(\theta_t))\big]_+,
        \qquad
        \theta_{t+1} = \mathrm{primal\_update}(\theta_t, \nabla_\theta \mathcal{L}_p(\theta_t, \lambda_{t+1}))

    Costs the same as the simultaneous scheme (one forward, one backward).
    """

    def roll(self, compute_cmp_state_kwargs: dict[str, Any] | None = None) -> RollOut:
        """Dual step at :math:`\\theta_t`, then primal step at :math:`(\\theta_t, \\lambda_{t+1})`."""
        self.zero_grad()
        communicate = self.communicates()
        cmp_state = self.evaluate(compute_cmp_state_kwargs, communicate=communicate)
        dual_store = cmp_state.compute_dual_lagrangian()
        # no primal store yet: the guard checks the loss and every violation before anything moves
        if not self.guard.admits(cmp_state, None, dual_store, communicate=communicate):
            return RollOut(cmp_state.loss, cmp_state, cmp_state.compute_primal_lagrangian(), dual_store)
        dual_store.backward()
        self.dual_step()
        self.update_penalty_coefficients(cmp_state.observed_constraints)
        primal_store = cmp_state.compute_primal_lagrangian()
        if self.guard.admits(
            cmp_state, primal_store, None, already_applied="dual step", communicate=communicate
        ):
            primal_store.backward()
            self.primal_step()
        return RollOut(cmp_state.loss, cmp_state, primal_store, dual_store)
