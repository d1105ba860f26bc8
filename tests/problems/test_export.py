"""Tests of exporting a gated model to a physically smaller dense model."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TypeVar

import pytest
import torch
from torch import nn

from problems.scaffold.datasets import load_mnist5k
from problems.sparsity.export import (
    SelectInputs,
    count_nonzero_parameters,
    count_parameters,
    export_dense,
    fold_gates,
    measure_speedup,
)
from problems.sparsity.layers import L0Conv2d, L0Layer, L0Linear
from problems.sparsity.models import gate_module, lenet5_caffe, mlp_300_100, tiny_mlp

ModuleT = TypeVar("ModuleT", bound=nn.Module)

OFF = -8.0  # test-time gate exactly 0 (log alpha <= -ln 11)
ON = 8.0  # test-time gate exactly 1


def _child(model: nn.Module, name: str, kind: type[ModuleT]) -> ModuleT:
    module = model.get_submodule(name)
    assert isinstance(module, kind), f"{name} is a {type(module).__name__}, expected {kind.__name__}"
    return module


def _gated(model: nn.Module, name: str) -> L0Layer:
    return _child(model, name, L0Layer)


def _set_bias(layer: nn.Module, index: int, value: float) -> None:
    bias = layer.get_parameter("bias")
    with torch.no_grad():
        bias[index] = value


def _set_gates(layer: L0Layer, off: torch.Tensor | Iterable[int] | None, generator: torch.Generator) -> None:
    """log alpha ~ U(-1, 4) (test-time gates in (0, 1], so the scaling is folded too), ``off`` -> OFF.

    ``off`` is a boolean mask shaped like the gates or a list of flat gate indices.
    """
    log_alpha = layer.gate.log_alpha
    values = torch.rand(log_alpha.shape, generator=generator) * 5.0 - 1.0
    if off is not None:
        if isinstance(off, torch.Tensor) and off.dtype == torch.bool:
            values[off] = OFF
        else:
            values.view(-1)[list(off)] = OFF
    with torch.no_grad():
        log_alpha.copy_(values)


def _random_mask(shape: tuple[int, ...], fraction: float, generator: torch.Generator) -> torch.Tensor:
    """A boolean mask with exactly ``round(fraction * numel)`` True entries at random places."""
    numel = int(torch.Size(shape).numel())
    chosen = torch.randperm(numel, generator=generator)[: round(fraction * numel)]
    mask = torch.zeros(numel, dtype=torch.bool)
    mask[chosen] = True
    return mask.view(shape)


def _weight_shapes(model: nn.Sequential) -> list[tuple[int, ...]]:
    return [tuple(m.weight.shape) for m in model if isinstance(m, nn.Linear | nn.Conv2d)]


def _assert_plain(model: nn.Module) -> None:
    assert not any(isinstance(m, L0Layer) for m in model.modules())
    assert not any("log_alpha" in name for name, _ in model.named_parameters())


def _assert_same_outputs(gated: nn.Module, exported: nn.Module, inputs: Iterable[torch.Tensor]) -> None:
    gated.eval()
    with torch.no_grad():
        for x in inputs:
            diff = (exported(x) - gated(x)).abs().max().item()
            assert diff <= 1e-5, f"max abs difference {diff} on input of shape {tuple(x.shape)}"


@pytest.fixture(scope="module")
def mnist_digits() -> torch.Tensor:
    pixels, _ = load_mnist5k()
    return pixels[:128]


def _inputs(mnist_digits: torch.Tensor) -> list[torch.Tensor]:
    return [
        torch.randn(32, 1, 28, 28),
        torch.rand(16, 784),
        mnist_digits,
        mnist_digits.view(-1, 1, 28, 28),
    ]


# --- MLP-300-100 -------------------------------------------------------------------------------


def _pruned_mlp(granularity: str) -> nn.Sequential:
    """About half the gates off; fc3 has none off.

    Neuron: fc1 392 / 784 inputs off, fc2 180 / 300, fc3 0 / 100. Weight: 50% of fc1 and fc2 off
    at random, plus fc2 column 7 (all of fc1 unit 7's outgoing weights) and fc2 row 3 (a unit
    left with its bias only, set to 0.5 so its constant relu(0.5) is folded into fc3's bias).
    """
    generator = torch.Generator().manual_seed(1)
    model = mlp_300_100(granularity)  # type: ignore[arg-type]
    fc1, fc2, fc3 = (_gated(model, name) for name in ("fc1", "fc2", "fc3"))
    if granularity == "neuron":
        _set_gates(fc1, _random_mask((784,), 0.5, generator), generator)
        _set_gates(fc2, _random_mask((300,), 0.6, generator), generator)
        _set_gates(fc3, None, generator)
    else:
        _set_gates(fc1, _random_mask((300, 784), 0.5, generator), generator)
        off = _random_mask((100, 300), 0.5, generator)
        off[:, 7] = True
        off[3, :] = True
        _set_gates(fc2, off, generator)
        _set_gates(fc3, None, generator)
        _set_bias(fc2, 3, 0.5)
    return model


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
def test_mlp_export_matches_gated_model(granularity: str, mnist_digits: torch.Tensor) -> None:
    model = _pruned_mlp(granularity)
    exported = export_dense(model)
    _assert_plain(exported)
    _assert_same_outputs(model, exported, _inputs(mnist_digits))
    if granularity == "neuron":
        kept_inputs, kept_hidden = 784 - 392, 300 - 180
        assert _weight_shapes(exported) == [(kept_hidden, kept_inputs), (100, kept_hidden), (10, 100)]
        assert _child(exported, "fc1_select_inputs", SelectInputs).out_features == kept_inputs
    else:
        # fc1 unit 7 is never read; fc2 unit 3 is a constant folded into fc3's bias.
        assert _weight_shapes(exported) == [(299, 784), (99, 299), (10, 99)]
        assert not any(isinstance(m, SelectInputs) for m in exported)


# --- LeNet-5-Caffe ------------------------------------------------------------------------------


def _pruned_lenet(granularity: str) -> nn.Sequential:
    """About half the gates off; fc2 (weight) has none off.

    Neuron: conv1 8 / 20 channels off, conv2 channels 0..24 off, fc1: every input of conv2 channels
    25, 26, 27 off (whole 4x4 blocks) and 30% of the other inputs, fc2 250 / 500 inputs off.
    Weight: 50% of every gate of conv1, conv2, fc1 off, plus every gate of conv2 filter 30 (bias set
    to 0.5: a constant channel folded into fc1's bias) and every fc1 column of conv2 channel 40
    (a channel never read).
    """
    generator = torch.Generator().manual_seed(2)
    model = lenet5_caffe(granularity)  # type: ignore[arg-type]
    conv1, conv2, fc1, fc2 = (_gated(model, name) for name in ("conv1", "conv2", "fc1", "fc2"))
    if granularity == "neuron":
        _set_gates(conv1, _random_mask((20,), 0.4, generator), generator)
        _set_gates(conv2, range(25), generator)
        fc1_off = _random_mask((50, 16), 0.3, generator)
        fc1_off[25:28] = True
        _set_gates(fc1, fc1_off.view(800), generator)
        _set_gates(fc2, _random_mask((500,), 0.5, generator), generator)
    else:
        _set_gates(conv1, _random_mask((20, 1, 5, 5), 0.5, generator), generator)
        conv2_off = _random_mask((50, 20, 5, 5), 0.5, generator)
        conv2_off[30] = True
        _set_gates(conv2, conv2_off, generator)
        fc1_off = _random_mask((500, 50, 16), 0.5, generator)
        fc1_off[:, 40] = True
        _set_gates(fc1, fc1_off.view(500, 800), generator)
        _set_gates(fc2, None, generator)
        _set_bias(conv2, 30, 0.5)
    return model


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
def test_lenet_export_matches_gated_model(granularity: str, mnist_digits: torch.Tensor) -> None:
    model = _pruned_lenet(granularity)
    exported = export_dense(model)
    _assert_plain(exported)
    _assert_same_outputs(model, exported, _inputs(mnist_digits))
    if granularity == "neuron":
        conv2_kept = 25 - 3  # channels 25..27 are never read by fc1
        assert _weight_shapes(exported) == [
            (12, 1, 5, 5),
            (conv2_kept, 12, 5, 5),
            (250, conv2_kept * 16),
            (10, 250),
        ]
    else:
        assert _weight_shapes(exported) == [(20, 1, 5, 5), (48, 20, 5, 5), (500, 48 * 16), (10, 500)]


def test_weight_granularity_keeps_zeros_in_place() -> None:
    generator = torch.Generator().manual_seed(3)
    model = mlp_300_100("weight")
    for layer in (_gated(model, name) for name in ("fc1", "fc2", "fc3")):
        _set_gates(layer, _random_mask(tuple(layer.gate.log_alpha.shape), 0.3, generator), generator)
    exported, folded = export_dense(model), fold_gates(model)
    dense_count = 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert count_parameters(exported) == count_parameters(folded) == dense_count
    zeros = round(0.3 * 784 * 300) + round(0.3 * 300 * 100) + round(0.3 * 100 * 10)
    assert count_nonzero_parameters(exported) == dense_count - zeros
    assert count_parameters(model) == dense_count + 784 * 300 + 300 * 100 + 100 * 10  # log alphas


# --- exact counts, input selection, whole layers off ---------------------------------------------


def _tiny(pattern: dict[str, list[int]]) -> nn.Sequential:
    """tiny_mlp 6 -> 5 -> 4 -> 3 with neuron gates; ``pattern`` lists the off gates of each layer."""
    generator = torch.Generator().manual_seed(4)
    model = tiny_mlp(6, [5, 4], 3, "neuron")
    for name in ("fc1", "fc2", "fc3"):
        _set_gates(_gated(model, name), pattern.get(name, []), generator)
    return model


def test_tiny_mlp_removes_exactly_the_expected_parameters() -> None:
    model = _tiny({"fc1": [1, 4], "fc2": [0, 2], "fc3": [3]})
    exported = export_dense(model)
    # fc1: inputs {0, 2, 3, 5} kept, outputs {1, 3, 4} kept (fc2 reads neither 0 nor 2):  3 x 4 + 3
    # fc2: inputs {1, 3, 4}, outputs {0, 1, 2} (fc3 does not read 3):                      3 x 3 + 3
    # fc3: inputs {0, 1, 2}, all 3 outputs:                                                3 x 3 + 3
    assert count_parameters(exported) == (3 * 4 + 3) + (3 * 3 + 3) + (3 * 3 + 3) == 39
    dense = (6 * 5 + 5) + (5 * 4 + 4) + (4 * 3 + 3)
    assert count_parameters(fold_gates(model)) == dense == 74
    assert count_parameters(model) == dense + 6 + 5 + 4
    assert count_parameters(model) - count_parameters(exported) == 89 - 39
    assert _child(exported, "fc1_select_inputs", SelectInputs).index.tolist() == [0, 2, 3, 5]
    assert _weight_shapes(exported) == [(3, 4), (3, 3), (3, 3)]
    _assert_same_outputs(model, exported, [torch.randn(8, 6)])


def test_first_layer_input_selection() -> None:
    model = _tiny({"fc1": [0, 3]})
    exported = export_dense(model)
    names = [name for name, _ in exported.named_children()]
    assert names == ["flatten", "fc1_select_inputs", "fc1", "relu1", "fc2", "relu2", "fc3"]
    selection = _child(exported, "fc1_select_inputs", SelectInputs)
    assert selection.index.tolist() == [1, 2, 4, 5]
    assert (selection.in_features, selection.out_features) == (6, 4)
    assert exported.state_dict()["fc1_select_inputs.index"].tolist() == [1, 2, 4, 5]  # saved as a buffer
    x = torch.randn(5, 6)
    torch.testing.assert_close(selection(x), x[:, [1, 2, 4, 5]])
    _assert_same_outputs(model, exported, [x])
    # An MLP on images selects after its own flatten.
    mlp = _pruned_mlp("neuron")
    _assert_same_outputs(mlp, export_dense(mlp), [torch.rand(4, 1, 28, 28)])


def test_no_selection_when_every_input_is_read() -> None:
    exported = export_dense(_tiny({"fc2": [1]}))
    assert not any(isinstance(m, SelectInputs) for m in exported)
    assert _weight_shapes(exported) == [(4, 6), (4, 4), (3, 4)]


def test_select_inputs_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        SelectInputs([0], 0)
    with pytest.raises(ValueError, match="non-empty 1-d"):
        SelectInputs([], 3)
    with pytest.raises(ValueError, match="strictly increasing within"):
        SelectInputs([0, 3], 3)
    with pytest.raises(ValueError, match="strictly increasing within"):
        SelectInputs([2, 1], 3)


def test_a_layer_with_every_gate_off_keeps_one_zero_placeholder_unit() -> None:
    # fc2 reads no input: the whole network is the constant fc3(relu(b2)); every layer keeps one unit
    # whose weights are all zero, and the constant ends up in fc3's bias.
    model = _tiny({"fc2": [0, 1, 2, 3, 4]})
    exported = export_dense(model)
    assert _weight_shapes(exported) == [(1, 1), (1, 1), (3, 1)]
    assert _child(exported, "fc1_select_inputs", SelectInputs).index.tolist() == [0]
    fc1, fc2, fc3 = (_child(exported, name, nn.Linear) for name in ("fc1", "fc2", "fc3"))
    assert [int(torch.count_nonzero(layer.weight)) for layer in (fc1, fc2, fc3)] == [0, 0, 0]
    assert fc1.bias.tolist() == [0.0] and fc2.bias.tolist() == [0.0]
    _assert_same_outputs(model, exported, [torch.randn(4, 6)])


def test_lenet_with_a_whole_conv_layer_off_does_not_crash(mnist_digits: torch.Tensor) -> None:
    model = _pruned_lenet("neuron")
    _set_gates(_gated(model, "conv2"), range(50), torch.Generator().manual_seed(5))
    exported = export_dense(model)
    shapes = _weight_shapes(exported)
    assert shapes[:3] == [(1, 1, 5, 5), (1, 1, 5, 5), (1, 16)]  # fc1's rows are now constants
    assert shapes[3] == (10, 1)
    _assert_same_outputs(model, exported, _inputs(mnist_digits))


# --- structure of the walk: barriers, constants into convolutions, round trips -------------------


def test_unknown_modules_are_barriers() -> None:
    dense = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    norm = _child(dense, "1", nn.BatchNorm1d)
    norm.get_buffer("running_mean").uniform_(-1, 1)
    norm.get_buffer("running_var").uniform_(0.5, 2)
    model = gate_module(dense, "neuron")
    generator = torch.Generator().manual_seed(6)
    _set_gates(_gated(model, "0"), [], generator)
    _set_gates(_gated(model, "3"), [0, 1], generator)  # unread, but batch norm sits in between
    exported = export_dense(model)
    assert _weight_shapes(exported) == [(5, 6), (3, 5)]
    assert isinstance(exported[1], nn.BatchNorm1d) and not exported[1].training
    _assert_same_outputs(model, exported, [torch.randn(7, 6)])


@pytest.mark.parametrize(("padding", "kept"), [(0, 3), (1, 4)])
def test_constant_channel_is_folded_into_a_convolution_without_padding(padding: int, kept: int) -> None:
    side = 8 - 2 - 2 + 2 * padding  # two 3x3 convolutions on 8x8 input
    dense = nn.Sequential(
        nn.Conv2d(2, 4, 3),
        nn.ReLU(),
        nn.Conv2d(4, 3, 3, padding=padding),
        nn.Flatten(),
        nn.Linear(3 * side**2, 2),
    )
    model = gate_module(dense, "weight")
    generator = torch.Generator().manual_seed(7)
    off = torch.zeros(4, 2, 3, 3, dtype=torch.bool)
    off[1] = True  # channel 1 of the first conv is the constant relu(0.7)
    _set_gates(_gated(model, "0"), off, generator)
    _set_gates(_gated(model, "2"), [], generator)
    _set_gates(_gated(model, "4"), [], generator)
    _set_bias(_gated(model, "0"), 1, 0.7)
    exported = export_dense(model)
    assert _weight_shapes(exported)[0] == (kept, 2, 3, 3)
    _assert_same_outputs(model, exported, [torch.randn(3, 2, 8, 8)])


def test_export_works_on_a_model_rebuilt_from_a_state_dict(mnist_digits: torch.Tensor) -> None:
    model = _pruned_lenet("neuron")
    rebuilt = lenet5_caffe("neuron")
    rebuilt.load_state_dict(model.state_dict())
    exported = export_dense(rebuilt)
    _assert_same_outputs(model, exported, [mnist_digits])
    assert _weight_shapes(exported) == _weight_shapes(export_dense(model))


def test_export_leaves_the_model_untouched() -> None:
    model = _pruned_mlp("neuron").train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    export_dense(model)
    fold_gates(model)
    assert model.training and all(m.training for m in model.modules())
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_exported_model_is_in_eval_mode_and_plain() -> None:
    exported = export_dense(_pruned_lenet("neuron"))
    assert not any(m.training for m in exported.modules())
    assert {type(m) for m in exported} <= {
        SelectInputs,
        nn.Linear,
        nn.Conv2d,
        nn.ReLU,
        nn.MaxPool2d,
        nn.Flatten,
        type(lenet5_caffe().get_submodule("image")),
    }


def test_fold_gates_is_exact_and_keeps_shapes() -> None:
    model = _pruned_lenet("neuron")
    folded = fold_gates(model)
    _assert_plain(folded)
    assert _weight_shapes(folded) == [(20, 1, 5, 5), (50, 20, 5, 5), (500, 800), (10, 500)]
    x = torch.randn(4, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=0, atol=0)
    # Removal reads only the zeros, so a plain dense model with the same zeros exports alike.
    assert _weight_shapes(export_dense(folded)) == _weight_shapes(export_dense(model))


def test_single_gated_layer_and_nested_sequentials() -> None:
    layer = L0Conv2d(3, 4, 3, granularity="neuron")
    _set_gates(layer, [2], torch.Generator().manual_seed(8))
    exported = export_dense(layer)
    assert _weight_shapes(exported) == [(4, 3, 3, 3)]  # output units of the last layer stay
    _assert_same_outputs(layer, exported, [torch.randn(2, 3, 6, 6)])
    nested = nn.Sequential(nn.Sequential(L0Linear(4, 3, granularity="neuron"), nn.ReLU()), L0Linear(3, 2))
    exported_nested = export_dense(nested)
    assert [name for name, _ in exported_nested.named_children()] == ["0_0", "0_1", "1"]
    _assert_same_outputs(nested, exported_nested, [torch.randn(2, 4)])


def test_export_rejects_what_it_cannot_fold() -> None:
    with pytest.raises(TypeError, match="model must be an nn.Sequential"):
        export_dense(nn.ReLU())

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = L0Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)

    with pytest.raises(TypeError, match=r"cannot export module 'block'.*contains gated layers \['inner'\]"):
        export_dense(nn.Sequential(OrderedDict(block=Block())))


# --- counting and timing --------------------------------------------------------------------------


def test_parameter_counters() -> None:
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]]))
        layer.bias.copy_(torch.tensor([0.0, 3.0]))
    assert count_parameters(layer) == 8
    assert count_nonzero_parameters(layer) == 3


def test_measure_speedup_returns_positive_numbers() -> None:
    model = _pruned_lenet("neuron").train()
    exported = export_dense(model)
    threads = torch.get_num_threads()
    result = measure_speedup(model, exported, torch.rand(2, 1, 28, 28), repeats=3, number=2, warmup=1)
    assert set(result) == {
        "gated_seconds",
        "folded_seconds",
        "exported_seconds",
        "speedup_vs_gated",
        "speedup_vs_folded",
    }
    assert all(value > 0 for value in result.values())
    assert result["speedup_vs_gated"] == pytest.approx(result["gated_seconds"] / result["exported_seconds"])
    assert model.training and torch.get_num_threads() == threads


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"repeats": 0}, ValueError, "repeats must be an int >= 1, got 0"),
        ({"number": 0}, ValueError, "number must be an int >= 1"),
        ({"warmup": -1}, ValueError, "warmup must be an int >= 0"),
        ({"num_threads": 0}, ValueError, "num_threads must be an int >= 1"),
        ({"example_input": [1.0]}, TypeError, "example_input must be a torch.Tensor"),
    ],
)
def test_measure_speedup_validates_its_arguments(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    model = _tiny({})
    arguments: dict[str, object] = {"example_input": torch.randn(1, 6), **kwargs}
    call: Callable[..., object] = measure_speedup
    with pytest.raises(error, match=match):
        call(model, export_dense(model), **arguments)


def test_equivalence_tolerance_is_1e5_or_four_float32_ulps() -> None:
    from problems.sparsity.export_run import equivalence_tolerance

    assert equivalence_tolerance(1.0) == 1e-5
    assert equivalence_tolerance(100.0) == pytest.approx(4 * 100.0 * 2.0**-23)
