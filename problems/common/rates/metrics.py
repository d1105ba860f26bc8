r"""True (0-1) rates per group and the fairness metrics reported in ``metrics.json``.

Definitions (the same as fairlearn's, for the groups of one partition):

* ``dp_difference`` :math:`= \max_g \mathrm{PPR}_g - \min_g \mathrm{PPR}_g` (``demographic_parity_difference``),
* ``tpr_difference``, ``fpr_difference`` likewise with the true/false positive rates,
* ``eo_difference`` :math:`= \max(\text{tpr\_difference}, \text{fpr\_difference})` (``equalized_odds_difference``).

Next to them, the quantity that ``--epsilon`` bounds (fairlearn's ``difference_bound`` semantics):
``dp_max_deviation`` :math:`= \max_g |\mathrm{PPR}_g - \mathrm{PPR}|` against the overall rate, and
``tpr_/fpr_/eo_max_deviation`` likewise. In marginal group mode (several partitions), a difference is
the largest over the partitions (attributes).

Predictions may be hard (0/1) or probabilities of predicting positive (a randomized classifier such as a
mixture of models): every rate is then the *expected* rate, linear in the probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from problems.common.rates.kinds import RateKind, denominator_mask

__all__ = ["PARITY_KINDS", "group_rates", "overall_rate", "rate_report", "rate_weights"]

PARITY_KINDS = {
    "dp": RateKind.POSITIVE_PREDICTION,
    "tpr": RateKind.TRUE_POSITIVE,
    "fpr": RateKind.FALSE_POSITIVE,
}
"""Metric prefix -> the rate it compares across groups."""


def _indicator(kind: RateKind, positive_probability: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Expected per-example indicator of the rate ``kind`` given P(predict positive)."""
    if kind == RateKind.FALSE_NEGATIVE:
        return 1.0 - positive_probability
    if kind == RateKind.ERROR:
        return torch.where(labels > 0.5, 1.0 - positive_probability, positive_probability)
    return positive_probability


def overall_rate(kind: RateKind, positive_probability: torch.Tensor, labels: torch.Tensor) -> float:
    """The rate over everyone (NaN when its denominator is empty)."""
    kind = RateKind(kind)
    denominator = denominator_mask(kind, labels)
    count = int(denominator.sum())
    if count == 0:
        return float("nan")
    return float(_indicator(kind, positive_probability.double(), labels)[denominator].sum() / count)


def rate_weights(kind: RateKind, labels: torch.Tensor, membership: torch.Tensor) -> torch.Tensor:
    r"""Averaging weights :math:`A` of shape ``(G, n)`` float64: :math:`(A I)_g` is the rate in group :math:`g`.

    With :math:`D` the rate's denominator, :math:`G_g` the members of group :math:`g` and :math:`I` the
    per-example indicator (the prediction itself for positive-prediction, true- and false-positive rates):

    .. math::
        A_{gi} = \frac{\mathbb 1[i \in G_g \cap D]}{|G_g \cap D|},

    a row of NaN when :math:`G_g \cap D` is empty. They depend on the labels and groups only, so a split's
    weights can be built once and applied to every candidate.
    """
    inside = (membership & denominator_mask(RateKind(kind), labels)).double()
    counts = inside.sum(dim=1, keepdim=True)
    return torch.where(counts > 0, inside / counts.clamp(min=1), torch.full_like(inside, float("nan")))


def group_rates(
    kind: RateKind, positive_probability: torch.Tensor, labels: torch.Tensor, membership: torch.Tensor
) -> torch.Tensor:
    """The rate inside each group, shape ``(G,)`` float64 (NaN for a group empty in the denominator)."""
    kind = RateKind(kind)
    weights = rate_weights(kind, labels, membership)
    return weights @ _indicator(kind, positive_probability.double(), labels)


def _max_minus_min(rates: torch.Tensor, partitions: Sequence[Sequence[int]]) -> float:
    gaps = []
    for partition in partitions:
        values = rates[list(partition)]
        values = values[~torch.isnan(values)]
        if values.numel():
            gaps.append(float(values.max() - values.min()))
    return max(gaps) if gaps else float("nan")


def rate_report(
    positive_probability: torch.Tensor,
    labels: torch.Tensor,
    membership: torch.Tensor,
    partitions: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Accuracy, rates and parity metrics of a (possibly randomized) classifier on one split.

    Args:
        positive_probability: ``(n,)`` probability of predicting positive (0/1 for a deterministic model).
        labels: ``(n,)`` labels in {0, 1}.
        membership: ``(G, n)`` boolean group memberships.
        partitions: Lists of group indices to compare (default: all groups together).

    Returns:
        ``accuracy``, ``error_rate``, ``positive_prediction_rate``, ``true_positive_rate``,
        ``false_positive_rate``, ``false_negative_rate`` (overall), ``dp_/tpr_/fpr_/eo_difference``,
        ``dp_/tpr_/fpr_/eo_max_deviation`` and ``group_rates`` (``{"dp": [...], "tpr": [...], "fpr": [...]}``).
    """
    if partitions is None:
        partitions = [list(range(membership.shape[0]))]
    probability = positive_probability.detach().double().reshape(-1)
    report: dict[str, Any] = {
        "error_rate": overall_rate(RateKind.ERROR, probability, labels),
        "positive_prediction_rate": overall_rate(RateKind.POSITIVE_PREDICTION, probability, labels),
        "true_positive_rate": overall_rate(RateKind.TRUE_POSITIVE, probability, labels),
        "false_positive_rate": overall_rate(RateKind.FALSE_POSITIVE, probability, labels),
        "false_negative_rate": overall_rate(RateKind.FALSE_NEGATIVE, probability, labels),
    }
    report["accuracy"] = 1.0 - report["error_rate"]
    per_group: dict[str, list[float]] = {}
    for prefix, kind in PARITY_KINDS.items():
        rates = group_rates(kind, probability, labels, membership)
        overall = overall_rate(kind, probability, labels)
        deviations = (rates - overall).abs()
        deviations = deviations[~torch.isnan(deviations)]
        report[f"{prefix}_difference"] = _max_minus_min(rates, partitions)
        report[f"{prefix}_max_deviation"] = float(deviations.max()) if deviations.numel() else float("nan")
        per_group[prefix] = [float(value) for value in rates]
    report["eo_difference"] = max(report["tpr_difference"], report["fpr_difference"])
    report["eo_max_deviation"] = max(report["tpr_max_deviation"], report["fpr_max_deviation"])
    report["group_rates"] = per_group
    return report
