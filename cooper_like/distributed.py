r"""Multi-process training (``torch.distributed``): the dual update uses the *global* violation.

Under ``DistributedDataParallel`` every process measures the constraints on its own shard of the
batch, and DDP averages the *primal* gradients. The multipliers must move with the violation of the
whole (global) batch, or the processes' multipliers drift apart. With a process group initialised,
the constrained optimizers therefore replace, before the dual update, every dual (strict)
measurement by its global value:

* A measurement without constraint features (a :class:`~cooper_like.multipliers.DenseMultiplier`:
  batch means, batch-independent quantities) becomes the mean over the :math:`R` processes weighted
  by their local sample counts :math:`n_r` (``ConstraintState.num_samples``; equal weights when it
  is ``None``):

  .. math:: \bar g = \frac{\sum_{r:\, n_r > 0} n_r\, g_r}{\sum_{r:\, n_r > 0} n_r}.

  For batch means this is the mean over the global batch, exactly what one process would measure
  on it; a value that is already the same on every process stays the same.
* A measurement with constraint features (an :class:`~cooper_like.multipliers.IndexedMultiplier`'s
  observed ids, an :class:`~cooper_like.multipliers.ImplicitMultiplier`'s features) is row-wise:
  the (feature, violation) pairs of every process are gathered and concatenated in rank order, so
  the multiplier update covers the rows observed anywhere, as if one process had seen them all.
* A ratio (a rate, demographic parity) is not a mean of local ratios: compute its strict violation
  with :func:`global_ratio`, which all-reduces numerators and denominators.

The primal side is untouched: ``violation`` stays local and differentiable, and DDP averages the
gradients it produces — so write each primal term as a mean over the local batch (a per-sample
constraint enters the primal Lagrangian as :math:`\frac1n \sum_i \lambda_i g_i`, its strict
violation keeps the raw :math:`g_i`), and with equal local batches the run is the single-process
run on the global batch. Every rank receives the same bytes and reduces them in the same (rank)
order, so the multipliers stay bit-identical across processes after every step. The decisions of
the NaN/Inf guard are shared too: if any process sees a non-finite value, every process raises or
skips the step together (a process acting alone would leave the others waiting in DDP's
all-reduce).

The switch is the ``distributed`` argument of the optimizers: ``None`` (default) synchronizes
exactly when a process group with more than one process is initialised, ``True`` requires one,
``False`` never communicates. Requirements: every process measures the same constraints, in the
same order, with the same dense shapes (the number of observed rows may differ); a mismatch raises
:class:`DistributedMismatchError` on every process instead of hanging.

Cost: two small collectives (``all_gather`` of a header, then of the packed measurements) per
measurement that drives a dual update, plus one scalar ``all_reduce`` per NaN/Inf check. Without a
process group nothing here runs. The payloads are CPU tensors, as the gloo backend expects (with
NCCL, the default group cannot gather them: initialise a gloo default group).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist

from cooper_like.constraint_state import ConstraintState
from cooper_like.constraints import Constraint
from cooper_like.problem import CMPState

__all__ = [
    "DistributedMismatchError",
    "all_ranks_agree",
    "global_mean",
    "global_ratio",
    "global_sum",
    "is_active",
    "resolve_switch",
    "switch_is_on",
    "synchronize_dual_measurements",
]


class DistributedMismatchError(RuntimeError):
    """The processes measured different constraints (names, order, kinds or dense shapes)."""


# ---------------------------------------------------------------------------------------------------
# The switch
# ---------------------------------------------------------------------------------------------------


AVAILABLE = dist.is_available()


def is_active() -> bool:
    """Whether a default process group with more than one process is initialised."""
    return AVAILABLE and dist.is_initialized() and dist.get_world_size() > 1


def resolve_switch(distributed: bool | None) -> bool | None:
    """Validate the ``distributed`` argument of an optimizer; return it unchanged.

    Raises:
        TypeError: ``distributed`` is not ``None``, ``True`` or ``False``.
        RuntimeError: ``distributed=True`` but no process group is initialised.
    """
    if distributed is not None and not isinstance(distributed, bool):
        raise TypeError(f"distributed must be None, True or False, got {distributed!r}")
    if distributed and not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "distributed=True but no torch.distributed process group is initialised: call "
            "torch.distributed.init_process_group(...) before building the optimizer "
            "(or pass distributed=None to synchronize only when one exists)"
        )
    return distributed


def switch_is_on(distributed: bool | None) -> bool:
    """Whether an optimizer with this ``distributed`` setting communicates now."""
    if distributed is False:
        return False
    return is_active()


# ---------------------------------------------------------------------------------------------------
# Kernels: deterministic reductions over the gathered values of every rank
# ---------------------------------------------------------------------------------------------------


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_r w_r v_r / \sum_r w_r` over dim 0, summed in rank order, ranks with :math:`w_r = 0` left out.

    ``values`` is ``(R, k)``, ``weights`` ``(R,)``. When every weight is 0 the plain mean is returned.
    Left-out ranks never contribute, even if their value is NaN (an empty local mean).
    """
    if not bool((weights > 0).any()):
        weights = torch.ones_like(weights)
    total = torch.zeros(values.shape[1:], dtype=values.dtype)
    for value, weight in zip(values, weights):  # fixed order: the same bits on every rank
        if weight > 0:
            total = total + weight * value
    return total / weights.clamp(min=0).sum()


def gather_tensor(value: torch.Tensor) -> list[torch.Tensor]:
    """``all_gather`` of one same-shape tensor from every rank, as a list in rank order."""
    value = value.contiguous()
    gathered = [torch.empty_like(value) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, value)
    return gathered


def as_float64(value: torch.Tensor | float) -> torch.Tensor:
    """A detached CPU float64 copy (lossless for every floating dtype)."""
    tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
    return tensor.detach().to(device="cpu", dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------
# Helpers for problems
# ---------------------------------------------------------------------------------------------------


def global_sum(value: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_r v_r` over the processes (elementwise), detached; ``value`` itself without a process group.

    The sum is formed in float64 in rank order on every process, so every process gets the same bits;
    the result has ``value``'s dtype and device.
    """
    if not is_active():
        return value.detach()
    total = torch.stack(gather_tensor(as_float64(value))).sum(dim=0)
    return total.to(device=value.device, dtype=value.dtype)


def global_mean(value: torch.Tensor, count: int | float | torch.Tensor) -> torch.Tensor:
    r"""The mean over the global batch from each process's local mean ``value`` over ``count`` samples.

    .. math:: \bar v = \frac{\sum_r n_r v_r}{\sum_r n_r}

    Processes with ``count == 0`` are left out (their local mean may be NaN). Detached; ``value``
    itself (detached) without a process group.
    """
    if not is_active():
        return value.detach()
    local = as_float64(value)
    packed = torch.cat([as_float64(count).reshape(1), local.reshape(-1)])
    gathered = torch.stack(gather_tensor(packed))
    mean = weighted_mean(gathered[:, 1:], gathered[:, 0])
    return mean.reshape(value.shape).to(device=value.device, dtype=value.dtype)


def global_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    r"""A rate over the global batch: :math:`\sum_r a_r / \sum_r b_r` (elementwise), detached.

    Use it for ratio constraints (rates, demographic parity, per-group accuracies): each process
    passes its local counts (or sums) ``numerator`` :math:`a_r` and ``denominator`` :math:`b_r`, and
    every process gets the ratio of the global sums — not the mean of the local ratios. Without a
    process group it is ``numerator / denominator``. Typically it gives the ``strict_violation``
    (which drives the multipliers), e.g. ``global_ratio(positives, group_size) - target``.
    """
    if numerator.shape != denominator.shape:
        raise ValueError(
            f"global_ratio: numerator shape {tuple(numerator.shape)} != denominator shape "
            f"{tuple(denominator.shape)}"
        )
    if not is_active():
        return (numerator / denominator).detach()
    packed = torch.cat([as_float64(numerator).reshape(-1), as_float64(denominator).reshape(-1)])
    totals = torch.stack(gather_tensor(packed)).sum(dim=0)
    size = numerator.numel()
    ratio = (totals[:size] / totals[size:]).reshape(numerator.shape)
    dtype = torch.promote_types(numerator.dtype, denominator.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    return ratio.to(device=numerator.device, dtype=dtype)


def all_ranks_agree(flag: bool) -> bool:
    """``True`` iff ``flag`` is ``True`` on every process (one scalar ``all_reduce``; ``flag`` alone without a group)."""
    if not is_active():
        return flag
    value = torch.tensor([0 if flag else 1], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value.item()) == 0


# ---------------------------------------------------------------------------------------------------
# Synchronizing the dual measurements of a CMPState
# ---------------------------------------------------------------------------------------------------


class Measurement(NamedTuple):
    """What one rank contributes for one constraint: its packed values and the layout to decode them."""

    constraint: Constraint
    state: ConstraintState
    strict: torch.Tensor
    features: torch.Tensor | None


def drives_dual_update(constraint: Constraint, state: ConstraintState) -> bool:
    """Whether the strict measurement of ``state`` moves a multiplier or feeds a penalty-coefficient update."""
    if constraint.multiplier is not None and state.contributes_to_dual_update:
        return True
    return constraint.penalty_coefficient is not None


def row_layout(strict: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``strict`` as ``(m, ...)`` rows and ``features`` as the matching ``(m, ...)`` rows.

    Rows run along dim 0 (a 0-d violation is one row); raise if the features do not have one row per
    violation row.
    """
    rows = strict.reshape(1) if strict.dim() == 0 else strict
    feature_rows = features.reshape(1) if features.dim() == 0 else features
    if feature_rows.shape[0] != rows.shape[0]:
        raise ValueError(
            f"constraint_features of shape {tuple(features.shape)} do not have one row per violation row "
            f"(violation shape {tuple(strict.shape)}): cannot gather them across processes"
        )
    return rows, feature_rows


def signature(measurements: Sequence[Measurement]) -> int:
    """A checksum of the layout every rank must share: names, kinds, dtypes and fixed shapes."""
    parts = []
    for item in measurements:
        if item.features is None:
            parts.append(f"{item.constraint.name}:dense:{item.strict.dtype}:{tuple(item.strict.shape)}")
        else:
            parts.append(
                f"{item.constraint.name}:rows:{item.strict.dtype}:{tuple(item.strict.shape[1:])}:"
                f"{item.features.dtype}:{tuple(item.features.shape[1:])}"
            )
    return zlib.crc32(";".join(parts).encode())


def pack_bits(value: torch.Tensor) -> torch.Tensor:
    """Lossless int64 code of a tensor: integers as they are, floats and bools as float64 bit patterns."""
    flat = value.detach().to("cpu").reshape(-1)
    if flat.dtype.is_floating_point or flat.dtype == torch.bool:
        return flat.to(torch.float64).view(torch.int64)
    return flat.to(torch.int64)


def unpack_bits(code: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of :func:`pack_bits`."""
    if dtype.is_floating_point or dtype == torch.bool:
        return code.view(torch.float64).to(dtype)
    return code.to(dtype)


def pack(measurements: Sequence[Measurement]) -> torch.Tensor:
    """This rank's payload: per dense measurement ``[weight, values]``, per row-wise one ``[m, values, features]``."""
    chunks: list[torch.Tensor] = []
    for item in measurements:
        if item.features is None:
            weight = item.state.num_samples
            chunks.append(pack_bits(as_float64(1.0 if weight is None else weight).reshape(1)))
            chunks.append(pack_bits(item.strict.to(torch.float64)))
        else:
            chunks.append(torch.tensor([item.strict.shape[0]], dtype=torch.int64))
            chunks.append(pack_bits(item.strict))
            chunks.append(pack_bits(item.features))
    return torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.int64)


def unpack(
    payloads: Sequence[torch.Tensor], measurements: Sequence[Measurement]
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Global ``(strict violation, strict features)`` of every measurement from the payloads of every rank."""
    offsets = [0] * len(payloads)
    results: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    for item in measurements:
        if item.features is None:
            size = item.strict.numel()
            weights, values = [], []
            for rank, payload in enumerate(payloads):
                start = offsets[rank]
                weights.append(payload[start : start + 1].view(torch.float64))
                values.append(payload[start + 1 : start + 1 + size].view(torch.float64))
                offsets[rank] = start + 1 + size
            mean = weighted_mean(torch.stack(values), torch.cat(weights))
            global_strict = mean.reshape(item.strict.shape).to(item.strict.dtype)
            results.append((global_strict.to(item.strict.device), None))
            continue
        row_size = int(torch.Size(item.strict.shape[1:]).numel())
        feature_size = int(torch.Size(item.features.shape[1:]).numel())
        strict_parts, feature_parts, total = [], [], 0
        for rank, payload in enumerate(payloads):
            start = offsets[rank]
            count = int(payload[start])
            start += 1
            strict_parts.append(payload[start : start + count * row_size])
            start += count * row_size
            feature_parts.append(payload[start : start + count * feature_size])
            offsets[rank] = start + count * feature_size
            total += count
        global_strict = unpack_bits(torch.cat(strict_parts), item.strict.dtype).reshape(
            total, *item.strict.shape[1:]
        )
        global_features = unpack_bits(torch.cat(feature_parts), item.features.dtype).reshape(
            total, *item.features.shape[1:]
        )
        results.append((global_strict.to(item.strict.device), global_features.to(item.features.device)))
    return results


def synchronize_dual_measurements(cmp_state: CMPState) -> CMPState:
    r"""A copy of ``cmp_state`` whose dual (strict) measurements are global; see the module docstring.

    Only ``strict_violation`` and ``strict_constraint_features`` change, so the primal Lagrangian (built
    from the local, differentiable ``violation``) is unaffected. States that drive no dual update are
    kept as they are. Without an active process group ``cmp_state`` is returned as is.

    Raises:
        DistributedMismatchError: the processes measured different constraints or shapes.
        ValueError: constraint features without one row per violation row.
    """
    if not is_active():
        return cmp_state
    measurements = []
    for constraint, state in cmp_state.observed_constraints.items():
        if not drives_dual_update(constraint, state):
            continue
        _, strict = state.extract_violations(do_unsqueeze=False)
        _, features = state.extract_constraint_features()
        if features is None:
            measurements.append(Measurement(constraint, state, strict.detach(), None))
        else:
            rows, feature_rows = row_layout(strict.detach(), features)
            measurements.append(Measurement(constraint, state, rows, feature_rows))

    payload = pack(measurements)
    header = torch.tensor([signature(measurements), payload.numel()], dtype=torch.int64)
    headers = gather_tensor(header)
    signatures = {int(h[0]) for h in headers}
    if len(signatures) > 1:
        names = [item.constraint.name for item in measurements]
        raise DistributedMismatchError(
            f"the processes measured different constraints (rank {dist.get_rank()} measured {names}); every "
            "process must observe the same constraints, in the same order, with the same dense shapes and "
            "dtypes and the same contributes_to_dual_update flags (only the number of observed rows may differ)"
        )
    longest = max(int(h[1]) for h in headers)
    padded = torch.zeros(longest, dtype=torch.int64)
    padded[: payload.numel()] = payload
    payloads = gather_tensor(padded)

    observed = dict(cmp_state.observed_constraints)
    for item, (global_strict, global_features) in zip(measurements, unpack(payloads, measurements)):
        observed[item.constraint] = dataclasses.replace(
            item.state, strict_violation=global_strict, strict_constraint_features=global_features
        )
    return dataclasses.replace(cmp_state, observed_constraints=observed)  # keeps a user's CMPState subclass
