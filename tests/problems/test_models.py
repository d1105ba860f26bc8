"""Tests of the sparsity models and the density helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from problems.sparsity.gates import hard_concrete_prob_nonzero
from problems.sparsity.layers import L0Conv2d, L0Linear
from problems.sparsity.models import (
    dense_lenet5_caffe,
    dense_mlp_300_100,
    dense_tiny_mlp,
    expected_density,
    gate_module,
    gated_layers,
    lenet5_caffe,
    mlp_300_100,
    per_layer_density,
    test_time_density,
    test_time_density_median_gate,
    tiny_mlp,
)


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
def test_mlp_300_100_shapes(granularity: str) -> None:
    model = mlp_300_100(granularity)  # type: ignore[arg-type]
    assert [name for name, _ in gated_layers(model)] == ["fc1", "fc2", "fc3"]
    assert [layer.weight_numel for _, layer in gated_layers(model)] == [784 * 300, 300 * 100, 100 * 10]
    assert model(torch.rand(4, 784)).shape == (4, 10)
    assert model(torch.rand(4, 1, 28, 28)).shape == (4, 10)
    if granularity == "neuron":
        assert [layer.gate.num_gates for _, layer in gated_layers(model)] == [784, 300, 100]


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
def test_lenet5_caffe_shapes(granularity: str) -> None:
    model = lenet5_caffe(granularity)  # type: ignore[arg-type]
    layers = gated_layers(model)
    assert [name for name, _ in layers] == ["conv1", "conv2", "fc1", "fc2"]
    assert [layer.weight_numel for _, layer in layers] == [500, 25_000, 400_000, 5_000]
    assert isinstance(layers[0][1], L0Conv2d) and isinstance(layers[2][1], L0Linear)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert model(torch.rand(2, 784)).shape == (2, 10)
    if granularity == "neuron":
        assert [layer.gate.num_gates for _, layer in layers] == [20, 50, 800, 500]


def test_dense_counterparts_have_no_gates() -> None:
    for model in (dense_mlp_300_100(), dense_lenet5_caffe(), dense_tiny_mlp(4, [3, 2], 2)):
        assert gated_layers(model) == []
        assert not any(isinstance(m, (L0Linear, L0Conv2d)) for m in model.modules())
    assert dense_lenet5_caffe()(torch.rand(3, 784)).shape == (3, 10)


def test_tiny_mlp() -> None:
    model = tiny_mlp(6, 5, 3, "neuron")
    assert model(torch.rand(2, 6)).shape == (2, 3)
    assert [name for name, _ in gated_layers(model)] == ["fc1", "fc2"]
    deep = tiny_mlp(6, (5, 4), 3)
    assert [layer.weight.shape for _, layer in gated_layers(deep)] == [(5, 6), (4, 5), (3, 4)]
    with pytest.raises(ValueError, match="hidden=0"):
        tiny_mlp(6, 0, 3)
    with pytest.raises(ValueError, match=r"in_features=2\.5"):
        dense_tiny_mlp(2.5, 2, 3)  # type: ignore[arg-type]


class _Custom(nn.Linear):
    """A Linear subclass: gate_module must leave it alone."""


def test_gate_module_replaces_every_linear_and_conv_in_a_copy() -> None:
    torch.manual_seed(0)
    dense = nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.ReLU(),
        nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 5), nn.ModuleList([nn.Linear(5, 5)])),
        _Custom(5, 5),
    )
    gated = gate_module(dense, "neuron", droprate_init=0.3)
    assert isinstance(gated, nn.Sequential)
    names = [name for name, _ in gated_layers(gated)]
    assert names == ["0", "2.1", "2.2.0"]
    assert type(gated[3]) is _Custom
    # The original is untouched and the weights are copied.
    assert gated_layers(dense) == []
    conv, gated_conv = dense[0], gated[0]
    assert type(conv) is nn.Conv2d and isinstance(gated_conv, L0Conv2d)
    assert torch.equal(gated_conv.weight, conv.weight)
    assert all(layer.granularity == "neuron" for _, layer in gated_layers(gated))
    # Gating an already gated model changes nothing.
    assert len(gated_layers(gate_module(gated))) == 3
    # A bare layer is gated too.
    assert isinstance(gate_module(nn.Linear(2, 3)), L0Linear)
    assert isinstance(gate_module(nn.Conv2d(2, 3, 1)), L0Conv2d)


def test_gate_module_of_dense_lenet_matches_dense_when_gates_open() -> None:
    dense = dense_lenet5_caffe()
    gated = gate_module(dense, "weight")
    assert len(gated_layers(gated)) == 4
    for _, layer in gated_layers(gated):
        with torch.no_grad():
            layer.gate.log_alpha.fill_(40.0)
    gated.eval()
    x = torch.rand(2, 784)
    torch.testing.assert_close(gated(x), dense(x))


def test_gate_module_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match=r"model must be an nn\.Module, got int"):
        gate_module(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"granularity must be one of .*'block'"):
        gate_module(nn.Linear(2, 2), "block")  # type: ignore[arg-type]


def _hand_set_model() -> tuple[nn.Sequential, L0Linear, L0Linear]:
    """fc1: 3x4 weights, per-weight gates; fc2: 2x3 weights, per-input-neuron gates."""
    fc1 = L0Linear(4, 3, granularity="weight")
    fc2 = L0Linear(3, 2, granularity="neuron")
    with torch.no_grad():
        fc1.gate.log_alpha.copy_(
            torch.tensor(
                [
                    [3.0, 3.0, -1.0, -5.0],  # 2 median-on, 3 test-time on
                    [-5.0, -5.0, -5.0, -5.0],  # all off
                    [1.0, -2.0, -2.0, -2.0],  # 1 median-on, 4 test-time on
                ]
            )
        )
        fc2.gate.log_alpha.copy_(torch.tensor([2.0, -1.0, -4.0]))  # neuron 0 on (both), 1 test-time only
    return nn.Sequential(fc1, nn.ReLU(), fc2), fc1, fc2


def test_density_helpers_on_hand_set_log_alpha() -> None:
    model, fc1, fc2 = _hand_set_model()
    total = 12 + 6
    # Test-time: fc1 has 7 active weights, fc2 has 2 active input neurons x 2 outputs = 4.
    assert test_time_density(model) == pytest.approx((7 + 4) / total)
    # Median gate: fc1 has 3, fc2 has 1 neuron x 2 = 2.
    assert test_time_density_median_gate(model) == pytest.approx((3 + 2) / total)
    assert per_layer_density(model) == pytest.approx({"0": 7 / 12, "2": 4 / 6})
    p1 = hard_concrete_prob_nonzero(fc1.gate.log_alpha.detach())
    p2 = hard_concrete_prob_nonzero(fc2.gate.log_alpha.detach())
    expected = (p1.sum() + 2 * p2.sum()) / total
    density = expected_density(model)
    torch.testing.assert_close(density.detach(), expected)
    density.backward()
    assert fc1.gate.log_alpha.grad is not None and fc2.gate.log_alpha.grad is not None
    assert fc1.weight.grad is None  # the density does not depend on the weights


def test_density_helpers_are_size_weighted() -> None:
    model = tiny_mlp(10, 10, 1)  # fc1: 100 weights, fc2: 10 weights
    layers = [layer for _, layer in gated_layers(model)]
    with torch.no_grad():
        layers[0].gate.log_alpha.fill_(5.0)
        layers[1].gate.log_alpha.fill_(-5.0)
    assert test_time_density(model) == pytest.approx(100 / 110)
    assert per_layer_density(model) == {"fc1": 1.0, "fc2": 0.0}


def test_density_helpers_need_gated_layers() -> None:
    dense = dense_mlp_300_100()
    for helper in (expected_density, test_time_density, test_time_density_median_gate, per_layer_density):
        with pytest.raises(ValueError, match=r"model \(Sequential\) has no gated layers"):
            helper(dense)
