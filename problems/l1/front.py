r"""Pareto fronts of two objectives (both minimised): dominance, normalisation and hypervolume."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["hypervolume_2d", "is_monotone", "non_dominated_mask", "normalise_fronts"]

Front = np.ndarray  # shape (m, 2): columns (l1 norm, training loss) for a regularization path


def non_dominated_mask(points: Front | Sequence[Sequence[float]]) -> np.ndarray:
    r"""``mask[i]`` is ``True`` when no other point dominates point ``i``.

    :math:`p` dominates :math:`q` when :math:`p_k \le q_k` for both objectives and :math:`p \ne q`.
    """
    array = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    mask = np.ones(len(array), dtype=bool)
    for i, point in enumerate(array):
        no_worse = np.all(array <= point, axis=1)
        better = np.any(array < point, axis=1)
        mask[i] = not bool(np.any(no_worse & better))
    return mask


def normalise_fronts(fronts: Mapping[str, Front]) -> dict[str, Front]:
    r"""Scale every front to :math:`[0, 1]^2` by the extremes of their union: :math:`(p - \min) / (\max - \min)`."""
    union = np.concatenate([np.asarray(front, dtype=np.float64).reshape(-1, 2) for front in fronts.values()])
    low, high = union.min(axis=0), union.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return {
        name: (np.asarray(front, dtype=np.float64).reshape(-1, 2) - low) / span
        for name, front in fronts.items()
    }


def hypervolume_2d(
    points: Front | Sequence[Sequence[float]], reference: tuple[float, float] = (1.1, 1.1)
) -> float:
    r"""Area dominated by ``points`` and bounded by ``reference`` (both objectives minimised).

    With the non-dominated points sorted by the first objective, :math:`x_1 < \dots < x_m` (so
    :math:`y_1 > \dots > y_m`):

    .. math::
        \mathrm{HV} = \sum_{i=1}^m (x_{i+1} - x_i)(r_y - y_i), \qquad x_{m+1} = r_x,

    ignoring points outside the reference box.
    """
    array = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    inside = array[np.all(array < np.asarray(reference), axis=1)]
    if len(inside) == 0:
        return 0.0
    front = inside[non_dominated_mask(inside)]
    front = front[np.lexsort((front[:, 1], front[:, 0]))]
    xs = np.append(front[:, 0], reference[0])
    return float(np.sum((xs[1:] - xs[:-1]) * (reference[1] - front[:, 1])))


def is_monotone(points: Front | Sequence[Sequence[float]]) -> bool:
    """Sorted by the first objective (the l1 norm), is the second (the loss) non-increasing?"""
    array = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    ordered = array[np.argsort(array[:, 0], kind="stable")]
    return bool(np.all(np.diff(ordered[:, 1]) <= 1e-12))
