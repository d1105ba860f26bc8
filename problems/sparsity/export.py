r"""Export a gated model to a physically smaller dense ``nn.Sequential``.

**Folding.** Every gated layer is replaced by a plain ``nn.Linear`` / ``nn.Conv2d`` whose parameters
are the deterministic test-time parameters of the gated layer (the ones its eval-mode forward uses,
:math:`\hat z` as in :func:`problems.sparsity.gates.hard_concrete_test_gate`):

.. math::

    W' = W \odot \hat z, \qquad b' = \begin{cases} b \odot \hat z & \text{if the gates multiply the bias
    (neuron-granularity convolutions)} \\ b & \text{otherwise.} \end{cases}

:func:`fold_gates` stops here (same shapes, zeros kept): the fair dense baseline.

**Structural removal** (:func:`export_dense`). Consider two consecutive weight layers, a producer
:math:`A` with units (output features or channels) :math:`j = 1..n` and a consumer :math:`B`, joined by
unit-preserving modules :math:`\phi` (element-wise activations, ``nn.MaxPool2d``, ``nn.Flatten``), so
that :math:`B` reads unit :math:`j` only through its slice :math:`B_{:, j}` (column :math:`j` of a
linear layer; input channel :math:`j` of a convolution; the :math:`S = H W` columns
:math:`jS, \dots, jS + S - 1` of a linear layer after a flatten in :math:`C \times H \times W` order).
Unit :math:`j` is removed (row/filter :math:`A_j`, bias :math:`a_j` and slice :math:`B_{:, j}` deleted)
when

1. :math:`B_{:, j} = 0` (*unread*): whatever unit :math:`j` computes is multiplied by zero. This is the
   rule for input-feature gates of a linear layer (:math:`\hat z_j = 0` zeroes column :math:`j`).
2. :math:`A_j = 0` (*constant*): the unit outputs the constant map :math:`a_j` (0 if there is no
   bias), and after :math:`\phi` the constant :math:`c_j = \phi(a_j)` (max-pooling and flattening a
   constant map leave it constant). If :math:`c_j = 0` the slice contributes nothing: this is the rule
   for output-channel gates of a convolution (:math:`\hat z_j = 0` zeroes the filter and the bias).
   If :math:`c_j \neq 0` it is folded into the consumer's bias,
   :math:`b_B \leftarrow b_B + c_j \sum_k B_{:, j, k}` (sum over the slice: the flattened positions of a
   linear consumer, the kernel positions of a convolution), which is exact for a linear consumer and
   for a convolution without padding (with padding the border windows see zeros, so the unit is kept).

Removing units can make others removable (a row whose every input was removed is constant; a layer
whose outputs are all unread makes every input unread), so the rules are applied to every boundary
until nothing changes. For the first weight layer, if it is linear, its unread input features are
dropped by a :class:`SelectInputs` module placed in front of it (after the model's flatten). The
output units of the last layer are never removed.

**A layer that loses every unit** keeps exactly one *placeholder* unit whose incoming and outgoing
weights (and bias) are all zero, so it contributes exactly nothing; the exported model then computes
the same constant function as the gated one. One unit is kept rather than zero because PyTorch rejects
a convolution with zero output channels and max-pooling over zero channels.

Weight granularity removes only what happens to be structurally dead (a full row, column or filter of
zeros); all other zeros remain in place and are counted by :func:`count_nonzero_parameters` but not
removed from :func:`count_parameters`.

Exactness: the exported model equals ``model.eval()(x)`` up to floating-point summation order, for
finite inputs (an unread unit may be non-finite; :math:`0 \cdot \infty` is not reproduced). The input
model is never modified, its ``training`` flag included.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import skip_init

from problems.sparsity.layers import L0Conv2d, L0Layer, L0Linear

__all__ = [
    "SelectInputs",
    "count_nonzero_parameters",
    "count_parameters",
    "export_dense",
    "fold_gates",
    "measure_speedup",
]

#: Element-wise modules (no mixing between units) a removal may look through.
_ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Identity,
    nn.Dropout,
)


class SelectInputs(nn.Module):
    """Keeps the input features listed in ``index``: ``x.index_select(-1, index)``.

    Placed in front of an exported first linear layer whose pruned input features were removed.

    Args:
        index: Kept feature indices (1-d, strictly increasing, within ``[0, in_features)``).
        in_features: Number of features of the input this module receives.

    Attributes:
        index: The kept indices, a ``long`` buffer (saved in the state dict).
    """

    index: torch.Tensor

    def __init__(self, index: Sequence[int] | torch.Tensor, in_features: int) -> None:
        super().__init__()
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be a positive int, got {in_features!r}")
        kept = torch.as_tensor(index).detach().to(device="cpu", dtype=torch.long)
        if kept.dim() != 1 or kept.numel() == 0:
            raise ValueError(f"index must be a non-empty 1-d sequence, got shape {tuple(kept.shape)}")
        if kept.min() < 0 or kept.max() >= in_features or bool((kept[1:] <= kept[:-1]).any()):
            raise ValueError(
                f"index must be strictly increasing within [0, {in_features}), got {kept.tolist()!r}"
            )
        device = index.device if isinstance(index, torch.Tensor) else None
        self.in_features = in_features
        self.register_buffer("index", kept.to(device))

    @property
    def out_features(self) -> int:
        """Number of kept features."""
        return self.index.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(-1, self.index)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


@dataclass(frozen=True)
class _ConvGeometry:
    """Everything of a convolution but its parameters and channel counts."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] | str
    dilation: tuple[int, int]
    groups: int
    padding_mode: str


@dataclass
class _Folded:
    """A weight layer with gates folded in, being pruned in place before it is rebuilt.

    ``weight`` is ``[out, in]`` (linear) or ``[out, in / groups, kh, kw]`` (convolution);
    ``input_index`` lists which of the ``original_in`` input features are still read (first layer).
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    original_in: int
    conv: _ConvGeometry | None = None
    input_index: torch.Tensor | None = None

    @property
    def is_conv(self) -> bool:
        return self.conv is not None

    @property
    def out_units(self) -> int:
        return self.weight.shape[0]

    @property
    def groups(self) -> int:
        return 1 if self.conv is None else self.conv.groups

    def can_fold_constants(self) -> bool:
        """Whether a constant input unit can be folded into the bias exactly (see module docstring)."""
        if self.bias is None:
            return False
        return self.conv is None or self.conv.padding in ("valid", (0, 0))


@dataclass
class _Entry:
    """One module of the flattened model: a folded weight layer or a copied other module."""

    name: str
    folded: _Folded | None = None
    module: nn.Module | None = None


@dataclass
class _Boundary:
    """A producer (``None``: the model input) feeding a consumer through unit-preserving modules."""

    producer: int | None
    consumer: int
    activations: list[nn.Module] = field(default_factory=list)


def count_parameters(module: nn.Module) -> int:
    """Total number of parameter entries of ``module`` (a gated model's ``log_alpha`` included)."""
    return sum(p.numel() for p in module.parameters())


def count_nonzero_parameters(module: nn.Module) -> int:
    """Number of non-zero parameter entries of ``module``."""
    return sum(int(torch.count_nonzero(p.detach())) for p in module.parameters())


def _leaves(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """Children of nested ``nn.Sequential`` containers in call order, names joined by ``_``."""
    for name, child in module.named_children():
        full = f"{prefix}_{name}" if prefix else name
        if type(child) is nn.Sequential:
            yield from _leaves(child, full)
        else:
            yield full, child


def _int_pair(value: Sequence[int]) -> tuple[int, int]:
    return int(value[0]), int(value[1])


def _fold_layer(layer: nn.Module) -> _Folded | None:
    """Deterministic test-time parameters of a weight layer (``None`` for any other module).

    A gated layer's gate module is switched to eval mode only for the call to
    :meth:`L0Layer.gated_parameters` (the exact code path of its eval forward) and restored after.
    """
    with torch.no_grad():
        if isinstance(layer, L0Layer):
            was_training = layer.gate.training
            layer.gate.eval()
            try:
                weight, bias = layer.gated_parameters()
            finally:
                layer.gate.train(was_training)
        elif type(layer) is nn.Linear or type(layer) is nn.Conv2d:  # subclasses may differ: copied as-is
            weight, bias = layer.weight, layer.bias
        else:
            return None
        weight = weight.detach().clone()
        bias = None if bias is None else bias.detach().clone()
    if isinstance(layer, L0Linear | nn.Linear):
        return _Folded(weight, bias, original_in=weight.shape[1])
    if isinstance(layer, L0Conv2d | nn.Conv2d):
        padding = layer.padding
        geometry = _ConvGeometry(
            kernel_size=_int_pair(layer.kernel_size),
            stride=_int_pair(layer.stride),
            padding=padding if isinstance(padding, str) else _int_pair(padding),
            dilation=_int_pair(layer.dilation),
            groups=layer.groups,
            padding_mode=getattr(layer, "padding_mode", "zeros"),
        )
        return _Folded(weight, bias, original_in=layer.in_channels, conv=geometry)
    raise TypeError(f"unsupported gated layer {type(layer).__name__}")  # another L0Layer subclass


def _entries(model: nn.Module) -> list[_Entry]:
    """Folds the weight layers of ``model`` and deep-copies the other modules (in eval mode)."""
    if isinstance(model, nn.Sequential):
        children = list(_leaves(model))
    elif isinstance(model, L0Layer) or type(model) in (nn.Linear, nn.Conv2d):
        children = [("0", model)]
    else:
        raise TypeError(
            f"model must be an nn.Sequential (or a single L0Linear / L0Conv2d), got {type(model).__name__}"
        )
    entries: list[_Entry] = []
    for name, child in children:
        folded = _fold_layer(child)
        if folded is not None:
            entries.append(_Entry(name, folded=folded))
            continue
        nested = [sub for sub, m in child.named_modules() if isinstance(m, L0Layer)]
        if nested:
            raise TypeError(
                f"cannot export module {name!r} ({type(child).__name__}): it contains gated layers "
                f"{nested!r} but is not an nn.Sequential; only Sequential containers are folded"
            )
        entries.append(_Entry(name, module=copy.deepcopy(child).eval()))
    return entries


def _reads_units_one_to_one(layout: str, units: int, consumer: _Folded) -> bool:
    """Whether ``consumer`` reads each of ``units`` producer units through its own weight slice."""
    width = consumer.weight.shape[1]
    if layout == "features":
        return not consumer.is_conv and width == units
    if layout == "channels":
        return consumer.is_conv and consumer.groups == 1 and width == units
    return layout == "blocks" and not consumer.is_conv and width % units == 0


def _boundaries(entries: list[_Entry]) -> list[_Boundary]:
    r"""Producer/consumer pairs whose units map one-to-one (channels may map to flattened blocks).

    A walk keeps the layout of the current activation: ``"input"`` (model input, before the first
    weight layer), ``"features"`` (after a linear layer), ``"channels"`` (after a convolution),
    ``"blocks"`` (a convolution's output flattened to :math:`C \times H \times W`) or ``None``
    (unknown: any module outside the supported set is a barrier across which nothing is removed).
    """
    found: list[_Boundary] = []
    producer: int | None = None
    layout: str | None = "input"
    activations: list[nn.Module] = []
    for position, entry in enumerate(entries):
        folded = entry.folded
        if folded is not None:
            if layout == "input" and not folded.is_conv:
                found.append(_Boundary(None, position, []))
            elif producer is not None and layout is not None:
                source = entries[producer].folded
                assert source is not None
                if _reads_units_one_to_one(layout, source.out_units, folded):
                    found.append(_Boundary(producer, position, activations))
            producer = position
            layout = "features" if not folded.is_conv else ("channels" if folded.groups == 1 else None)
            activations = []
            continue
        module = entry.module
        if isinstance(module, _ELEMENTWISE):
            activations = [*activations, module]
        elif isinstance(module, nn.MaxPool2d) and layout == "channels":
            pass  # per channel, and a constant map stays the same constant
        elif isinstance(module, nn.Flatten) and (module.start_dim, module.end_dim) == (1, -1):
            if layout == "channels":
                layout = "blocks"
            elif layout != "input":
                layout = None  # on a linear layer's output the flatten may merge leading dims
        else:
            layout = None
    return found


def _propagate_constant(values: torch.Tensor, activations: Sequence[nn.Module]) -> torch.Tensor:
    """:math:`\\phi(a)`: the constant each unit takes after the element-wise modules of a boundary."""
    out = values.clone()
    with torch.no_grad():
        for module in activations:
            out = module(out)
    return out


def _prune_boundary(entries: list[_Entry], boundary: _Boundary) -> bool:
    """Applies the removal rules of the module docstring to one boundary; ``True`` if units went."""
    consumer = entries[boundary.consumer].folded
    producer = None if boundary.producer is None else entries[boundary.producer].folded
    assert consumer is not None
    n = producer.out_units if producer is not None else consumer.weight.shape[1]
    out = consumer.out_units
    slices = consumer.weight.reshape(out, n, -1)  # [out, unit, positions of the unit]
    removable = (slices == 0).all(dim=2).all(dim=0)  # rule 1: unread
    if producer is not None:
        constant_unit = (producer.weight.reshape(n, -1) == 0).all(dim=1)
        pre = producer.bias if producer.bias is not None else producer.weight.new_zeros(n)
        value = _propagate_constant(pre, boundary.activations)
        removable |= constant_unit & (value == 0)  # rule 2, silent constant
        loud = constant_unit & ~removable
        if bool(loud.any()) and consumer.can_fold_constants():
            assert consumer.bias is not None
            consumer.bias = consumer.bias + slices.sum(dim=2)[:, loud] @ value[loud]
            removable |= loud
    if bool(removable.all()):
        keep = torch.zeros_like(removable)
        keep[0] = True  # the placeholder unit: every weight in and out of it is zeroed
        zeroed = slices.clone()
        zeroed[:, 0] = 0
        consumer.weight = zeroed.reshape(consumer.weight.shape)
        if producer is not None:
            producer.weight[0] = 0
            if producer.bias is not None:
                producer.bias[0] = 0
    else:
        keep = ~removable
    if bool(keep.all()):
        return False
    if producer is not None:
        producer.weight = producer.weight[keep]
        producer.bias = None if producer.bias is None else producer.bias[keep]
    else:
        current = consumer.input_index
        if current is None:
            current = torch.arange(consumer.original_in, device=keep.device)
        consumer.input_index = current[keep]
    consumer.weight = consumer.weight.reshape(out, n, -1)[:, keep].reshape(
        out, -1, *consumer.weight.shape[2:]
    )
    return True


def _build(folded: _Folded) -> nn.Linear | nn.Conv2d:
    """A plain module with ``folded``'s parameters (allocated uninitialised, then copied)."""
    weight, bias = folded.weight, folded.bias
    factory = {"device": weight.device, "dtype": weight.dtype}
    module: nn.Linear | nn.Conv2d
    if folded.conv is None:
        module = skip_init(nn.Linear, weight.shape[1], weight.shape[0], bias=bias is not None, **factory)
    else:
        geometry = folded.conv
        module = skip_init(
            nn.Conv2d,
            weight.shape[1] * geometry.groups,
            weight.shape[0],
            geometry.kernel_size,
            stride=geometry.stride,
            padding=geometry.padding,
            dilation=geometry.dilation,
            groups=geometry.groups,
            bias=bias is not None,
            padding_mode=geometry.padding_mode,
            **factory,
        )
    with torch.no_grad():
        module.weight.copy_(weight)
        if bias is not None and module.bias is not None:
            module.bias.copy_(bias)
    return module


def _assemble(entries: list[_Entry]) -> nn.Sequential:
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    for entry in entries:
        if entry.folded is None:
            assert entry.module is not None
            modules[entry.name] = entry.module
            continue
        index = entry.folded.input_index
        if index is not None and index.numel() < entry.folded.original_in:
            modules[f"{entry.name}_select_inputs"] = SelectInputs(index, entry.folded.original_in)
        modules[entry.name] = _build(entry.folded)
    return nn.Sequential(modules).eval()


def fold_gates(model: nn.Module) -> nn.Sequential:
    """The dense counterpart of a gated model: gates folded in, nothing removed (zeros stay).

    Args:
        model: A gated ``nn.Sequential`` (see :func:`export_dense`); not modified.

    Returns:
        An ``nn.Sequential`` in eval mode with every ``L0Linear`` / ``L0Conv2d`` replaced by an
        ``nn.Linear`` / ``nn.Conv2d`` of the same shape holding :math:`W \\odot \\hat z` (and
        :math:`b \\odot \\hat z` where the bias is gated); other modules are deep copies.
    """
    return _assemble(_entries(model))


def export_dense(model: nn.Module) -> nn.Sequential:
    """Folds the test-time gates of ``model`` and physically removes every structurally dead unit.

    See the module docstring for the folding formula, the two removal rules, the first-layer
    :class:`SelectInputs` and the single placeholder unit kept by a layer whose units are all pruned.

    Args:
        model: An ``nn.Sequential`` (nested Sequentials are flattened, their names joined by ``_``)
            of ``L0Linear`` / ``L0Conv2d`` / ``nn.Linear`` / ``nn.Conv2d`` and parameter-free modules,
            as built by :mod:`problems.sparsity.models` or :func:`~problems.sparsity.models.gate_module`
            (a single gated layer is accepted too). Only its parameters are read, so a model rebuilt
            from a state dict works; it is not modified (its train/eval flag included). Removals look
            through element-wise activations, ``nn.MaxPool2d`` and ``nn.Flatten``; any other module
            is copied unchanged and nothing is removed across it.

    Returns:
        An ``nn.Sequential`` in eval mode of ``nn.Linear`` / ``nn.Conv2d``, copies of the other
        modules and possibly one :class:`SelectInputs`, whose output equals ``model.eval()(x)`` up to
        floating-point rounding. Module names are kept (the selection is named
        ``"<first layer>_select_inputs"``).

    Raises:
        TypeError: If ``model`` is not a Sequential (or single gated layer), or if a gated layer sits
            inside a non-Sequential container.
    """
    entries = _entries(model)
    boundaries = _boundaries(entries)
    changed = True
    while changed:
        changed = False
        for boundary in boundaries:
            changed |= _prune_boundary(entries, boundary)
    return _assemble(entries)


def _positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def measure_speedup(
    original: nn.Module,
    exported: nn.Module,
    example_input: torch.Tensor,
    repeats: int = 30,
    *,
    number: int = 10,
    warmup: int = 3,
    num_threads: int = 1,
) -> dict[str, float]:
    r"""Median CPU inference time per call of the gated model, its folded dense twin and ``exported``.

    The three models run under ``torch.inference_mode`` with ``torch.set_num_threads(num_threads)``
    (restored afterwards), after ``warmup`` untimed calls each. Each of the ``repeats`` rounds times
    ``number`` consecutive calls of every model, in an order rotated from round to round so that no
    model always runs first; the per-call time of a round is its total divided by ``number`` and each
    model's result is the median over rounds. The gated model runs in eval mode (its own
    :math:`W \odot \hat z` is recomputed at every call, as in deployment without export) and its
    ``training`` flag is restored afterwards; the folded twin is :func:`fold_gates` ``(original)``.

    Args:
        original: The gated model.
        exported: The exported model (usually :func:`export_dense` ``(original)``).
        example_input: One input batch.
        repeats: Number of timed rounds (>= 1).
        number: Calls per model per round (>= 1).
        warmup: Untimed calls per model before timing (>= 0).
        num_threads: Intra-op threads (>= 1).

    Returns:
        ``{"gated_seconds", "folded_seconds", "exported_seconds"}`` (median seconds per call) and the
        ratios ``"speedup_vs_gated" = gated / exported`` and ``"speedup_vs_folded" = folded / exported``.

    Raises:
        ValueError: If ``repeats``, ``number``, ``warmup`` or ``num_threads`` is out of range.
        TypeError: If ``example_input`` is not a tensor.
    """
    repeats = _positive_int("repeats", repeats)
    number = _positive_int("number", number)
    warmup = _positive_int("warmup", warmup, minimum=0)
    num_threads = _positive_int("num_threads", num_threads)
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
    folded = fold_gates(original)
    models: dict[str, nn.Module] = {"gated": original, "folded": folded, "exported": exported}
    was_training = {name: model.training for name, model in models.items()}
    previous_threads = torch.get_num_threads()
    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    try:
        torch.set_num_threads(num_threads)
        for model in models.values():
            model.eval()
        with torch.inference_mode():
            for _ in range(warmup):
                for model in models.values():
                    model(example_input)
            for round_index in range(repeats):
                shift = round_index % len(names)
                for name in names[shift:] + names[:shift]:
                    model = models[name]
                    start = time.perf_counter()
                    for _ in range(number):
                        model(example_input)
                    times[name].append((time.perf_counter() - start) / number)
    finally:
        torch.set_num_threads(previous_threads)
        for name, model in models.items():
            model.train(was_training[name])
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "gated_seconds": medians["gated"],
        "folded_seconds": medians["folded"],
        "exported_seconds": medians["exported"],
        "speedup_vs_gated": medians["gated"] / medians["exported"],
        "speedup_vs_folded": medians["folded"] / medians["exported"],
    }
