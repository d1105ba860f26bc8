"""The dense warm-up and the start of the gates: held open, then from the droprate or the magnitudes."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from cooper_like.optim import ExtraAdam
from problems.scaffold.datasets import load_digits_split, validation_split
from problems.sparsity.config import SparsityConfig
from problems.sparsity.gate_start import (
    MAGNITUDE_GAP,
    MAGNITUDE_RAMP,
    OPEN_LOG_ALPHA,
    hold_gates_open,
    magnitude_margins,
    start_gates,
)
from problems.sparsity.layers import L0Conv2d, L0Linear
from problems.sparsity.models import gated_layers, test_time_density, tiny_mlp
from problems.sparsity.train import carry_adam_moments, load_data, train
from tests.problems.test_sparsity_train import tiny

THRESHOLD = -math.log(11.0)


def test_margins_by_hand() -> None:
    # ranks 3 > 2 > 1 > 0.5; covered before each: 0, 0.25, 0.5, 0.75; after: 0.25, 0.5, 0.75, 1
    margins = magnitude_margins(torch.tensor([3.0, 1.0, 2.0, 0.5]), torch.ones(4), 0.5, ramp=6.0, gap=1.0)
    expected = [1 + 6.0 * 0.5 / 0.5, -1 - 6.0 * 0.25 / 0.5, 1 + 6.0 * 0.25 / 0.5, -1 - 6.0 * 0.5 / 0.5]
    assert margins.tolist() == pytest.approx(expected)
    no_gap = magnitude_margins(torch.tensor([3.0, 1.0, 2.0, 0.5]), torch.ones(4), 0.5, ramp=6.0, gap=0.0)
    assert no_gap.tolist() == pytest.approx([6.0, -3.0, 3.0, -6.0])


def test_margins_count_the_entries_of_structured_gates() -> None:
    # gate 0 holds 3 of 4 entries: with target 0.5 it starts inside the budget and is active, gate 1 not
    margins = magnitude_margins(torch.tensor([2.0, 1.0]), torch.tensor([3.0, 1.0]), 0.5, ramp=6.0)
    assert margins[0] > 0 > margins[1]
    assert magnitude_margins(torch.tensor([2.0, 1.0]), torch.ones(2), 1.0).min() > 0  # target 1: all on


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target": 0.0}, "target must lie in"),
        ({"target": 1.5}, "target must lie in"),
        ({"ramp": 0.0}, "ramp must be > 0"),
        ({"gap": -1.0}, "gap must be >= 0"),
        ({"entries": torch.ones(3)}, "1-d of one length"),
    ],
)
def test_margins_reject_bad_input(kwargs: dict, message: str) -> None:
    arguments = {"scores": torch.ones(2), "entries": torch.ones(2), "target": 0.5, **kwargs}
    with pytest.raises(ValueError, match=message):
        magnitude_margins(**arguments)


def test_held_open_gates_are_exactly_one_in_training_and_at_test_time() -> None:
    model = tiny_mlp(64, 32, 10, "weight", 0.5)
    hold_gates_open(model)
    for _, layer in gated_layers(model):
        assert torch.equal(layer.gate.sample(), torch.ones(layer.gate.shape))
        assert torch.equal(layer.gate.test_gate(), torch.ones(layer.gate.shape))
        assert not layer.gate.log_alpha.requires_grad and float(layer.gate.log_alpha.min()) == OPEN_LOG_ALPHA


@pytest.mark.parametrize("target", [0.1, 0.3, 0.7])
def test_magnitude_start_ships_magnitude_pruning_mask_model_wise(target: float) -> None:
    torch.manual_seed(0)
    model = tiny_mlp(64, 32, 10, "weight", 0.5)
    start_gates(model, "magnitude", [target], layerwise=False)
    layers = [layer for _, layer in gated_layers(model)]
    magnitudes = torch.cat([layer.weight.detach().abs().flatten() for layer in layers])
    keep = math.ceil(target * magnitudes.numel())
    threshold = magnitudes.sort(descending=True).values[keep - 1]
    for layer in layers:
        assert torch.equal(layer.gate.active_mask(), layer.weight.detach().abs() >= threshold)
        assert layer.gate.log_alpha.requires_grad
        assert float(layer.gate.log_alpha.detach().max()) <= THRESHOLD + MAGNITUDE_GAP + MAGNITUDE_RAMP + 1e-5
    assert test_time_density(model) == pytest.approx(keep / magnitudes.numel())


def test_magnitude_start_layer_wise_puts_every_layer_on_its_target() -> None:
    torch.manual_seed(1)
    model = tiny_mlp(64, 32, 10, "weight", 0.5)
    start_gates(model, "magnitude", [0.2, 0.6], layerwise=True)
    for (_, layer), target in zip(gated_layers(model), [0.2, 0.6]):
        assert layer.test_time_density() == pytest.approx(
            math.ceil(target * layer.weight_numel) / layer.weight_numel
        )


def test_structured_gates_rank_by_the_root_mean_square_of_what_they_multiply() -> None:
    linear = L0Linear(3, 2, granularity="neuron")
    conv = L0Conv2d(1, 3, 2, granularity="neuron")
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[3.0, 0.0, 1.0], [4.0, 1.0, 1.0]]))
        conv.weight.copy_(torch.arange(12.0).reshape(3, 1, 2, 2))
    root_mean_squares = [5.0 / math.sqrt(2.0), 1.0 / math.sqrt(2.0), 1.0]
    assert linear.gate_magnitudes().tolist() == pytest.approx(root_mean_squares)
    filters = [math.sqrt(sum(v * v for v in range(4 * c, 4 * c + 4)) / 4) for c in range(3)]
    assert conv.gate_magnitudes().tolist() == pytest.approx(filters)
    model = torch.nn.Sequential(linear)
    start_gates(model, "magnitude", [0.3], layerwise=False)  # the strongest input neuron: 2 of 6 entries
    assert linear.gate.active_mask().tolist() == [True, False, False]
    start_gates(model, "magnitude", [0.34], layerwise=False)  # the second starts inside the budget: on
    assert linear.gate.active_mask().tolist() == [True, False, True]


def test_droprate_start_is_the_louizos_initialisation() -> None:
    torch.manual_seed(2)
    model = tiny_mlp(64, 32, 10, "weight", 0.3)
    hold_gates_open(model)
    start_gates(model, "droprate", [0.5], layerwise=False)
    for _, layer in gated_layers(model):
        mean = float(layer.gate.log_alpha.detach().mean())
        assert mean == pytest.approx(math.log(0.7 / 0.3), abs=0.01) and layer.gate.log_alpha.requires_grad
    with pytest.raises(ValueError, match="init must be"):
        start_gates(model, "random", [0.5], layerwise=False)


def test_the_warm_up_trains_the_dense_network_then_the_gates_start_on_target(tmp_path: Path) -> None:
    seen: dict[int, tuple[str, float]] = {}

    def record(run, step: int) -> None:
        seen[step] = (run.phase, test_time_density(run.model))

    metrics = train(tiny(tmp_path, epochs=30, warmup_epochs=2, target_density=[0.3]), on_step=record)
    steps_per_epoch = 12  # 1,438 digits in batches of 128
    assert seen[2 * steps_per_epoch] == ("warmup", 1.0)  # dense through the warm-up
    phase, density = seen[2 * steps_per_epoch + 1]
    assert phase == "train" and abs(density - 0.3) <= 0.01  # magnitude start: on target at once
    assert abs(metrics["test_time_density"] - 0.3) <= 0.02 and metrics["test_accuracy"] >= 0.8


def test_a_validation_run_evaluates_on_held_out_training_digits(tmp_path: Path) -> None:
    config = tiny(tmp_path, epochs=2, validation=True)
    held_out, digits = load_data(config), load_digits_split()
    assert torch.equal(held_out.x_test, validation_split(digits).x_test)
    assert len(held_out.y_train) + len(held_out.y_test) == len(digits.y_train)  # the test digits unseen
    metrics = train(config)
    assert metrics["evaluated_on"] == "validation"
    assert train(tiny(tmp_path / "test", epochs=2))["evaluated_on"] == "test"


def test_warm_up_defaults_and_bad_settings() -> None:
    assert (SparsityConfig().warmup_epochs, SparsityConfig().gate_init) == (10, "magnitude")
    assert SparsityConfig(epochs=7).warmup_epochs == 2
    penalized = SparsityConfig(method="penalized")
    assert (penalized.warmup_epochs, penalized.gate_init) == (0, "droprate")
    assert SparsityConfig(method="magnitude").warmup_epochs == 0
    with pytest.raises(ValueError, match="warmup_epochs must be < epochs"):
        SparsityConfig(epochs=5, warmup_epochs=5)
    with pytest.raises(ValueError, match="magnitude pruning trains dense throughout"):
        SparsityConfig(method="magnitude", warmup_epochs=3)
    with pytest.raises(ValueError, match="gate_init 'magnitude' needs the target density"):
        SparsityConfig(method="penalized", gate_init="magnitude")
    with pytest.raises(ValueError, match="warmup_epochs"):
        SparsityConfig(warmup_epochs=-1)


def test_a_neuron_gated_run_keeps_every_layer_after_the_magnitude_start(tmp_path: Path) -> None:
    # ranked by their norm, the gates of a layer with a small fan-out (the output layer's 10 weights
    # per input) all fell below the others' and the whole layer was cut: a constant network
    metrics = train(tiny(tmp_path, granularity="neuron", epochs=12, warmup_epochs=4, target_density=[0.3]))
    assert all(density > 0 for density in metrics["per_layer_density"].values()), metrics["per_layer_density"]
    assert abs(metrics["test_time_density"] - 0.3) <= 0.02 and metrics["test_accuracy"] >= 0.5


def adam_step(optimizer: torch.optim.Optimizer, param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    param.grad = grad.clone()
    optimizer.step()
    return param.detach().clone()


def test_carried_adam_moments_continue_the_sources_steps() -> None:
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(5))
    other = torch.nn.Parameter(torch.randn(3))  # no state in the source: left fresh
    source = torch.optim.Adam([param], lr=0.1)
    for _ in range(3):
        adam_step(source, param, torch.randn(5))
    start, saved, grad = param.detach().clone(), copy.deepcopy(source.state_dict()), torch.randn(5)
    expected = adam_step(source, param, grad)  # the source's fourth step
    with torch.no_grad():
        param.copy_(start)
    source.load_state_dict(saved)  # back to three steps
    target = torch.optim.Adam([param, other], lr=0.1)
    assert carry_adam_moments(source, target) == 1 and other not in target.state
    torch.testing.assert_close(adam_step(target, param, grad), expected)
    assert float(target.state[param]["step"]) == 4.0
    extra = ExtraAdam([param], lr=0.1)
    assert carry_adam_moments(source, extra) == 1 and extra.state[param]["step"] == 3
    assert isinstance(extra.state[param]["step"], int)  # ExtraAdam counts in an int, torch's Adam in a tensor
    amsgrad = torch.optim.Adam([param], lr=0.1, amsgrad=True)
    assert carry_adam_moments(source, amsgrad) == 1
    torch.testing.assert_close(amsgrad.state[param]["max_exp_avg_sq"], source.state[param]["exp_avg_sq"])
    adam_step(amsgrad, param, grad)  # steps with the carried state
    assert float(amsgrad.state[param]["step"]) == 4.0


@pytest.mark.parametrize("method", ["constrained", "penalized"])
@pytest.mark.parametrize("continue_adam", [True, False])
def test_the_weights_adam_runs_on_through_the_phases_or_restarts(
    tmp_path: Path, method: str, continue_adam: bool
) -> None:
    steps: dict[int, tuple[str, float]] = {}

    def record(run, step: int) -> None:
        weight = next(p for name, p in run.model.named_parameters() if name.endswith("weight"))
        steps[step] = (run.phase, float(run.optimizer.primal_optimizers[0].state[weight]["step"]))

    config = tiny(
        tmp_path,
        method=method,
        epochs=2,
        warmup_epochs=1,
        finetune_epochs=1,
        target_density=[0.5],
        continue_adam=continue_adam,
    )
    train(config, on_step=record)
    per_epoch = 12  # 1,438 digits in batches of 128
    # the first gated step, then the first fine-tuning step: the count goes on, or starts again at 1
    assert steps[per_epoch + 1] == ("train", per_epoch + 1.0 if continue_adam else 1.0)
    assert steps[2 * per_epoch + 1] == ("finetune", 2 * per_epoch + 1.0 if continue_adam else 1.0)
