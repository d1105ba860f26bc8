r"""How the gates start: held open through a dense warm-up, then from the droprate or the weight magnitudes.

A gated run may begin with ``warmup_epochs`` of dense training: every gate is held open
(:math:`\log\alpha = ` :data:`OPEN_LOG_ALPHA`, so :math:`z = \hat z = 1` exactly and the network is the
dense one), and neither the density constraint nor the L0 penalty acts. Then the gates start, either

* ``"droprate"``: :math:`\log\alpha = \log(1-d) - \log d` plus noise, as in Louizos et al., or
* ``"magnitude"``: from the ranks of the weights the warm-up trained. Within each constraint's scope
  (the whole model, or each layer) gates are ranked by the magnitude behind them (:math:`|w|`, or the
  root mean square of the weights a structured gate multiplies); :math:`c_g` is the fraction of the scope's weight
  entries held by the gates ranked above :math:`g` (:math:`c_g^+` with :math:`g` included). With :math:`\theta = \log(-\gamma/\zeta) = -\ln 11`
  the test-time threshold, target :math:`\tau`, gap :math:`g` and ramp :math:`r`,

  .. math::

      \log\alpha_g = \theta + g + r\,\frac{\tau - c_g}{\tau} \ \ (c_g < \tau), \qquad
      \log\alpha_g = \theta - g - r\,\frac{c_g^+ - \tau}{1 - \tau} \ \ (c_g \ge \tau),

  so the shipped model starts at the target density, with magnitude pruning's mask; the constrained
  training then moves the gates (and the multipliers keep the density on target). The gap keeps the
  gates ranked next to the cut from flipping in the first steps, before the multipliers (at 0 when
  the gates start) have grown: without it the MLP at target 0.1 rose to 1.2 points over the target
  during training and ended 0.6-0.8 points over (``benchmarks/results/sparsity_warm_start.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from problems.sparsity.layers import L0Layer
from problems.sparsity.models import gated_layers

#: log α of a gate held open: :math:`\sigma(20)` rounds to 1 in float32, so every sample and
#: the test-time gate equal 1 exactly.
OPEN_LOG_ALPHA = 20.0

#: :math:`r` above: with the default stretch and gap the best-ranked gate starts at
#: :math:`\theta + g + r \approx 4.6` (:math:`z = 1` in about 95 % of the samples), the worst at
#: :math:`\theta - g - r \approx -9.4` (:math:`P(z \neq 0) \approx 0.0004`).
MAGNITUDE_RAMP = 6.0

#: :math:`g` above: every gate starts at least one unit of log α away from the threshold.
MAGNITUDE_GAP = 1.0


def magnitude_margins(
    scores: torch.Tensor,
    entries: torch.Tensor,
    target: float,
    ramp: float = MAGNITUDE_RAMP,
    gap: float = MAGNITUDE_GAP,
) -> torch.Tensor:
    r""":math:`\log\alpha_g - \theta` per gate from its magnitude ``scores`` (1-d), each gate holding
    ``entries`` weight entries, so that the best-ranked ``target`` fraction of the entries starts active
    (positive margin) and the rest inactive (module doc).

    Ties keep their order (stable sort). Raises ``ValueError`` for a target outside (0, 1], a
    non-positive ramp, a negative gap, or mismatched shapes.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must lie in (0, 1], got {target!r}")
    if not ramp > 0:
        raise ValueError(f"ramp must be > 0, got {ramp!r}")
    if not gap >= 0:
        raise ValueError(f"gap must be >= 0, got {gap!r}")
    if scores.dim() != 1 or scores.shape != entries.shape:
        raise ValueError(
            f"scores and entries must be 1-d of one length, got {tuple(scores.shape)} and {tuple(entries.shape)}"
        )
    order = torch.sort(scores, descending=True, stable=True).indices
    sizes = entries.to(torch.float64)[order]
    after = torch.cumsum(sizes, 0) / sizes.sum()  # fraction covered up to and including each gate
    before = after - sizes / sizes.sum()
    covered_after, covered_before = torch.empty_like(after), torch.empty_like(before)
    covered_after[order], covered_before[order] = after, before
    # a gate that starts inside the budget is active (margin > 0), the others inactive (margin < 0)
    active = covered_before < target
    above = gap + ramp * (target - covered_before) / target
    below = -gap - ramp * (covered_after - target) / max(1.0 - target, 1e-12)
    return torch.where(active, above, below).to(scores.dtype)


def hold_gates_open(model: nn.Module) -> None:
    """Every gate at :data:`OPEN_LOG_ALPHA`, without gradient: the network computes as the dense one."""
    with torch.no_grad():
        for _, layer in gated_layers(model):
            layer.gate.log_alpha.fill_(OPEN_LOG_ALPHA)
            layer.gate.log_alpha.requires_grad_(False)


def start_gates(model: nn.Module, init: str, targets: Sequence[float], layerwise: bool) -> None:
    """Give the gates their starting log α (``"droprate"`` or ``"magnitude"``) and their gradient back.

    ``targets``: one density for the model, or one per layer (a single value applies to every layer)
    when ``layerwise``; the magnitude start ranks within the model or within each layer accordingly.
    """
    layers = [layer for _, layer in gated_layers(model)]
    if init not in ("droprate", "magnitude"):
        raise ValueError(f"init must be 'droprate' or 'magnitude', got {init!r}")
    with torch.no_grad():
        if init == "droprate":
            for layer in layers:
                layer.gate.reset_parameters()
        else:
            fractions = list(targets) * len(layers) if len(targets) == 1 else list(targets)
            scopes = [[layer] for layer in layers] if layerwise else [layers]
            for scope, target in zip(scopes, fractions):
                start_scope(scope, target)
    for layer in layers:
        layer.gate.log_alpha.requires_grad_(True)


def start_scope(layers: Sequence[L0Layer], target: float) -> None:
    """The magnitude start of the gates of ``layers``, ranked together against one ``target``."""
    scores = torch.cat([layer.gate_magnitudes().flatten() for layer in layers])
    entries = torch.cat(
        [
            torch.full((layer.gate.num_gates,), float(layer.entries_per_gate), device=scores.device)
            for layer in layers
        ]
    )
    margins = magnitude_margins(scores.to(torch.float64), entries, target)
    start = 0
    for layer in layers:
        count, gate = layer.gate.num_gates, layer.gate
        threshold = math.log(-gate.gamma / gate.zeta)  # the test-time gate is non-zero above it
        gate.log_alpha.copy_((threshold + margins[start : start + count]).reshape(gate.shape))
        start += count
