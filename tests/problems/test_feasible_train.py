"""Feasible learning: per-example constraints on observed rows only, a small run, data, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import cooper_like as cooper
from problems.feasible.cli import main
from problems.feasible.config import FeasibleConfig
from problems.feasible.data import load_feasible_data, synthetic_classification
from problems.feasible.problem import FeasibleLearning
from problems.feasible.train import build_classifier, build_feasible, train_feasible


def test_one_step_moves_only_the_observed_multipliers() -> None:
    data = synthetic_classification(1000, num_features=5, classes=3, num_test=10)
    config = FeasibleConfig(dataset="synthetic", epsilon=0.2, dual_lr=0.5, hidden=8)
    problem, optimizer = build_feasible(config, data)
    batch = torch.tensor([3, 17, 256, 999])
    roll_out = optimizer.roll(
        {"inputs": data.x_train[batch], "labels": data.y_train[batch], "indices": batch}
    )
    multiplier = problem.per_example_loss.multiplier
    assert isinstance(multiplier, cooper.multipliers.IndexedMultiplier)
    values = multiplier.weight.detach().reshape(-1)
    losses = roll_out.cmp_state.misc["losses"]
    expected = (1.0 + 0.5 * (losses - 0.2)).clamp(min=0)  # SGD ascent on loss_i - epsilon from 1
    assert torch.allclose(values[batch], expected, atol=1e-6)
    untouched = torch.ones(1000, dtype=torch.bool)
    untouched[batch] = False
    assert bool((values[untouched] == 1.0).all())
    state = roll_out.cmp_state.observed_constraints[problem.per_example_loss]
    assert torch.allclose(state.violation * 4, state.strict_violation)  # primal sees the batch mean


def test_small_run_fits_most_examples(tmp_path: Path) -> None:
    config = FeasibleConfig(
        dataset="digits", epsilon=0.2, epochs=12, batch_size=32, hidden=64, lr=1e-2, out=tmp_path
    )
    metrics = train_feasible(config)
    assert metrics["train_fraction_feasible"] >= 0.95
    assert metrics["num_constraints"] == 1438  # the digits training split
    assert metrics["step_time_median_us"] > 0
    for name in (
        "metrics.json",
        "metrics.csv",
        "model.pt",
        "feasibility.png",
        "multipliers.png",
        "violations.png",
    ):
        assert (tmp_path / name).exists(), name
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 1 + 12  # one row per epoch


def test_rows_every_log_every_steps_and_after_the_last(tmp_path: Path) -> None:
    data = synthetic_classification(300, num_features=5, classes=3, num_test=20)
    config = FeasibleConfig(
        dataset="synthetic", epochs=2, batch_size=32, hidden=8, log_every=7, threads=1, out=tmp_path
    )
    metrics = train_feasible(config, data)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(row["step"], row["epoch"]) for row in rows] == [(7, 1), (14, 2), (20, 2)]  # 10 batches an epoch
    assert metrics["steps"] == 20 and metrics["step_time_p90_us"] >= metrics["step_time_median_us"] > 0
    assert rows[-1]["train_fraction_feasible"] == metrics["train_fraction_feasible"]


def test_synthetic_data_is_deterministic_and_validated() -> None:
    first, second = synthetic_classification(300, seed=4), synthetic_classification(300, seed=4)
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.y_train, second.y_train)
    assert first.x_train.shape == (300, 20) and first.num_classes == 4
    with pytest.raises(ValueError, match="label_noise"):
        synthetic_classification(10, label_noise=1.0)
    with pytest.raises(ValueError, match="dataset"):
        load_feasible_data("cifar")


def test_problem_argument_errors() -> None:
    model = build_classifier("linear", 4, 2)
    with pytest.raises(ValueError, match="epsilon"):
        FeasibleLearning(model, 10, epsilon=0.0)
    with pytest.raises(ValueError, match="num_examples"):
        FeasibleLearning(model, 0, epsilon=0.1)
    with pytest.raises(ValueError, match="model"):
        build_classifier("resnet", 4, 2)


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--epsilon", "0"], "epsilon"),
        (["--epsilon", "-1"], "epsilon"),
        (["--num-examples", "0"], "num_examples"),
    ],
)
def test_cli_rejects_bad_values(
    argv: list[str], field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert field in capsys.readouterr().err


def test_cli_runs_on_a_synthetic_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "train",
        "--dataset",
        "synthetic",
        "--num-examples",
        "2000",
        "--epochs",
        "1",
        "--hidden",
        "16",
        "--threads",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["num_constraints"] == 2000
