r"""A multiplicative multiplier updater: exponentiated (mirror) ascent on :math:`\lambda \ge 0`.

Gradient ascent moves a multiplier by :math:`\eta g` whatever its size. When the right size of
:math:`\lambda` spans orders of magnitude -- the soft-threshold level that gives 5% of non-zero weights
is several times the one that gives 20% -- one step size is too slow for one target and too fast for
another. Mirror ascent with the entropic mirror map moves :math:`\log \lambda` instead,

.. math::
    \lambda_{t+1} = \max(\lambda_t, \lambda_{\min})\, \exp\big(\operatorname{clip}(\eta g_t, -m, m)\big),

so a step changes :math:`\lambda` by a *factor*, the same for every scale. Paired with a violation
measured as a log-ratio (:math:`g = \log(\hat\rho / \rho)`, see
:class:`~problems.l1.problem.DensityConstrained` with ``scale="log"``) the update is
:math:`\lambda \leftarrow \lambda\,(\hat\rho/\rho)^\eta`: its gain on a power-law response
:math:`\hat\rho \propto \lambda^{-a}` does not depend on the target.

The step limit :math:`m` bounds that factor to :math:`e^{\pm m}` per step. A count responds to a new
threshold only once the shrinking weights reach zero; until then an unbounded factor keeps compounding
(after a dense warm-up at a 5% target, :math:`(1/0.05)^{0.3} \approx 2.5\times` per step) and the
threshold overshoots until the whole network is zero. Near the target the log-ratio is a few percent and
the limit is inactive.

The floor :math:`\lambda_{\min} > 0` is where a multiplier at zero (before its first step) starts from: a
product never leaves zero. A multiplier without a gradient (not observed, or a warm-up where its
constraint does not contribute to the dual update) is left as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.optimizer import ParamsT

__all__ = ["ExponentiatedAscent", "exponentiated_ascent"]


def exponentiated_ascent(
    value: torch.Tensor, grad: torch.Tensor, lr: float, floor: float, max_step: float = math.inf
) -> torch.Tensor:
    r"""One step of mirror ascent on a non-negative multiplier, entropic mirror map, bounded factor.

    .. math::
        \lambda^+ = \max(\lambda, \lambda_{\min}) \, \exp\big(\operatorname{clip}(\eta\, g, -m, m)\big)

    Args:
        value: :math:`\lambda \ge 0`.
        grad: :math:`g`, the gradient of the dual Lagrangian (the violation), same shape.
        lr: :math:`\eta` (a negative value descends).
        floor: :math:`\lambda_{\min} > 0`.
        max_step: :math:`m > 0`, the largest change of :math:`\log \lambda` in one step.

    Returns:
        A new tensor :math:`\lambda^+ > 0`.
    """
    return value.clamp_min(floor) * torch.exp((grad * lr).clamp(-max_step, max_step))


class ExponentiatedAscent(torch.optim.Optimizer):
    r"""Multiplier updater :math:`\lambda \leftarrow \max(\lambda, \lambda_{\min})\, e^{\operatorname{clip}(\eta g, -m, m)}`.

    The update is :func:`exponentiated_ascent`.

    A ``torch.optim.Optimizer`` like the library's other dual updaters (``maximize=True`` ascends, as
    the constrained optimizers require), stateless apart from its hyper-parameters, so ``state_dict``
    and LR schedulers work as for SGD.

    Args:
        params: The multipliers (dense: a sparse gradient is refused).
        lr: :math:`\eta > 0`, the step in :math:`\log \lambda` per unit of violation.
        floor: :math:`\lambda_{\min} > 0`, where a multiplier at zero starts from.
        max_step: :math:`m > 0`, the largest change of :math:`\log\lambda` per step (default: none).
        maximize: Ascend (default); ``False`` descends.

    Raises:
        ValueError: ``lr``, ``floor`` or ``max_step`` is not a positive number (``lr`` and ``floor``
            finite).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        floor: float = 1e-6,
        max_step: float = math.inf,
        *,
        maximize: bool = True,
    ) -> None:
        for name, value in (("lr", lr), ("floor", floor)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"ExponentiatedAscent: {name} must be a finite number > 0, got {value!r}")
        if not (isinstance(max_step, (int, float)) and max_step > 0):  # NaN fails the comparison
            raise ValueError(
                f"ExponentiatedAscent: max_step must be a number > 0 (inf: no limit), got {max_step!r}"
            )
        defaults = {
            "lr": float(lr),
            "floor": float(floor),
            "max_step": float(max_step),
            "maximize": bool(maximize),
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Update every multiplier that has a gradient; returns the closure's value (if any)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            signed_lr = group["lr"] if group["maximize"] else -group["lr"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise ValueError(
                        f"ExponentiatedAscent: sparse gradients are not supported (a parameter of shape "
                        f"{tuple(param.shape)} has one); use a DenseMultiplier"
                    )
                param.copy_(
                    exponentiated_ascent(param, param.grad, signed_lr, group["floor"], group["max_step"])
                )
        return loss
