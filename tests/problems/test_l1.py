"""The l1 problems: kernels, the three target methods, the three path methods and the CLI (Iris, fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from problems.l1.cli import main
from problems.l1.config import PathConfig, TargetConfig
from problems.l1.data import iris_split
from problems.l1.front import hypervolume_2d, is_monotone, non_dominated_mask, normalise_fronts
from problems.l1.mopg import mopg_direction, weighted_prox_point
from problems.l1.path import l1_grid, run_path, step_to_norm
from problems.l1.target import lr_factor, quantile_level, run_target, stationarity_scores, within_tolerance


@pytest.fixture(scope="module")
def iris() -> object:
    return iris_split()


# --- kernels -----------------------------------------------------------------------------------------


def test_hypervolume_non_dominance_and_normalisation_by_hand() -> None:
    points = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [0.8, 0.9]])
    assert non_dominated_mask(points).tolist() == [True, True, True, False]
    # rectangles: 0.5 * 0.1 + 0.5 * 0.6 + 0.1 * 1.1
    assert hypervolume_2d(points) == pytest.approx(0.05 + 0.30 + 0.11)
    assert hypervolume_2d(np.array([[2.0, 2.0]])) == 0.0
    fronts = normalise_fronts({"a": np.array([[0.0, 10.0], [4.0, 6.0]]), "b": np.array([[2.0, 8.0]])})
    assert np.allclose(fronts["a"], [[0, 1], [1, 0]]) and np.allclose(fronts["b"], [[0.5, 0.5]])
    assert is_monotone([[0, 3], [1, 2], [2, 2]]) and not is_monotone([[0, 3], [1, 4]])


def test_target_kernels_by_hand() -> None:
    assert lr_factor(0, 10, 0.3, 0.05) == 1.0 and lr_factor(6, 10, 0.3, 0.05) == 1.0
    assert lr_factor(9, 10, 0.3, 0.05) == pytest.approx(0.05)
    assert lr_factor(5, 10, 0.0, 0.05) == 1.0
    scores = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    assert quantile_level(scores, 0.4) == pytest.approx(0.3)  # two scores strictly above 0.3
    weight, grad = torch.tensor([0.0, 0.0, 0.1, -0.2]), torch.tensor([0.05, -0.3, -0.2, 0.2])
    # zero weights: |g| capped at λ0 = 0.2; non-zero: |θ/η - g| with η = 0.5, at least λ0
    assert torch.allclose(stationarity_scores(weight, grad, 0.2, 0.5), torch.tensor([0.05, 0.2, 0.4, 0.6]))
    assert within_tolerance((0.1, 0.3), 0.12, 0.1, False, 0.03)
    assert not within_tolerance((0.1, 0.3), 0.12, 0.1, True, 0.03)


def test_mopg_direction_and_predictor_step() -> None:
    theta = torch.tensor([1.0, -2.0, 0.5])
    grad = torch.tensor([0.5, 0.5, -1.0])
    penalised = torch.tensor([True, True, False])
    result = mopg_direction(theta, grad, penalised, t=0.1)
    assert 0.0 <= result.weight <= 1.0
    assert result.loss_decrease < 0 and result.l1_decrease < 0 and result.criticality < 0
    assert torch.allclose(weighted_prox_point(theta, grad, penalised, 0.1, 1.0), theta - 0.1 * grad)
    critical = mopg_direction(torch.zeros(3), torch.zeros(3), penalised, t=0.1)
    assert critical.criticality == 0.0 and torch.equal(critical.direction, torch.zeros(3))
    step = step_to_norm(
        torch.tensor([1.0, 0.0]), torch.tensor([-1.0, -1.0]), torch.tensor([True, True]), 3.0, 10.0
    )
    assert step == pytest.approx(1.0, abs=1e-6)
    assert l1_grid(3.0, 3) == [1.0, 2.0, 3.0]


# --- target methods ---------------------------------------------------------------------------------


def test_constrained_method_hits_the_target_in_one_run(iris: object) -> None:
    config = TargetConfig(dataset="iris", method="constrained", target_density=0.3, epochs=400)
    result = run_target(config, iris)  # type: ignore[arg-type]
    assert result.budget.runs == 1
    assert abs(result.evaluation.density - 0.3) <= 0.02, result.evaluation.density
    assert result.evaluation.test_accuracy >= 0.8
    assert result.budget.gradient_evaluations == 400 * 120


def test_constrained_method_layerwise(iris: object) -> None:
    """One multiplier (threshold) per layer; Iris layers hold 32 and 24 weights, so full-batch GDA is coarse."""
    config = TargetConfig(
        dataset="iris", method="constrained", target_density=0.4, layerwise=True, epochs=400, dual_lr=0.01
    )
    result = run_target(config, iris)  # type: ignore[arg-type]
    assert len(result.strengths) == 2 and all(s > 0 for s in result.strengths)
    for density in result.evaluation.layer_densities:
        assert abs(density - 0.4) <= 0.15, result.evaluation.layer_densities


@pytest.mark.parametrize("method", ["lambda-selection", "bisection"])
def test_baselines_count_their_runs(iris: object, method: str) -> None:
    config = TargetConfig(dataset="iris", method=method, target_density=0.3, epochs=200, max_runs=3)
    result = run_target(config, iris)  # type: ignore[arg-type]
    assert 1 <= result.budget.runs <= 3 and len(result.history) == result.budget.runs
    assert result.budget.gradient_evaluations >= result.budget.runs * 100 * 120
    assert 0.0 <= result.evaluation.density <= 1.0


# --- paths ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["continuation", "epsilon-constraint", "weighted-sum"])
def test_short_iris_path_is_monotone_and_non_dominated(iris: object, method: str) -> None:
    config = PathConfig(dataset="iris", method=method, points=6, epochs=100, initial_steps=50)
    result = run_path(config, iris)  # type: ignore[arg-type]
    front = np.asarray(result.front())
    assert len(front) == 6
    assert is_monotone(front), front
    assert non_dominated_mask(front).all(), front
    norms = front[:, 0]
    if method != "weighted-sum":  # the sweeps go from sparse to dense
        assert np.all(np.diff(norms) > 0), norms


# --- CLI --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["target", "--target-density", "1.5"], "target_density"),
        (["target", "--epochs", "0"], "epochs"),
        (["target", "--lr", "-1"], "lr"),
        (["path", "--points", "1"], "points"),
        (["path", "--l1-max", "abc"], "l1_max"),
        (["target", "--method", "magic"], "--method"),
        (["path", "--dataset", "cifar"], "--dataset"),
    ],
)
def test_cli_rejects_bad_values_naming_the_field(
    argv: list[str], field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert field in capsys.readouterr().err


def test_cli_target_path_and_compare_write_their_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "target",
                "--dataset",
                "iris",
                "--epochs",
                "60",
                "--target-density",
                "0.5",
                "--out",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    for key in ("density", "test_accuracy", "runs", "gradient_evaluations", "wall_time_s", "layer_densities"):
        assert key in metrics
    for name in ("metrics.csv", "metrics.jsonl", "model.pt", "target.png"):
        assert (tmp_path / "t" / name).exists(), name
    runs = []
    for method in ("continuation", "epsilon-constraint"):
        out = tmp_path / method
        assert (
            main(
                [
                    "path",
                    "--dataset",
                    "iris",
                    "--method",
                    method,
                    "--points",
                    "4",
                    "--initial-steps",
                    "20",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        saved = json.loads((out / "metrics.json").read_text())
        assert len(saved["points"]) == 4 and "hypervolume_self_normalised" in saved
        assert (out / "front.png").exists() and (out / "metrics.csv").exists()
        runs.append(str(out))
    assert main(["compare", "--runs", *runs, "--out", str(tmp_path / "cmp")]) == 0
    summary = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert set(summary["methods"]) == {"continuation", "epsilon-constraint"}
    assert (tmp_path / "cmp" / "front.png").exists() and (tmp_path / "cmp" / "compare.md").exists()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--runs", str(tmp_path / "t"), "--out", str(tmp_path / "bad")])
    assert exit_info.value.code == 2
