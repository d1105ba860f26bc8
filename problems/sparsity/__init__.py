"""L0 sparsity with hard-concrete gates: "a network with 30% of its weights, in one run".

- ``gates``: the hard-concrete gate and its math kernels (Louizos, Welling & Kingma, 2018).
- ``layers``: ``L0Linear`` / ``L0Conv2d`` with per-weight or per-neuron gates.
- ``models``: the MLP-300-100 and LeNet-5-Caffe models, ``gate_module``, density measures.
"""

from problems.sparsity.gates import (
    HardConcreteGate,
    hard_concrete_median,
    hard_concrete_prob_nonzero,
    hard_concrete_sample,
    hard_concrete_test_gate,
)
from problems.sparsity.layers import L0Conv2d, L0Layer, L0Linear
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

__all__ = [
    "HardConcreteGate",
    "L0Conv2d",
    "L0Layer",
    "L0Linear",
    "dense_lenet5_caffe",
    "dense_mlp_300_100",
    "dense_tiny_mlp",
    "expected_density",
    "gate_module",
    "gated_layers",
    "hard_concrete_median",
    "hard_concrete_prob_nonzero",
    "hard_concrete_sample",
    "hard_concrete_test_gate",
    "lenet5_caffe",
    "mlp_300_100",
    "per_layer_density",
    "test_time_density",
    "test_time_density_median_gate",
    "tiny_mlp",
]
