"""Models of the sparsity problem (gated and dense) and density measures over a model.

Densities count weight entries of the gated layers only (biases and ungated layers excluded) and
are size-weighted: ``sum(active entries) / sum(weight entries)`` over all gated layers.
"""

from __future__ import annotations

import copy
import itertools
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from problems.sparsity.layers import Granularity, L0Conv2d, L0Layer, L0Linear

__all__ = [
    "dense_lenet5_caffe",
    "dense_mlp_300_100",
    "dense_tiny_mlp",
    "expected_density",
    "gate_module",
    "gated_layers",
    "lenet5_caffe",
    "mlp_300_100",
    "per_layer_density",
    "test_time_density",
    "test_time_density_median_gate",
    "tiny_mlp",
]


class _AsImage(nn.Module):
    """Reshapes ``[batch, C*H*W]`` (or ``[batch, C, H, W]``) input to ``[batch, C, H, W]``."""

    def __init__(self, channels: int, height: int, width: int) -> None:
        super().__init__()
        self.shape = (channels, height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes), start=1):
        layers[f"fc{index}"] = nn.Linear(fan_in, fan_out)
        if index < len(sizes) - 1:
            layers[f"relu{index}"] = nn.ReLU()
    return nn.Sequential(layers)


def dense_mlp_300_100() -> nn.Sequential:
    """Dense 784-300-100-10 ReLU MLP (``flatten, fc1, relu1, fc2, relu2, fc3``)."""
    return _mlp((784, 300, 100, 10))


def dense_lenet5_caffe() -> nn.Sequential:
    """Dense LeNet-5-Caffe for 1x28x28 input (flat ``[batch, 784]`` input is accepted too).

    ``conv1`` 1->20 5x5, ReLU, max-pool 2, ``conv2`` 20->50 5x5, ReLU, max-pool 2, flatten (800),
    ``fc1`` 800->500, ReLU, ``fc2`` 500->10.
    """
    return nn.Sequential(
        OrderedDict(
            image=_AsImage(1, 28, 28),
            conv1=nn.Conv2d(1, 20, 5),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(20, 50, 5),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(800, 500),
            relu3=nn.ReLU(),
            fc2=nn.Linear(500, 10),
        )
    )


def dense_tiny_mlp(in_features: int, hidden: int | Sequence[int], classes: int) -> nn.Sequential:
    """Dense ReLU MLP ``in_features -> hidden... -> classes`` (``hidden`` an int or a sequence)."""
    widths = [hidden] if isinstance(hidden, int) else list(hidden)
    sizes = [in_features, *widths, classes]
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(
            f"in_features, hidden and classes must be positive ints, got in_features={in_features!r}, "
            f"hidden={hidden!r}, classes={classes!r}"
        )
    return _mlp(sizes)


def _replace_dense(module: nn.Module, granularity: Granularity, droprate_init: float) -> None:
    """In place: swaps every child whose type is exactly nn.Linear / nn.Conv2d for a gated copy."""
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, L0Linear.from_dense(child, granularity, droprate_init))
        elif type(child) is nn.Conv2d:
            setattr(module, name, L0Conv2d.from_dense(child, granularity, droprate_init))
        elif not isinstance(child, L0Layer):
            _replace_dense(child, granularity, droprate_init)


def gate_module(
    model: nn.Module, granularity: Granularity = "weight", droprate_init: float = 0.5
) -> nn.Module:
    """A deep copy of ``model`` with every ``nn.Linear`` / ``nn.Conv2d`` replaced by its gated twin.

    Weights and biases are copied (:meth:`L0Linear.from_dense`, :meth:`L0Conv2d.from_dense`);
    ``model`` itself is not modified. Only modules whose type is exactly ``nn.Linear`` or
    ``nn.Conv2d`` are replaced: subclasses may have their own ``forward`` (or, like the output
    projection of ``nn.MultiheadAttention``, be read through ``.weight`` without being called)
    and are left dense.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if granularity not in ("weight", "neuron"):
        raise ValueError(f"granularity must be one of ('weight', 'neuron'), got {granularity!r}")
    gated = copy.deepcopy(model)
    if type(gated) is nn.Linear:
        return L0Linear.from_dense(gated, granularity, droprate_init)
    if type(gated) is nn.Conv2d:
        return L0Conv2d.from_dense(gated, granularity, droprate_init)
    _replace_dense(gated, granularity, droprate_init)
    return gated


def mlp_300_100(granularity: Granularity = "weight", droprate_init: float = 0.5) -> nn.Sequential:
    """Gated 784-300-100-10 ReLU MLP (layers ``fc1``, ``fc2``, ``fc3``)."""
    model = dense_mlp_300_100()
    _replace_dense(model, granularity, droprate_init)
    return model


def lenet5_caffe(granularity: Granularity = "weight", droprate_init: float = 0.5) -> nn.Sequential:
    """Gated LeNet-5-Caffe (layers ``conv1``, ``conv2``, ``fc1``, ``fc2``); see :func:`dense_lenet5_caffe`."""
    model = dense_lenet5_caffe()
    _replace_dense(model, granularity, droprate_init)
    return model


def tiny_mlp(
    in_features: int,
    hidden: int | Sequence[int],
    classes: int,
    granularity: Granularity = "weight",
    droprate_init: float = 0.5,
) -> nn.Sequential:
    """Gated ReLU MLP for tests and quick runs; see :func:`dense_tiny_mlp`."""
    model = dense_tiny_mlp(in_features, hidden, classes)
    _replace_dense(model, granularity, droprate_init)
    return model


def gated_layers(model: nn.Module) -> list[tuple[str, L0Layer]]:
    """The gated layers of ``model`` as ``(qualified name, layer)`` in ``named_modules`` order."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, L0Layer)]


def _require_gated_named(model: nn.Module) -> list[tuple[str, L0Layer]]:
    named = gated_layers(model)
    if not named:
        raise ValueError(f"model ({type(model).__name__}) has no gated layers (L0Linear / L0Conv2d)")
    return named


def _require_gated(model: nn.Module) -> list[L0Layer]:
    return [layer for _, layer in _require_gated_named(model)]


def expected_density(model: nn.Module) -> torch.Tensor:
    r"""Expected fraction of non-zero weights, :math:`\sum_l \mathbb E[\|W_l \odot z_l\|_0] / \sum_l |W_l|`.

    Size-weighted over the weight entries of the gated layers, biases excluded; differentiable in
    every ``log_alpha`` (the quantity a density constraint bounds).
    """
    layers = _require_gated(model)
    active = torch.stack([layer.expected_active() for layer in layers]).sum()
    return active / sum(layer.weight_numel for layer in layers)


def test_time_density(model: nn.Module) -> float:
    r"""Fraction of weight entries whose deterministic test-time gate :math:`\hat z` is non-zero."""
    layers = _require_gated(model)
    return sum(layer.deterministic_active() for layer in layers) / sum(layer.weight_numel for layer in layers)


def test_time_density_median_gate(model: nn.Module) -> float:
    r"""Fraction of weight entries active under the median gate (:math:`\sigma(\log\alpha/\beta) > 1/2`)."""
    layers = _require_gated(model)
    return sum(layer.median_active() for layer in layers) / sum(layer.weight_numel for layer in layers)


def per_layer_density(model: nn.Module) -> dict[str, float]:
    """Test-time density of each gated layer, keyed by qualified name (``"fc1"``, ``"conv2"``...)."""
    return {name: layer.test_time_density() for name, layer in _require_gated_named(model)}


# pytest would otherwise collect the public helper whose name starts with "test" when imported into
# a test module.
test_time_density.__test__ = False  # type: ignore[attr-defined]
test_time_density_median_gate.__test__ = False  # type: ignore[attr-defined]
