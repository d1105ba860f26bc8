"""What to do when the loss, a violation or a multiplier is NaN/Inf: raise (default), skip, or ignore."""

from __future__ import annotations

import enum
import math
import warnings

import torch

from cooper_like import distributed as distributed_training
from cooper_like.multipliers import ExplicitMultiplier
from cooper_like.problem import CMPState, LagrangianStore


class NonFinitePolicy(str, enum.Enum):
    """``RAISE``: raise :class:`NonFiniteError`; ``SKIP``: skip the whole step (primal and dual) with a
    warning and count it; ``OFF``: no check at all.
    """

    RAISE = "raise"
    SKIP = "skip"
    OFF = "off"


class NonFiniteError(FloatingPointError):
    """The loss, a violation or a multiplier is NaN or infinite."""


def non_finite_measurements(cmp_state: CMPState) -> list[str]:
    """Names of the non-finite entries of a state (for error messages)."""
    found = []
    if cmp_state.loss is not None and not bool(torch.isfinite(cmp_state.loss.detach()).all()):
        found.append(f"loss={cmp_state.loss.detach()}")
    for constraint, state in cmp_state.observed_constraints.items():
        for kind, value in (("violation", state.violation), ("strict_violation", state.strict_violation)):
            if value is not None and not bool(torch.isfinite(value.detach()).all()):
                found.append(f"{kind} of constraint {constraint.name!r}")
        multiplier = constraint.multiplier
        if multiplier is not None and any(not bool(torch.isfinite(p).all()) for p in multiplier.parameters()):
            found.append(f"multiplier of constraint {constraint.name!r}")
    return found or ["a Lagrangian value"]


def values_to_check(
    cmp_state: CMPState, primal_store: LagrangianStore | None, dual_store: LagrangianStore | None
) -> list[torch.Tensor]:
    r"""The fewest tensors whose sums are all finite iff the step's measurements are.

    The primal Lagrangian covers the loss, the violations and the multipliers that enter it
    (:math:`0 \cdot \infty` is NaN); strict violations and the measurements left out of it are added.
    Penalty terms clip violations (:math:`[-\infty]_+ = 0`), so the violations of constraints whose
    formulation ``may_hide_non_finite_violation`` (all but the plain Lagrangian) are checked as well, and a
    dual gradient is checked in the multiplier's dtype when it differs from the violation's (a value
    finite in float32 can overflow float16).
    """
    values = []
    if primal_store is not None and primal_store.lagrangian is not None:
        values.append(primal_store.lagrangian)
    elif cmp_state.loss is not None:
        values.append(cmp_state.loss)
    in_primal = primal_store is not None
    for constraint, state in cmp_state.observed_constraints.items():
        if state.strict_violation is not None:
            values.append(state.strict_violation)
        covered = in_primal and state.contributes_to_primal_update
        if not covered or constraint.formulation.may_hide_non_finite_violation:
            values.append(state.violation)
        multiplier = constraint.multiplier
        if isinstance(multiplier, ExplicitMultiplier) and state.contributes_to_dual_update:
            dual_gradient = state.strict_violation if state.strict_violation is not None else state.violation
            if dual_gradient.dtype != multiplier.dtype:  # e.g. 7e4 is finite in float32, not in float16
                values.append(dual_gradient.detach().to(multiplier.dtype))
    dual_value = None if dual_store is None else dual_store.differentiable_part()
    if dual_value is not None:
        values.append(dual_value)
    return values


def finite_total(value: torch.Tensor) -> torch.Tensor:
    """A scalar that is finite iff every entry of ``value`` is: the value itself, or its sum.

    On the CPU the sum is taken in float64 and on other devices low-precision values are summed in
    float32, so that large finite entries (a float16 violation of 6e4, say) never overflow the sum into
    a false alarm.
    """
    if value.dim() == 0:
        return value
    value = value.detach()
    if value.device.type == "cpu":
        return value.sum(dtype=torch.float64)
    return value.sum(dtype=torch.float32) if value.dtype in (torch.float16, torch.bfloat16) else value.sum()


def all_finite(values: list[torch.Tensor]) -> bool:
    """Whether every entry of every tensor is finite.

    On the CPU one cheap read per tensor; on an accelerator the flags are combined on the device and
    read with a single host synchronisation.
    """
    if values[0].is_cpu:
        return all(math.isfinite(finite_total(value).item()) for value in values)
    flags = [torch.isfinite(finite_total(value)).to(values[0].device) for value in values]
    return bool(torch.stack(flags).all())


class NonFiniteGuard:
    r"""Checks one step's Lagrangians before anything is updated.

    A NaN/Inf in the loss, a violation, a strict violation or a multiplier makes
    :math:`\mathcal{L}_p + \mathcal{L}_d` non-finite (:math:`0\cdot\infty` is NaN), so a single scalar
    test covers them all. The verdict is taken before anything is updated, so ``RAISE`` raises with
    every parameter, multiplier and optimizer state as it was. On an accelerator this costs one host
    synchronisation per check (the flags of all values are combined on the device and read once);
    ``OFF`` never synchronises.

    In distributed training the verdict is shared (one scalar ``all_reduce``): when any process sees a
    non-finite value, every process raises or skips the step, so none is left waiting in a collective.

    Args:
        policy: A :class:`NonFinitePolicy` or its string value.
        distributed: The optimizer's ``distributed`` switch (``None``: share the verdict whenever a process
            group with more than one process is initialised; ``False``: never).
    """

    def __init__(
        self, policy: NonFinitePolicy | str = NonFinitePolicy.RAISE, distributed: bool | None = None
    ) -> None:
        try:
            self.policy = NonFinitePolicy(policy)
        except ValueError:
            choices = [p.value for p in NonFinitePolicy]
            raise ValueError(f"non_finite must be one of {choices}, got {policy!r}") from None
        self.distributed = distributed
        self.skipped_steps = 0

    def admits(
        self,
        cmp_state: CMPState,
        primal_store: LagrangianStore | None = None,
        dual_store: LagrangianStore | None = None,
        *,
        already_applied: str | None = None,
        communicate: bool | None = None,
    ) -> bool:
        """``True`` if the step may proceed; raises or returns ``False`` (skip) otherwise.

        ``already_applied`` names the half-step a scheme applied before this check (for the message);
        ``communicate`` whether the step communicates (``None``: asked here from ``distributed``).
        """
        if self.policy is NonFinitePolicy.OFF:
            return True
        values = values_to_check(cmp_state, primal_store, dual_store)
        shared = distributed_training.switch_is_on(self.distributed) if communicate is None else communicate
        if not shared and not values:
            return True
        finite_here = all_finite(values) if values else True
        finite = distributed_training.all_ranks_agree(finite_here) if shared else finite_here
        if finite:
            return True
        culprits = ", ".join(non_finite_measurements(cmp_state)) if not finite_here else "on another process"
        applied = (
            "nothing was updated"
            if already_applied is None
            else f"the {already_applied} was applied, nothing else"
        )
        if self.policy is NonFinitePolicy.RAISE:
            raise NonFiniteError(
                f"non-finite value in this step ({culprits}); {applied}. Pass non_finite='skip' to "
                "the constrained optimizer to skip such steps instead"
            )
        self.skipped_steps += 1
        warnings.warn(f"skipping a step with a non-finite value ({culprits})", RuntimeWarning, stacklevel=3)
        return False
