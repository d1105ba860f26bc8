r"""Neyman-Pearson classification: miss as few positives as possible while false alarms stay under :math:`\alpha`.

.. math::
    \min_\theta \ \mathrm{FNR}(\theta) \quad \text{s.t.} \quad \mathrm{FPR}(\theta) \le \alpha .

The objective is a convex surrogate of the false-negative rate, the logistic loss on the positives
:math:`\frac{1}{n_+} \sum_{i: y_i = 1} \log(1 + e^{-s_i})`; the constraint is a
:class:`~problems.common.rates.constraints.RateBound` on the false-positive rate (proxy rate for the
model, true rate for the multiplier). Like the fairness problem, :meth:`NeymanPearson.compute_cmp_state`
accepts group memberships (ignored), so both run in the same task
(:class:`~problems.common.rates.candidates.CandidateRun`).
"""

from __future__ import annotations

import torch
from torch import nn

import cooper_like as cooper
from problems.common.rates.constraints import RateBound
from problems.common.rates.kinds import RateKind
from problems.common.rates.proxies import Proxy

__all__ = ["NeymanPearson"]


class NeymanPearson(cooper.ConstrainedMinimizationProblem):
    """Logistic loss on the positives subject to FPR <= ``alpha``.

    Args:
        model: Maps features ``(n, d)`` to scores ``(n,)`` (positive prediction iff > 0).
        alpha: Bound on the false-positive rate, in (0, 1).
        proxy: Proxy of the 0-1 indicator for the model (``"sigmoid"`` or ``"hinge"``).
        temperature: Temperature of the proxy.

    Attributes:
        bound: The :class:`RateBound` (counts batches without negatives in ``skipped``).
        skipped_objective: Batches without any positive (the objective is then 0).
    """

    def __init__(
        self, model: nn.Module, alpha: float, proxy: Proxy = "sigmoid", temperature: float = 1.0
    ) -> None:
        super().__init__()
        self.model = model
        self.bound = RateBound(RateKind.FALSE_POSITIVE, alpha, proxy, temperature)
        self.false_positive_rate = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY, multiplier=self.bound.make_multiplier()
        )
        self.skipped_objective = 0

    @property
    def skipped(self) -> int:
        """Batches in which the FPR constraint was skipped (no negative example)."""
        return self.bound.skipped

    def compute_cmp_state(
        self, inputs: torch.Tensor, labels: torch.Tensor, membership: torch.Tensor | None = None
    ) -> cooper.CMPState:
        """Surrogate FNR and the FPR constraint on a batch (``membership`` is accepted and ignored)."""
        scores = self.model(inputs).reshape(-1)
        positive = labels > 0.5
        if bool(positive.any()):
            loss = nn.functional.softplus(-scores[positive]).mean()
        else:
            self.skipped_objective += 1
            loss = scores.sum() * 0.0
        state = self.bound.measure(scores, labels)
        observed = {} if state is None else {self.false_positive_rate: state}
        return cooper.CMPState(loss=loss, observed_constraints=observed, misc={"scores": scores.detach()})
