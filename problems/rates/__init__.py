"""Rate constraints: per-group rates of a scoring model, as proxy rates for the model and true rates for the multipliers.

- ``kinds``: the rates (positive prediction, true/false positive, false negative, error).
- ``proxies``: sigmoid / hinge proxies of 0-1 indicators and signed combinations of rates.
- ``groups``: groups from one or several sensitive attributes (intersectional or marginal).
- ``constraints``: :class:`RateParity` (``|r_g - r| <= epsilon``) and :class:`RateBound` (``r <= b``) as
  :class:`~cooper_like.ConstraintState` builders, skipping groups empty in a batch.
- ``metrics``: true rates per group, ``dp/tpr/fpr/eo`` differences and max deviations.
- ``selection``: the returned model: best feasible candidate, or the m+1 mixture (``linprog``).
- ``data`` / ``adult``: grouped data sets, the bundled UCI Adult with fairlearn's preprocessing.
- ``neyman_pearson`` / ``train_np``: minimise the false-negative rate s.t. FPR <= alpha
  (``python -m problems.rates neyman-pearson``).
- ``training``, ``models``, ``plots``, ``config``: the loop, models and outputs shared with
  :mod:`problems.fairness`.
"""

from problems.rates.constraints import ParityMeasurement, RateBound, RateParity, parity_weights
from problems.rates.groups import GroupError, GroupSpec, check_groups_nonempty
from problems.rates.kinds import RateKind, denominator_mask, indicator_signs
from problems.rates.metrics import group_rates, overall_rate, rate_report
from problems.rates.neyman_pearson import NeymanPearson
from problems.rates.proxies import indicator_proxy, signed_indicator_sums, true_indicator
from problems.rates.selection import Candidate, Choice, best_candidate, best_mixture, choose

__all__ = [
    "Candidate",
    "Choice",
    "GroupError",
    "GroupSpec",
    "NeymanPearson",
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
