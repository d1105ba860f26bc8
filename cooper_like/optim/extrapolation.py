"""Extragradient: extrapolate, then update from the gradients at the extrapolated point."""

from __future__ import annotations

from typing import Any

import torch

from cooper_like.exceptions import NotExtrapolatingError
from cooper_like.optim.constrained_optimizer import ConstrainedOptimizer
from cooper_like.optim.cooper_optimizer import RollOut
from cooper_like.optim.non_finite import NonFiniteError


class ExtrapolationConstrainedOptimizer(ConstrainedOptimizer):
    r"""Extragradient (Korpelevich 1976) on the Lagrangian game; all optimizers must have ``extrapolation()``
    (:class:`~cooper_like.optim.ExtraSGD`, :class:`~cooper_like.optim.ExtraAdam`).

    .. math::
        (\theta_{t+\frac12}, \lambda_{t+\frac12}) &= \text{update from } (\theta_t, \lambda_t)
            \text{ with the gradients at } (\theta_t, \lambda_t) \\
        (\theta_{t+1}, \lambda_{t+1}) &= \text{update from } (\theta_t, \lambda_t)
            \text{ with the gradients at } (\theta_{t+\frac12}, \lambda_{t+\frac12})

    Multipliers are projected after both half-steps. Two forward and two backward passes per step.
    With ``non_finite="skip"`` a non-finite value at the extrapolated point rolls the parameters back to
    :math:`(\theta_t, \lambda_t)`; statistics the optimizers updated during the extrapolation (momenta,
    Adam moments) are kept.
    """

    def custom_sanity_checks(self) -> None:
        for role, optimizers in (
            ("primal_optimizers", self.primal_optimizers),
            ("dual_optimizers", self.dual_optimizers),
        ):
            for optimizer in optimizers or ():
                if not callable(getattr(optimizer, "extrapolation", None)):
                    raise NotExtrapolatingError(
                        f"ExtrapolationConstrainedOptimizer: {role} must have an extrapolation() method "
                        f"(ExtraSGD, ExtraAdam); got {type(optimizer).__name__}"
                    )

    @torch.no_grad()
    def primal_extrapolation_step(self) -> None:
        """Extrapolate the primal parameters."""
        for optimizer in self.primal_optimizers:
            optimizer.extrapolation()  # type: ignore[attr-defined]

    @torch.no_grad()
    def dual_extrapolation_step(self) -> None:
        """Extrapolate the multipliers, then project them."""
        for optimizer in self.dual_optimizers or ():
            optimizer.extrapolation()  # type: ignore[attr-defined]
        self.post_process_multipliers()

    @torch.no_grad()
    def cancel_extrapolation(self) -> None:
        """Return every parameter to the point the pending extrapolation started from."""
        for optimizer in [*self.primal_optimizers, *(self.dual_optimizers or ())]:
            optimizer.cancel_extrapolation()

    def roll(self, compute_cmp_state_kwargs: dict[str, Any] | None = None) -> RollOut:
        """Extrapolation half-step, then the update; returns the measurement at :math:`(\\theta_t, \\lambda_t)`."""
        self.zero_grad()
        communicate = self.communicates()
        cmp_state = self.evaluate(compute_cmp_state_kwargs, communicate=communicate)
        primal_store, dual_store = cmp_state.compute_lagrangians()
        roll_out = RollOut(cmp_state.loss, cmp_state, primal_store, dual_store)
        if not self.guard.admits(cmp_state, primal_store, dual_store, communicate=communicate):
            return roll_out
        primal_store.backward()
        dual_store.backward()
        self.primal_extrapolation_step()
        self.dual_extrapolation_step()

        self.zero_grad()
        extrapolated_state = self.evaluate(compute_cmp_state_kwargs, communicate=communicate)
        extrapolated_primal, extrapolated_dual = extrapolated_state.compute_lagrangians()
        try:
            admitted = self.guard.admits(
                extrapolated_state, extrapolated_primal, extrapolated_dual, communicate=communicate
            )
        except NonFiniteError:  # "raise": leave (θ_t, λ_t) as they were, as the error says
            self.cancel_extrapolation()
            raise
        if not admitted:
            self.cancel_extrapolation()
            return roll_out
        extrapolated_primal.backward()
        extrapolated_dual.backward()
        self.primal_step()
        self.dual_step()
        self.update_penalty_coefficients(extrapolated_state.observed_constraints)
        return roll_out
