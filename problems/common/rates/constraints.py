r"""Rate constraints as :class:`~cooper_like.ConstraintState`\ s: proxy rates move the model, true rates the multipliers.

Two constraint families, both measured on a (mini-)batch of scores:

* :class:`RateParity`: for every group :math:`g`, :math:`|r_g - r| \le \epsilon`, where :math:`r_g` is the
  rate inside the group and :math:`r` the rate over everyone (fairlearn's ``difference_bound``
  semantics). Two inequality rows per group, held by an
  :class:`~cooper_like.multipliers.IndexedMultiplier` with ids :math:`2g` (for
  :math:`r_g - r - \epsilon \le 0`) and :math:`2g + 1` (for :math:`r - r_g - \epsilon \le 0`).
* :class:`RateBound`: :math:`r \le b` over everyone (e.g. a false-positive rate), one row.

In each state, ``violation`` is the proxy value (differentiable, drives the primal update) and
``strict_violation`` the true 0-1 value (drives the multipliers): the proxy-Lagrangian of Cotter et al.
(2019). Feeding the true rate to the multipliers makes the equilibrium independent of the proxy's
temperature.

**Empty groups.** A group without any member in the rate's denominator in a batch (say, no woman with
label 1 for a true-positive rate) has an undefined rate there: its two rows are left out of the batch's
observation (the multiplier only sees observed ids) and counted in :attr:`RateParity.skipped`. A group
empty in a whole split is an error raised before training
(:func:`~problems.common.rates.groups.check_groups_nonempty`).

Example (inside a :class:`~cooper_like.ConstrainedMinimizationProblem`)::

    # __init__
    self.parity = RateParity(RateKind.TRUE_POSITIVE, num_groups=2, epsilon=0.01)
    self.tpr = cooper.Constraint(cooper.ConstraintType.INEQUALITY, multiplier=self.parity.make_multiplier())

    # compute_cmp_state(inputs, labels, membership)
    scores = self.model(inputs).reshape(-1)
    measurement = self.parity.measure(scores, labels, membership)  # membership: (2, n) bool
    observed = {} if measurement.state is None else {self.tpr: measurement.state}
    loss = nn.functional.binary_cross_entropy_with_logits(scores, labels)
    return cooper.CMPState(loss=loss, observed_constraints=observed)

Note on :math:`\epsilon`: with two groups of shares :math:`p` and :math:`1 - p`,
:math:`|r_g - r| = (1 - p_g)\,|r_1 - r_2|`, so the per-group bound lets the max-minus-min gap reach
:math:`\epsilon / \min_g(1 - p_g)` (about :math:`1.5\epsilon` for shares 1/3 and 2/3).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

import cooper_like as cooper
from problems.common.rates.kinds import RateKind, denominator_mask, indicator_signs
from problems.common.rates.proxies import Proxy, signed_indicator_sums

__all__ = ["ParityMeasurement", "RateBound", "RateParity", "parity_weights"]


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def parity_weights(
    kind: RateKind, labels: torch.Tensor, membership: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Weights :math:`W` with :math:`(W I)_g = r_g - r`, and which groups are observed.

    With :math:`D` the rate's denominator (e.g. the examples with :math:`y = 1` for a TPR) and
    :math:`G_g` the members of group :math:`g`:

    .. math::
        W_{gi} = \frac{\mathbb 1[i \in G_g \cap D]}{|G_g \cap D|} - \frac{\mathbb 1[i \in D]}{|D|}.

    Rows of groups with :math:`|G_g \cap D| = 0` are zero and marked unobserved.

    Args:
        kind: The rate.
        labels: ``(n,)`` labels in {0, 1}.
        membership: ``(G, n)`` boolean memberships.

    Returns:
        ``(W, observed)`` of shapes ``(G, n)`` (float32) and ``(G,)`` (bool).
    """
    denominator = denominator_mask(kind, labels)
    inside = membership & denominator
    group_counts = inside.sum(dim=1)
    total = denominator.sum()
    observed = (group_counts > 0) & (total > 0)
    weights = inside.float() / group_counts.clamp(min=1).unsqueeze(1) - denominator.float() / total.clamp(
        min=1
    )
    return weights * observed.unsqueeze(1), observed


class ParityMeasurement(NamedTuple):
    """What :meth:`RateParity.measure` returns.

    Attributes:
        state: The constraint state of the observed rows (``None`` if no group was observed).
        true_gaps: :math:`r_g - r` per group with true rates (NaN for unobserved groups), detached.
        proxy_gaps: The same with proxy rates, differentiable (NaN rows for unobserved groups).
        skipped: Number of groups left out of this batch.
    """

    state: cooper.ConstraintState | None
    true_gaps: torch.Tensor
    proxy_gaps: torch.Tensor
    skipped: int


class RateParity:
    r"""Rate parity :math:`|r_g - r| \le \epsilon` for every group (see the module docstring).

    Args:
        kind: The rate (e.g. ``RateKind.POSITIVE_PREDICTION`` for demographic parity).
        num_groups: Number of groups :math:`G`.
        epsilon: The bound :math:`\epsilon > 0`.
        proxy: ``"sigmoid"`` or ``"hinge"`` (see :mod:`problems.common.rates.proxies`).
        temperature: Temperature :math:`\tau > 0` of the proxy.

    Attributes:
        skipped: Total number of (batch, group) pairs skipped because the group was empty in the batch.
    """

    def __init__(
        self,
        kind: RateKind | str,
        num_groups: int,
        epsilon: float,
        proxy: Proxy = "sigmoid",
        temperature: float = 1.0,
    ) -> None:
        self.kind = RateKind(kind)
        if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
            raise ValueError(f"num_groups must be a positive int, got {num_groups!r}")
        self.num_groups = num_groups
        self.epsilon = _check_positive("epsilon", epsilon)
        if proxy not in ("sigmoid", "hinge"):
            raise ValueError(f"proxy must be 'sigmoid' or 'hinge', got {proxy!r}")
        self.proxy: Proxy = proxy
        self.temperature = _check_positive("temperature", temperature)
        self.skipped = 0
        self._layout_cache: tuple[Any, ...] | None = None

    @property
    def num_constraints(self) -> int:
        """Two rows per group."""
        return 2 * self.num_groups

    def make_multiplier(self) -> cooper.multipliers.IndexedMultiplier:
        """An :class:`~cooper_like.multipliers.IndexedMultiplier` with one entry per row, starting at 0."""
        return cooper.multipliers.IndexedMultiplier(num_constraints=self.num_constraints)

    def _batch_layout(
        self, labels: torch.Tensor, membership: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, int]:
        """Weights of the observed rows (both sides), their ids, the indicator signs, the observed groups'
        indices and the number of unobserved groups.

        They depend on the labels and memberships only, so they are reused while the same (unmodified)
        tensors come back, as in full-batch training.
        """
        cached = self._layout_cache
        if (
            cached is not None
            and cached[0] is labels
            and cached[1] is membership
            and cached[2] == (labels._version, membership._version)
        ):
            return cached[3]
        weights, observed = parity_weights(self.kind, labels, membership)
        both_sides = torch.stack([weights, -weights], dim=1).reshape(2 * self.num_groups, -1)
        rows = torch.stack([observed, observed], dim=1).reshape(-1).nonzero().reshape(-1)
        signs: torch.Tensor | None = indicator_signs(self.kind, labels)
        if signs is not None and bool((signs > 0).all()):
            signs = None  # every example contributes "predicted positive": skip the sign arithmetic
        observed_groups = observed.nonzero().reshape(-1)
        skipped = self.num_groups - int(observed_groups.numel())
        layout = (both_sides.index_select(0, rows), rows, signs, observed_groups, skipped)
        self._layout_cache = (labels, membership, (labels._version, membership._version), layout)
        return layout

    def measure(
        self, scores: torch.Tensor, labels: torch.Tensor, membership: torch.Tensor
    ) -> ParityMeasurement:
        """Measure the constraint on a batch.

        Args:
            scores: ``(n,)`` model scores (positive prediction iff > 0), differentiable.
            labels: ``(n,)`` labels in {0, 1}.
            membership: ``(num_groups, n)`` boolean memberships.
        """
        if membership.shape != (self.num_groups, scores.shape[0]):
            raise ValueError(
                f"membership must have shape ({self.num_groups}, {scores.shape[0]}), got {tuple(membership.shape)}"
            )
        both_sides, rows, signs, observed_groups, skipped = self._batch_layout(labels, membership)
        proxy_all, true_all = signed_indicator_sums(both_sides, scores, signs, self.proxy, self.temperature)
        self.skipped += skipped
        true_gaps = torch.full((self.num_groups,), float("nan"))
        true_gaps[observed_groups] = true_all[0::2].float()
        proxy_gaps = torch.full((self.num_groups,), float("nan"), dtype=scores.dtype)
        proxy_gaps = proxy_gaps.index_put((observed_groups,), proxy_all[0::2])
        if rows.numel() == 0:
            return ParityMeasurement(None, true_gaps, proxy_gaps, skipped)
        state = cooper.ConstraintState(
            violation=proxy_all - self.epsilon,
            constraint_features=rows,
            strict_violation=true_all - self.epsilon,
        )
        return ParityMeasurement(state, true_gaps, proxy_gaps, skipped)


class RateBound:
    r"""An upper bound :math:`r \le b` on a rate over everyone (one inequality row).

    Args:
        kind: The rate (e.g. ``RateKind.FALSE_POSITIVE`` for Neyman-Pearson classification).
        bound: :math:`b \in (0, 1)`.
        proxy: ``"sigmoid"`` or ``"hinge"``.
        temperature: Temperature of the proxy.

    Attributes:
        skipped: Number of batches without any example in the rate's denominator.
    """

    def __init__(
        self, kind: RateKind | str, bound: float, proxy: Proxy = "sigmoid", temperature: float = 1.0
    ) -> None:
        self.kind = RateKind(kind)
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not 0.0 < bound < 1.0:
            raise ValueError(f"bound must lie in (0, 1), got {bound!r}")
        self.bound = float(bound)
        if proxy not in ("sigmoid", "hinge"):
            raise ValueError(f"proxy must be 'sigmoid' or 'hinge', got {proxy!r}")
        self.proxy: Proxy = proxy
        self.temperature = _check_positive("temperature", temperature)
        self.skipped = 0

    def make_multiplier(self) -> cooper.multipliers.DenseMultiplier:
        return cooper.multipliers.DenseMultiplier(num_constraints=1)

    def measure(self, scores: torch.Tensor, labels: torch.Tensor) -> cooper.ConstraintState | None:
        """The state of :math:`r - b \\le 0` on a batch, or ``None`` (counted) if the denominator is empty."""
        denominator = denominator_mask(self.kind, labels)
        count = int(denominator.sum())
        if count == 0:
            self.skipped += 1
            return None
        weights = (denominator.float() / count).unsqueeze(0)
        proxy, true = signed_indicator_sums(
            weights, scores, indicator_signs(self.kind, labels), self.proxy, self.temperature
        )
        return cooper.ConstraintState(violation=proxy - self.bound, strict_violation=true - self.bound)
