r"""Lagrange multipliers: the dual variables :math:`\lambda` (inequalities) and :math:`\mu` (equalities).

A multiplier is an ``nn.Module`` whose parameters are optimized by a *dual optimizer* (any
``torch.optim.Optimizer`` with ``maximize=True``). The gradient of the dual Lagrangian
:math:`\sum_i \lambda_i g_i` with respect to :math:`\lambda_i` is the violation :math:`g_i` itself, so
explicit multipliers receive it directly (:meth:`ExplicitMultiplier.add_dual_gradient_`) without a
backward pass when their formulation declares it (the built-in ones do); :class:`ImplicitMultiplier`
models, and formulations that declare nothing, go through autograd.
"""

from __future__ import annotations

import abc
from typing import Any

import torch

from cooper_like.constraint_state import ConstraintType
from cooper_like.exceptions import ArgumentTypeError


class Multiplier(torch.nn.Module, abc.ABC):
    """Base class of all multipliers.

    Attributes:
        expects_constraint_features: Whether :meth:`forward` takes the observed constraint features.
        constraint_type: Set by the owning :class:`~cooper_like.Constraint`.
    """

    expects_constraint_features: bool = False
    constraint_type: ConstraintType | None = None

    @abc.abstractmethod
    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Return the multiplier values of the observed constraints (differentiable)."""

    @abc.abstractmethod
    def post_step_(self) -> None:
        """Post-process the parameters after each dual optimizer step (e.g. project onto λ ≥ 0)."""

    def sanity_check(self) -> None:
        """Check that the values are consistent with :attr:`constraint_type`; raise otherwise."""

    def set_constraint_type(self, constraint_type: ConstraintType) -> None:
        """Bind the multiplier to a constraint type and check its values against it."""
        self.constraint_type = constraint_type
        self.sanity_check()


class ExplicitMultiplier(Multiplier):
    """A multiplier stored explicitly as a parameter ``weight`` with one entry per constraint.

    Args:
        num_constraints: Number of constraints. Optional when ``init`` is given.
        init: 1-D tensor of initial values; zeros when omitted.
        device: Device of ``weight``.
        dtype: Floating dtype of ``weight`` (float32 by default; keep it float32 under autocast).
        restart_on_feasible: *Dual restarts* (Gallego-Posada et al. 2022): after every dual step, each
            observed entry whose strict violation is ``<= 0`` is reset to 0 and its dual-optimizer state
            is cleared. Inequality constraints only.
    """

    weight: torch.nn.Parameter
    _observed_rows: torch.Tensor | None

    def __init__(
        self,
        num_constraints: int | None = None,
        init: torch.Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        *,
        restart_on_feasible: bool = False,
    ) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(initial_multiplier_values(num_constraints, init, device, dtype))
        self.restart_on_feasible = restart_on_feasible
        self.__dict__["_observed_rows"] = None  # plain attribute: skips nn.Module.__setattr__ on the hot path

    @property
    def device(self) -> torch.device:
        return self.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of ``weight`` (read directly: ``nn.Module`` attribute lookup is slow on a hot path)."""
        return self._parameters["weight"].dtype  # type: ignore[union-attr]

    @property
    def num_constraints(self) -> int:
        return self.weight.shape[0]

    def sanity_check(self) -> None:
        """Raise if an inequality multiplier is negative or any entry is not finite."""
        values = self.weight.detach()
        if not bool(torch.isfinite(values).all()):
            raise ValueError(f"{type(self).__name__}: multiplier values must be finite, got {values}")
        if self.constraint_type == ConstraintType.INEQUALITY and bool((values < 0).any()):
            raise ValueError(
                f"{type(self).__name__}: multipliers of an inequality constraint must be >= 0, "
                f"got min {values.min().item()}"
            )
        if self.restart_on_feasible and self.constraint_type == ConstraintType.EQUALITY:
            raise ValueError(
                f"{type(self).__name__}: restart_on_feasible=True only applies to inequality constraints"
            )

    #: Whether :meth:`snapshot` depends on the observed features (an indexed multiplier's does; a dense
    #: multiplier's snapshot is always the whole ``weight``).
    snapshot_depends_on_features: bool = True

    def detached_value(self, constraint_features: torch.Tensor | None = None) -> torch.Tensor:
        """The observed multiplier values now, as a new tensor outside the autograd graph.

        A new snapshot at every call, except between ``share_snapshot_(True)`` and
        ``share_snapshot_(False)`` (see :meth:`share_snapshot_`).
        """
        if not self.__dict__.get("_sharing_snapshot"):
            return self.snapshot(constraint_features)
        shared = self.__dict__["_shared_snapshot"]
        if shared is None:
            shared = self.__dict__["_shared_snapshot"] = self.snapshot(constraint_features)
        return shared

    def share_snapshot_(self, sharing: bool) -> None:
        """Open (``True``) or close (``False``) a scope in which :meth:`detached_value` returns one snapshot.

        The snapshot is taken at the first call in the scope and dropped when the scope opens or closes,
        so it never outlives the scope. :meth:`~cooper_like.CMPState.compute_lagrangians` opens one around
        the building of a measurement's two Lagrangians (nothing moves the multiplier in between), for
        multipliers whose snapshot does not depend on the features
        (:attr:`snapshot_depends_on_features` is ``False``).
        """
        if sharing and self.snapshot_depends_on_features:
            raise ValueError(
                f"{type(self).__name__}: its snapshot depends on the observed features, so it cannot be shared"
            )
        self.__dict__["_sharing_snapshot"] = sharing
        self.__dict__["_shared_snapshot"] = None

    @abc.abstractmethod
    def snapshot(self, constraint_features: torch.Tensor | None) -> torch.Tensor:
        """A new tensor with the current values of the observed multipliers."""

    @abc.abstractmethod
    def check_observation(self, violation: torch.Tensor, constraint_features: torch.Tensor | None) -> None:
        """Raise if ``violation``/``constraint_features`` do not fit this multiplier."""

    @abc.abstractmethod
    def add_dual_gradient_(self, violation: torch.Tensor, constraint_features: torch.Tensor | None) -> None:
        r"""Accumulate :math:`\partial(\lambda^\top g)/\partial\lambda = g` into ``weight.grad``."""

    #: Whether the multiplier records which rows each dual gradient touches (an indexed multiplier does;
    #: a dense one observes every row at every step).
    tracks_observed_rows: bool = False

    def gradient(self) -> torch.Tensor | None:
        """``weight.grad`` (read without ``nn.Module`` attribute lookup, which is slow on a hot path)."""
        return self._parameters["weight"].grad  # type: ignore[union-attr]

    def clear_observed_(self) -> None:
        """Forget the observed rows (called when a dual gradient is written onto a cleared gradient)."""
        self.__dict__["_observed_rows"] = None

    def note_observed_(self, constraint_features: torch.Tensor | None) -> None:
        """Record the rows of one dual measurement, before its gradient is written."""

    def observed_rows(self) -> torch.Tensor | None:
        """The rows that have a dual gradient; ``None`` means every row (or, see below, unknown).

        A sparse gradient names its rows itself (read from its indices, whoever wrote it). For a dense
        gradient of a multiplier that :attr:`tracks_observed_rows`, they are the rows
        :meth:`~cooper_like.LagrangianStore.backward` recorded since the gradient was last ``None``
        (possibly repeated), ``None`` if none was recorded.
        """
        gradient = self.gradient()
        if gradient is not None and gradient.is_sparse:
            return gradient.coalesce().indices()[0]
        return self._observed_rows

    def post_step_(self, observed_rows_only: bool = False) -> None:
        r"""Project inequality multipliers onto :math:`\lambda \ge 0` (in place, in any grad mode).

        Args:
            observed_rows_only: Project only the observed rows. Correct only when the dual optimizer
                moved no other row (a sparse gradient and an optimizer that declares so, see
                :func:`~cooper_like.optim.row_state.moves_only_gradient_rows`); the schemes decide it.
                By default every row is projected.
        """
        weight = self._parameters["weight"]
        assert weight is not None
        if weight.grad is None or self.constraint_type is not ConstraintType.INEQUALITY:
            return
        values = weight.detach()  # writes through to ``weight`` (and bumps its version counter)
        rows = self.observed_rows() if observed_rows_only else None
        if rows is None:
            values.clamp_(min=0)
        else:
            values.index_copy_(0, rows, values.index_select(0, rows).clamp_(min=0))

    def extra_repr(self) -> str:
        return f"num_constraints={self.num_constraints}"


class DenseMultiplier(ExplicitMultiplier):
    """One multiplier per constraint, all observed at every step. ``weight`` has shape ``(n,)``."""

    expects_constraint_features = False
    snapshot_depends_on_features = False

    def forward(self) -> torch.Tensor:
        """Return a differentiable copy of all multiplier values."""
        return self.weight.clone()

    def snapshot(self, constraint_features: torch.Tensor | None) -> torch.Tensor:
        return self._parameters["weight"].detach().clone()  # type: ignore[union-attr]

    def check_observation(self, violation: torch.Tensor, constraint_features: torch.Tensor | None) -> None:
        expected = self._parameters["weight"].shape[0]  # type: ignore[union-attr]
        if violation.numel() != expected:
            raise ValueError(
                f"DenseMultiplier: violation has {violation.numel()} entries (shape {tuple(violation.shape)}) "
                f"but the multiplier has {expected}"
            )

    def add_dual_gradient_(self, violation: torch.Tensor, constraint_features: torch.Tensor | None) -> None:
        weight = self._parameters["weight"]
        assert weight is not None
        gradient = violation.detach() if violation.requires_grad else violation
        if gradient.dim() != 1:  # check_observation guarantees one entry per multiplier
            gradient = gradient.reshape(-1)
        # A copy, so that in-place edits of the gradient (clipping, ...) never alter the user's tensor.
        gradient = gradient.clone() if gradient.dtype == weight.dtype else gradient.to(weight.dtype)
        previous = weight.grad
        weight.grad = gradient if previous is None else previous + gradient


class IndexedMultiplier(ExplicitMultiplier):
    """One multiplier per constraint id, of which only a few are observed per step.

    ``constraint_features`` hold the integer ids of the observed rows. ``weight`` has shape ``(n, 1)``
    (as in Cooper). With ``sparse_grad=True`` (default) the gradient is a sparse COO tensor over the
    observed rows: the update and the projection cost O(observed), whatever ``n`` is, with
    ``torch.optim.SGD`` (no momentum/weight decay), ``torch.optim.SparseAdam`` and
    :class:`~cooper_like.optim.nuPI`. ``torch.optim.Adam`` rejects sparse gradients, and sparse
    gradients break DistributedDataParallel all-reduce and the foreach optimizers: pass
    ``sparse_grad=False`` there (dense gradients, O(n) per step).
    """

    expects_constraint_features = True
    tracks_observed_rows = True

    def __init__(
        self,
        num_constraints: int | None = None,
        init: torch.Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        *,
        restart_on_feasible: bool = False,
        sparse_grad: bool = True,
    ) -> None:
        super().__init__(num_constraints, init, device, dtype, restart_on_feasible=restart_on_feasible)
        self.weight.data = self.weight.data.unsqueeze(-1)
        self.sparse_grad = sparse_grad

    def _rows(self, constraint_features: torch.Tensor | None) -> torch.Tensor:
        if constraint_features is None:
            raise ValueError(
                "IndexedMultiplier: constraint_features (the observed constraint ids) are required"
            )
        if constraint_features.dtype not in (torch.int64, torch.int32):
            raise ArgumentTypeError(
                "IndexedMultiplier: constraint_features must be an integer tensor (torch.long), "
                f"got dtype {constraint_features.dtype}"
            )
        rows = constraint_features.reshape(-1)
        return rows if rows.dtype == torch.int64 else rows.long()  # index_copy_ & co. take int64 ids

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """Return the differentiable multiplier values of the rows ``indices``."""
        rows = self._rows(indices)
        return torch.nn.functional.embedding(rows, self.weight, sparse=self.sparse_grad).reshape(
            indices.shape
        )

    def snapshot(self, constraint_features: torch.Tensor | None) -> torch.Tensor:
        rows = self._rows(constraint_features)
        assert constraint_features is not None
        return self.weight.detach().index_select(0, rows).reshape(constraint_features.shape)

    def check_observation(self, violation: torch.Tensor, constraint_features: torch.Tensor | None) -> None:
        rows = self._rows(constraint_features)
        assert constraint_features is not None
        if violation.shape != constraint_features.shape and violation.numel() != rows.numel():
            raise ValueError(
                f"IndexedMultiplier: violation shape {tuple(violation.shape)} does not match "
                f"constraint_features shape {tuple(constraint_features.shape)}"
            )
        check_row_bounds(rows, self.num_constraints, "IndexedMultiplier: constraint_features")

    def add_dual_gradient_(self, violation: torch.Tensor, constraint_features: torch.Tensor | None) -> None:
        rows = self._rows(constraint_features)
        values = violation.detach().reshape(-1, 1).to(self.weight.dtype)
        gradient: torch.Tensor
        if self.sparse_grad:
            gradient = torch.sparse_coo_tensor(
                rows.unsqueeze(0), values, size=self.weight.shape, check_invariants=False
            )
        else:
            gradient = torch.zeros_like(self.weight).index_add_(0, rows, values)
        self.weight.grad = gradient if self.weight.grad is None else self.weight.grad + gradient

    def note_observed_(self, constraint_features: torch.Tensor | None) -> None:
        rows = self._rows(constraint_features)
        previous = self._observed_rows
        self.__dict__["_observed_rows"] = rows if previous is None else torch.cat([previous, rows])


def check_row_bounds(rows: torch.Tensor, num_rows: int, what: str) -> None:
    """Raise ``IndexError`` unless every id lies in ``[0, num_rows)``, on every device.

    On the CPU the check reads the extremes on the host. On an accelerator it is a device-side assertion
    (``torch._assert_async``), which needs no host synchronisation: an out-of-range id stops the
    program at the next synchronisation with a device error instead of corrupting memory.
    """
    if rows.numel() == 0:
        return
    if rows.device.type == "cpu":
        low, high = torch.aminmax(rows)
        if int(low) < 0 or int(high) >= num_rows:
            raise IndexError(f"{what} must lie in [0, {num_rows}), got values in [{int(low)}, {int(high)}]")
        return
    in_range = ((rows >= 0) & (rows < num_rows)).all()
    torch._assert_async(in_range, f"{what} must lie in [0, {num_rows})")


class ImplicitMultiplier(Multiplier):
    """A model that computes multipliers from constraint features (Narasimhan et al. 2020).

    Subclasses implement :meth:`forward` (``features -> values``); the dual optimizer trains the model's
    parameters through autograd on the dual Lagrangian. Keeping inequality multipliers non-negative is
    the model's job (e.g. a softplus output); :meth:`post_step_` may also project parameters.
    """

    expects_constraint_features = True

    @abc.abstractmethod
    def forward(self, constraint_features: torch.Tensor) -> torch.Tensor:
        """Return the multiplier values for the given constraint features."""

    def post_step_(self) -> None:
        """No projection by default."""


def initial_multiplier_values(
    num_constraints: int | None,
    init: torch.Tensor | None,
    device: torch.device | str | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Validate the constructor arguments of an explicit multiplier and return its initial values."""
    if not dtype.is_floating_point:
        raise TypeError(f"Multiplier: dtype must be a floating dtype, got {dtype}")
    if num_constraints is not None and (
        isinstance(num_constraints, bool) or not isinstance(num_constraints, int) or num_constraints < 1
    ):
        raise ValueError(f"Multiplier: num_constraints must be a positive int, got {num_constraints!r}")
    if init is None:
        if num_constraints is None:
            raise ValueError("Multiplier: give num_constraints or init (both are None)")
        return torch.zeros(num_constraints, device=device, dtype=dtype)
    if not isinstance(init, torch.Tensor):
        raise TypeError(f"Multiplier: init must be a torch.Tensor, got {type(init).__name__}")
    if init.dim() != 1:
        raise ValueError(
            f"Multiplier: init must be 1-D of shape (num_constraints,), got shape {tuple(init.shape)}"
        )
    if num_constraints is not None and num_constraints != init.shape[0]:
        raise ValueError(
            f"Multiplier: num_constraints={num_constraints} does not match init of shape {tuple(init.shape)}"
        )
    if not bool(torch.isfinite(init).all()):
        raise ValueError("Multiplier: init must be finite, got non-finite entries")
    return init.detach().to(device=device, dtype=dtype).clone()
