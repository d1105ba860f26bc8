"""Tests of the gated layers L0Linear and L0Conv2d."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from problems.sparsity.gates import hard_concrete_prob_nonzero, hard_concrete_test_gate
from problems.sparsity.layers import L0Conv2d, L0Linear

ON = 3.0  # log alpha with test-time gate 1 and median gate on
HALF = -1.0  # test-time gate in (0, 1), median gate off
OFF = -5.0  # test-time gate 0


def _set(layer: L0Linear | L0Conv2d, values: torch.Tensor) -> None:
    with torch.no_grad():
        layer.gate.log_alpha.copy_(values)


def test_linear_weight_granularity_counts() -> None:
    layer = L0Linear(3, 2, granularity="weight")
    assert layer.gate.log_alpha.shape == (2, 3)
    _set(layer, torch.tensor([[ON, HALF, OFF], [OFF, OFF, ON]]))
    assert layer.weight_numel == 6
    assert layer.entries_per_gate == 1
    assert layer.deterministic_active() == 3
    assert layer.median_active() == 2
    assert layer.test_time_density() == pytest.approx(0.5)
    expected = hard_concrete_prob_nonzero(layer.gate.log_alpha.detach()).sum()
    torch.testing.assert_close(layer.expected_active().detach(), expected)
    torch.testing.assert_close(layer.expected_density().detach(), expected / 6)
    assert layer.active_weight_mask().tolist() == [[True, True, False], [False, False, True]]


def test_linear_neuron_granularity_gates_input_columns() -> None:
    layer = L0Linear(4, 5, granularity="neuron")
    assert layer.gate.log_alpha.shape == (4,)
    _set(layer, torch.tensor([ON, HALF, OFF, OFF]))
    assert layer.entries_per_gate == 5
    assert layer.weight_numel == 20
    assert layer.deterministic_active() == 10
    assert layer.median_active() == 5
    expected = 5 * hard_concrete_prob_nonzero(layer.gate.log_alpha.detach()).sum()
    torch.testing.assert_close(layer.expected_active().detach(), expected)
    layer.eval()
    weight = layer.gated_weight()
    assert bool((weight[:, 2:] == 0).all())
    torch.testing.assert_close(weight[:, 0], layer.weight[:, 0].detach())
    mask = layer.active_weight_mask()
    assert mask.shape == (5, 4)
    assert mask[:, :2].all() and not mask[:, 2:].any()
    assert not layer.gates_bias


def test_conv_weight_granularity_counts() -> None:
    layer = L0Conv2d(2, 3, 2, granularity="weight")
    assert layer.gate.log_alpha.shape == (3, 2, 2, 2)
    values = torch.full((3, 2, 2, 2), OFF)
    values[0, 0, 0, 0] = ON
    values[1, 1, 1, 1] = HALF
    _set(layer, values)
    assert layer.weight_numel == 24
    assert layer.deterministic_active() == 2
    assert layer.median_active() == 1
    assert not layer.gates_bias


def test_conv_neuron_granularity_gates_output_channels_and_bias() -> None:
    layer = L0Conv2d(2, 3, 3, granularity="neuron")
    assert layer.gate.log_alpha.shape == (3,)
    _set(layer, torch.tensor([ON, OFF, HALF]))
    assert layer.entries_per_gate == 2 * 3 * 3
    assert layer.deterministic_active() == 36
    assert layer.median_active() == 18
    assert layer.gates_bias
    layer.eval()
    with torch.no_grad():
        layer.bias.fill_(1.0)  # type: ignore[union-attr]
    out = layer(torch.randn(2, 2, 5, 5))
    assert out.shape == (2, 3, 3, 3)
    # A pruned output channel is exactly zero, bias included.
    assert bool((out[:, 1] == 0).all())
    _, bias = layer.gated_parameters()
    assert bias is not None
    z_hat = hard_concrete_test_gate(layer.gate.log_alpha.detach())
    torch.testing.assert_close(bias.detach(), z_hat)


def test_grouped_conv_neuron_counts() -> None:
    layer = L0Conv2d(4, 6, (3, 1), groups=2, bias=False, granularity="neuron")
    assert layer.weight.shape == (6, 2, 3, 1)
    assert layer.entries_per_gate == 6
    _set(layer, torch.tensor([ON, ON, OFF, OFF, OFF, HALF]))
    assert layer.deterministic_active() == 18
    assert layer.gated_parameters()[1] is None


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
def test_gated_weight_in_eval_equals_weight_times_test_gate(granularity: str) -> None:
    torch.manual_seed(0)
    layer = L0Linear(6, 4, granularity=granularity)  # type: ignore[arg-type]
    _set(layer, torch.randn(layer.gate.log_alpha.shape) * 3)
    layer.eval()
    z_hat = hard_concrete_test_gate(layer.gate.log_alpha.detach())
    expected = layer.weight.detach() * (z_hat if granularity == "weight" else z_hat[None, :])
    torch.testing.assert_close(layer.gated_weight().detach(), expected)
    x = torch.randn(7, 6)
    torch.testing.assert_close(layer(x), x @ expected.T + layer.bias.detach())  # type: ignore[union-attr]


def test_gated_weight_is_sampled_in_training_and_differentiable() -> None:
    torch.manual_seed(0)
    layer = L0Conv2d(1, 2, 3, granularity="weight")
    layer.train()
    a, b = layer.gated_weight(), layer.gated_weight()
    assert not torch.equal(a, b)
    loss = layer(torch.randn(3, 1, 6, 6)).pow(2).sum()
    loss.backward()
    assert layer.gate.log_alpha.grad is not None and layer.weight.grad is not None
    assert bool((layer.gate.log_alpha.grad != 0).any())


def test_expected_active_is_differentiable() -> None:
    layer = L0Linear(3, 2, granularity="neuron")
    layer.expected_active().backward()
    p = hard_concrete_prob_nonzero(layer.gate.log_alpha.detach())
    assert layer.gate.log_alpha.grad is not None
    torch.testing.assert_close(layer.gate.log_alpha.grad, 2 * p * (1 - p))


def test_linear_from_dense_copies_weights() -> None:
    dense = nn.Linear(5, 3).double()
    gated = L0Linear.from_dense(dense, "neuron", droprate_init=0.2)
    assert gated.weight.dtype == torch.float64 and gated.gate.log_alpha.dtype == torch.float64
    assert torch.equal(gated.weight.detach(), dense.weight.detach())
    assert torch.equal(gated.bias.detach(), dense.bias.detach())  # type: ignore[union-attr]
    assert gated.weight.data_ptr() != dense.weight.data_ptr()
    assert gated.granularity == "neuron"
    assert float(gated.gate.log_alpha.detach().mean()) == pytest.approx(math.log(0.8 / 0.2), abs=0.02)
    no_bias = L0Linear.from_dense(nn.Linear(2, 2, bias=False))
    assert no_bias.bias is None
    assert "granularity='weight'" in repr(no_bias)


def test_conv_from_dense_copies_weights_and_geometry() -> None:
    dense = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2)
    gated = L0Conv2d.from_dense(dense, "weight")
    assert torch.equal(gated.weight.detach(), dense.weight.detach())
    assert torch.equal(gated.bias.detach(), dense.bias.detach())  # type: ignore[union-attr]
    assert (gated.stride, gated.padding, gated.groups) == ((2, 2), (1, 1), 2)
    with torch.no_grad():
        gated.gate.log_alpha.fill_(50.0)  # every gate fully open: same function as the dense layer
    gated.eval()
    x = torch.randn(2, 4, 7, 7)
    torch.testing.assert_close(gated(x), dense(x))
    same = L0Conv2d.from_dense(nn.Conv2d(1, 1, 3, padding="same"))
    assert same.padding == "same"
    assert same(torch.randn(1, 1, 5, 5)).shape == (1, 1, 5, 5)
    assert "kernel_size=(3, 3)" in repr(same)


def test_from_dense_rejects_wrong_modules() -> None:
    with pytest.raises(TypeError, match=r"module must be an nn\.Linear, got Conv2d"):
        L0Linear.from_dense(nn.Conv2d(1, 1, 1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"module must be an nn\.Conv2d, got Linear"):
        L0Conv2d.from_dense(nn.Linear(1, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        L0Conv2d.from_dense(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: L0Linear(0, 2), "in_features must be a positive int, got 0"),
        (lambda: L0Linear(2, True), "out_features must be a positive int, got True"),
        (lambda: L0Linear(2, 2, granularity="channel"), "granularity must be one of .*'channel'"),  # type: ignore[arg-type]
        (lambda: L0Conv2d(1, 2, 0), r"kernel_size must be an int >= 1 or a pair of them, got 0"),
        (lambda: L0Conv2d(1, 2, 3, stride=(1, 1, 1)), r"stride must be .*\(1, 1, 1\)"),  # type: ignore[arg-type]
        (lambda: L0Conv2d(1, 2, 3, padding=-1), "padding must be an int >= 0"),
        (lambda: L0Conv2d(1, 2, 3, padding="full"), "padding must be an int, a pair, 'valid' or 'same'"),
        (lambda: L0Conv2d(1, 2, 3, stride=2, padding="same"), "padding='same' needs stride 1, got stride=2"),
        (lambda: L0Conv2d(3, 2, 3, groups=2), "must both be divisible by groups, got groups=2"),
        (lambda: L0Conv2d(2, 2, 3, groups=0), "groups must be a positive int, got 0"),
        (lambda: L0Conv2d(0, 2, 3), "in_channels must be a positive int, got 0"),
        (lambda: L0Conv2d(1, 0, 3), "out_channels must be a positive int, got 0"),
        (lambda: L0Conv2d(1, 2, 3, granularity="filter"), "granularity must be one of"),  # type: ignore[arg-type]
        (lambda: L0Linear(2, 2, droprate_init=1.5), "droprate_init must lie in"),
    ],
)
def test_invalid_layer_arguments(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]
