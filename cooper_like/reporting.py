r"""After training: did the constraints hold, and how did the multipliers get there?

Three kinds of helpers:

- **Constraint report** (:func:`constraint_report`): evaluate every constraint of a problem on
  held-out data (and, optionally, on training data) by calling the problem's ``compute_cmp_state``
  under ``torch.no_grad``, and tabulate, per constraint: its type, the train and test violations, the
  multiplier, and whether it is satisfied on the held-out data. A constraint with a large number of
  entries (one per example, say) is summarised in one row: its largest violation, the mean multiplier
  and the fraction of satisfied entries.
- **Metrics rows** (:func:`metrics_row`): one flat dict per step from a ``RollOut`` — loss, violation
  and strict violation of every observed constraint, multipliers (summary statistics for large ones),
  penalty coefficients, learning rates, skipped steps — ready for a logger.
- **Trajectories** (:func:`plot_columns`, :func:`plot_multipliers`, :func:`plot_violations`,
  :func:`trajectory_keys`): plot columns of metrics rows against the step — the multipliers
  (``multiplier/...``), the violations (``violation/...``, ``strict_violation/...``) or any column.
  Rows are a sequence of mappings: a list of :func:`metrics_row` dicts, ``MetricsLogger.rows``, or a
  metrics log read back with ``problems.scaffold.metrics_log.read_metrics`` (the log's format belongs
  to the logger that writes it; this module reads no file). Plotting needs matplotlib (the
  ``problems`` extra); it is imported inside the functions, so this module imports without it.

Example:
    >>> report = constraint_report(problem, {"inputs": x_test, "labels": y_test})  # doctest: +SKIP
    >>> print(report)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from cooper_like.constraint_state import ConstraintState, ConstraintType
from cooper_like.constraints import Constraint
from cooper_like.multipliers import ExplicitMultiplier, IndexedMultiplier, Multiplier
from cooper_like.optim.cooper_optimizer import CooperOptimizer, RollOut
from cooper_like.problem import CMPState, ConstrainedMinimizationProblem

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "ConstraintReport",
    "ConstraintRow",
    "constraint_report",
    "metrics_row",
    "plot_columns",
    "plot_multipliers",
    "plot_violations",
    "trajectory_keys",
]

Measure = Literal["strict", "violation"]

MULTIPLIER_PREFIXES: tuple[str, ...] = ("multiplier/",)
VIOLATION_PREFIXES: tuple[str, ...] = ("violation/", "strict_violation/")


# ---------------------------------------------------------------------------------------------------
# Constraint report
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConstraintRow:
    """One row of a :class:`ConstraintReport`: one constraint, or one entry of a small vector constraint.

    Attributes:
        name: The constraint's name, with ``[i]`` for entry ``i`` of a vector constraint.
        kind: ``"<= 0"`` (inequality) or ``"= 0"`` (equality).
        entries: Number of entries the row summarises (1 for a scalar constraint or one entry).
        train_violation: The violation on the training data (the largest one for a summary row;
            for an equality, the one of largest magnitude), or ``None`` if not measured there.
        test_violation: The same on the held-out data.
        multiplier: The multiplier value (the mean over the observed entries for a summary row), or
            ``None`` when there is none to show (a penalty formulation, or per-example multipliers
            without a training measurement).
        satisfied_fraction: Fraction of the held-out entries within ``tolerance`` (``None`` if the
            constraint was not measured on the held-out data).
    """

    name: str
    kind: str
    entries: int
    train_violation: float | None
    test_violation: float | None
    multiplier: float | None
    satisfied_fraction: float | None

    @property
    def satisfied(self) -> bool | None:
        """Whether every held-out entry is satisfied (``None`` if not measured)."""
        return None if self.satisfied_fraction is None else self.satisfied_fraction == 1.0


def _format_value(value: float | None, signed: bool = True) -> str:
    if value is None:
        return "-"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _format_satisfied(row: ConstraintRow) -> str:
    fraction = row.satisfied_fraction
    if fraction is None:
        return "not measured"
    verdict = "yes" if fraction == 1.0 else "no"
    if row.entries == 1:
        return verdict
    return f"{verdict} ({100 * fraction:.1f}% of {row.entries})"


@dataclass(frozen=True)
class ConstraintReport:
    """The table returned by :func:`constraint_report`; ``print(report)`` shows it.

    Attributes:
        rows: One :class:`ConstraintRow` per constraint (or per entry of a small vector constraint).
        measure: ``"strict"`` (the strict violation where given, else the violation) or ``"violation"``.
        tolerance: The tolerance used to decide satisfaction.
    """

    rows: tuple[ConstraintRow, ...]
    measure: Measure
    tolerance: float

    HEADER = ("constraint", "type", "train violation", "test violation", "multiplier", "satisfied (test)")

    @property
    def all_satisfied(self) -> bool:
        """Whether every measured constraint is satisfied on the held-out data."""
        return all(row.satisfied is not False for row in self.rows)

    def row(self, name: str) -> ConstraintRow:
        """The row named ``name`` (``"density"`` or ``"density[1]"``); ``KeyError`` if absent."""
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no row named {name!r} in the report; rows: {[row.name for row in self.rows]}")

    def _cells(self) -> list[tuple[str, ...]]:
        return [
            (
                row.name,
                row.kind,
                _format_value(row.train_violation),
                _format_value(row.test_violation),
                _format_value(row.multiplier, signed=False),
                _format_satisfied(row),
            )
            for row in self.rows
        ]

    def to_markdown(self) -> str:
        """The table as Markdown."""
        lines = ["| " + " | ".join(self.HEADER) + " |", "|" + "---|" * len(self.HEADER)]
        lines += ["| " + " | ".join(cells) + " |" for cells in self._cells()]
        return "\n".join(lines) + "\n"

    def as_dicts(self) -> list[dict[str, Any]]:
        """The rows as plain dictionaries (for JSON, pandas, a logger...)."""
        return [
            {
                "constraint": row.name,
                "type": row.kind,
                "entries": row.entries,
                "train_violation": row.train_violation,
                "test_violation": row.test_violation,
                "multiplier": row.multiplier,
                "satisfied_fraction": row.satisfied_fraction,
                "satisfied": row.satisfied,
            }
            for row in self.rows
        ]

    def __str__(self) -> str:
        table = [self.HEADER, *self._cells()]
        widths = [max(len(cells[column]) for cells in table) for column in range(len(self.HEADER))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip() for cells in table
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(lines)


def _measure(
    problem: ConstrainedMinimizationProblem,
    kwargs: Mapping[str, Any] | None,
    modules: Sequence[torch.nn.Module],
    role: str,
) -> CMPState | None:
    if kwargs is None:
        return None
    if not isinstance(kwargs, Mapping):
        raise TypeError(
            f"constraint_report: {role} must be a dict of compute_cmp_state arguments, got {kwargs!r}"
        )
    modes = [module.training for module in modules]
    try:
        for module in modules:
            module.eval()
        with torch.no_grad():
            state = problem.compute_cmp_state(**kwargs)
    finally:
        for module, mode in zip(modules, modes):
            module.train(mode)
    if not isinstance(state, CMPState):
        raise TypeError(
            f"{type(problem).__name__}.compute_cmp_state must return a CMPState, got {type(state).__name__}"
        )
    return state


def _values(state: ConstraintState, measure: Measure) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The measured values (flat, float64) and the features that go with them."""
    if measure == "strict":
        values = state.extract_violations(do_unsqueeze=False)[1]
        features = state.extract_constraint_features()[1]
    else:
        values, features = state.violation, state.constraint_features
    return values.detach().reshape(-1).to(torch.float64).cpu(), features


def _multiplier_values(
    multiplier: Multiplier | None, train: tuple[torch.Tensor, torch.Tensor | None] | None
) -> torch.Tensor | None:
    """Multiplier values matching the training measurement's entries (flat), or ``None``."""
    if multiplier is None:
        return None
    with torch.no_grad():
        if isinstance(multiplier, ExplicitMultiplier) and not isinstance(multiplier, IndexedMultiplier):
            return multiplier.weight.detach().reshape(-1).to(torch.float64).cpu()
        if train is None or train[1] is None:
            return None  # per-example multipliers: only the rows measured on the training data mean something
        features = train[1]
        if isinstance(multiplier, IndexedMultiplier):
            return multiplier.snapshot(features).reshape(-1).to(torch.float64).cpu()
        return multiplier(features).detach().reshape(-1).to(torch.float64).cpu()


def _worst(values: torch.Tensor | None, equality: bool) -> float | None:
    if values is None or values.numel() == 0:
        return None
    if equality:
        return float(values[values.abs().argmax()])
    return float(values.max())


def _satisfied(values: torch.Tensor, equality: bool, tolerance: float) -> torch.Tensor:
    return values.abs() <= tolerance if equality else values <= tolerance


def _rows_for(
    name: str,
    constraint: Constraint,
    train: tuple[torch.Tensor, torch.Tensor | None] | None,
    test: tuple[torch.Tensor, torch.Tensor | None] | None,
    tolerance: float,
    max_entries: int,
) -> list[ConstraintRow]:
    equality = constraint.constraint_type == ConstraintType.EQUALITY
    kind = "= 0" if equality else "<= 0"
    multipliers = _multiplier_values(constraint.multiplier, train)
    train_values = None if train is None else train[0]
    test_values = None if test is None else test[0]
    row_wise = any(part is not None and part[1] is not None for part in (train, test))
    sizes = [values.numel() for values in (train_values, test_values) if values is not None]
    size = max(sizes) if sizes else 0
    same_size = all(n == size for n in sizes)
    if not row_wise and same_size and 1 < size <= max_entries:
        rows = []
        for index in range(size):
            test_value = None if test_values is None else float(test_values[index])
            rows.append(
                ConstraintRow(
                    name=f"{name}[{index}]",
                    kind=kind,
                    entries=1,
                    train_violation=None if train_values is None else float(train_values[index]),
                    test_violation=test_value,
                    multiplier=None
                    if multipliers is None or multipliers.numel() != size
                    else float(multipliers[index]),
                    satisfied_fraction=None
                    if test_value is None
                    else float(_satisfied(torch.tensor(test_value), equality, tolerance)),
                )
            )
        return rows
    satisfied = None
    if test_values is not None and test_values.numel() > 0:
        satisfied = float(_satisfied(test_values, equality, tolerance).double().mean())
    multiplier = None if multipliers is None or multipliers.numel() == 0 else float(multipliers.mean())
    entries = test_values.numel() if test_values is not None else size
    return [
        ConstraintRow(
            name=name,
            kind=kind,
            entries=max(entries, 1),
            train_violation=_worst(train_values, equality),
            test_violation=_worst(test_values, equality),
            multiplier=multiplier,
            satisfied_fraction=satisfied,
        )
    ]


def constraint_report(
    problem: ConstrainedMinimizationProblem,
    test_kwargs: Mapping[str, Any],
    train_kwargs: Mapping[str, Any] | None = None,
    *,
    tolerance: float = 1e-6,
    measure: Measure = "strict",
    modules: torch.nn.Module | Iterable[torch.nn.Module] = (),
    max_entries: int = 10,
) -> ConstraintReport:
    r"""Evaluate every constraint of ``problem`` on held-out data and tabulate the result.

    ``problem.compute_cmp_state(**test_kwargs)`` (and, if given, ``**train_kwargs``) is called under
    ``torch.no_grad``; nothing is updated. For each registered constraint the report gives the train
    and test violations, the multiplier, and whether the constraint holds on the held-out data: an
    inequality entry is satisfied when its violation is :math:`\le` ``tolerance``, an equality entry
    when :math:`|h| \le` ``tolerance``.

    A vector constraint with at most ``max_entries`` entries gets one row per entry
    (``"name[i]"``); a larger one, or one measured row-wise (``IndexedMultiplier`` ids,
    ``ImplicitMultiplier`` features), gets one summary row: the largest violation (for an equality,
    the one of largest magnitude), the mean multiplier over the rows observed on the training data, and
    the fraction of satisfied held-out entries. Per-example multipliers are only reported from the
    training measurement (held-out examples have none).

    Args:
        problem: The trained problem.
        test_kwargs: Arguments of ``compute_cmp_state`` that measure the held-out data (the whole test
            set in one call, typically).
        train_kwargs: Optional arguments that measure the training data.
        tolerance: Satisfaction tolerance (:math:`\ge 0`).
        measure: ``"strict"`` (default) reports the strict violation where the problem gives one (the
            quantity the constraint is about, e.g. a 0-1 rate or the shipped density), else the
            violation; ``"violation"`` always reports the differentiable violation.
        modules: Module(s) switched to ``eval()`` during the measurements and restored afterwards
            (the model: dropout off, deterministic gates).
        max_entries: Largest vector constraint shown entry by entry.

    Returns:
        A :class:`ConstraintReport`; ``print(report)`` shows the table, ``report.to_markdown()`` and
        ``report.as_dicts()`` export it, ``report.all_satisfied`` answers the question.

    Raises:
        TypeError: ``problem`` is not a problem, or the arguments are not dicts.
        ValueError: ``tolerance`` is negative or ``measure`` unknown.
    """
    if not isinstance(problem, ConstrainedMinimizationProblem):
        raise TypeError(
            f"constraint_report: problem must be a ConstrainedMinimizationProblem, got {problem!r}"
        )
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"constraint_report: tolerance must be a finite number >= 0, got {tolerance!r}")
    if measure not in ("strict", "violation"):
        raise ValueError(f"constraint_report: measure must be 'strict' or 'violation', got {measure!r}")
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
        raise ValueError(f"constraint_report: max_entries must be an int >= 1, got {max_entries!r}")
    module_list = [modules] if isinstance(modules, torch.nn.Module) else list(modules)
    test_state = _measure(problem, test_kwargs, module_list, "test_kwargs")
    if test_state is None:
        raise TypeError("constraint_report: test_kwargs is required (a dict of compute_cmp_state arguments)")
    train_state = _measure(problem, train_kwargs, module_list, "train_kwargs")

    rows: list[ConstraintRow] = []
    for name, constraint in problem.named_constraints():
        measured = [
            None
            if state is None or constraint not in state.observed_constraints
            else _values(state.observed_constraints[constraint], measure)
            for state in (train_state, test_state)
        ]
        rows += _rows_for(name, constraint, measured[0], measured[1], float(tolerance), max_entries)
    return ConstraintReport(rows=tuple(rows), measure=measure, tolerance=float(tolerance))


# ---------------------------------------------------------------------------------------------------
# Metrics rows
# ---------------------------------------------------------------------------------------------------


def _add_values(
    row: dict[str, float], key: str, values: torch.Tensor, max_entries: int, summary: bool
) -> None:
    """``key`` for one value, ``key/i`` per entry for a few, ``key/mean`` and ``key/max`` (and more) otherwise."""
    flat = values.detach().reshape(-1).to(torch.float64).cpu()
    if flat.numel() == 0:
        return
    if flat.numel() == 1 and not summary:
        row[key] = float(flat[0])
    elif flat.numel() <= max_entries and not summary:
        for index, value in enumerate(flat.tolist()):
            row[f"{key}/{index}"] = value
    else:
        row[f"{key}/mean"] = float(flat.mean())
        row[f"{key}/max"] = float(flat.max())
        row[f"{key}/min"] = float(flat.min())


def metrics_row(
    roll_out: RollOut,
    problem: ConstrainedMinimizationProblem | None = None,
    optimizer: CooperOptimizer | None = None,
    *,
    max_entries: int = 10,
) -> dict[str, float]:
    r"""One flat row of scalars describing a step, for ``MetricsLogger.log(step, **row)`` or any logger.

    Keys (``name`` is the constraint's name; a single value has no suffix, a vector of at most
    ``max_entries`` entries gets ``/0``, ``/1``..., a larger one or a row-wise measurement gets
    ``/mean``, ``/max`` and ``/min``):

    - ``loss``;
    - ``violation/name`` and ``strict_violation/name`` for every constraint measured in the step (the
      strict one falls back to the violation), and ``feasible_fraction/name`` for row-wise or large
      constraints (the fraction of observed entries with strict violation :math:`\le 0`);
    - with ``problem``: ``multiplier/name`` for every multiplier — every entry of a small dense one;
      for an ``IndexedMultiplier`` or a large one the summary statistics over *all* its entries plus
      ``multiplier/name/nonzero`` (a pass over the whole tensor: log it every few steps, not every step,
      when it has millions of entries); implicit multipliers are skipped — and ``penalty/name`` for
      every penalty coefficient;
    - with ``optimizer``: ``lr/primal/k`` and ``lr/dual/k`` (``k`` = optimizer index, with
      ``/group`` appended when it has several parameter groups) and ``skipped_steps``.

    Args:
        roll_out: What ``roll()`` returned.
        problem: The problem, for its multipliers and penalty coefficients.
        optimizer: The constrained optimizer, for learning rates and skipped steps.
        max_entries: Largest vector logged entry by entry.
    """
    if not isinstance(roll_out, RollOut):
        raise TypeError(
            f"metrics_row: roll_out must be the RollOut returned by roll(), got {type(roll_out).__name__}"
        )
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
        raise ValueError(f"metrics_row: max_entries must be an int >= 1, got {max_entries!r}")
    row: dict[str, float] = {}
    if roll_out.loss is not None:
        row["loss"] = float(roll_out.loss.detach())
    for constraint, state in roll_out.cmp_state.observed_constraints.items():
        name = constraint.name or "constraint"
        violation, strict = state.extract_violations(do_unsqueeze=False)
        row_wise = state.extract_constraint_features()[1] is not None
        summary = row_wise or strict.numel() > max_entries
        _add_values(row, f"violation/{name}", violation, max_entries, summary)
        _add_values(row, f"strict_violation/{name}", strict, max_entries, summary)
        if summary and strict.numel() > 0:
            feasible = strict.detach() <= 0
            if constraint.constraint_type == ConstraintType.EQUALITY:
                feasible = strict.detach() == 0
            row[f"feasible_fraction/{name}"] = float(feasible.double().mean())
    if problem is not None:
        for name, multiplier in problem.named_multipliers():
            if not isinstance(multiplier, ExplicitMultiplier):
                continue
            weight = multiplier.weight.detach()
            large = isinstance(multiplier, IndexedMultiplier) or weight.numel() > max_entries
            _add_values(row, f"multiplier/{name}", weight, max_entries, large)
            if large:
                row[f"multiplier/{name}/nonzero"] = float((weight != 0).sum())
        for name, coefficient in problem.named_penalty_coefficients():
            value = coefficient.value
            _add_values(row, f"penalty/{name}", value, max_entries, value.numel() > max_entries)
    if optimizer is not None:
        for role, optimizers in (
            ("primal", optimizer.primal_optimizers),
            ("dual", optimizer.dual_optimizers),
        ):
            for index, torch_optimizer in enumerate(optimizers or ()):
                groups = torch_optimizer.param_groups
                for group_index, group in enumerate(groups):
                    suffix = f"/{group_index}" if len(groups) > 1 else ""
                    row[f"lr/{role}/{index}{suffix}"] = float(group["lr"])
        row["skipped_steps"] = float(optimizer.skipped_steps)
    return row


# ---------------------------------------------------------------------------------------------------
# Trajectories: columns of metrics rows against a column
# ---------------------------------------------------------------------------------------------------

LEGEND_MAX_LINES = 12  # more lines than this get no legend (it would hide the plot)


def _as_rows(rows: object, caller: str) -> list[Mapping[str, Any]]:
    """``rows`` as a list of mappings; a path gets a ``TypeError`` saying how to read the log first."""
    if isinstance(rows, (str, os.PathLike)):
        raise TypeError(
            f"{caller} takes rows (a sequence of mappings), not the path {os.fspath(rows)!r}: read the "
            "metrics log first with `from problems.scaffold.metrics_log import read_metrics`, then pass "
            "`read_metrics(path)` (or MetricsLogger.rows, or a list of metrics_row dicts)"
        )
    if isinstance(rows, Mapping):
        raise TypeError(f"{caller} takes a sequence of rows, got a single mapping; pass [row]")
    if not isinstance(rows, Iterable):
        raise TypeError(f"{caller} takes rows (a sequence of mappings), got {type(rows).__name__}")
    result = list(rows)
    for index, row in enumerate(result):
        if not isinstance(row, Mapping):
            raise TypeError(
                f"{caller}: row {index} is a {type(row).__name__}, not a mapping of column names to values"
            )
    return result


def _prefix_tuple(prefixes: str | Sequence[str]) -> tuple[str, ...]:
    return (prefixes,) if isinstance(prefixes, str) else tuple(prefixes)


def trajectory_keys(rows: Sequence[Mapping[str, Any]], prefixes: str | Sequence[str]) -> list[str]:
    """The columns of ``rows`` whose names start with one of ``prefixes``, in order of first appearance.

    Args:
        rows: Metrics rows: ``MetricsLogger.rows``, ``read_metrics(path)`` (from
            ``problems.scaffold.metrics_log``), a list of :func:`metrics_row` dicts...
        prefixes: One prefix or several (``"multiplier/"``; ``("violation/", "strict_violation/")``).

    Raises:
        TypeError: ``rows`` is a path (read it with ``read_metrics`` first) or not a sequence of
            mappings.
    """
    wanted = _prefix_tuple(prefixes)
    keys: dict[str, None] = {}
    for row in _as_rows(rows, "trajectory_keys"):
        for key in row:
            if key.startswith(wanted):
                keys.setdefault(key, None)
    return list(keys)


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - exercised without matplotlib only
        raise ImportError(
            "cooper_like.reporting plots need matplotlib: pip install matplotlib "
            "(or the 'problems' extra: pip install 'cooper-like[problems]')"
        ) from error
    return plt


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_columns(
    rows: Sequence[Mapping[str, Any]],
    *,
    keys: str | Sequence[str] | None = None,
    prefixes: str | Sequence[str] = (),
    x: str = "step",
    ax: Axes | None = None,
    path: str | os.PathLike[str] | None = None,
    ylabel: str = "value",
    title: str | None = None,
    zero_line: bool = False,
    levels: Sequence[float] = (),
) -> Figure:
    """Plot columns of metrics rows against the column ``x``: one line per column.

    The primitive behind :func:`plot_multipliers` and :func:`plot_violations`. Each line has the
    rows where its column holds a number (``None``, strings and booleans are skipped; NaN leaves a
    gap); a row without ``x`` is placed at its index.

    Args:
        rows: Metrics rows: ``MetricsLogger.rows``, ``read_metrics(path)`` (from
            ``problems.scaffold.metrics_log``), a list of :func:`metrics_row` dicts...
        keys: The columns to plot, in this order (one name or several); by default every column
            starting with one of ``prefixes``, in order of first appearance.
        prefixes: Column prefixes used when ``keys`` is not given.
        x: The column on the horizontal axis (``"step"``; ``"epoch"``...).
        ax: A matplotlib ``Axes`` to draw into (a new figure otherwise).
        path: If given, the figure is also saved there (PNG, SVG... from the suffix).
        ylabel: Label of the vertical axis.
        title: Title of the axes (none by default).
        zero_line: Draw a dotted horizontal line at 0 (the feasibility line of a violation).
        levels: Draw a dotted horizontal line at each of these values (targets, bounds).

    Returns:
        The matplotlib figure (close it with ``matplotlib.pyplot.close(figure)`` when done). It has a
        legend when it shows at most 12 lines.

    Raises:
        TypeError: ``rows`` is a path (read it with ``read_metrics`` first) or not a sequence of
            mappings.
        ValueError: No column to plot (``keys`` is empty, or no column starts with ``prefixes``).
        KeyError: A column of ``keys`` is in no row.
        ImportError: matplotlib is not installed.
    """
    return _plot_columns(
        rows,
        keys=keys,
        prefixes=prefixes,
        x=x,
        ax=ax,
        path=path,
        ylabel=ylabel,
        title=title,
        zero_line=zero_line,
        levels=levels,
        caller="plot_columns",
    )


def _plot_columns(
    rows: Sequence[Mapping[str, Any]],
    *,
    keys: str | Sequence[str] | None,
    prefixes: str | Sequence[str],
    x: str,
    ax: Axes | None,
    path: str | os.PathLike[str] | None,
    ylabel: str,
    title: str | None = None,
    zero_line: bool = False,
    levels: Sequence[float] = (),
    caller: str,
) -> Figure:
    """:func:`plot_columns`, its error messages naming ``caller``."""
    table = _as_rows(rows, caller)
    columns = sorted({key for row in table for key in row})
    if keys is None:
        chosen = trajectory_keys(table, prefixes)
        if not chosen:
            raise ValueError(
                f"{caller}: no column to plot: none starts with {list(_prefix_tuple(prefixes))}; "
                f"pass keys=[...] (columns: {columns})"
            )
    else:
        chosen = [keys] if isinstance(keys, str) else list(keys)
        if not chosen:
            raise ValueError(f"{caller}: keys is empty; name at least one column (columns: {columns})")
    missing = [key for key in chosen if not any(key in row for row in table)]
    if missing:
        raise KeyError(f"{caller}: columns {missing} are not in the log")
    plt = _pyplot()
    if ax is None:
        figure, ax = plt.subplots(figsize=(6, 3.8))
    else:
        figure = ax.figure
    drawn = 0
    for key in chosen:
        points = [
            (row.get(x, index), row[key]) for index, row in enumerate(table) if _is_number(row.get(key))
        ]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], label=key, linewidth=1.2)
            drawn += 1
    horizontal = ([0.0] if zero_line else []) + [float(value) for value in levels]
    for level in horizontal:
        ax.axhline(level, color="black", linewidth=0.8, linestyle=":")
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    if 0 < drawn <= LEGEND_MAX_LINES:
        ax.legend(fontsize=7)
    if path is not None:
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    return figure


def plot_multipliers(
    rows: Sequence[Mapping[str, Any]],
    *,
    keys: str | Sequence[str] | None = None,
    prefixes: Sequence[str] = MULTIPLIER_PREFIXES,
    x: str = "step",
    ax: Axes | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Plot the multiplier trajectories of metrics rows (:func:`plot_columns` with the multipliers).

    Args:
        rows: Metrics rows: ``MetricsLogger.rows``, ``read_metrics(path)`` (from
            ``problems.scaffold.metrics_log``; a path itself is a ``TypeError``), a list of
            :func:`metrics_row` dicts...
        keys: Columns to plot; by default every column starting with one of ``prefixes``.
        prefixes: Column prefixes of the multipliers (``"multiplier/"``).
        x: The column on the horizontal axis (``"step"``; ``"epoch"``...).
        ax: A matplotlib ``Axes`` to draw into (a new figure otherwise).
        path: If given, the figure is also saved there (PNG, SVG... from the suffix).

    Returns:
        The matplotlib figure (close it with ``matplotlib.pyplot.close(figure)`` when done).

    Raises:
        TypeError: ``rows`` is a path or not a sequence of mappings. ValueError: no column to plot.
        KeyError: a requested column is not in the rows. ImportError: matplotlib is not installed.
    """
    return _plot_columns(
        rows,
        keys=keys,
        prefixes=prefixes,
        x=x,
        ax=ax,
        path=path,
        ylabel="multiplier",
        caller="plot_multipliers",
    )


def plot_violations(
    rows: Sequence[Mapping[str, Any]],
    *,
    keys: str | Sequence[str] | None = None,
    prefixes: Sequence[str] = VIOLATION_PREFIXES,
    x: str = "step",
    ax: Axes | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Plot the violation trajectories of metrics rows, with the feasibility line :math:`g = 0`.

    Same arguments as :func:`plot_multipliers`; the default columns are those starting with
    ``"violation/"`` or ``"strict_violation/"``.
    """
    return _plot_columns(
        rows,
        keys=keys,
        prefixes=prefixes,
        x=x,
        ax=ax,
        path=path,
        ylabel="violation",
        zero_line=True,
        caller="plot_violations",
    )
