"""The l1 problems: kernels, the three target methods, the three path methods and the CLI (Iris, fast)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import cooper_like as cooper
from cooper_like.optim.proximal import soft_threshold
from problems.l1.budget import Budget
from problems.l1.cli import main
from problems.l1.config import PathConfig, TargetConfig
from problems.l1.data import iris_split
from problems.l1.dual import ExponentiatedAscent, exponentiated_ascent
from problems.l1.front import hypervolume_2d, is_monotone, non_dominated_mask, normalise_fronts
from problems.l1.lookahead import LookaheadProximalOptimizer
from problems.l1.models import build_model, mlp, penalised_weights
from problems.l1.mopg import mopg_direction, weighted_prox_point
from problems.l1.path import l1_grid, run_path, secant_step, step_to_norm
from problems.l1.problem import DensityConstrained, density_violation
from problems.l1.target import lr_factor, quantile_level, run_target, stationarity_scores, within_tolerance
from problems.l1.training import proximal_sgd, train_epochs
from problems.scaffold.classification import CrossEntropy
from problems.scaffold.datasets import DataSplit
from problems.scaffold.loop import epoch_batches


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


def test_epoch_batches_are_equal_sized_and_cover_every_example_once() -> None:
    """The l1 runs cut every epoch into equal batches (the loop's ``even=True``)."""
    batches = epoch_batches(4000, 128, seed=0, epoch=3, even=True)
    assert [len(b) for b in batches] == [125] * 32  # not 31 x 128 + 32
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(4000))
    assert [len(b) for b in epoch_batches(10, 4, seed=1, epoch=0, even=True)] == [4, 3, 3]
    assert all(
        torch.equal(a, b) for a, b in zip(batches, epoch_batches(4000, 128, seed=0, epoch=3, even=True))
    )
    assert not torch.equal(batches[0], epoch_batches(4000, 128, seed=0, epoch=4, even=True)[0])
    assert [b.tolist() for b in epoch_batches(5, 8, seed=0, epoch=0, even=True)] == [[0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match="batch_size"):
        epoch_batches(10, 0, seed=0, epoch=0, even=True)


def test_train_epochs_is_the_loop_over_equal_batches_counting_every_example(iris: DataSplit) -> None:
    """``train_epochs`` (on the shared loop) steps exactly as a hand-written pass over the equal batches."""
    data = iris  # 120 training examples: batches of 50 -> 3 batches of 40
    models = [build_model("iris"), build_model("iris")]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [
        cooper.optim.UnconstrainedOptimizer(
            cmp=CrossEntropy(model), primal_optimizers=proximal_sgd(model, 0.5, 0.9, 1e-3)
        )
        for model in models
    ]
    budget, ended = Budget(), []
    train_epochs(optimizers[0], data, 3, 50, 7, budget, after_epoch=ended.append)
    for epoch in range(3):
        for batch in epoch_batches(120, 50, seed=7, epoch=epoch, even=True):
            optimizers[1].roll({"inputs": data.x_train[batch], "labels": data.y_train[batch]})
    assert all(torch.equal(a, b) for a, b in zip(models[0].parameters(), models[1].parameters()))
    assert budget.gradient_evaluations == 3 * 120 and ended == [0, 1, 2]
    train_epochs(optimizers[0], data, 0, 50, 7, budget)
    assert budget.gradient_evaluations == 3 * 120


def test_exponentiated_ascent_by_hand() -> None:
    value, grad = torch.tensor([0.5, 0.0, 2.0], dtype=torch.float64), torch.tensor([0.2, 1.0, -0.5])
    expected = torch.tensor(
        [0.5 * math.exp(0.1), 1e-3 * math.exp(0.5), 2.0 * math.exp(-0.25)], dtype=torch.float64
    )
    assert torch.allclose(exponentiated_ascent(value, grad, 0.5, 1e-3), expected)
    multiplier = torch.nn.Parameter(value.clone())
    optimizer = ExponentiatedAscent([multiplier], lr=0.5, floor=1e-3)
    optimizer.step()  # no gradient (a warm-up): nothing moves, zero stays zero
    assert torch.equal(multiplier.detach(), value)
    multiplier.grad = grad.double()
    optimizer.step()
    assert torch.allclose(multiplier.detach(), expected)
    limited = exponentiated_ascent(value, grad, 0.5, 1e-3, max_step=0.2)  # factors capped at e^(+-0.2)
    assert torch.allclose(
        limited, torch.tensor([0.5 * math.exp(0.1), 1e-3 * math.exp(0.2), 2.0 * math.exp(-0.2)]).double()
    )
    descending = torch.nn.Parameter(torch.tensor([1.0]))
    descending.grad = torch.tensor([2.0])
    ExponentiatedAscent([descending], lr=0.5, maximize=False).step()
    assert descending.item() == pytest.approx(math.exp(-1.0))
    assert ExponentiatedAscent([multiplier], lr=0.3).state_dict()["param_groups"][0]["lr"] == 0.3


@pytest.mark.parametrize(
    ("lr", "floor", "max_step", "name"),
    [
        (0.0, 1e-6, 1.0, "lr"),
        (float("nan"), 1e-6, 1.0, "lr"),
        (0.1, -1.0, 1.0, "floor"),
        (0.1, 1e-6, 0.0, "max_step"),
        (0.1, 1e-6, float("nan"), "max_step"),
    ],
)
def test_exponentiated_ascent_rejects_bad_hyperparameters(
    lr: float, floor: float, max_step: float, name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        ExponentiatedAscent([torch.nn.Parameter(torch.zeros(1))], lr=lr, floor=floor, max_step=max_step)


def test_exponentiated_ascent_rejects_sparse_gradients() -> None:
    multiplier = torch.nn.Parameter(torch.zeros(3))
    multiplier.grad = torch.zeros(3).to_sparse()
    with pytest.raises(ValueError, match="sparse"):
        ExponentiatedAscent([multiplier], lr=0.1).step()


def test_density_violation_linear_and_log_by_hand() -> None:
    density, smallest = (
        torch.tensor([0.2, 0.05, 0.0], dtype=torch.float64),
        torch.tensor(0.01, dtype=torch.float64),
    )
    assert torch.allclose(
        density_violation(density, 0.1, smallest, "linear"), torch.tensor([0.1, -0.05, -0.1]).double()
    )
    expected = torch.tensor([math.log(2.0), math.log(0.5), math.log(0.1)], dtype=torch.float64)
    assert torch.allclose(density_violation(density, 0.1, smallest, "log"), expected)  # zero read as 0.01
    with pytest.raises(ValueError, match="scale"):
        density_violation(density, 0.1, smallest, "cubic")  # type: ignore[arg-type]


def test_density_constrained_measures_the_log_ratio_of_the_true_count() -> None:
    model = mlp([4, 5, 2])  # 20 + 10 weights
    with torch.no_grad():
        for weight, keep in zip(penalised_weights(model), (5, 0)):
            weight.zero_()
            weight.view(-1)[:keep] = 1.0
    whole = DensityConstrained(model, 0.25, scale="log").density_state().violation
    assert torch.allclose(whole, torch.tensor([math.log((5 / 30) / 0.25)], dtype=torch.float64))
    per_layer = DensityConstrained(model, 0.25, layerwise=True, scale="log").density_state().violation
    # layer 2 has no non-zero weight: read as one of its 10
    assert torch.allclose(per_layer, torch.tensor([math.log(1.0), math.log(0.1 / 0.25)], dtype=torch.float64))
    linear = DensityConstrained(model, 0.25).density_state().violation
    assert torch.allclose(linear, torch.tensor([5 / 30 - 0.25], dtype=torch.float64))
    with pytest.raises(ValueError, match="scale"):
        DensityConstrained(model, 0.25, scale="exp")  # type: ignore[arg-type]


def test_lookahead_step_measures_the_support_the_proximal_map_would_leave() -> None:
    """z = θ - η∇f; the dual sees the support of S_{ηλ0}(z); the new iterate is S_{ηλ1}(z)."""
    torch.manual_seed(0)
    model = mlp([3, 4])  # 12 weights
    weight = penalised_weights(model)[0]
    inputs, labels = torch.randn(8, 3), torch.randint(0, 4, (8,))
    loss = torch.nn.functional.cross_entropy(model(inputs), labels)
    z = (weight - 0.5 * torch.autograd.grad(loss, weight)[0]).detach()
    lam0 = float(z.abs().flatten().kthvalue(6).values) / 0.5  # S_{ηλ0}(z) keeps 6 of 12 weights
    problem = DensityConstrained(model, 0.25, scale="log")  # target: 3 of 12
    with torch.no_grad():
        problem.multiplier.weight.fill_(lam0)
    primal = proximal_sgd(model, lr=0.5, momentum=0.0, strength=problem.threshold_level)
    dual = ExponentiatedAscent(problem.dual_parameters(), lr=1.0)
    optimizer = LookaheadProximalOptimizer(cmp=problem, primal_optimizers=primal, dual_optimizers=dual)
    rollout = optimizer.roll({"inputs": inputs, "labels": labels})
    lam1 = lam0 * 2.0  # (6/12) / 0.25
    assert problem.threshold_level().item() == pytest.approx(lam1)
    assert torch.allclose(weight.detach(), soft_threshold(z, 0.5 * lam1), atol=1e-7)
    measured = rollout.cmp_state.observed_constraints[problem.density].violation
    assert measured.item() == pytest.approx(math.log(2.0))
    assert rollout.loss is not None and rollout.loss.item() == pytest.approx(loss.item())


def test_lookahead_optimizer_rejects_other_primal_optimizers_and_problems() -> None:
    model = mlp([3, 4])
    problem = DensityConstrained(model, 0.5, scale="log")
    dual = ExponentiatedAscent(problem.dual_parameters(), lr=1.0)
    with pytest.raises(TypeError, match="ProximalL1"):
        LookaheadProximalOptimizer(
            cmp=problem, primal_optimizers=torch.optim.SGD(model.parameters(), lr=0.1), dual_optimizers=dual
        )

    class NoViolations(DensityConstrained):
        compute_violations = cooper.ConstrainedMinimizationProblem.compute_violations

    plain = NoViolations(model, 0.5)
    primal = proximal_sgd(model, lr=0.1, momentum=0.0, strength=plain.threshold_level)
    with pytest.raises(TypeError, match="compute_violations"):
        LookaheadProximalOptimizer(
            cmp=plain,
            primal_optimizers=primal,
            dual_optimizers=ExponentiatedAscent(plain.dual_parameters(), lr=1.0),
        )


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
    """One multiplier (threshold) per layer; Iris layers hold 32 and 24 weights (steps of 3.1 and 4.2 pts)."""
    config = TargetConfig(
        dataset="iris", method="constrained", target_density=0.4, layerwise=True, epochs=400
    )
    result = run_target(config, iris)  # type: ignore[arg-type]
    assert len(result.strengths) == 2 and all(s > 0 for s in result.strengths)
    for density in result.evaluation.layer_densities:
        assert abs(density - 0.4) <= 0.05, result.evaluation.layer_densities


@pytest.mark.parametrize("target", [0.15, 0.5])
def test_constrained_method_one_dual_step_for_every_target(iris: object, target: float) -> None:
    """The multiplicative dual update needs no per-target step: 0.15 and 0.5 with the default, one weight off at most."""
    config = TargetConfig(dataset="iris", method="constrained", target_density=target)
    result = run_target(config, iris)  # type: ignore[arg-type]
    assert abs(result.evaluation.density - target) <= 1.5 / 56, result.evaluation.density


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


def test_secant_step_by_hand() -> None:
    before, last, penalised = (
        torch.tensor([1.0, 0.0, 5.0]),
        torch.tensor([2.0, 1.0, 5.0]),
        torch.tensor([True, True, False]),
    )
    # direction (1, 1, 0); ||last_P||_1 = 3: half a step reaches 4, the full step stops at 5
    assert torch.allclose(
        secant_step(before, last, penalised, 4.0, max_step=1.0), torch.tensor([2.5, 1.5, 5.0])
    )
    assert torch.allclose(
        secant_step(before, last, penalised, 10.0, max_step=1.0), torch.tensor([3.0, 2.0, 5.0])
    )
    assert torch.equal(secant_step(before, last, penalised, 2.0, max_step=1.0), last)  # already at the bound


def test_epsilon_constraint_secant_predictor_lowers_the_front_at_equal_cost(iris: object) -> None:
    fronts, costs = {}, {}
    for predictor in (False, True):
        config = PathConfig(
            dataset="iris", method="epsilon-constraint", points=10, secant_predictor=predictor
        )
        result = run_path(config, iris)  # type: ignore[arg-type]
        fronts[predictor], costs[predictor] = np.asarray(result.front()), result.budget.gradient_evaluations
    assert costs[True] == costs[False] == 10 * 5 * 120
    assert fronts[True][-1, 1] < 0.8 * fronts[False][-1, 1], (fronts[True][-1], fronts[False][-1])
    assert fronts[True][:, 1].mean() < fronts[False][:, 1].mean()
    assert is_monotone(fronts[True]) and non_dominated_mask(fronts[True]).all()


# --- CLI --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["target", "--target-density", "1.5"], "target_density"),
        (["target", "--epochs", "0"], "epochs"),
        (["target", "--lr", "-1"], "lr"),
        (["target", "--dual-max-step", "0"], "dual_max_step"),
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
