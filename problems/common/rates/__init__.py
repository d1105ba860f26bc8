"""The rate toolkit: per-group rates of a scoring model, as proxy rates for the model and true rates for the multipliers.

Shared by :mod:`problems.fairness` and :mod:`problems.rates` (Neyman-Pearson):

- ``kinds``: the rates (positive prediction, true/false positive, false negative, error).
- ``proxies``: sigmoid / hinge proxies of 0-1 indicators and signed combinations of rates.
- ``groups``: groups from one or several sensitive attributes (intersectional or marginal).
- ``constraints``: :class:`RateParity` (``|r_g - r| <= epsilon``) and :class:`RateBound` (``r <= b``) as
  :class:`~cooper_like.ConstraintState` builders, skipping groups empty in a batch.
- ``metrics``: true rates per group, ``dp/tpr/fpr/eo`` differences and max deviations.
- ``selection``: the returned model: best feasible candidate, or the m+1 mixture (``linprog``).
- ``data`` / ``adult``: grouped data sets, the bundled UCI Adult with fairlearn's preprocessing.
- ``models``: scoring models (logistic, MLP with a piecewise-linear encoding of numerical inputs).
- ``config``: :class:`~problems.common.rates.config.RateTrainConfig`, the fields both trainers share.
- ``candidates``: the task of the shared loop that keeps candidate iterates, the optimizers, the
  returned model's predictions.
- ``runs``: a trainer's setup, metrics of the returned model, ``metrics.json`` / ``model.pt`` and plots.
"""

from problems.common.rates.constraints import ParityMeasurement, RateBound, RateParity, parity_weights
from problems.common.rates.groups import GroupError, GroupSpec, check_groups_nonempty
from problems.common.rates.kinds import RateKind, denominator_mask, indicator_signs
from problems.common.rates.metrics import group_rates, overall_rate, rate_report
from problems.common.rates.proxies import indicator_proxy, signed_indicator_sums, true_indicator
from problems.common.rates.selection import Candidate, Choice, best_candidate, best_mixture, choose

__all__ = [
    "Candidate",
    "Choice",
    "GroupError",
    "GroupSpec",
    "ParityMeasurement",
    "RateBound",
    "RateKind",
    "RateParity",
    "best_candidate",
    "best_mixture",
    "check_groups_nonempty",
    "choose",
    "denominator_mask",
    "group_rates",
    "indicator_proxy",
    "indicator_signs",
    "overall_rate",
    "parity_weights",
    "rate_report",
    "signed_indicator_sums",
    "true_indicator",
]
