r"""Differentiable proxies of 0-1 indicators, and signed combinations of rates in both forms.

A model predicts positive when its score is :math:`s > 0`. Every rate in this package is a (weighted)
mean of a per-example indicator :math:`I_i` that is either "predicted positive",
:math:`\mathbb 1[s_i > 0]` (sign :math:`+1`), or "predicted negative", :math:`\mathbb 1[s_i \le 0]` (sign
:math:`-1`); see :mod:`problems.common.rates.kinds`. With the *signed score* :math:`z_i = \text{sign}_i\, s_i`,
:math:`I_i` is :math:`\mathbb 1[z_i > 0]` up to the tie :math:`s_i = 0`, which the true indicator
resolves exactly like the prediction does. The true indicator has a zero gradient almost everywhere, so
the model is driven by a proxy :math:`\phi(z)`:

* ``"sigmoid"``: :math:`\phi(z) = \sigma(z / \tau)`, a smooth approximation; :math:`\phi(-z) = 1 - \phi(z)`.
* ``"hinge"``: :math:`\phi(z) = \max(0, 1 + z / \tau)`, a convex upper bound of :math:`\mathbb 1[z > 0]`
  (the surrogate used by TensorFlow Constrained Optimization).

A constraint such as :math:`r_g - r \le \epsilon` is a *signed* combination
:math:`\sum_i w_i \mathbb 1[z_i > 0]` with weights of both signs. :func:`signed_indicator_sums` turns a
negative weight into a positive weight on the complementary indicator,
:math:`w\,\mathbb 1[z > 0] = |w|\,\mathbb 1[-z \ge 0] - |w|`, before applying the proxy, so with the
hinge the proxy of the whole combination stays an upper bound of its true value (a proxy-feasible
model is truly feasible), and with the sigmoid it is the same smooth approximation either way.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["Proxy", "indicator_proxy", "signed_indicator_sums", "true_indicator"]

Proxy = Literal["sigmoid", "hinge"]


def true_indicator(scores: torch.Tensor, signs: torch.Tensor | None = None) -> torch.Tensor:
    r"""The 0-1 indicator :math:`\mathbb 1[s > 0]` where ``signs > 0``, else :math:`\mathbb 1[s \le 0]` (float, no gradient).

    Args:
        scores: The model's scores :math:`s` (positive prediction iff :math:`s > 0`).
        signs: :math:`\pm 1` per entry (broadcastable to ``scores``); ``None`` means :math:`+1` everywhere.
    """
    predicted_positive = scores.detach() > 0
    if signs is not None:
        predicted_positive = predicted_positive ^ (signs < 0)
    return predicted_positive.to(scores.dtype)


def indicator_proxy(
    signed_scores: torch.Tensor, proxy: Proxy = "sigmoid", temperature: float = 1.0
) -> torch.Tensor:
    r"""Differentiable proxy :math:`\phi(z)` of :math:`\mathbb 1[z > 0]`, elementwise.

    .. math::
        \phi_{\text{sigmoid}}(z) = \sigma(z / \tau), \qquad \phi_{\text{hinge}}(z) = \max(0, 1 + z / \tau).

    Args:
        signed_scores: The signed scores :math:`z`, any shape.
        proxy: ``"sigmoid"`` or ``"hinge"``.
        temperature: :math:`\tau > 0`; smaller is closer to the step function.

    Raises:
        ValueError: Unknown ``proxy`` or non-positive ``temperature``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    scaled = signed_scores if temperature == 1.0 else signed_scores / temperature
    if proxy == "sigmoid":
        return torch.sigmoid(scaled)
    if proxy == "hinge":
        return torch.relu(1.0 + scaled)
    raise ValueError(f"proxy must be 'sigmoid' or 'hinge', got {proxy!r}")


def signed_indicator_sums(
    weights: torch.Tensor,
    scores: torch.Tensor,
    signs: torch.Tensor | None,
    proxy: Proxy = "sigmoid",
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Proxy and true values of :math:`c_k = \sum_i W_{ki}\, I_i` for every row :math:`k`.

    :math:`I_i` is the indicator of example :math:`i` (see :func:`true_indicator`) and
    :math:`z_i = \text{sign}_i\, s_i` its signed score.

    With :math:`W^+ = \max(W, 0)` and :math:`W^- = \max(-W, 0)`:

    .. math::
        \text{true}_k &= \sum_i W_{ki}\, I_i, \\
        \text{proxy}_k &= \sum_i W^+_{ki}\, \phi(z_i) + \sum_i W^-_{ki}\, \phi(-z_i) - \sum_i W^-_{ki}.

    Both are exact rewritings of the same sum, so for the hinge the proxy bounds the true value from
    above, row by row.

    Args:
        weights: :math:`W`, shape ``(k, n)`` (or ``(n,)`` for a single combination).
        scores: :math:`s`, shape ``(n,)``; may require grad.
        signs: :math:`\pm 1`, shape ``(n,)``: which indicator each example contributes (``None``: all
            :math:`+1`, i.e. every example contributes "predicted positive").
        proxy: ``"sigmoid"`` or ``"hinge"`` (see :func:`indicator_proxy`).
        temperature: Temperature of the proxy.

    Returns:
        ``(proxy_values, true_values)`` of shape ``(k,)`` (or scalars); the true values are detached.
    """
    if scores.dim() != 1 or (signs is not None and signs.shape != scores.shape):
        shape = None if signs is None else tuple(signs.shape)
        raise ValueError(
            f"scores and signs must be 1-D of the same shape, got {tuple(scores.shape)} and {shape}"
        )
    if weights.shape[-1] != scores.shape[0]:
        raise ValueError(f"weights have {weights.shape[-1]} columns but there are {scores.shape[0]} scores")
    weights = weights.to(scores.dtype)
    signed_scores = scores if signs is None else scores * signs.to(scores.dtype)
    true_values = weights @ true_indicator(scores, signs)
    if proxy == "sigmoid":  # phi(-z) = 1 - phi(z): the rewriting is an identity, skip half the work
        proxy_values = weights @ indicator_proxy(signed_scores, proxy, temperature)
    else:
        positive, negative = weights.clamp(min=0), (-weights).clamp(min=0)
        proxy_values = (
            positive @ indicator_proxy(signed_scores, proxy, temperature)
            + negative @ indicator_proxy(-signed_scores, proxy, temperature)
            - negative.sum(-1)
        )
    return proxy_values, true_values.detach()
