r"""Fair classification as a constrained problem: cross-entropy subject to rate parity between groups.

.. math::
    \min_\theta \ \frac1n \sum_i \ell_{\text{BCE}}(s_\theta(x_i), y_i)
    \quad \text{s.t.} \quad |r_g(\theta) - r(\theta)| \le \epsilon \quad \text{for every group } g
    \text{ and every rate } r \text{ of the criterion,}

with the rates of :data:`CRITERIA`: demographic parity compares positive-prediction rates, equal
opportunity true-positive rates, equalized odds true- and false-positive rates (fairlearn's
``DemographicParity``, ``TruePositiveRateParity`` and ``EqualizedOdds`` with ``difference_bound``).
Each rate is one :class:`~cooper_like.Constraint` with an
:class:`~cooper_like.multipliers.IndexedMultiplier` over its :math:`2G` rows; proxy rates drive the
model and true rates the multipliers (see :mod:`problems.common.rates.constraints`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

import cooper_like as cooper
from problems.common.rates.constraints import RateParity
from problems.common.rates.kinds import RateKind
from problems.common.rates.proxies import Proxy

__all__ = ["CRITERIA", "Criterion", "FairClassification"]

Criterion = Literal["demographic-parity", "equal-opportunity", "equalized-odds"]

CRITERIA: dict[str, dict[str, RateKind]] = {
    "demographic-parity": {"demographic_parity": RateKind.POSITIVE_PREDICTION},
    "equal-opportunity": {"tpr_parity": RateKind.TRUE_POSITIVE},
    "equalized-odds": {"tpr_parity": RateKind.TRUE_POSITIVE, "fpr_parity": RateKind.FALSE_POSITIVE},
}
"""Criterion -> {constraint name: the rate whose parity it requires}."""


class FairClassification(cooper.ConstrainedMinimizationProblem):
    """Binary cross-entropy of a scoring model subject to a fairness criterion.

    Args:
        model: Maps features ``(n, d)`` to scores ``(n,)`` or ``(n, 1)`` (positive prediction iff > 0).
        criterion: A key of :data:`CRITERIA`.
        num_groups: Number of groups (rows of the membership matrices passed to
            :meth:`compute_cmp_state`).
        epsilon: Bound on every :math:`|r_g - r|`; must be > 0.
        proxy: Proxy of the 0-1 indicator for the model (``"sigmoid"`` or ``"hinge"``).
        temperature: Temperature of the proxy.

    Attributes:
        parities: Constraint name -> its :class:`RateParity` (which counts skipped groups).
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: Criterion,
        num_groups: int,
        epsilon: float,
        proxy: Proxy = "sigmoid",
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {sorted(CRITERIA)}, got {criterion!r}")
        self.model = model
        self.criterion = criterion
        self.parities = {
            name: RateParity(kind, num_groups, epsilon, proxy, temperature)
            for name, kind in CRITERIA[criterion].items()
        }
        for name, parity in self.parities.items():
            setattr(
                self,
                name,
                cooper.Constraint(cooper.ConstraintType.INEQUALITY, multiplier=parity.make_multiplier()),
            )

    @property
    def skipped(self) -> int:
        """Total (batch, group, rate) constraints skipped because a group was empty in a batch."""
        return sum(parity.skipped for parity in self.parities.values())

    def scores(self, inputs: torch.Tensor) -> torch.Tensor:
        """Model scores as a 1-D tensor."""
        return self.model(inputs).reshape(-1)

    def compute_cmp_state(
        self, inputs: torch.Tensor, labels: torch.Tensor, membership: torch.Tensor
    ) -> cooper.CMPState:
        """Loss and the observed rate-parity constraints on a batch.

        Args:
            inputs: ``(n, d)`` features.
            labels: ``(n,)`` labels in {0, 1} (float).
            membership: ``(G, n)`` boolean group memberships.

        ``misc`` holds the detached ``scores`` and, per constraint, the true gaps :math:`r_g - r`.
        """
        scores = self.scores(inputs)
        loss = nn.functional.binary_cross_entropy_with_logits(scores, labels.to(scores.dtype))
        observed: dict[cooper.Constraint, cooper.ConstraintState] = {}
        gaps: dict[str, torch.Tensor] = {}
        for name, parity in self.parities.items():
            measurement = parity.measure(scores, labels, membership)
            gaps[name] = measurement.true_gaps
            if measurement.state is not None:
                observed[getattr(self, name)] = measurement.state
        return cooper.CMPState(
            loss=loss, observed_constraints=observed, misc={"scores": scores.detach(), "true_gaps": gaps}
        )
