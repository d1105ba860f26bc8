"""The sparsity trainer and CLI end to end, on scikit-learn's digits and a tiny gated MLP."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from problems.scaffold.checkpoints import load_checkpoint
from problems.sparsity import sweep as sweep_module
from problems.sparsity.cli import main
from problems.sparsity.config import SparsityConfig
from problems.sparsity.models import tiny_mlp
from problems.sparsity.problem import ControlledSparsity, density_targets
from problems.sparsity.sweep import RunSpec, bisect_lambda, next_lambda
from problems.sparsity.train import Run, finetune_lr_at, magnitude_masks, train


def tiny(tmp_path: Path, **overrides) -> SparsityConfig:
    values = {
        "model": "tiny",
        "dataset": "digits",
        "finetune_epochs": 0,
        "epochs": 60,
        "out": tmp_path / "run",
        **overrides,
    }
    return SparsityConfig(**values)


@pytest.mark.parametrize("target", [0.3, 0.6])
def test_constrained_run_lands_on_the_target(tmp_path: Path, target: float) -> None:
    metrics = train(tiny(tmp_path, target_density=[target]))
    assert abs(metrics["test_time_density"] - target) <= 0.02, metrics["test_time_density"]
    assert metrics["test_accuracy"] >= 0.8
    out = tmp_path / "run"
    for name in (
        "metrics.json",
        "metrics.csv",
        "metrics.jsonl",
        "checkpoint.pt",
        "density.png",
        "multipliers.png",
        "accuracy.png",
    ):
        assert (out / name).exists(), name
    saved = json.loads((out / "metrics.json").read_text())
    for key in (
        "test_accuracy",
        "expected_density",
        "test_time_density",
        "per_layer_density",
        "target_density",
        "wall_time_s",
        "epochs",
    ):
        assert key in saved
    assert len((out / "metrics.csv").read_text().splitlines()) == 61  # header + one row per epoch


def test_layerwise_run_holds_every_layer(tmp_path: Path) -> None:
    metrics = train(tiny(tmp_path, target_density=[0.5], layerwise=True, epochs=80))
    for name, density in metrics["per_layer_density"].items():
        assert abs(density - 0.5) <= 0.03, (name, density)


def test_resume_continues_exactly(tmp_path: Path) -> None:
    # the warm-up is explicit: its default (a third of ``epochs``) would differ between the two configs
    full = train(tiny(tmp_path / "a", epochs=6, warmup_epochs=2, out=tmp_path / "a"))
    train(tiny(tmp_path / "b", epochs=3, warmup_epochs=2, out=tmp_path / "b"))
    resumed = train(
        tiny(tmp_path / "b", epochs=6, warmup_epochs=2, out=tmp_path / "b2", resume=tmp_path / "b")
    )
    assert resumed["test_time_density"] == full["test_time_density"]
    first, second = (
        load_checkpoint(tmp_path / "a" / "checkpoint.pt"),
        load_checkpoint(tmp_path / "b2" / "checkpoint.pt"),
    )
    for key, value in first["model"].items():
        assert torch.equal(value, second["model"][key]), key


@pytest.mark.parametrize("method", ["penalized", "magnitude"])
def test_baselines_run(tmp_path: Path, method: str) -> None:
    metrics = train(tiny(tmp_path, method=method, epochs=10, finetune_epochs=3, lmbda=0.5))
    assert 0 < metrics["test_time_density"] <= 1 and metrics["test_accuracy"] > 0.3
    if method == "magnitude":
        assert abs(metrics["test_time_density"] - 0.3) < 0.01


def test_fine_tuning_trains_the_weights_under_frozen_test_time_gates(tmp_path: Path) -> None:
    snapshots: dict[str, dict[str, torch.Tensor]] = {}

    def record(run, step: int) -> None:
        if step in (20 * 12, 22 * 12):  # the ends of the main phase and of the fine-tuning
            snapshots[str(step)] = {k: v.clone() for k, v in run.model.state_dict().items()}

    metrics = train(tiny(tmp_path, epochs=20, finetune_epochs=2, warmup_epochs=0), on_step=record)
    before, after = snapshots["240"], snapshots["264"]
    gates = [key for key in before if key.endswith("log_alpha")]
    weights = [key for key in before if key.endswith("weight")]
    assert gates and all(torch.equal(before[k], after[k]) for k in gates)
    assert any(not torch.equal(before[k], after[k]) for k in weights)
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 22 and history[19]["test_time_density"] == metrics["test_time_density"]
    for column in ("violation/density", "strict_violation/density", "multiplier/density_floor"):
        assert column in history[0] and column in history[-1], column
    assert (
        history[0]["lr/primal/0/1"] == 2e-2 and history[-1]["lr/primal/0"] == 1e-3
    )  # gates, then fine-tuning
    assert history[0]["strict_violation/density"] == pytest.approx(history[0]["test_time_density"] - 0.3)
    assert (
        metrics["epochs"] == 22 and metrics["test_accuracy_before_finetune"] == history[19]["test_accuracy"]
    )


def test_fine_tuning_defaults_per_model() -> None:
    mlp, lenet = SparsityConfig(model="mlp"), SparsityConfig(model="lenet")
    assert (mlp.weight_lr, mlp.weight_finetune_lr, mlp.finetune_schedule) == (1e-2, 3e-3, "cosine")
    assert (lenet.weight_lr, lenet.weight_finetune_lr, lenet.finetune_schedule) == (3e-3, 3e-3, "constant")
    assert (mlp.continue_adam, lenet.continue_adam) == (False, True)
    explicit = SparsityConfig(model="mlp", finetune_lr=1e-3, finetune_schedule="constant")
    assert (explicit.weight_finetune_lr, explicit.finetune_schedule) == (1e-3, "constant")
    magnitude = SparsityConfig(
        model="mlp", method="magnitude"
    )  # its own protocol: the training rate, constant
    assert (magnitude.weight_finetune_lr, magnitude.finetune_schedule) == (1e-2, "constant")
    tuned = SparsityConfig(model="mlp", method="magnitude", finetune_lr=3e-3, finetune_schedule="cosine")
    assert (tuned.weight_finetune_lr, tuned.finetune_schedule) == (3e-3, "cosine")


def test_cosine_schedule_decays_from_the_fine_tuning_rate_to_zero() -> None:
    config = SparsityConfig(model="mlp", finetune_epochs=4)
    rates = [finetune_lr_at(config, epoch, batch, 10) for epoch in range(4) for batch in range(10)]
    assert rates[0] == 3e-3 and rates[-1] < 1e-5
    assert all(later < earlier for earlier, later in itertools.pairwise(rates))
    assert math.isclose(finetune_lr_at(config, 2, 0, 10), 1.5e-3)


@pytest.mark.parametrize("method", ["constrained", "penalized", "magnitude"])
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_every_method_fine_tunes_at_the_fine_tuning_rate(tmp_path: Path, method: str, schedule: str) -> None:
    steps_per_epoch = 12  # 1,438 digits in batches of 128
    config = tiny(
        tmp_path,
        method=method,
        epochs=2,
        finetune_epochs=2,
        lr=1e-2,
        finetune_lr=2e-3,
        finetune_schedule=schedule,
    )
    weight_rates: list[float] = []

    def record(run: Run, step: int) -> None:
        # the weights are the first parameter group (the gates, if any, the second)
        weight_rates.append(run.optimizer.primal_optimizers[0].param_groups[0]["lr"])

    train(config, on_step=record)
    training, tuning = weight_rates[: 2 * steps_per_epoch], weight_rates[2 * steps_per_epoch :]
    assert set(training) == {1e-2} and len(tuning) == 2 * steps_per_epoch
    if schedule == "constant":
        assert set(tuning) == {2e-3}
    else:
        assert tuning[0] == 2e-3 and all(b < a for a, b in itertools.pairwise(tuning)) and tuning[-1] < 1e-4


def test_magnitude_masks_keep_the_largest_weights() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -4.0], [0.5, 3.0]]))
        model[1].weight.copy_(torch.tensor([[2.0, -0.1]]))
    masks = magnitude_masks(model, [0.5], layerwise=False)  # keep 3 of 6: |-4|, 3, 2
    assert masks["0"].tolist() == [[False, True], [False, True]] and masks["1"].tolist() == [[True, False]]
    layer = magnitude_masks(model, [0.5], layerwise=True)
    assert layer["0"].sum() == 2 and layer["1"].sum() == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target-density", "1.5"], "target_density"),
        (["--target-density", "0"], "target_density"),
        (["--epochs", "0"], "epochs"),
        (["--dual-lr", "-1"], "dual_lr"),
        (["--gate-beta1", "1.0"], "gate_beta1"),
        (["--model", "resnet"], "model"),
        (["--target-density", "0.3,0.5"], "target_density"),
        (["--floor-gap", "-0.1"], "floor_gap"),
    ],
)
def test_cli_rejects_bad_values_naming_the_field(argv, message, capsys, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", str(tmp_path), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_train_and_export(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["train", "--model", "tiny", "--dataset", "digits", "--granularity", "neuron", "--epochs", "25"]
    assert main([*argv, "--target-density", "0.5", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["target_density"] == 0.5
    assert (
        main(["export", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(tmp_path / "small.pt")]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["max_abs_difference"] <= 1e-5
    assert report["parameters_exported"] < report["parameters_gated_model"]
    exported = torch.load(tmp_path / "small.pt", weights_only=False)
    assert isinstance(exported, torch.nn.Sequential)


def test_problem_argument_errors() -> None:
    with pytest.raises(ValueError, match="layer-wise sparsity needs 1 or 3 target densities, got 2"):
        density_targets([0.3, 0.4], num_layers=3, layerwise=True)
    with pytest.raises(ValueError, match="model-wise sparsity takes one target density, got 2"):
        density_targets([0.3, 0.4], num_layers=3, layerwise=False)
    with pytest.raises(ValueError, match=r"target densities must lie in \(0, 1\], got 0.0"):
        density_targets(0.0, num_layers=3, layerwise=False)
    with pytest.raises(ValueError, match="has no gated layers"):
        ControlledSparsity(torch.nn.Linear(2, 2), 0.3)
    with pytest.raises(ValueError, match="strict must be 'expected' or 'test-time', got 'x'"):
        ControlledSparsity(tiny_mlp(4, 3, 2), 0.3, strict="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="formulation must be 'lagrangian' or 'augmented-lagrangian'"):
        ControlledSparsity(tiny_mlp(4, 3, 2), 0.3, formulation="qp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="floor_gap must be >= 0, got -0.1"):
        ControlledSparsity(tiny_mlp(4, 3, 2), 0.3, floor_gap=-0.1)


def test_the_floor_bounds_the_density_from_below() -> None:
    model = tiny_mlp(4, 3, 2)  # every gate starts open: test-time density 1
    problem = ControlledSparsity(model, [0.5, 0.8], layerwise=True, floor_gap=0.1)
    states = problem.compute_cmp_state(
        torch.zeros(5, 4), torch.zeros(5, dtype=torch.long)
    ).observed_constraints
    upper, floor = states[problem.density], states[problem.density_floor]
    assert torch.allclose(upper.strict_violation, torch.tensor([0.5, 0.2]))  # 1 - target
    assert torch.allclose(floor.strict_violation, torch.tensor([-0.6, -0.3]))  # (target - 0.1) - 1
    assert torch.allclose(floor.violation, -(upper.violation + 0.1))  # the same proxy, mirrored
    one_sided = ControlledSparsity(model, 0.3, floor_gap=0.3)
    assert [name for name, _ in one_sided.named_constraints()] == ["density"]


def test_extrapolation_with_nupi_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nuPI is not one"):
        train(tiny(tmp_path, scheme="extrapolation", dual_optimizer="nupi", epochs=1))


@pytest.mark.parametrize(
    "overrides",
    [
        {"scheme": "alternating"},
        {"scheme": "extrapolation"},
        {"dual_optimizer": "nupi"},
        {"formulation": "augmented-lagrangian"},
        {"strict": "expected"},
    ],
)
def test_every_updater_and_scheme_runs(tmp_path: Path, overrides) -> None:
    metrics = train(tiny(tmp_path, epochs=3, **overrides))
    assert 0 < metrics["test_time_density"] <= 1


def test_next_lambda_bisects_until_bracketed_then_interpolates() -> None:
    assert next_lambda(1e-3, 10.0, None, (10.0, 0.05), 0.3) == pytest.approx(0.1)
    # density 0.5 at λ=0.01 and 0.1 at λ=1: the line in log λ crosses 0.3 halfway, at λ=0.1
    assert next_lambda(0.01, 1.0, (0.01, 0.5), (1.0, 0.1), 0.3) == pytest.approx(0.1)
    # a crossing at the very edge of the bracket is pulled to 10% inside it
    assert next_lambda(0.01, 1.0, (0.01, 0.31), (1.0, 0.1), 0.3) == pytest.approx(0.01 * 100**0.1)


def test_lambda_search_stops_within_one_point(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def fake_run(spec: RunSpec, root: Path, epochs: int | None) -> dict[str, float]:
        return {"test_time_density": 0.6 - 0.1 * math.log10(spec.lmbda)}  # 0.3 at λ = 1000

    monkeypatch.setattr(sweep_module, "run_once", fake_run)
    tried = bisect_lambda("mlp", 0.3, tmp_path, None, low=1e-3, high=1e5)
    assert abs(tried[-1][1]["test_time_density"] - 0.3) <= 0.01
    assert len(tried) <= 4 and round(tried[0][1]["test_time_density"], 3) == 0.5


def fake_metrics(accuracy: float, density: float) -> dict[str, Any]:
    return {
        "test_accuracy": accuracy,
        "test_time_density": density,
        "expected_density": density - 0.05,
        "per_layer_density": {"fc1": density},
    }


def test_sweep_table_pairs_seeds_and_averages_the_penalized_seeds() -> None:
    results = {
        RunSpec("mlp", 0.3, "constrained", 0): fake_metrics(0.955, 0.299),
        RunSpec("mlp", 0.3, "constrained", 1): fake_metrics(0.950, 0.298),
        RunSpec("mlp", 0.3, "magnitude", 0): fake_metrics(0.950, 0.3),
        RunSpec("mlp", 0.3, "magnitude", 1): fake_metrics(0.952, 0.3),
        RunSpec("mlp", 0.3, "penalized", 1, lmbda=1.5): fake_metrics(0.940, 0.33),
        RunSpec("mlp", 0.3, "penalized", 1, lmbda=9.0): fake_metrics(0.100, 0.01),  # another λ: ignored
    }
    bisections = {("mlp", 0.3): [(3.0, fake_metrics(0.9, 0.2)), (1.5, fake_metrics(0.945, 0.305))]}
    table = sweep_module.summarize(results, bisections)
    main_row, paired_row = [line for line in table.splitlines() if line.startswith("| mlp")]
    assert "| 95.25 | 94.25 (λ=1.5, 2 runs; 0.305, 0.330) | 95.10 |" in main_row
    assert "| +0.5, -0.2 | +0.15 ± 0.35 | +1.0, +1.0 | +1.00 ± 0.00 |" in paired_row


def test_sweep_table_compares_both_methods_with_the_dense_network_of_each_seed() -> None:
    def magnitude(accuracy: float, dense: float) -> dict[str, Any]:
        return {**fake_metrics(accuracy, 0.3), "test_accuracy_before_finetune": dense}

    results = {
        RunSpec("mlp", 0.3, "constrained", 0): fake_metrics(0.955, 0.3),
        RunSpec("mlp", 0.3, "constrained", 1): fake_metrics(0.950, 0.3),
        RunSpec("mlp", 0.3, "magnitude", 0): magnitude(0.950, 0.960),
        RunSpec("mlp", 0.3, "magnitude", 1): magnitude(0.952, 0.940),
        RunSpec("mlp", 0.5, "constrained", 0): fake_metrics(0.950, 0.5),
        RunSpec("mlp", 0.5, "constrained", 1): fake_metrics(0.960, 0.5),
        RunSpec("mlp", 0.5, "magnitude", 0): magnitude(0.950, 0.960),
        RunSpec("mlp", 0.5, "magnitude", 1): magnitude(0.950, 0.940),
    }
    table = sweep_module.against_dense(results)
    rows = [line for line in table.splitlines() if line.startswith("| mlp")]
    # dense 95.0 on average; constrained - dense -0.5, +1.0 and -1.0, +2.0; magnitude - dense -1.0, +1.2 and -1.0, +1.0
    assert rows[0] == "| mlp | model-wise | 0.3 | 2 | 95.00 | +0.25 | +0.10 |"
    assert rows[1] == "| mlp | model-wise | 0.5 | 2 | 95.00 | +0.50 | +0.00 |"
    # gaps +0.5, -0.2 (variance 0.245) and 0.0, +1.0 (variance 0.5): pooled s.d. sqrt((0.245 + 0.5) / 2) = 0.61;
    # over 2 seeds ±0.43
    assert (
        "mlp: paired standard deviation of constrained − magnitude 0.61 points (pooled over 2 cells)" in table
    )
    assert "over 2 seeds carries ±0.43." in table
    assert sweep_module.against_dense({RunSpec("mlp", 0.3, "constrained", 0): fake_metrics(0.9, 0.3)}) == ""


def test_sweep_report_reads_the_penalized_seeds_back(tmp_path: Path) -> None:
    def write(name: str, method: str, seed: int, accuracy: float, lmbda: float | None = None) -> None:
        config = {"model": "mlp", "target_density": [0.3], "method": method, "seed": seed, "layerwise": False}
        if lmbda is not None:
            config["lmbda"] = lmbda
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({**fake_metrics(accuracy, 0.3), "config": config}))

    write("c0", "constrained", 0, 0.95)
    write("c1", "constrained", 1, 0.96)
    write("p0", "penalized", 0, 0.94, lmbda=2.0)
    write("p1", "penalized", 1, 0.92, lmbda=2.0)
    table = sweep_module.report(tmp_path)
    assert "| 93.00 (λ=2, 1 runs; 0.300, 0.300) |" in table
    assert "| +1.0, +4.0 | +2.50 ± 1.50 |" in table
    assert (tmp_path / "table.md").read_text() == table
