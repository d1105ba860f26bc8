"""What a constraint *is* (its type) and what it *measures* at one primal point (its state)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch


class ConstraintType(enum.Enum):
    r"""Kind of a constraint: ``INEQUALITY`` for :math:`g(\theta) \le 0`, ``EQUALITY`` for :math:`h(\theta) = 0`."""

    EQUALITY = enum.auto()
    INEQUALITY = enum.auto()


@dataclass
class ConstraintState:
    """Measurement of one constraint at the current primal point.

    Args:
        violation: Differentiable violation :math:`g(\\theta)` (a scalar or one entry per constraint).
            It drives the primal update.
        constraint_features: For an :class:`~cooper_like.multipliers.IndexedMultiplier`, the integer ids
            of the observed constraints (same shape as ``violation``); for an
            :class:`~cooper_like.multipliers.ImplicitMultiplier`, the features it reads.
        strict_violation: Optional, possibly non-differentiable measurement (e.g. a 0-1 rate) that drives
            the dual update instead of ``violation`` (the proxy-Lagrangian idea).
        strict_constraint_features: Features matching ``strict_violation``; requires ``strict_violation``.
        contributes_to_primal_update: If ``False`` the constraint is left out of the primal Lagrangian.
        contributes_to_dual_update: If ``False`` its multiplier is not updated from this measurement.
        num_samples: Only read in distributed training (see :mod:`cooper_like.distributed`): the number of
            samples this process's (strict) violation averages over, its weight :math:`n_r` in the
            global mean :math:`\\sum_r n_r g_r / \\sum_r n_r` that drives the multiplier. ``None``
            (default) weighs every process equally, which is exact for equal local batch sizes and for
            measurements that do not depend on the batch. Ignored for row-wise measurements (with
            constraint features), whose rows are gathered instead.
    """

    violation: torch.Tensor
    constraint_features: torch.Tensor | None = None
    strict_violation: torch.Tensor | None = None
    strict_constraint_features: torch.Tensor | None = None
    contributes_to_primal_update: bool = True
    contributes_to_dual_update: bool = True
    num_samples: int | float | torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.violation, torch.Tensor):
            raise TypeError(
                f"ConstraintState: violation must be a torch.Tensor, got {type(self.violation).__name__}"
            )
        if (
            self.strict_violation is None
            and self.strict_constraint_features is None
            and self.num_samples is None
        ):
            return  # the common case: nothing else to check
        if self.strict_violation is not None and not isinstance(self.strict_violation, torch.Tensor):
            raise TypeError(
                "ConstraintState: strict_violation must be a torch.Tensor or None, "
                f"got {type(self.strict_violation).__name__}"
            )
        if self.strict_constraint_features is not None and self.strict_violation is None:
            raise ValueError(
                "ConstraintState: strict_constraint_features was given without strict_violation; "
                "pass the strict violation it describes"
            )
        if (
            self.strict_violation is not None
            and self.strict_constraint_features is None
            and self.strict_violation.numel() != self.violation.numel()
        ):
            raise ValueError(
                f"ConstraintState: strict_violation has {self.strict_violation.numel()} entries but violation has "
                f"{self.violation.numel()}; without strict_constraint_features both describe the same constraints"
            )
        if self.num_samples is not None:
            count = self.num_samples
            if isinstance(count, bool) or not isinstance(count, (int, float, torch.Tensor)):
                raise TypeError(
                    f"ConstraintState: num_samples must be a number or None, got {type(count).__name__}"
                )
            if isinstance(count, torch.Tensor) and count.numel() != 1:
                raise ValueError(
                    f"ConstraintState: num_samples must be a scalar, got shape {tuple(count.shape)}"
                )
            if not float(count) >= 0:
                raise ValueError(f"ConstraintState: num_samples must be >= 0, got {float(count)}")

    def extract_violations(self, do_unsqueeze: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(violation, strict_violation)``; the strict one falls back to ``violation`` detached.

        With ``do_unsqueeze`` scalars become 1-element vectors.
        """
        violation = self.violation
        strict = self.strict_violation if self.strict_violation is not None else violation.detach()
        if do_unsqueeze:
            violation = violation.reshape(1) if violation.dim() == 0 else violation
            strict = strict.reshape(1) if strict.dim() == 0 else strict
        return violation, strict

    def extract_constraint_features(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Return ``(constraint_features, strict_constraint_features)``, the latter defaulting to the former."""
        strict = self.strict_constraint_features
        if strict is None:
            strict = self.constraint_features
        return self.constraint_features, strict
