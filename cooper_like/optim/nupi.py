r"""The :math:`\nu`PI controller (Sohrabi et al., ICML 2024) written as a ``torch.optim.Optimizer``.

The controller treats the gradient of each parameter as an *error signal* :math:`e_t` and moves the
parameter with a proportional-integral law, where the proportional term acts on an exponential moving
average :math:`\xi_t` of the error. Used on Lagrange multipliers (with ``maximize=True``) it damps the
oscillations of plain gradient ascent.

The arithmetic is kept in small module-level kernels (:func:`nupi_update`,
:func:`weight_decayed_update`) that work on whole tensors or on gathered rows alike; the optimizer
class only gathers the inputs, calls the kernels and writes the results back.
"""

from __future__ import annotations

import enum
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.optim.optimizer import ParamsT

__all__ = [
    "NuPI",
    "nuPI",
    "nuPIInitType",
    "nupi_update",
    "restore_non_floating_state",
    "rows_of_sparse_grad",
    "weight_decayed_update",
]

Gain = float | torch.Tensor

_XI = "xi"
_OBSERVED_ROWS = "observed_rows"


class nuPIInitType(enum.IntEnum):
    r"""Choice of the fictitious previous error average :math:`\xi_{-1}`.

    * ``ZEROS``: :math:`\xi_{-1} = 0`. The first step moves by :math:`K_I e_0 + K_P (1 - \nu) e_0`.
    * ``SGD``: :math:`\xi_{-1} = e_0`. The proportional term vanishes on the first step, which is then
      plain gradient descent/ascent with step size :math:`\eta K_I`.
    """

    ZEROS = 0
    SGD = 1


# ---------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------


def nupi_update(
    error: torch.Tensor, xi_prev: torch.Tensor, Kp: Gain, Ki: Gain, ema_nu: float
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One application of the :math:`\nu`PI control law, without learning rate or sign.

    .. math::
        \xi_t &= \nu \, \xi_{t-1} + (1 - \nu) \, e_t, \\
        d_t &= K_I \, e_t + K_P \, (\xi_t - \xi_{t-1}).

    The EMA is evaluated as :math:`\xi_t = \xi_{t-1} + (1 - \nu)(e_t - \xi_{t-1})`, which is the same
    quantity but makes :math:`\xi_t - \xi_{t-1}` exactly zero when :math:`\xi_{t-1} = e_t` (the first
    step of the ``SGD`` initialisation), so that step is bit-for-bit gradient descent.

    Args:
        error: The error signal :math:`e_t` (the gradient), any shape.
        xi_prev: The previous error average :math:`\xi_{t-1}`, same shape as ``error``.
        Kp: Proportional gain :math:`K_P`; a float or a tensor broadcastable to ``error``.
        Ki: Integral gain :math:`K_I`; a float or a tensor broadcastable to ``error``.
        ema_nu: EMA coefficient :math:`\nu \in [0, 1)`.

    Returns:
        The update direction :math:`d_t` and the new average :math:`\xi_t` (both fresh tensors).
    """
    xi_change = (error - xi_prev).mul_(1.0 - ema_nu)
    xi_new = xi_prev + xi_change
    direction = error * Ki + xi_change * Kp
    return direction, xi_new


def weight_decayed_update(
    direction: torch.Tensor, param: torch.Tensor, weight_decay: float, maximize: bool
) -> torch.Tensor:
    r"""Adds an L2 decay of the parameter to an update direction.

    The direction is later applied as :math:`\theta \leftarrow \theta - \eta d` when minimising and
    :math:`\theta \leftarrow \theta + \eta d` when maximising, so the decay term enters with the sign
    that always shrinks :math:`\theta` towards zero:

    .. math::
        d' = \begin{cases} d + \lambda \theta & \text{minimise,} \\
                           d - \lambda \theta & \text{maximise.} \end{cases}

    Args:
        direction: The update direction :math:`d`.
        param: The parameter values :math:`\theta` (same shape as ``direction``).
        weight_decay: The decay coefficient :math:`\lambda \ge 0`.
        maximize: Whether the direction will be applied as an ascent step.

    Returns:
        ``direction`` itself when ``weight_decay == 0``, else a new tensor.
    """
    if weight_decay == 0:
        return direction
    return direction.add(param, alpha=-weight_decay if maximize else weight_decay)


def rows_of_sparse_grad(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits a sparse COO gradient into the indices of its observed rows and their dense values.

    The gradient is coalesced first (duplicate entries are summed). A hybrid tensor with one sparse
    dimension (what ``torch.nn.functional.embedding(..., sparse=True)`` produces) maps directly; a
    tensor with several sparse dimensions is regrouped by its first index, with the unspecified entries
    of an observed row set to zero. The cost is proportional to the number of stored entries.

    Args:
        grad: A sparse COO tensor of shape ``(N, *rest)``.

    Returns:
        ``(rows, values)``: the sorted unique row indices, shape ``(m,)``, and the row values, shape
        ``(m, *rest)``.
    """
    grad = grad.coalesce()
    indices, values = grad.indices(), grad.values()
    if grad.sparse_dim() == 1:
        return indices[0], values
    rows, position = torch.unique_consecutive(indices[0], return_inverse=True)
    row_values = values.new_zeros((rows.numel(), *grad.shape[1:]))
    row_values[(position, *indices[1:])] = values
    return rows, row_values


def restore_non_floating_state(optimizer: torch.optim.Optimizer, state_dict: Mapping[str, Any]) -> None:
    """Undoes the dtype cast that ``Optimizer.load_state_dict`` applies to non-floating state tensors.

    ``torch.optim.Optimizer.load_state_dict`` casts every state tensor of a floating parameter to the
    parameter's dtype, which turns boolean masks and integer row indices into floats. This copies
    those tensors back from ``state_dict`` with their original dtype (on the parameter's device).

    Args:
        optimizer: The optimizer that has just loaded ``state_dict``.
        state_dict: The dictionary that was loaded.
    """
    saved_ids = [pid for group in state_dict["param_groups"] for pid in group["params"]]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved_state = state_dict["state"]
    for pid, param in zip(saved_ids, params):
        for key, value in saved_state.get(pid, {}).items():
            if isinstance(value, torch.Tensor) and not value.is_floating_point():
                optimizer.state[param][key] = value.to(device=param.device, copy=True)


# ---------------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------------


def _normalise_init_type(init_type: object) -> int:
    valid = {member.value for member in nuPIInitType}
    if isinstance(init_type, bool) or not isinstance(init_type, int) or int(init_type) not in valid:
        raise ValueError(
            f"nuPI: init_type must be nuPIInitType.ZEROS (0) or nuPIInitType.SGD (1), got {init_type!r}"
        )
    return int(init_type)


def _min_entry(gain: Gain) -> float:
    if isinstance(gain, torch.Tensor):
        return float(gain.min()) if gain.numel() > 0 else 0.0
    return float(gain)


def _all_finite(gain: Gain) -> bool:
    if isinstance(gain, torch.Tensor):
        return bool(torch.isfinite(gain).all())
    return math.isfinite(gain)


def _is_all_zero(gain: Gain) -> bool:
    if isinstance(gain, torch.Tensor):
        return bool((gain == 0).all())
    return gain == 0


def _check_hyperparameters(group: Mapping[str, Any], stacklevel: int) -> int:
    """Validates one (merged) parameter group and returns its ``init_type`` as a plain int."""
    lr = group["lr"]
    if not lr >= 0:  # also rejects NaN
        raise ValueError(f"nuPI: lr must be >= 0, got {lr}")
    weight_decay = group["weight_decay"]
    if not weight_decay >= 0:
        raise ValueError(f"nuPI: weight_decay must be >= 0, got {weight_decay}")
    ema_nu = group["ema_nu"]
    if not 0.0 <= ema_nu < 1.0:
        raise ValueError(f"nuPI: ema_nu must be in [0, 1), got {ema_nu}")
    for name in ("Kp", "Ki"):
        gain = group[name]
        if not _all_finite(gain):
            raise ValueError(f"nuPI: {name} must be finite, got {gain}")
        lowest = _min_entry(gain)
        if lowest < 0:
            if isinstance(gain, torch.Tensor) and gain.numel() > 1:
                raise ValueError(f"nuPI: {name} must be >= 0 in every entry, got an entry equal to {lowest}")
            raise ValueError(f"nuPI: {name} must be >= 0, got {lowest}")
    if _is_all_zero(group["Kp"]) and _is_all_zero(group["Ki"]):
        warnings.warn(
            "nuPI: Kp and Ki are both zero, so the parameters will never move", stacklevel=stacklevel
        )
    return _normalise_init_type(group["init_type"])


def _check_gain_shapes(group: Mapping[str, Any]) -> None:
    for name in ("Kp", "Ki"):
        gain = group[name]
        if not isinstance(gain, torch.Tensor) or gain.numel() == 1:
            continue
        for param in group["params"]:
            if gain.shape != param.shape:
                raise ValueError(
                    f"nuPI: a tensor {name} must have one entry or the shape of every parameter in its "
                    f"group, got {name} of shape {tuple(gain.shape)} for a parameter of shape "
                    f"{tuple(param.shape)}"
                )


def _gain_for(gain: Gain, param: torch.Tensor, rows: torch.Tensor | None = None) -> Gain:
    """The gain as it multiplies ``param`` (or its ``rows``): float, 0-d tensor or matching tensor."""
    if not isinstance(gain, torch.Tensor):
        return float(gain)
    if gain.numel() == 1:
        return gain.reshape(()).to(dtype=param.dtype)
    if rows is not None:
        gain = gain.index_select(0, rows.to(gain.device))
    return gain.to(device=param.device, dtype=param.dtype)


def _per_row(mask: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshapes a per-row mask of shape ``(m,)`` to broadcast against a tensor with ``ndim`` dims."""
    return mask.view(-1, *([1] * (ndim - 1)))


# ---------------------------------------------------------------------------------------------------
# Optimizer
# ---------------------------------------------------------------------------------------------------


class nuPI(torch.optim.Optimizer):
    r"""The :math:`\nu`PI controller as an optimizer.

    With :math:`e_t` the gradient of a parameter :math:`\theta` at step :math:`t` and :math:`\eta` the
    learning rate, each step computes

    .. math::
        \xi_t &= \nu \, \xi_{t-1} + (1 - \nu) \, e_t, \\
        d_t &= K_I \, e_t + K_P \, (\xi_t - \xi_{t-1}), \\
        \theta_{t+1} &= \theta_t - \eta \, (d_t + \lambda \theta_t)
            \quad \text{or, with ``maximize=True``,} \quad
            \theta_{t+1} = \theta_t + \eta \, (d_t - \lambda \theta_t),

    where :math:`\lambda` is ``weight_decay`` (it always shrinks :math:`\theta` and does not enter the
    error average). The start value :math:`\xi_{-1}` is set by ``init_type`` (see
    :class:`nuPIInitType`). Special cases: :math:`K_P = 0` is SGD with step :math:`\eta K_I`; and
    :math:`\nu = 0, K_P = K_I = 1` with ``ZEROS`` init is the optimistic gradient method
    :math:`\theta_{t+1} = \theta_t \mp \eta (2 e_t - e_{t-1})`.

    The state of a parameter is ``state["xi"]`` (:math:`\xi_t`), plus, for parameters that received
    sparse gradients under ``SGD`` init, a boolean per-row mask ``state["observed_rows"]``. Every
    hyperparameter may differ between parameter groups, and ``Kp``/``Ki`` may be tensors holding one
    gain per entry of the parameters of their group.

    **Sparse gradients** (e.g. from ``torch.nn.functional.embedding(..., sparse=True)``) index the
    first dimension of the parameter. Only the observed rows are read and written (parameter, state,
    per-entry gains, weight decay), so a step costs time proportional to the number of observed rows;
    the state is allocated once, on the first step. With ``SGD`` init, :math:`\xi_{-1} = e` is applied
    separately to each row on the first step in which that row is observed. When every row is observed,
    the sparse and dense code paths produce identical results.

    Note:
        With ``SGD`` init, the first step stores :math:`\xi_0 = e_0`, for dense and sparse gradients
        alike. Cooper 1.0.1 stores :math:`\xi_0 = 0` on the dense path, so trajectories with
        :math:`K_P \neq 0` differ from Cooper's from the second step on.

    Args:
        params: Parameters to optimise, or dicts defining parameter groups.
        lr: Learning rate :math:`\eta \ge 0`.
        weight_decay: L2 coefficient :math:`\lambda \ge 0`. Defaults to 0.
        Kp: Proportional gain :math:`K_P \ge 0`: a float, a one-element tensor, or a tensor with the
            shape of the parameters of its group. Defaults to 0.
        Ki: Integral gain :math:`K_I \ge 0`, same forms as ``Kp``. Defaults to 1.
        ema_nu: EMA coefficient :math:`\nu \in [0, 1)`. Defaults to 0 (no smoothing).
        init_type: :class:`nuPIInitType` or its int value. Defaults to ``nuPIInitType.SGD``. Stored in
            the parameter groups as a plain int.
        maximize: Ascend instead of descend. Defaults to ``False``.

    Raises:
        ValueError: If ``lr``, ``weight_decay``, or any entry of ``Kp``/``Ki`` is negative, if
            ``ema_nu`` is outside :math:`[0, 1)`, if ``init_type`` is not a valid value, or if a tensor
            gain has neither one entry nor the shape of the parameters of its group.

    Warns:
        UserWarning: If ``Kp`` and ``Ki`` are both zero everywhere.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        weight_decay: float = 0.0,
        Kp: Gain = 0.0,
        Ki: Gain = 1.0,
        ema_nu: float = 0.0,
        init_type: nuPIInitType | int = nuPIInitType.SGD,
        maximize: bool = False,
    ) -> None:
        defaults: dict[str, Any] = {
            "lr": lr,
            "weight_decay": weight_decay,
            "Kp": Kp,
            "Ki": Ki,
            "ema_nu": ema_nu,
            "init_type": _normalise_init_type(init_type),
            "maximize": maximize,
        }
        # Frames between a warning and the user's call: two more while the constructor adds the groups.
        self._warning_stacklevel = 5
        super().__init__(params, defaults)
        self._warning_stacklevel = 3

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Validates the group's hyperparameters, then adds it like ``torch.optim.Optimizer`` does.

        Raises:
            ValueError: See the class docstring.
        """
        merged = {**self.defaults, **param_group}
        param_group["init_type"] = _check_hyperparameters(merged, getattr(self, "_warning_stacklevel", 3))
        super().add_param_group(param_group)
        try:
            _check_gain_shapes(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()
            raise

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        r"""Performs one :math:`\nu`PI step on every parameter that has a gradient.

        Args:
            closure: Optional callable that re-evaluates the loss (with gradients enabled) and returns it.

        Returns:
            The value returned by ``closure``, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    self._sparse_step(param, group)
                else:
                    self._dense_step(param, group)
        return loss

    def _dense_step(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        assert param.grad is not None
        error = param.grad.detach()
        state = self.state[param]
        sgd_init = group["init_type"] == nuPIInitType.SGD
        xi = state.get(_XI)
        # Rows that were never observed by a sparse gradient still need their SGD initialisation.
        observed = state.pop(_OBSERVED_ROWS, None)
        if xi is None:
            xi_prev = error if sgd_init else torch.zeros_like(param)
        elif sgd_init and observed is not None:
            xi_prev = torch.where(_per_row(observed, param.dim()), xi, error)
        else:
            xi_prev = xi

        direction, xi_new = nupi_update(
            error, xi_prev, _gain_for(group["Kp"], param), _gain_for(group["Ki"], param), group["ema_nu"]
        )
        direction = weight_decayed_update(direction, param, group["weight_decay"], group["maximize"])
        param.add_(direction, alpha=group["lr"] if group["maximize"] else -group["lr"])

        if xi is None:
            state[_XI] = xi_new
        else:
            xi.copy_(xi_new)

    def _sparse_step(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        assert param.grad is not None
        rows, error = rows_of_sparse_grad(param.grad.detach())
        if rows.numel() == 0:
            return
        state = self.state[param]
        sgd_init = group["init_type"] == nuPIInitType.SGD
        if _XI not in state:
            state[_XI] = torch.zeros(param.shape, dtype=param.dtype, device=param.device)
            if sgd_init:
                state[_OBSERVED_ROWS] = torch.zeros(param.shape[0], dtype=torch.bool, device=param.device)
        xi: torch.Tensor = state[_XI]
        observed: torch.Tensor | None = state.get(_OBSERVED_ROWS)

        xi_prev = xi.index_select(0, rows)
        if sgd_init and observed is not None:
            xi_prev = torch.where(_per_row(observed.index_select(0, rows), param.dim()), xi_prev, error)
        param_rows = param.index_select(0, rows)

        direction, xi_new = nupi_update(
            error,
            xi_prev,
            _gain_for(group["Kp"], param, rows),
            _gain_for(group["Ki"], param, rows),
            group["ema_nu"],
        )
        direction = weight_decayed_update(direction, param_rows, group["weight_decay"], group["maximize"])
        param_rows.add_(direction, alpha=group["lr"] if group["maximize"] else -group["lr"])

        param.index_copy_(0, rows, param_rows)
        xi.index_copy_(0, rows, xi_new)
        if observed is not None:
            observed.index_fill_(0, rows, True)

    @torch.no_grad()
    def reset_state_rows_(self, param: torch.Tensor, rows: torch.Tensor) -> None:
        r"""Forget ``rows`` of ``param`` (dual restarts): :math:`\xi = 0` there, and with ``SGD`` init the
        rows count as never observed, so their next error :math:`e` starts the average afresh
        (:math:`\xi_{-1} = e`).
        """
        state = self.state.get(param)
        if not state or _XI not in state:
            return
        state[_XI].index_fill_(0, rows, 0.0)
        group = next(g for g in self.param_groups if any(p is param for p in g["params"]))
        if group["init_type"] != nuPIInitType.SGD:
            return
        observed = state.get(_OBSERVED_ROWS)
        if observed is None:  # after a dense step every row was observed
            observed = torch.ones(param.shape[0], dtype=torch.bool, device=param.device)
            state[_OBSERVED_ROWS] = observed
        observed.index_fill_(0, rows, False)

    def moves_only_gradient_rows(self, param: torch.Tensor) -> bool:
        """A sparse step reads and writes only the rows of the gradient (weight decay included)."""
        return True

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a state produced by :meth:`state_dict`, keeping the boolean row masks boolean."""
        super().load_state_dict(state_dict)
        restore_non_floating_state(self, state_dict)


NuPI = nuPI
