r"""A primal-dual step for a multiplier that is a soft-threshold level: the dual step sees the support first.

With :class:`~cooper_like.optim.proximal.ProximalL1` as the primal optimizer and a constraint on the
support (the count of non-zero weights), the library's schemes measure the count of an iterate that was
soft-thresholded with the *old* level, and the dual update answers it one step later. On mini-batches the
count jumps: a batch whose gradient lifts many zero weights above the threshold (on MNIST, the weights of
rarely lit pixels) turns them all on at once, and the iterate -- perhaps the returned one -- carries them
before the multiplier has reacted. :class:`LookaheadProximalOptimizer` orders the halves of a step so that
the dual update sees that count first:

.. math::
    z_t = \mathrm{step}(\theta_t) \;\; (\text{e.g. } \theta_t - \eta\, m_t), \qquad
    \lambda_{t+1} = \mathrm{dual\_update}\big(\lambda_t,\ g(S_{\eta\lambda_t}(z_t))\big), \qquad
    \theta_{t+1} = S_{\eta\lambda_{t+1}}(z_t).

The count is measured at :math:`S_{\eta\lambda_t}(z_t)` -- the iterate that the alternating primal-dual
scheme would return -- and the proximal map is then applied to :math:`z_t` again with the updated level.
Cost: one forward and one backward pass (as the simultaneous scheme), plus a copy of the thresholded
tensors and a second soft-thresholding, :math:`O(n)`.
"""

from __future__ import annotations

from typing import Any

import torch

import cooper_like as cooper
from cooper_like.optim.proximal import ProximalL1

__all__ = ["LookaheadProximalOptimizer"]


class LookaheadProximalOptimizer(cooper.optim.AlternatingPrimalDualOptimizer):
    r"""Gradient step, dual step on the support that the proximal map would leave, then the proximal map.

    The primal optimizer must be one :class:`~cooper_like.optim.proximal.ProximalL1` whose strength reads
    the multipliers (the threshold level is the multiplier), and the problem must implement
    ``compute_violations`` (it measures the support of the weights as they are). ``roll`` calls the
    wrapped optimizer's ``step`` and :meth:`~cooper_like.optim.proximal.ProximalL1.apply_proximal_map`
    itself, so an LR scheduler is best attached to ``primal.optimizer`` (both share their param groups;
    torch's check that ``optimizer.step()`` ran before ``scheduler.step()`` only sees the wrapped one).

    Raises:
        TypeError: ``primal_optimizers`` is not a single ``ProximalL1``, or the problem does not implement
            ``compute_violations``.
    """

    def custom_sanity_checks(self) -> None:
        kinds = [type(optimizer).__name__ for optimizer in self.primal_optimizers]
        if len(self.primal_optimizers) != 1 or not isinstance(self.primal_optimizers[0], ProximalL1):
            raise TypeError(
                f"LookaheadProximalOptimizer: primal_optimizers must be one ProximalL1, got {kinds}"
            )
        if type(self.cmp).compute_violations is cooper.ConstrainedMinimizationProblem.compute_violations:
            raise TypeError(
                f"LookaheadProximalOptimizer: {type(self.cmp).__name__} must implement compute_violations "
                "(the constraints of the weights as they are, without a forward pass)"
            )

    @property
    def proximal(self) -> ProximalL1:
        """The primal optimizer."""
        primal = self.primal_optimizers[0]
        assert isinstance(primal, ProximalL1)
        return primal

    def roll(
        self,
        compute_cmp_state_kwargs: dict[str, Any] | None = None,
        compute_violations_kwargs: dict[str, Any] | None = None,
    ) -> cooper.optim.RollOut:
        r"""One step: :math:`z_t`, then :math:`\lambda_{t+1}` from :math:`S_{\eta\lambda_t}(z_t)`, then :math:`\theta_{t+1}`.

        Returns the loss at :math:`\theta_t` and the constraint state measured at
        :math:`S_{\eta\lambda_t}(z_t)` (the one the dual step used).
        """
        self.zero_grad()
        cmp_state = self.evaluate(compute_cmp_state_kwargs, for_dual_update=False)
        primal_store = cmp_state.compute_primal_lagrangian()
        if not self.guard.admits(cmp_state, primal_store, None):
            return cooper.optim.RollOut(
                cmp_state.loss, cmp_state, primal_store, cmp_state.compute_dual_lagrangian()
            )
        primal_store.backward()
        proximal = self.proximal
        proximal.optimizer.step()
        thresholded = [tensor for group in proximal.proximal_groups for tensor in group]
        with torch.no_grad():
            candidate = [tensor.detach().clone() for tensor in thresholded]
            proximal.apply_proximal_map()
            lookahead = self.measure_violations(compute_cmp_state_kwargs, compute_violations_kwargs)
        dual_store = self.dual_update_at(lookahead, already_applied="gradient step")
        with torch.no_grad():
            for tensor, value in zip(thresholded, candidate):
                tensor.copy_(value)
            proximal.apply_proximal_map()
        return cooper.optim.RollOut(cmp_state.loss, lookahead, primal_store, dual_store)
