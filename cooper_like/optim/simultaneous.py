"""Simultaneous gradient descent-ascent."""

from __future__ import annotations

from typing import Any

from cooper_like.optim.constrained_optimizer import ConstrainedOptimizer
from cooper_like.optim.cooper_optimizer import RollOut


class SimultaneousOptimizer(ConstrainedOptimizer):
    r"""Primal and dual variables step together from the same point :math:`(\theta_t, \lambda_t)`.

    .. math::
        \theta_{t+1} = \mathrm{primal\_update}(\theta_t, \nabla_\theta \mathcal{L}_p(\theta_t, \lambda_t)),
        \qquad
        \lambda_{t+1} = \big[\mathrm{dual\_update}(\lambda_t, \tilde g(\theta_t))\big]_+

    With SGD on both sides: :math:`\theta_{t+1} = \theta_t - \eta_\theta \nabla_\theta(f + \lambda_t^\top g)`,
    :math:`\lambda_{t+1} = [\lambda_t + \eta_\lambda \tilde g(\theta_t)]_+`. One forward and one backward pass.
    """

    def roll(self, compute_cmp_state_kwargs: dict[str, Any] | None = None) -> RollOut:
        """Measure the problem once and update primal and dual variables from that measurement."""
        self.zero_grad()
        communicate = self.communicates()
        cmp_state = self.evaluate(compute_cmp_state_kwargs, communicate=communicate)
        primal_store, dual_store = cmp_state.compute_lagrangians()
        if self.guard.admits(cmp_state, primal_store, dual_store, communicate=communicate):
            primal_store.backward()
            dual_store.backward()
            self.primal_step()
            self.dual_step()
            self.update_penalty_coefficients(cmp_state.observed_constraints)
        return RollOut(cmp_state.loss, cmp_state, primal_store, dual_store)
