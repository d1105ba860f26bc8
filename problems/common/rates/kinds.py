r"""The rates a constraint can be stated on, each as "a mean of an indicator over a sub-population".

For a classifier that predicts positive when its score is :math:`s > 0`, with labels :math:`y \in \{0, 1\}`:

============================  ======================================  =================  ===========
kind                          rate                                    denominator        indicator
============================  ======================================  =================  ===========
``positive-prediction``       :math:`P(\hat y = 1)`                   every example      :math:`s > 0`
``true-positive``             :math:`P(\hat y = 1 \mid y = 1)`        :math:`y = 1`      :math:`s > 0`
``false-positive``            :math:`P(\hat y = 1 \mid y = 0)`        :math:`y = 0`      :math:`s > 0`
``false-negative``            :math:`P(\hat y = 0 \mid y = 1)`        :math:`y = 1`      :math:`s \le 0`
``error``                     :math:`P(\hat y \ne y)`                 every example      :math:`s > 0` if
                                                                                         :math:`y = 0`, else
                                                                                         :math:`s \le 0`
============================  ======================================  =================  ===========

:func:`denominator_mask` gives the sub-population and :func:`indicator_signs` the sign per example
(:math:`+1` for :math:`s > 0`, :math:`-1` for :math:`s \le 0`) used by
:func:`problems.common.rates.proxies.signed_indicator_sums`.
"""

from __future__ import annotations

import enum

import torch

__all__ = ["RateKind", "denominator_mask", "indicator_signs"]


class RateKind(str, enum.Enum):
    """A rate of a binary classifier (see the module docstring for the definitions)."""

    POSITIVE_PREDICTION = "positive-prediction"
    TRUE_POSITIVE = "true-positive"
    FALSE_POSITIVE = "false-positive"
    FALSE_NEGATIVE = "false-negative"
    ERROR = "error"


def _labels_as_bool(labels: torch.Tensor) -> torch.Tensor:
    if labels.dtype == torch.bool:
        return labels
    return labels > 0.5


def denominator_mask(kind: RateKind, labels: torch.Tensor) -> torch.Tensor:
    """Which examples the rate ``kind`` is a mean over (boolean, shape of ``labels``)."""
    positive = _labels_as_bool(labels)
    kind = RateKind(kind)
    if kind in (RateKind.POSITIVE_PREDICTION, RateKind.ERROR):
        return torch.ones_like(positive)
    if kind in (RateKind.TRUE_POSITIVE, RateKind.FALSE_NEGATIVE):
        return positive
    return ~positive


def indicator_signs(kind: RateKind, labels: torch.Tensor) -> torch.Tensor:
    r"""Per example, :math:`+1` if the indicator is :math:`\mathbb 1[s > 0]`, :math:`-1` if it is :math:`\mathbb 1[s \le 0]`."""
    positive = _labels_as_bool(labels)
    kind = RateKind(kind)
    ones = torch.ones(positive.shape, dtype=torch.float32, device=positive.device)
    if kind == RateKind.FALSE_NEGATIVE:
        return -ones
    if kind == RateKind.ERROR:
        return torch.where(positive, -ones, ones)
    return ones
