"""PNG plots of a run, written by every problem: columns of its metrics rows, and trade-off scatters.

Every function returns ``False`` (and writes nothing) without matplotlib (the ``problems`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cooper_like.reporting import plot_columns

__all__ = ["plot_series", "plot_tradeoff", "plot_trajectories", "pyplot"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the 'problems' extra is not installed: no plots
        return None
    return plt


def plot_series(
    history: Sequence[dict[str, Any]],
    prefixes: Sequence[str],
    path: Path,
    *,
    ylabel: str,
    title: str,
    x: str = "step",
    zero_line: bool = False,
    levels: Sequence[float] = (),
    exact: bool = False,
) -> bool:
    """One line per column of ``history`` starting with one of ``prefixes`` (with ``exact``: named so),
    against the column ``x``; dotted horizontal lines at 0 (``zero_line``) and at every value of ``levels``.

    The columns are the prefix matches in sorted order (with ``exact``, the names of ``prefixes`` present
    in some row, in the given order); the drawing is ``cooper_like.reporting.plot_columns``.

    Returns whether a file was written (False without matplotlib or without matching columns).
    """
    plt = pyplot()
    if exact:
        keys = [key for key in prefixes if any(key in row for row in history)]
    else:
        keys = sorted({key for row in history for key in row if key.startswith(tuple(prefixes))})
    if plt is None or not keys:
        return False
    figure = plot_columns(
        history, keys=keys, x=x, path=path, ylabel=ylabel, title=title, zero_line=zero_line, levels=levels
    )
    plt.close(figure)
    return True


def plot_trajectories(history: Sequence[dict[str, Any]], out: Path, *, violation_ylabel: str) -> None:
    """violations.png (the true violations, batch and selection split) and multipliers.png, against ``step``."""
    plot_series(
        history,
        ["batch_max_violation/", "selection_max_violation"],
        out / "violations.png",
        ylabel=violation_ylabel,
        title="constraint violations",
        zero_line=True,
    )
    plot_series(
        history, ["multiplier/"], out / "multipliers.png", ylabel="multiplier", title="Lagrange multipliers"
    )


def plot_tradeoff(
    xs: Sequence[float],
    ys: Sequence[float],
    chosen: Sequence[int],
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    bound: float | None = None,
    extra_points: dict[str, tuple[float, float]] | None = None,
) -> bool:
    """Scatter of the candidates (coloured by order), the chosen ones circled, optional bound and points."""
    plt = pyplot()
    if plt is None or not xs:
        return False
    figure, axis = plt.subplots(figsize=(5.5, 4))
    points = axis.scatter(xs, ys, c=range(len(xs)), cmap="viridis", s=14, label="candidates")
    figure.colorbar(points, ax=axis, label="candidate (training order)")
    axis.scatter(
        [xs[i] for i in chosen],
        [ys[i] for i in chosen],
        s=90,
        facecolors="none",
        edgecolors="red",
        label="returned",
    )
    for label, (x, y) in (extra_points or {}).items():
        axis.scatter([x], [y], marker="x", s=60, label=label)
    if bound is not None:
        axis.axvline(bound, color="black", linewidth=0.8, linestyle=":", label="bound")
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
