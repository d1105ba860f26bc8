"""What to do when the loss, a violation or a multiplier is NaN/Inf: raise (default), skip, or ignore."""

from __future__ import annotations

import enum
import math
import warnings

import torch

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
    """
    values = []
    if primal_store is not None and primal_store.lagrangian is not None:
        values.append(primal_store.lagrangian)
    elif cmp_state.loss is not None:
        values.append(cmp_state.loss)
    in_primal = primal_store is not None
    for state in cmp_state.observed_constraints.values():
        if state.strict_violation is not None:
            values.append(state.strict_violation)
        if not (in_primal and state.contributes_to_primal_update):
            values.append(state.violation)
    if dual_store is not None and dual_store.autograd_part is not None:
        values.append(dual_store.autograd_part)
    return values


class NonFiniteGuard:
    r"""Checks one step's Lagrangians before anything is updated.

    A NaN/Inf in the loss, a violation, a strict violation or a multiplier makes
    :math:`\mathcal{L}_p + \mathcal{L}_d` non-finite (:math:`0\cdot\infty` is NaN), so a single scalar
    test covers them all. On the CPU the test is immediate. On an accelerator, ``RAISE`` does not
    synchronise the host every step: the flag is copied asynchronously and inspected at the next check,
    so the error names the step *before*; ``SKIP`` must decide before updating and therefore synchronises
    (as ``torch.amp.GradScaler`` does).

    Args:
        policy: A :class:`NonFinitePolicy` or its string value.
    """

    def __init__(self, policy: NonFinitePolicy | str = NonFinitePolicy.RAISE) -> None:
        try:
            self.policy = NonFinitePolicy(policy)
        except ValueError:
            choices = [p.value for p in NonFinitePolicy]
            raise ValueError(f"non_finite must be one of {choices}, got {policy!r}") from None
        self.skipped_steps = 0
        self._pending: tuple[torch.Tensor, torch.Event] | None = None

    def admits(
        self,
        cmp_state: CMPState,
        primal_store: LagrangianStore | None = None,
        dual_store: LagrangianStore | None = None,
    ) -> bool:
        """``True`` if the step may proceed; raises or returns ``False`` (skip) otherwise."""
        if self.policy is NonFinitePolicy.OFF:
            return True
        values = values_to_check(cmp_state, primal_store, dual_store)
        if not values:
            return True
        if values[0].device.type != "cpu" and self.policy is NonFinitePolicy.RAISE:
            self._check_pending()
            self._defer(torch.isfinite(torch.stack([value.detach().sum() for value in values]).sum()))
            return True
        if all(
            math.isfinite((value if value.dim() == 0 else value.detach().sum()).item()) for value in values
        ):
            return True
        culprits = ", ".join(non_finite_measurements(cmp_state))
        if self.policy is NonFinitePolicy.RAISE:
            raise NonFiniteError(
                f"non-finite value in this step ({culprits}); nothing was updated. Pass non_finite='skip' to "
                "the constrained optimizer to skip such steps instead"
            )
        self.skipped_steps += 1
        warnings.warn(f"skipping a step with a non-finite value ({culprits})", RuntimeWarning, stacklevel=3)
        return False

    def _defer(self, is_finite: torch.Tensor) -> None:
        host = torch.empty((), dtype=torch.bool, pin_memory=True)
        host.copy_(is_finite, non_blocking=True)
        event = torch.Event(device=is_finite.device)
        event.record()
        self._pending = (host, event)

    def _check_pending(self) -> None:
        if self._pending is None:
            return
        host, event = self._pending
        if not event.query():  # the previous step is still running: check it next time
            return
        self._pending = None
        if not bool(host):
            raise NonFiniteError(
                "non-finite value in the previous step (checked asynchronously on the device)"
            )
