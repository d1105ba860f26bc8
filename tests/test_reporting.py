"""cooper_like.reporting: the constraint report on held-out data, metrics logs and trajectory plots."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import numpy
import pytest
import torch

import cooper_like as cooper
from cooper_like.reporting import (
    ConstraintReport,
    constraint_report,
    metrics_row,
    plot_columns,
    plot_multipliers,
    plot_violations,
    trajectory_keys,
)


class Mixed(cooper.ConstrainedMinimizationProblem):
    """Four kinds of constraints on a vector ``x`` measured against data ``d``.

    - ``mean_bound`` (scalar inequality, dense multiplier, strict violation = a 0-1 count):
      ``mean(d) * x[0] - 1 <= 0``;
    - ``pinned`` (3-entry equality): ``x - d[:3] = 0``;
    - ``penalised`` (quadratic penalty, no multiplier): ``x.sum() - 5 <= 0``;
    - ``per_example`` (indexed): ``d[ids] * x[0] - 2 <= 0`` for the examples ``ids``.
    """

    def __init__(self, num_examples: int) -> None:
        super().__init__()
        self.mean_bound = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY,
            multiplier=cooper.multipliers.DenseMultiplier(init=torch.tensor([0.5])),
        )
        self.pinned = cooper.Constraint(
            cooper.ConstraintType.EQUALITY,
            multiplier=cooper.multipliers.DenseMultiplier(init=torch.tensor([1.0, -2.0, 3.0])),
        )
        self.penalised = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY,
            formulation_type=cooper.formulations.QuadraticPenalty,
            penalty_coefficient=cooper.penalty_coefficients.DensePenaltyCoefficient(torch.tensor(1.0)),
        )
        self.per_example = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY,
            multiplier=cooper.multipliers.IndexedMultiplier(
                init=torch.arange(num_examples, dtype=torch.float32)
            ),
        )
        self.calls_with_grad: list[bool] = []

    def compute_cmp_state(self, x: torch.Tensor, d: torch.Tensor, ids: torch.Tensor) -> cooper.CMPState:
        self.calls_with_grad.append(torch.is_grad_enabled())
        mean_violation = d.mean() * x[0] - 1
        states = {
            self.mean_bound: cooper.ConstraintState(
                mean_violation.reshape(1), strict_violation=(mean_violation > 0).float().reshape(1) - 0.5
            ),
            self.pinned: cooper.ConstraintState(x - d[:3]),
            self.penalised: cooper.ConstraintState(x.sum() - 5),
            self.per_example: cooper.ConstraintState(d[ids] * x[0] - 2, constraint_features=ids),
        }
        return cooper.CMPState(loss=x.pow(2).sum(), observed_constraints=states)


@pytest.fixture
def problem() -> Mixed:
    return Mixed(num_examples=6)


X = torch.tensor([2.0, 1.0, 1.0], requires_grad=True)
TRAIN = {"x": X, "d": torch.tensor([0.25, 1.0, 1.0, 0.5, 1.5, 0.0]), "ids": torch.tensor([0, 1, 4])}
TEST = {"x": X, "d": torch.tensor([1.0, 1.0, 1.0, 2.0]), "ids": torch.tensor([0, 1, 2, 3])}


def test_report_values_by_hand(problem: Mixed) -> None:
    report = constraint_report(problem, TEST, TRAIN)
    names = [row.name for row in report.rows]
    assert names == ["mean_bound", "pinned[0]", "pinned[1]", "pinned[2]", "penalised", "per_example"]

    mean_bound = report.row("mean_bound")
    # strict measure: train mean(d) = 0.7083 -> 0.7083 * 2 - 1 > 0 -> 1 - 0.5; test mean 1.25 -> same
    assert mean_bound.kind == "<= 0" and mean_bound.entries == 1
    assert mean_bound.train_violation == pytest.approx(0.5) and mean_bound.test_violation == pytest.approx(
        0.5
    )
    assert mean_bound.multiplier == pytest.approx(0.5)
    assert mean_bound.satisfied is False and mean_bound.satisfied_fraction == 0.0

    # equality, entry by entry: train x - [0.25, 1, 1] = [1.75, 0, 0]; test x - [1, 1, 1] = [1, 0, 0]
    assert [report.row(f"pinned[{i}]").train_violation for i in range(3)] == pytest.approx([1.75, 0.0, 0.0])
    assert [report.row(f"pinned[{i}]").test_violation for i in range(3)] == pytest.approx([1.0, 0.0, 0.0])
    assert [report.row(f"pinned[{i}]").multiplier for i in range(3)] == pytest.approx([1.0, -2.0, 3.0])
    assert [report.row(f"pinned[{i}]").satisfied for i in range(3)] == [False, True, True]
    assert report.row("pinned[0]").kind == "= 0"

    penalised = report.row("penalised")  # sum(x) - 5 = -1: satisfied, no multiplier
    assert penalised.test_violation == pytest.approx(-1.0) and penalised.multiplier is None
    assert penalised.satisfied is True

    # per-example: a summary row. train d[ids] = [0.25, 1, 1.5] -> 2 d - 2 = [-1.5, 0, 1]: worst 1;
    # test d = [1, 1, 1, 2] -> [0, 0, 0, 2]: worst 2, 3 of 4 satisfied; multipliers of train ids [0, 1, 4]
    per_example = report.row("per_example")
    assert per_example.entries == 4
    assert per_example.train_violation == pytest.approx(1.0) and per_example.test_violation == pytest.approx(
        2.0
    )
    assert per_example.satisfied_fraction == pytest.approx(0.75) and per_example.satisfied is False
    assert per_example.multiplier == pytest.approx((0.0 + 1.0 + 4.0) / 3)
    assert not report.all_satisfied


def test_report_measures_without_gradients_and_changes_nothing(problem: Mixed) -> None:
    explicit = {
        name: m
        for name, m in problem.named_multipliers()
        if isinstance(m, cooper.multipliers.ExplicitMultiplier)
    }
    before = {name: m.weight.detach().clone() for name, m in explicit.items()}
    constraint_report(problem, TEST, TRAIN)
    assert problem.calls_with_grad == [False, False]
    for name, multiplier in explicit.items():
        assert torch.equal(multiplier.weight, before[name]) and multiplier.weight.grad is None
    assert X.grad is None


def test_violation_measure_and_tolerance(problem: Mixed) -> None:
    report = constraint_report(problem, TEST, TRAIN, measure="violation")
    assert report.row("mean_bound").test_violation == pytest.approx(1.25 * 2 - 1)
    assert report.measure == "violation"
    loose = constraint_report(problem, TEST, tolerance=2.0)
    assert loose.row("per_example").satisfied is True and loose.row("pinned[0]").satisfied is True
    assert loose.tolerance == 2.0


def test_without_training_data_per_example_multipliers_are_not_guessed(problem: Mixed) -> None:
    report = constraint_report(problem, TEST)
    assert report.row("per_example").multiplier is None
    assert report.row("per_example").train_violation is None
    assert report.row("mean_bound").multiplier == pytest.approx(0.5)  # dense: always known


def test_large_vector_constraint_is_summarised(problem: Mixed) -> None:
    report = constraint_report(problem, TEST, TRAIN, max_entries=2)
    pinned = report.row("pinned")
    assert pinned.entries == 3
    assert pinned.train_violation == pytest.approx(1.75)  # largest magnitude for an equality
    assert pinned.multiplier == pytest.approx((1.0 - 2.0 + 3.0) / 3)
    assert pinned.satisfied_fraction == pytest.approx(2 / 3)


def test_constraint_not_measured() -> None:
    class Partial(Mixed):
        def compute_cmp_state(self, x: torch.Tensor, d: torch.Tensor, ids: torch.Tensor) -> cooper.CMPState:
            state = super().compute_cmp_state(x, d, ids)
            del state.observed_constraints[self.penalised]
            return state

    report = constraint_report(Partial(6), TEST, TRAIN)
    row = report.row("penalised")
    assert row.test_violation is None and row.satisfied is None and row.satisfied_fraction is None
    assert "not measured" in str(report)


def test_modules_are_evaluated_in_eval_mode_and_restored() -> None:
    linear = torch.nn.Linear(2, 1)
    model = torch.nn.Sequential(linear, torch.nn.Dropout(0.5))
    seen: list[bool] = []

    class Rate(cooper.ConstrainedMinimizationProblem):
        def __init__(self) -> None:
            super().__init__()
            self.rate = cooper.Constraint(
                cooper.ConstraintType.INEQUALITY, multiplier=cooper.multipliers.DenseMultiplier(1)
            )

        def compute_cmp_state(self, inputs: torch.Tensor) -> cooper.CMPState:
            seen.append(model.training)
            rate = torch.sigmoid(model(inputs)).mean() - 0.9
            return cooper.CMPState(loss=rate, observed_constraints={self.rate: cooper.ConstraintState(rate)})

    model.train()
    report = constraint_report(Rate(), {"inputs": torch.zeros(4, 2)}, modules=model)
    assert seen == [False] and model.training
    # at zero input the score is sigmoid(bias), and the bias of a 2-input layer is below ln 9 (score < 0.9)
    assert report.row("rate").test_violation == pytest.approx(
        float(torch.sigmoid(linear.bias.detach())) - 0.9
    )
    assert report.all_satisfied


def test_table_renderings(problem: Mixed) -> None:
    report = constraint_report(problem, TEST, TRAIN)
    text = str(report)
    lines = text.splitlines()
    assert lines[0].split() == [
        "constraint",
        "type",
        "train",
        "violation",
        "test",
        "violation",
        "multiplier",
        "satisfied",
        "(test)",
    ]
    assert set(lines[1]) <= {"-", " "}
    assert any(line.startswith("per_example") and "no (75.0% of 4)" in line for line in lines)
    markdown = report.to_markdown()
    assert markdown.splitlines()[0].startswith("| constraint | type |")
    assert markdown.count("\n") == len(report.rows) + 2
    dicts = report.as_dicts()
    assert dicts[0]["constraint"] == "mean_bound" and dicts[0]["satisfied"] is False
    json.dumps(dicts)  # plain values
    with pytest.raises(KeyError, match="no row named 'missing'"):
        report.row("missing")
    assert isinstance(report, ConstraintReport)


def test_argument_errors(problem: Mixed) -> None:
    with pytest.raises(TypeError, match="problem must be a ConstrainedMinimizationProblem"):
        constraint_report(object(), TEST)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tolerance must be a finite number >= 0, got -1"):
        constraint_report(problem, TEST, tolerance=-1)
    with pytest.raises(ValueError, match="measure must be 'strict' or 'violation', got 'max'"):
        constraint_report(problem, TEST, measure="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_entries must be an int >= 1, got 0"):
        constraint_report(problem, TEST, max_entries=0)
    with pytest.raises(TypeError, match="test_kwargs must be a dict"):
        constraint_report(problem, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="test_kwargs is required"):
        constraint_report(problem, None)  # type: ignore[arg-type]

    class NotAState(Mixed):
        def compute_cmp_state(self, x: torch.Tensor, d: torch.Tensor, ids: torch.Tensor) -> cooper.CMPState:
            return {"loss": x.sum()}  # type: ignore[return-value]

    with pytest.raises(TypeError, match="must return a CMPState, got dict"):
        constraint_report(NotAState(6), TEST)


# --- trajectories ------------------------------------------------------------------------------------

# Rows as a metrics log holds them (read back with problems.scaffold.metrics_log.read_metrics, say):
# a column may start late ("strict_violation/rate"), a value may be missing (None: NaN in JSON lines).
LOG: list[dict[str, Any]] = [
    {"step": 0, "loss": 1.0, "multiplier/rate": 0.0, "violation/rate": 0.4},
    {"step": 1, "loss": 0.8, "multiplier/rate": 0.2, "violation/rate": 0.1, "strict_violation/rate": 0.0},
    {"step": 2, "loss": None, "multiplier/rate": 0.25, "violation/rate": -0.05, "note": "ok"},
]


@pytest.fixture
def pyplot() -> Any:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def labelled_lines(axis: Any) -> list[str]:
    """Labels of the data lines (the horizontal reference lines have matplotlib's ``_child`` labels)."""
    return [str(line.get_label()) for line in axis.get_lines() if not str(line.get_label()).startswith("_")]


def test_trajectory_keys_in_order_of_first_appearance() -> None:
    assert trajectory_keys(LOG, ("violation/", "strict_violation/")) == [
        "violation/rate",
        "strict_violation/rate",
    ]
    assert trajectory_keys(LOG, "multiplier/") == ["multiplier/rate"]
    assert trajectory_keys(iter(LOG), ["lambda/"]) == []
    assert trajectory_keys([], "multiplier/") == []


@pytest.mark.parametrize("function", [plot_columns, plot_multipliers, plot_violations])
@pytest.mark.parametrize("source", ["runs/demo", Path("runs/demo")], ids=["str", "Path"])
def test_a_path_is_refused_with_the_reader_to_use(function: Any, source: Any) -> None:
    # checked before matplotlib is needed: the message is the same with or without it
    with pytest.raises(TypeError) as raised:
        function(source)
    message = str(raised.value)
    assert message.startswith(
        f"{function.__name__} takes rows (a sequence of mappings), not the path 'runs/demo'"
    )
    assert (
        "`from problems.scaffold.metrics_log import read_metrics`, then pass `read_metrics(path)`" in message
    )
    with pytest.raises(TypeError, match=r"^trajectory_keys takes rows .*read_metrics\(path\)"):
        trajectory_keys(source, "multiplier/")


def test_rows_that_are_not_a_sequence_of_mappings_are_refused() -> None:
    with pytest.raises(
        TypeError, match=r"^trajectory_keys takes a sequence of rows, got a single mapping; pass \[row\]"
    ):
        trajectory_keys(LOG[0], "multiplier/")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="^plot_columns takes rows \\(a sequence of mappings\\), got int"):
        plot_columns(3, keys=["loss"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="^plot_multipliers: row 1 is a tuple, not a mapping of column names"):
        plot_multipliers([LOG[0], ("multiplier/rate", 0.2)])  # type: ignore[list-item]


def test_column_errors() -> None:
    # raised before matplotlib is imported
    with pytest.raises(KeyError, match=r"plot_multipliers: columns \['missing'\] are not in the log"):
        plot_multipliers(LOG, keys=["missing"])
    with pytest.raises(
        ValueError, match=r"plot_multipliers: no column to plot: none starts with \['lambda/'\]"
    ):
        plot_multipliers(LOG, prefixes=("lambda/",))
    with pytest.raises(
        ValueError, match=r"plot_columns: no column to plot: none starts with \[\]; pass keys="
    ):
        plot_columns(LOG)  # no keys, no prefixes
    with pytest.raises(
        ValueError, match=r"plot_violations: keys is empty; name at least one column \(columns: \["
    ):
        plot_violations(LOG, keys=[])


def test_plot_multipliers_and_violations(tmp_path: Path, pyplot: Any) -> None:
    figure = plot_multipliers(LOG, path=tmp_path / "multipliers.png")
    assert (tmp_path / "multipliers.png").stat().st_size > 0
    assert labelled_lines(figure.axes[0]) == ["multiplier/rate"]
    assert figure.axes[0].get_ylabel() == "multiplier" and figure.axes[0].get_xlabel() == "step"

    figure, axis = pyplot.subplots()
    returned = plot_violations(LOG, ax=axis)
    assert returned is figure
    assert labelled_lines(axis) == ["violation/rate", "strict_violation/rate"]
    assert numpy.asarray(axis.get_lines()[0].get_ydata()).tolist() == [0.4, 0.1, -0.05]
    zero = [line for line in axis.get_lines() if str(line.get_label()).startswith("_")]
    assert [numpy.asarray(line.get_ydata()).tolist() for line in zero] == [[0.0, 0.0]]  # g = 0

    figure = plot_violations(LOG, keys=["loss"], x="step")  # any column; the None row is skipped
    assert numpy.asarray(figure.axes[0].get_lines()[0].get_xdata()).tolist() == [0, 1]


def test_plot_columns(tmp_path: Path, pyplot: Any) -> None:
    figure = plot_columns(
        LOG,
        keys="loss",  # one name
        x="step",
        path=tmp_path / "loss.svg",
        ylabel="loss",
        title="training loss",
        levels=(0.5, 0.9),
    )
    axis = figure.axes[0]
    assert (tmp_path / "loss.svg").read_text().startswith("<?xml")
    assert labelled_lines(axis) == ["loss"]
    assert axis.get_title() == "training loss" and axis.get_ylabel() == "loss"
    references = [line for line in axis.get_lines() if str(line.get_label()).startswith("_")]
    assert [float(numpy.asarray(line.get_ydata())[0]) for line in references] == [0.5, 0.9]
    assert axis.get_legend() is not None

    # keys keep their order; rows without x are placed at their index; NaN stays (a gap); bools are skipped
    rows = [{"a": 1.0, "b": True}, {"step": 5, "a": float("nan"), "b": 2}, {"a": 3, "b": "x"}]
    figure = plot_columns(rows, keys=["b", "a"], zero_line=True)
    b, a = figure.axes[0].get_lines()[:2]
    assert numpy.asarray(b.get_xdata()).tolist() == [5] and numpy.asarray(b.get_ydata()).tolist() == [2]
    assert numpy.asarray(a.get_xdata()).tolist() == [0, 5, 2]
    assert numpy.isnan(numpy.asarray(a.get_ydata())[1])

    # prefixes, in order of first appearance; no legend over 12 lines
    wide = [{"step": 0, **{f"multiplier/layer/{i}": float(i) for i in range(13)}}]
    figure = plot_columns(wide, prefixes="multiplier/")
    assert len(labelled_lines(figure.axes[0])) == 13 and figure.axes[0].get_legend() is None
    assert labelled_lines(figure.axes[0])[:2] == ["multiplier/layer/0", "multiplier/layer/1"]


def test_the_library_imports_no_problem() -> None:
    """``cooper_like`` is the layer below ``problems``: not one of its modules imports it."""
    library = Path(cooper.__file__).parent
    offenders = []
    for source in sorted(library.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{source.name}: {name}" for name in names if name.split(".")[0] == "problems"]
    assert offenders == []


# --- metrics rows ------------------------------------------------------------------------------------


def test_metrics_row_after_a_step(problem: Mixed) -> None:
    x = torch.tensor([2.0, 1.0, 1.0], requires_grad=True)
    primal = torch.optim.SGD([{"params": [x], "lr": 0.1}, {"params": [], "lr": 0.2}])
    dual = torch.optim.SGD(problem.dual_parameters(), lr=0.5, maximize=True)
    optimizer = cooper.optim.SimultaneousOptimizer(problem, primal, dual)
    roll_out = optimizer.roll({"x": x, "d": TRAIN["d"], "ids": TRAIN["ids"]})
    row = metrics_row(roll_out, problem, optimizer, max_entries=3)

    assert row["loss"] == pytest.approx(6.0)  # f at the measured point x = (2, 1, 1)
    mean_d = float(TRAIN["d"].mean())
    assert row["violation/mean_bound"] == pytest.approx(mean_d * 2 - 1)
    assert row["strict_violation/mean_bound"] == pytest.approx(0.5)
    assert [row[f"violation/pinned/{i}"] for i in range(3)] == pytest.approx([1.75, 0.0, 0.0])
    assert row["violation/penalised"] == pytest.approx(-1.0)
    # row-wise: summary statistics and the fraction of feasible observed entries ([-1.5, 0, 1])
    assert row["violation/per_example/max"] == pytest.approx(1.0)
    assert row["violation/per_example/min"] == pytest.approx(-1.5)
    assert row["feasible_fraction/per_example"] == pytest.approx(2 / 3)
    assert "violation/per_example/0" not in row

    # multipliers after the step: the dense ones entry by entry, the indexed one summarised over all rows
    assert row["multiplier/mean_bound"] == pytest.approx(0.5 + 0.5 * 0.5)
    assert [row[f"multiplier/pinned/{i}"] for i in range(3)] == pytest.approx([1.0 + 0.875, -2.0, 3.0])
    indexed = problem.per_example.multiplier
    assert isinstance(indexed, cooper.multipliers.IndexedMultiplier)
    assert row["multiplier/per_example/max"] == pytest.approx(float(indexed.weight.detach().max()))
    assert row["multiplier/per_example/nonzero"] == float((indexed.weight != 0).sum())
    assert row["penalty/penalised"] == 1.0
    assert row["lr/primal/0/0"] == 0.1 and row["lr/primal/0/1"] == 0.2 and row["lr/dual/0"] == 0.5
    assert row["skipped_steps"] == 0.0
    assert all(isinstance(value, float) for value in row.values())


def test_metrics_row_large_vectors_and_alone(problem: Mixed) -> None:
    x = torch.tensor([2.0, 1.0, 1.0], requires_grad=True)
    optimizer = cooper.optim.SimultaneousOptimizer(
        problem,
        torch.optim.SGD([x], lr=0.1),
        torch.optim.SGD(problem.dual_parameters(), lr=0.1, maximize=True),
    )
    roll_out = optimizer.roll({"x": x, "d": TRAIN["d"], "ids": TRAIN["ids"]})
    row = metrics_row(roll_out, max_entries=2)  # no problem, no optimizer: measurements only
    assert row["violation/pinned/max"] == pytest.approx(1.75) and "violation/pinned/0" not in row
    assert not any(key.startswith(("multiplier/", "penalty/", "lr/")) for key in row)
    with pytest.raises(TypeError, match="roll_out must be the RollOut returned by roll"):
        metrics_row({"loss": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_entries must be an int >= 1, got 0"):
        metrics_row(roll_out, max_entries=0)


def test_metrics_rows_feed_the_logger_and_the_plots(problem: Mixed, tmp_path: Path, pyplot: Any) -> None:
    from problems.scaffold.metrics_log import MetricsLogger

    x = torch.tensor([2.0, 1.0, 1.0], requires_grad=True)
    optimizer = cooper.optim.SimultaneousOptimizer(
        problem,
        torch.optim.SGD([x], lr=0.1),
        torch.optim.SGD(problem.dual_parameters(), lr=0.1, maximize=True),
    )
    rows = []
    with MetricsLogger(tmp_path, tensorboard=False) as logger:
        for step in range(3):
            roll_out = optimizer.roll({"x": x, "d": TRAIN["d"], "ids": TRAIN["ids"]})
            rows.append({"step": step, **metrics_row(roll_out, problem, optimizer)})
            logger.log(step, **metrics_row(roll_out, problem, optimizer))
    assert "multiplier/mean_bound" in trajectory_keys(logger.rows, "multiplier/")
    for source in (logger.rows, rows):  # the logger's rows, or the metrics_row dicts themselves
        figure = plot_multipliers(source, keys=["multiplier/mean_bound"])
        assert numpy.asarray(figure.axes[0].get_lines()[0].get_xdata()).tolist() == [0, 1, 2]
