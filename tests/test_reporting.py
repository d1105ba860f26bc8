"""cooper_like.reporting: the constraint report on held-out data, metrics logs and trajectory plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy
import pytest
import torch

import cooper_like as cooper
from cooper_like.reporting import (
    ConstraintReport,
    constraint_report,
    metrics_row,
    plot_multipliers,
    plot_violations,
    read_metrics,
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


# --- metrics logs ----------------------------------------------------------------------------------


def write_log(directory: Path) -> Path:
    from problems.scaffold.metrics_log import MetricsLogger

    with MetricsLogger(directory, tensorboard=False) as logger:
        logger.log(0, loss=1.0, **{"multiplier/rate": 0.0, "violation/rate": 0.4})
        logger.log(
            1, loss=0.8, **{"multiplier/rate": 0.2, "violation/rate": 0.1, "strict_violation/rate": 0.0}
        )
        logger.log(2, loss=float("nan"), **{"multiplier/rate": 0.25, "violation/rate": -0.05, "note": "ok"})
    return directory


def test_read_metrics_jsonl_csv_and_directory(tmp_path: Path) -> None:
    run = write_log(tmp_path / "run")
    from_jsonl = read_metrics(run / "metrics.jsonl")
    from_csv = read_metrics(run / "metrics.csv")
    assert read_metrics(run) == from_jsonl  # a directory prefers the JSON lines
    assert [row["step"] for row in from_jsonl] == [0, 1, 2]
    assert from_jsonl[2]["loss"] is None  # NaN is written as null
    assert [row["multiplier/rate"] for row in from_csv] == [0.0, 0.2, 0.25]
    assert from_csv[0]["strict_violation/rate"] is None and from_csv[2]["note"] == "ok"
    assert isinstance(from_csv[0]["step"], int)
    assert trajectory_keys(run, ("violation/", "strict_violation/")) == [
        "violation/rate",
        "strict_violation/rate",
    ]
    assert trajectory_keys(from_csv, "multiplier/") == ["multiplier/rate"]


def test_read_metrics_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl or metrics.csv"):
        read_metrics(tmp_path)
    with pytest.raises(FileNotFoundError, match="no metrics log at"):
        read_metrics(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"step": 0}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a JSON object"):
        read_metrics(tmp_path / "bad.jsonl")
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        read_metrics(tmp_path / "list.jsonl")
    (tmp_path / "log.txt").write_text("step\n0\n")
    with pytest.raises(ValueError, match=r"expected a .jsonl or .csv file"):
        read_metrics(tmp_path / "log.txt")


def test_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = write_log(tmp_path / "run")
    figure = plot_multipliers(run, path=tmp_path / "multipliers.png")
    assert (tmp_path / "multipliers.png").stat().st_size > 0
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["multiplier/rate"]
    plt.close(figure)

    figure, axis = plt.subplots()
    returned = plot_violations(read_metrics(run), ax=axis)
    assert returned is figure
    labels = [str(line.get_label()) for line in axis.get_lines() if not str(line.get_label()).startswith("_")]
    assert labels == ["violation/rate", "strict_violation/rate"]
    ys = axis.get_lines()[0].get_ydata()
    assert numpy.asarray(ys).tolist() == [0.4, 0.1, -0.05]
    plt.close(figure)

    figure = plot_violations(run, keys=["loss"], x="step")  # any column; the None (NaN) row is skipped
    assert numpy.asarray(figure.axes[0].get_lines()[0].get_xdata()).tolist() == [0, 1]
    plt.close(figure)

    with pytest.raises(KeyError, match=r"columns \['missing'\] are not in the log"):
        plot_multipliers(run, keys=["missing"])
    with pytest.raises(ValueError, match="no column to plot: none starts with"):
        plot_multipliers(run, prefixes=("lambda/",))


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


def test_metrics_rows_feed_the_logger_and_the_plots(problem: Mixed, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from problems.scaffold.metrics_log import MetricsLogger

    x = torch.tensor([2.0, 1.0, 1.0], requires_grad=True)
    optimizer = cooper.optim.SimultaneousOptimizer(
        problem,
        torch.optim.SGD([x], lr=0.1),
        torch.optim.SGD(problem.dual_parameters(), lr=0.1, maximize=True),
    )
    with MetricsLogger(tmp_path, tensorboard=False) as logger:
        for step in range(3):
            roll_out = optimizer.roll({"x": x, "d": TRAIN["d"], "ids": TRAIN["ids"]})
            logger.log(step, **metrics_row(roll_out, problem, optimizer))
    assert "multiplier/mean_bound" in trajectory_keys(tmp_path, "multiplier/")
    figure = plot_multipliers(tmp_path, keys=["multiplier/mean_bound"])
    assert numpy.asarray(figure.axes[0].get_lines()[0].get_xdata()).tolist() == [0, 1, 2]
    plt.close(figure)
