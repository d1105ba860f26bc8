r"""Multiobjective proximal gradient (Tanabe, Fukuda & Yamashita, 2019) for (loss, l1 norm).

The two objectives are :math:`F_1(\theta) = f(\theta)` (smooth) and :math:`F_2(\theta) = \|\theta_P\|_1`
(the penalised coordinates :math:`P`). The MOPG direction solves

.. math::
    d^\star = \operatorname*{arg\,min}_d \ \max\big(\langle \nabla f, d\rangle,\
        \|\theta_P + d_P\|_1 - \|\theta_P\|_1\big) + \tfrac{1}{2t}\|d\|^2 .

Its dual is a concave maximisation over one weight :math:`w \in [0, 1]`; for fixed :math:`w` the
minimiser is a weighted-sum proximal gradient step,
:math:`\theta + d(w) = S_{t(1-w)}(\theta - t w \nabla f)` on :math:`P` (and :math:`\theta - t w\nabla f`
elsewhere), and the dual derivative is :math:`a_1(w) - a_2(w)`, the difference of the two linearised
decreases, so :math:`w^\star` is found by bisection without evaluating :math:`f` again. The optimal
value :math:`\vartheta = \max(a_1, a_2) + \|d\|^2/(2t) \le 0` is zero exactly at Pareto-critical points.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from cooper_like.optim.proximal import soft_threshold

__all__ = ["MOPGDirection", "mopg_direction", "weighted_prox_point"]


class MOPGDirection(NamedTuple):
    """The MOPG direction and its by-products."""

    direction: torch.Tensor
    weight: float
    loss_decrease: float
    l1_decrease: float
    criticality: float


def weighted_prox_point(
    theta: torch.Tensor, grad: torch.Tensor, penalised: torch.Tensor, t: float, w: float
) -> torch.Tensor:
    r""":math:`S_{t(1-w)}(\theta - t w \nabla f)` on the penalised coordinates, :math:`\theta - t w \nabla f` elsewhere."""
    moved = theta - (t * w) * grad
    return torch.where(penalised, soft_threshold(moved, t * (1.0 - w)), moved)


def _decreases(
    theta: torch.Tensor, grad: torch.Tensor, penalised: torch.Tensor, t: float, w: float
) -> tuple[torch.Tensor, float, float]:
    point = weighted_prox_point(theta, grad, penalised, t, w)
    direction = point - theta
    a1 = float(grad @ direction)
    a2 = float(point[penalised].abs().sum() - theta[penalised].abs().sum())
    return direction, a1, a2


def mopg_direction(
    theta: torch.Tensor, grad: torch.Tensor, penalised: torch.Tensor, t: float, iterations: int = 40
) -> MOPGDirection:
    r"""Solve the MOPG subproblem at ``theta`` (flat) with step ``t``; see the module docstring.

    Args:
        theta: Flat parameter vector.
        grad: :math:`\nabla f(\theta)`, same shape.
        penalised: Boolean mask of the coordinates in the l1 norm.
        t: Proximal step size :math:`t > 0`.
        iterations: Bisection steps on :math:`w`.
    """
    if t <= 0:
        raise ValueError(f"t must be > 0, got {t}")
    low, high = 0.0, 1.0
    direction, a1, a2 = _decreases(theta, grad, penalised, t, 0.0)
    w = 0.0
    if a1 - a2 > 0:
        direction, a1, a2 = _decreases(theta, grad, penalised, t, 1.0)
        w = 1.0
        if a1 - a2 < 0:
            for _ in range(iterations):
                w = 0.5 * (low + high)
                direction, a1, a2 = _decreases(theta, grad, penalised, t, w)
                if a1 - a2 > 0:
                    low = w
                else:
                    high = w
    criticality = max(a1, a2) + float(direction @ direction) / (2 * t)
    return MOPGDirection(direction, w, a1, a2, criticality)
