"""Neyman-Pearson classification: the FPR bound is met on a small data set; CLI errors and outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import cooper_like as cooper
from problems.rates.cli import main
from problems.rates.config import NeymanPearsonConfig
from problems.rates.neyman_pearson import NeymanPearson
from problems.rates.train_np import train_neyman_pearson


def test_problem_measures_the_true_fpr_for_the_multiplier() -> None:
    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(0.0)
    problem = NeymanPearson(model, alpha=0.25)
    inputs = torch.tensor([[1.0], [-1.0], [2.0], [-2.0], [0.5]])
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])  # negatives predicted 1, 0, 1: FPR = 2/3
    state = problem.compute_cmp_state(inputs, labels)
    observed = state.observed_constraints[problem.false_positive_rate]
    assert float(observed.strict_violation) == pytest.approx(2 / 3 - 0.25)
    assert observed.violation.requires_grad
    no_negatives = problem.compute_cmp_state(inputs[:2], labels[:2])
    assert not no_negatives.observed_constraints and problem.skipped == 1
    with pytest.raises(ValueError, match="bound"):
        NeymanPearson(model, alpha=0.0)
    assert isinstance(problem.false_positive_rate.multiplier, cooper.multipliers.DenseMultiplier)


def test_breast_cancer_run_meets_the_fpr_bound(tmp_path: Path) -> None:
    config = NeymanPearsonConfig(alpha=0.1, dataset="breast-cancer", epochs=300, out=tmp_path)
    metrics = train_neyman_pearson(config)
    assert metrics["train_false_positive_rate"] <= 0.1 + 0.01
    assert metrics["train_false_negative_rate"] <= 0.1
    for name in (
        "metrics.json",
        "metrics.csv",
        "model.pt",
        "violations.png",
        "multipliers.png",
        "tradeoff.png",
    ):
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert {"test_false_positive_rate", "test_false_negative_rate", "returned", "wall_time_s"} <= set(saved)


@pytest.mark.parametrize(
    ("argv", "field"),
    [(["--alpha", "0"], "alpha"), (["--alpha", "1.5"], "alpha"), (["--temperature", "0"], "temperature")],
)
def test_cli_rejects_bad_values(
    argv: list[str], field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["neyman-pearson", *argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert field in capsys.readouterr().err


def test_cli_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "neyman-pearson",
        "--dataset",
        "breast-cancer",
        "--epochs",
        "20",
        "--threads",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["alpha"] == 0.05
