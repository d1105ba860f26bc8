r"""Linear and 2-d convolution layers whose weights are multiplied by hard-concrete gates.

Two gate granularities:

* ``"weight"`` (unstructured): one gate per weight entry, ``gate.shape == weight.shape``. Biases
  are never gated.
* ``"neuron"`` (structured):

  - :class:`L0Linear`: one gate per **input** neuron; gate :math:`j` multiplies column
    :math:`W_{:, j}` (``out_features`` entries). The bias is not gated: removing input :math:`j`
    removes column :math:`j` here and the matching output unit (its row and bias entry) of the
    layer before, which is exact.
  - :class:`L0Conv2d`: one gate per **output** channel; gate :math:`c` multiplies the filter
    :math:`W_{c}` (``in_channels / groups * kh * kw`` entries) **and the bias** :math:`b_c`, so a
    pruned channel outputs exactly zero (as when the channel's output map is gated) and an export
    can delete the channel and the matching input channels of the next layer without folding a
    constant bias map anywhere.

Counts reported by every layer (biases are never counted):

* ``weight_numel``: number of weight entries.
* :meth:`L0Layer.expected_active`: :math:`\sum_g P(z_g \neq 0)\, n_g` with :math:`n_g` the
  number of weight entries gate :math:`g` multiplies (differentiable).
* :meth:`L0Layer.deterministic_active`: number of weight entries whose test-time gate
  :math:`\hat z` is non-zero; every entry a structured gate removes counts as removed.
* :meth:`L0Layer.median_active`: the same with the median gate (:math:`\log\alpha > 0`).

One gate sample is drawn per forward call and shared by the whole mini-batch.
"""

from __future__ import annotations

import math
import numbers
from typing import Literal, cast

import torch
from torch import nn
from torch.nn import functional as nnf

from problems.sparsity.gates import DEFAULT_BETA, DEFAULT_GAMMA, DEFAULT_ZETA, HardConcreteGate

__all__ = ["GRANULARITIES", "Granularity", "L0Conv2d", "L0Layer", "L0Linear"]

Granularity = Literal["weight", "neuron"]
GRANULARITIES: tuple[str, ...] = ("weight", "neuron")


def _check_granularity(granularity: str) -> Granularity:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    return cast(Granularity, granularity)


def _check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _pair(name: str, value: int | tuple[int, ...], minimum: int) -> tuple[int, int]:
    pair: tuple[int, ...] = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(
        isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum for v in pair
    ):
        raise ValueError(f"{name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


class L0Layer(nn.Module):
    """Base class of gated layers: a dense ``weight`` (and ``bias``) times hard-concrete gates.

    Subclasses set ``weight``, ``bias``, ``gate``, ``granularity`` and ``_gate_view`` (the shape
    the gate tensor is viewed as so that it broadcasts against ``weight``).

    Attributes:
        weight: The dense weight; the effective weight is :meth:`gated_weight`.
        bias: The bias, or ``None``.
        gate: The :class:`HardConcreteGate` of the layer.
        granularity: ``"weight"`` or ``"neuron"``.
    """

    weight: nn.Parameter
    bias: nn.Parameter | None
    gate: HardConcreteGate
    granularity: Granularity
    _gate_view: tuple[int, ...]
    _gates_bias: bool

    @property
    def weight_numel(self) -> int:
        """Number of weight entries (biases excluded)."""
        return self.weight.numel()

    @property
    def entries_per_gate(self) -> int:
        """Number of weight entries each gate multiplies (1 for ``"weight"`` granularity)."""
        return self.weight.numel() // self.gate.num_gates

    @property
    def gates_bias(self) -> bool:
        """Whether the bias is multiplied by the gates (neuron-granularity convolutions only)."""
        return self._gates_bias and self.bias is not None

    def _expand(self, z: torch.Tensor) -> torch.Tensor:
        return z.reshape(self._gate_view)

    def gated_parameters(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Effective ``(weight, bias)`` with one gate draw (a sample in training, :math:`\\hat z` in eval)."""
        z = self.gate()
        weight = self.weight * self._expand(z)
        bias = self.bias
        if bias is not None and self._gates_bias:
            bias = bias * z
        return weight, bias

    def gated_weight(self) -> torch.Tensor:
        """``weight`` times the gates: sampled in training mode, deterministic :math:`\\hat z` in eval."""
        return self.weight * self._expand(self.gate())

    def expected_active(self) -> torch.Tensor:
        r""":math:`\sum_g P(z_g \neq 0)\,n_g`, the expected number of non-zero weights (differentiable)."""
        return self.gate.prob_nonzero().sum() * self.entries_per_gate

    def deterministic_active(self) -> int:
        r"""Number of weight entries whose test-time gate :math:`\hat z` is non-zero."""
        return int(self.gate.active_mask().sum()) * self.entries_per_gate

    def median_active(self) -> int:
        r"""Number of weight entries active under the median gate (:math:`\log\alpha > 0`)."""
        return int(self.gate.median_active_mask().sum()) * self.entries_per_gate

    def active_weight_mask(self) -> torch.Tensor:
        """Boolean mask, shaped like ``weight``, of the entries whose test-time gate is non-zero."""
        return self._expand(self.gate.active_mask()).expand_as(self.weight)

    def gate_magnitudes(self) -> torch.Tensor:
        """The magnitude behind each gate, shaped like the gates: :math:`|w|` for per-weight gates, the
        root mean square of the weight entries a structured gate multiplies (a per-entry scale, so that
        gates of layers with different fan-outs compare; no gradient)."""
        squares = self.weight.detach().pow(2)
        broadcast = [
            axis for axis, size in enumerate(self._gate_view) if size == 1 and self.weight.shape[axis] != 1
        ]
        if broadcast:
            squares = squares.mean(dim=broadcast, keepdim=True)
        return squares.sqrt().reshape(self.gate.shape)

    def expected_density(self) -> torch.Tensor:
        """``expected_active() / weight_numel`` (differentiable)."""
        return self.expected_active() / self.weight_numel

    def test_time_density(self) -> float:
        """``deterministic_active() / weight_numel``."""
        return self.deterministic_active() / self.weight_numel

    @torch.no_grad()
    def copy_parameters(self, module: nn.Linear | nn.Conv2d) -> None:
        """Copy the dense ``module``'s weight (and bias) into this layer's."""
        self.weight.copy_(module.weight)
        if module.bias is not None and self.bias is not None:
            self.bias.copy_(module.bias)

    def _init_dense(self) -> None:
        """Same initialisation as ``nn.Linear``/``nn.Conv2d``: uniform, bound ``1/sqrt(fan_in)``."""
        fan_in = self.weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)


class L0Linear(L0Layer):
    """A linear layer ``y = x (W * z)^T + b`` with hard-concrete gates ``z``.

    Args:
        in_features: Size of each input sample.
        out_features: Size of each output sample.
        bias: Whether to learn an additive bias (never gated).
        granularity: ``"weight"``: one gate per entry of ``W``; ``"neuron"``: one gate per input
            neuron, multiplying column ``W[:, j]``.
        droprate_init: Initial drop rate of the gates (see :class:`HardConcreteGate`).
        beta: Gate temperature.
        gamma: Lower stretch limit (< 0).
        zeta: Upper stretch limit (> 1).
        init_noise: Standard deviation of the initial noise on ``log_alpha``.
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        granularity: Granularity = "weight",
        droprate_init: float = 0.5,
        beta: float = DEFAULT_BETA,
        gamma: float = DEFAULT_GAMMA,
        zeta: float = DEFAULT_ZETA,
        init_noise: float = 1e-2,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = _check_positive_int("in_features", in_features)
        self.out_features = _check_positive_int("out_features", out_features)
        self.granularity = _check_granularity(granularity)
        self.weight = nn.Parameter(
            torch.empty(self.out_features, self.in_features, device=device, dtype=dtype)
        )
        self.bias = nn.Parameter(torch.empty(self.out_features, device=device, dtype=dtype)) if bias else None
        if self.granularity == "weight":
            gate_shape: tuple[int, ...] = (self.out_features, self.in_features)
            self._gate_view = gate_shape
        else:
            gate_shape = (self.in_features,)
            self._gate_view = (1, self.in_features)
        self._gates_bias = False
        self.gate = HardConcreteGate(
            gate_shape, droprate_init, beta, gamma, zeta, init_noise, device=device, dtype=dtype
        )
        self._init_dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.gated_parameters()
        return nnf.linear(x, weight, bias)

    @classmethod
    def from_dense(
        cls,
        module: nn.Linear,
        granularity: Granularity = "weight",
        droprate_init: float = 0.5,
        *,
        beta: float = DEFAULT_BETA,
        gamma: float = DEFAULT_GAMMA,
        zeta: float = DEFAULT_ZETA,
        init_noise: float = 1e-2,
    ) -> L0Linear:
        """A gated copy of ``module`` (weights and bias copied, same device and dtype)."""
        if not isinstance(module, nn.Linear):
            raise TypeError(f"module must be an nn.Linear, got {type(module).__name__}")
        layer = cls(
            module.in_features,
            module.out_features,
            bias=module.bias is not None,
            granularity=granularity,
            droprate_init=droprate_init,
            beta=beta,
            gamma=gamma,
            zeta=zeta,
            init_noise=init_noise,
            device=module.weight.device,
            dtype=module.weight.dtype,
        )
        layer.copy_parameters(module)
        return layer

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, granularity={self.granularity!r}"
        )


class L0Conv2d(L0Layer):
    """A 2-d convolution with filters ``W * z`` and hard-concrete gates ``z``.

    Args:
        in_channels: Number of input channels.
        out_channels: Number of output channels.
        kernel_size: Kernel size (int or pair).
        stride: Stride (int or pair).
        padding: Zero padding (int, pair, ``"valid"`` or ``"same"``); only zero padding is supported.
        dilation: Dilation (int or pair).
        groups: Number of blocked connections from input to output channels.
        bias: Whether to learn an additive bias.
        granularity: ``"weight"``: one gate per filter entry (bias not gated); ``"neuron"``: one
            gate per output channel, multiplying that channel's filter and bias.
        droprate_init: Initial drop rate of the gates.
        beta: Gate temperature.
        gamma: Lower stretch limit (< 0).
        zeta: Upper stretch limit (> 1).
        init_noise: Standard deviation of the initial noise on ``log_alpha``.
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        granularity: Granularity = "weight",
        droprate_init: float = 0.5,
        beta: float = DEFAULT_BETA,
        gamma: float = DEFAULT_GAMMA,
        zeta: float = DEFAULT_ZETA,
        init_noise: float = 1e-2,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = _check_positive_int("in_channels", in_channels)
        self.out_channels = _check_positive_int("out_channels", out_channels)
        self.groups = _check_positive_int("groups", groups)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must both be divisible "
                f"by groups, got groups={groups!r}"
            )
        self.kernel_size = _pair("kernel_size", kernel_size, 1)
        self.stride = _pair("stride", stride, 1)
        self.dilation = _pair("dilation", dilation, 1)
        self.padding: tuple[int, int] | str
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride={stride!r}")
            self.padding = padding
        else:
            self.padding = _pair("padding", padding, 0)
        self.granularity = _check_granularity(granularity)
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self.weight = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(self.out_channels, device=device, dtype=dtype)) if bias else None
        if self.granularity == "weight":
            gate_shape: tuple[int, ...] = shape
            self._gate_view = shape
            self._gates_bias = False
        else:
            gate_shape = (self.out_channels,)
            self._gate_view = (self.out_channels, 1, 1, 1)
            self._gates_bias = True
        self.gate = HardConcreteGate(
            gate_shape, droprate_init, beta, gamma, zeta, init_noise, device=device, dtype=dtype
        )
        self._init_dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.gated_parameters()
        return nnf.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    @classmethod
    def from_dense(
        cls,
        module: nn.Conv2d,
        granularity: Granularity = "weight",
        droprate_init: float = 0.5,
        *,
        beta: float = DEFAULT_BETA,
        gamma: float = DEFAULT_GAMMA,
        zeta: float = DEFAULT_ZETA,
        init_noise: float = 1e-2,
    ) -> L0Conv2d:
        """A gated copy of ``module`` (weights, bias and geometry copied; zero padding only)."""
        if not isinstance(module, nn.Conv2d):
            raise TypeError(f"module must be an nn.Conv2d, got {type(module).__name__}")
        if module.padding_mode != "zeros":
            raise ValueError(
                f"only padding_mode='zeros' is supported, got padding_mode={module.padding_mode!r}"
            )
        padding = module.padding if isinstance(module.padding, str) else cast(tuple[int, int], module.padding)
        layer = cls(
            module.in_channels,
            module.out_channels,
            cast(tuple[int, int], module.kernel_size),
            stride=cast(tuple[int, int], module.stride),
            padding=padding,
            dilation=cast(tuple[int, int], module.dilation),
            groups=module.groups,
            bias=module.bias is not None,
            granularity=granularity,
            droprate_init=droprate_init,
            beta=beta,
            gamma=gamma,
            zeta=zeta,
            init_noise=init_noise,
            device=module.weight.device,
            dtype=module.weight.dtype,
        )
        layer.copy_parameters(module)
        return layer

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"bias={self.bias is not None}, granularity={self.granularity!r}"
        )
