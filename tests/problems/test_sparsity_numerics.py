"""The sparsity trainer under bad numbers: the NaN/Inf policy end to end, and bfloat16 autocast."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

import cooper_like as cooper
from cooper_like.optim import NonFiniteError
from problems.scaffold.checkpoints import load_checkpoint
from problems.scaffold.classification import AutocastForward
from problems.scaffold.datasets import DataSplit, load_digits_split
from problems.scaffold.loop import epoch_batches
from problems.sparsity import train as trainer
from problems.sparsity.config import SparsityConfig
from problems.sparsity.train import train


def tiny(out: Path, **overrides: Any) -> SparsityConfig:
    values: dict[str, Any] = {
        "model": "tiny",
        "dataset": "digits",
        "finetune_epochs": 0,
        "epochs": 2,
        "out": out,
    }
    return SparsityConfig(**{**values, **overrides})


@pytest.fixture
def poisoned_data(monkeypatch: pytest.MonkeyPatch) -> DataSplit:
    """Digits whose first training rows hold NaN and Inf pixels."""
    data = load_digits_split()
    x_train = data.x_train.clone()
    x_train[0, 3], x_train[1, 5], x_train[2, 0] = math.nan, math.inf, -math.inf
    poisoned = DataSplit(x_train, data.y_train, data.x_test, data.y_test)
    monkeypatch.setattr(trainer, "load_data", lambda config: poisoned)
    return poisoned


def poisoned_batches(config: SparsityConfig, epochs: int, num_samples: int) -> int:
    return sum(
        any(int(index) < 3 for index in batch)
        for epoch in range(epochs)
        for batch in epoch_batches(num_samples, config.batch_size, config.seed, epoch)
    )


def test_a_non_finite_batch_stops_the_run_by_default(tmp_path: Path, poisoned_data: DataSplit) -> None:
    with pytest.raises(NonFiniteError, match="non-finite value in this step"):
        train(tiny(tmp_path / "run"))


def test_skip_drops_exactly_the_poisoned_batches(tmp_path: Path, poisoned_data: DataSplit) -> None:
    config = tiny(tmp_path / "run", non_finite="skip")
    with pytest.warns(RuntimeWarning, match="skipping a step with a non-finite value"):
        metrics = train(config)
    expected = poisoned_batches(config, 2, len(poisoned_data.x_train))
    assert 1 <= expected <= 6 and metrics["skipped_steps"] == expected
    assert all(math.isfinite(v) and v >= 0 for v in metrics["multipliers"])
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["optimizer"]["skipped_steps"] == expected
    assert all(bool(torch.isfinite(value).all()) for value in state["model"].values())
    assert all(math.isfinite(row["train_loss"]) for row in state["history"])
    assert state["history"][-1]["skipped_steps"] == expected


@pytest.mark.parametrize("method", ["penalized", "magnitude"])
def test_skip_holds_for_the_baselines(tmp_path: Path, poisoned_data: DataSplit, method: str) -> None:
    with pytest.warns(RuntimeWarning, match="skipping a step"):
        metrics = train(tiny(tmp_path / "run", method=method, non_finite="skip", epochs=1, finetune_epochs=1))
    assert metrics["skipped_steps"] >= 1 and 0 < metrics["test_time_density"] <= 1


def test_bfloat16_autocast_training_keeps_float32_multipliers(tmp_path: Path) -> None:
    reference = train(tiny(tmp_path / "fp32", epochs=12, target_density=[0.5]))
    mixed = train(tiny(tmp_path / "bf16", epochs=12, target_density=[0.5], autocast=True))
    state = load_checkpoint(tmp_path / "bf16" / "checkpoint.pt")
    assert state["problem"]["multipliers"]["density"]["weight"].dtype == torch.float32
    assert all(value.dtype == torch.float32 for value in state["model"].values())
    assert mixed["skipped_steps"] == 0 and all(math.isfinite(v) for v in mixed["multipliers"])
    # the density constraint drives both runs alike; bfloat16 changes the details only
    assert abs(mixed["expected_density"] - reference["expected_density"]) < 0.05
    assert mixed["test_accuracy"] > 0.5


def test_autocast_forward_runs_the_layers_in_bfloat16() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    seen: list[torch.dtype] = []
    model[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    output = AutocastForward(model)(torch.randn(5, 4))
    assert seen == [torch.bfloat16] and output.dtype == torch.float32
    output.sum().backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.dtype == torch.float32


class AutocastProblem(cooper.ConstrainedMinimizationProblem):
    """Regression whose loss and (batch-mean) violation are computed under CPU bfloat16 autocast."""

    def __init__(self) -> None:
        super().__init__()
        self.mean_output = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY, multiplier=cooper.multipliers.DenseMultiplier(1)
        )

    def compute_cmp_state(
        self, model: torch.nn.Module, inputs: torch.Tensor, autocast: bool
    ) -> cooper.CMPState:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            outputs = model(inputs).squeeze(-1)
            loss = (outputs - 1.0).pow(2).mean()
            violation = outputs.mean() - 0.5  # bfloat16 under autocast
        state = cooper.ConstraintState(violation.reshape(1))
        return cooper.CMPState(loss=loss, observed_constraints={self.mean_output: state})


@pytest.mark.parametrize("scheme", ["simultaneous", "alternating_dual_primal"])
def test_library_under_autocast_matches_float32(scheme: str) -> None:
    results = {}
    for autocast in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 1)
        problem = AutocastProblem()
        cls = {
            "simultaneous": cooper.optim.SimultaneousOptimizer,
            "alternating_dual_primal": cooper.optim.AlternatingDualPrimalOptimizer,
        }[scheme]
        optimizer = cls(
            problem,
            torch.optim.SGD(model.parameters(), lr=0.05),
            torch.optim.SGD(problem.dual_parameters(), lr=0.5, maximize=True),
        )
        inputs = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
        for _ in range(200):
            roll_out = optimizer.roll({"model": model, "inputs": inputs, "autocast": autocast})
            if autocast:
                assert (
                    roll_out.cmp_state.observed_constraints[problem.mean_output].violation.dtype
                    == torch.bfloat16
                )
        multiplier = problem.mean_output.multiplier
        assert isinstance(multiplier, cooper.multipliers.DenseMultiplier)
        weight = multiplier.weight
        assert (
            weight.dtype == torch.float32 and weight.grad is not None and weight.grad.dtype == torch.float32
        )
        results[autocast] = float(weight.detach()), float(model(inputs).mean().detach())
    (fp32_multiplier, fp32_mean), (bf16_multiplier, bf16_mean) = results[False], results[True]
    assert fp32_multiplier > 0.1 and abs(bf16_multiplier - fp32_multiplier) < 0.05
    assert abs(fp32_mean - 0.5) < 0.02 and abs(bf16_mean - 0.5) < 0.03
