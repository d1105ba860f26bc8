r"""Extragradient optimizers (Korpelevich, 1976) for min-max games.

An extragradient iteration takes two gradient evaluations. With :math:`u(\cdot)` the update produced
by a base method (SGD, Adam, ...) from a gradient:

.. math::
    \theta_{t+1/2} &= \theta_t + u\big(\nabla f(\theta_t)\big)
        \qquad \text{(}\texttt{extrapolation()}\text{)}, \\
    \theta_{t+1} &= \theta_t + u\big(\nabla f(\theta_{t+1/2})\big)
        \qquad \text{(}\texttt{step()}\text{)}.

The look-ahead gradient makes the method converge on bilinear games where simultaneous gradient
descent-ascent spirals outwards. The iterate :math:`\theta_t` is remembered in the optimizer state
(``state[p]["extrapolation_origin"]``), so it is saved by :meth:`~torch.optim.Optimizer.state_dict`
and a checkpoint taken between the two calls resumes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.optim.optimizer import ParamsT

from cooper_like.optim.nupi import restore_non_floating_state, rows_of_sparse_grad

__all__ = ["ExtraAdam", "ExtraSGD", "ExtragradientOptimizer", "adam_update", "sgd_update"]

_ORIGIN = "extrapolation_origin"
_ORIGIN_ROWS = "extrapolation_origin_rows"


# ---------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------


def sgd_update(
    grad: torch.Tensor,
    param: torch.Tensor,
    momentum_buffer: torch.Tensor | None,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""The additive update of one SGD step, with ``torch.optim.SGD`` semantics.

    .. math::
        g &= \pm \nabla f(\theta) + \lambda \theta
            \quad (\text{minus sign when maximising}), \\
        b_t &= \begin{cases} g & \text{first step,} \\
                             \mu \, b_{t-1} + (1 - \tau) \, g & \text{otherwise,} \end{cases} \\
        u &= -\eta \cdot \begin{cases} g + \mu \, b_t & \text{Nesterov,} \\
                                      b_t & \text{momentum,} \\
                                      g & \mu = 0. \end{cases}

    Args:
        grad: Gradient :math:`\nabla f(\theta)`.
        param: Parameter values :math:`\theta` (used by the weight decay only).
        momentum_buffer: Previous buffer :math:`b_{t-1}`, or ``None`` before the first step.
        lr: Learning rate :math:`\eta`.
        momentum: Momentum :math:`\mu`.
        dampening: Dampening :math:`\tau`.
        weight_decay: L2 coefficient :math:`\lambda`.
        nesterov: Use Nesterov momentum.
        maximize: Ascend instead of descend.

    Returns:
        The update :math:`u` and the new buffer :math:`b_t` (``None`` when ``momentum == 0``). Inputs
        are not modified.
    """
    direction = -grad if maximize else grad
    if weight_decay != 0:
        direction = direction.add(param, alpha=weight_decay)
    new_buffer = None
    if momentum != 0:
        if momentum_buffer is None:
            new_buffer = direction.clone()
        else:
            new_buffer = torch.add(momentum_buffer * momentum, direction, alpha=1 - dampening)
        direction = direction.add(new_buffer, alpha=momentum) if nesterov else new_buffer
    return direction * (-lr), new_buffer


def adam_update(
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    max_exp_avg_sq: torch.Tensor | None,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    r"""The additive update of one Adam step, with ``torch.optim.Adam`` semantics.

    ``grad`` must already include the sign flip for maximisation and any L2 term.

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g^2, \qquad
        \hat v_t = \max(\hat v_{t-1}, v_t) \ \text{(AMSGrad) or } v_t, \\
        u &= -\frac{\eta}{1 - \beta_1^t} \, \frac{m_t}{\sqrt{\hat v_t / (1 - \beta_2^t)} + \epsilon}.

    Args:
        grad: The (signed, decayed) gradient :math:`g`.
        exp_avg: First moment :math:`m_{t-1}`.
        exp_avg_sq: Second moment :math:`v_{t-1}`.
        max_exp_avg_sq: Running maximum :math:`\hat v_{t-1}` for AMSGrad, else ``None``.
        step: The step count :math:`t \ge 1` *including* this step.
        lr: Learning rate :math:`\eta`.
        beta1: :math:`\beta_1`.
        beta2: :math:`\beta_2`.
        eps: :math:`\epsilon`.

    Returns:
        ``(u, m_t, v_t, max_v_t)`` as new tensors (``max_v_t`` is ``None`` without AMSGrad).
    """
    new_exp_avg = exp_avg.lerp(grad, 1 - beta1)
    new_exp_avg_sq = torch.addcmul(exp_avg_sq * beta2, grad, grad, value=1 - beta2)
    new_max = None if max_exp_avg_sq is None else torch.maximum(max_exp_avg_sq, new_exp_avg_sq)
    second_moment = new_exp_avg_sq if new_max is None else new_max
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = math.sqrt(1 - beta2**step)
    denom = (second_moment.sqrt() / bias_correction2_sqrt).add_(eps)
    update = (new_exp_avg / denom).mul_(-lr / bias_correction1)
    return update, new_exp_avg, new_exp_avg_sq, new_max


# ---------------------------------------------------------------------------------------------------
# Helpers for the remembered iterate
# ---------------------------------------------------------------------------------------------------


def _remember_origin(param: torch.Tensor, state: dict[str, Any], rows: torch.Tensor | None) -> None:
    """Stores the current values of ``param`` (all of it, or only ``rows``) unless already stored.

    Repeated extrapolations keep the values from before the first one. Row-wise origins are merged; a
    dense extrapolation after a row-wise one upgrades the origin to a full copy.
    """
    origin_rows: torch.Tensor | None = state.get(_ORIGIN_ROWS)
    if _ORIGIN in state and origin_rows is None:
        return
    if rows is None:
        full = param.detach().clone()
        if origin_rows is not None:
            full.index_copy_(0, origin_rows, state[_ORIGIN])
        state[_ORIGIN] = full
        state.pop(_ORIGIN_ROWS, None)
        return
    if origin_rows is None:
        state[_ORIGIN_ROWS] = rows.clone()
        state[_ORIGIN] = param.index_select(0, rows)
        return
    new_rows = rows[~torch.isin(rows, origin_rows)]
    if new_rows.numel() > 0:
        state[_ORIGIN_ROWS] = torch.cat([origin_rows, new_rows])
        state[_ORIGIN] = torch.cat([state[_ORIGIN], param.index_select(0, new_rows)])


def _restore_origin(param: torch.Tensor, state: dict[str, Any]) -> None:
    """Writes the remembered iterate back into ``param`` and forgets it (no-op when none is stored)."""
    origin = state.pop(_ORIGIN, None)
    rows = state.pop(_ORIGIN_ROWS, None)
    if origin is None:
        return
    if rows is None:
        param.copy_(origin)
    else:
        param.index_copy_(0, rows, origin)


def _apply(param: torch.Tensor, update: torch.Tensor) -> torch.Tensor | None:
    """Adds a dense or sparse update to ``param``; returns the touched rows for a sparse one."""
    if update.is_sparse:
        rows, values = rows_of_sparse_grad(update)
        param.index_add_(0, rows, values)
        return rows
    param.add_(update)
    return None


def _sparse_rows_update(rows: torch.Tensor, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    indices = rows.unsqueeze(0)
    return torch.sparse_coo_tensor(indices, values, like.shape, is_coalesced=True, check_invariants=False)


# ---------------------------------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------------------------------


class ExtragradientOptimizer(torch.optim.Optimizer):
    r"""Base class of optimizers with an :meth:`extrapolation` step.

    Subclasses implement :meth:`update`, which returns the additive update :math:`u` of the base method
    for one parameter from its current gradient (and updates the method's statistics), and may override
    :meth:`_check_hyperparameters` to validate each parameter group. A training iteration is

    .. code-block:: python

        loss_fn().backward(); optimizer.extrapolation(); optimizer.zero_grad()
        loss_fn().backward(); optimizer.step(); optimizer.zero_grad()

    Both calls update the statistics of the base method (momentum buffers, Adam moments and step count).
    Parameters whose gradient is ``None`` are left alone by :meth:`extrapolation`; in :meth:`step` such a
    parameter is only returned to its remembered iterate if it has one (its update is zero).

    Args:
        params: Parameters to optimise, or dicts defining parameter groups.
        defaults: Default hyperparameters of the parameter groups.
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group: Mapping[str, Any]) -> None:
        """Raises ``ValueError`` for an invalid (merged) parameter group; the base class accepts all."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Validates the group's hyperparameters, then adds it like ``torch.optim.Optimizer`` does."""
        self._check_hyperparameters({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def update(self, p: torch.Tensor, group: dict[str, Any]) -> torch.Tensor | None:
        """The additive update of ``p`` from its current gradient, or ``None`` to leave ``p`` alone.

        Args:
            p: A parameter with a gradient.
            group: Its parameter group.

        Raises:
            NotImplementedError: Always, in the base class.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement update(p, group)")

    @torch.no_grad()
    def extrapolation(self) -> None:
        r"""Remembers :math:`\theta_t` and moves to :math:`\theta_{t+1/2} = \theta_t + u(\nabla f(\theta_t))`.

        Calling it several times before :meth:`step` keeps the iterate from before the first call.
        """
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = self.update(param, group)
                if update is None:
                    continue
                state = self.state[param]
                if update.is_sparse:
                    rows, values = rows_of_sparse_grad(update)
                    _remember_origin(param, state, rows)
                    param.index_add_(0, rows, values)
                else:
                    _remember_origin(param, state, None)
                    param.add_(update)

    @torch.no_grad()
    def cancel_extrapolation(self) -> None:
        r"""Returns every parameter to its remembered iterate :math:`\theta_t` and forgets it.

        Use it to abandon an extrapolation (e.g. when the look-ahead loss is not finite). Statistics
        that :meth:`extrapolation` updated (momentum buffers, Adam moments and step count) are kept. A
        no-op when nothing is remembered.
        """
        for group in self.param_groups:
            for param in group["params"]:
                if param in self.state:
                    _restore_origin(param, self.state[param])

    def _has_origin(self) -> bool:
        return any(
            param in self.state and _ORIGIN in self.state[param]
            for group in self.param_groups
            for param in group["params"]
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        r"""Moves to :math:`\theta_{t+1} = \theta_t + u(\nabla f(\theta_{t+1/2}))`.

        The gradients must have been computed at the extrapolated point. The update (including any
        weight decay term) is evaluated there, then added to the remembered iterate :math:`\theta_t`.

        Args:
            closure: Optional callable that re-evaluates the loss (with gradients enabled) and returns it.

        Returns:
            The value returned by ``closure``, or ``None``.

        Raises:
            RuntimeError: If no parameter holds a remembered iterate, i.e. :meth:`extrapolation` was not
                called (or saw no gradients) since the last :meth:`step`.
        """
        if not self._has_origin():
            raise RuntimeError(
                f"{type(self).__name__}: step() was called without a preceding extrapolation(); "
                "call extrapolation() first, then recompute the gradients and call step()"
            )
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    if param in self.state:
                        _restore_origin(param, self.state[param])
                    continue
                update = self.update(param, group)
                _restore_origin(param, self.state[param])
                if update is not None:
                    _apply(param, update)
        return loss

    #: Per-element statistics of the base method; the remembered iterate is not among them.
    row_state_keys: tuple[str, ...] = ()

    @torch.no_grad()
    def reset_state_rows_(self, param: torch.Tensor, rows: torch.Tensor) -> None:
        r"""Zero the base method's statistics (:attr:`row_state_keys`) at ``rows`` (dual restarts).

        The remembered iterate :math:`\theta_t` is kept: a pending :meth:`step` still starts from it.
        """
        state = self.state.get(param, {})
        for key in self.row_state_keys:
            value = state.get(key)
            if isinstance(value, torch.Tensor):
                value.index_fill_(0, rows, 0.0)

    def moves_only_gradient_rows(self, param: torch.Tensor) -> bool:
        """Whether a sparse-gradient update of ``param`` leaves the other rows alone (``False`` by default)."""
        return False

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a state produced by :meth:`state_dict`, keeping integer row indices integer."""
        super().load_state_dict(state_dict)
        restore_non_floating_state(self, state_dict)


class ExtraSGD(ExtragradientOptimizer):
    r"""Extragradient with SGD (optionally with momentum / Nesterov) as the base method.

    The base update is that of ``torch.optim.SGD`` (see :func:`sgd_update`):
    :math:`u = -\eta\, b_t` with :math:`b_t = \mu b_{t-1} + (1 - \tau)(\pm\nabla f + \lambda\theta)`.
    The momentum buffer is updated by both :meth:`extrapolation` and :meth:`step`.

    Sparse gradients are supported when ``momentum == 0``: only the observed rows are updated (weight
    decay included) and only those rows are remembered, so the cost is proportional to the number of
    observed rows.

    Args:
        params: Parameters to optimise, or dicts defining parameter groups.
        lr: Learning rate :math:`\eta \ge 0`. Defaults to ``1e-3``.
        momentum: Momentum :math:`\mu \ge 0`. Defaults to 0.
        dampening: Dampening :math:`\tau`. Defaults to 0.
        weight_decay: L2 coefficient :math:`\lambda \ge 0`. Defaults to 0.
        nesterov: Use Nesterov momentum (requires ``momentum > 0`` and ``dampening == 0``).
        maximize: Ascend instead of descend. Defaults to ``False``.

    Raises:
        ValueError: If ``lr``, ``momentum`` or ``weight_decay`` is negative, or if ``nesterov`` is set
            with zero momentum or non-zero dampening.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        maximize: bool = False,
    ) -> None:
        defaults: dict[str, Any] = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    row_state_keys = ("momentum_buffer",)

    def moves_only_gradient_rows(self, param: torch.Tensor) -> bool:
        """True: sparse gradients are only accepted without momentum, and then only their rows move."""
        return True

    def _check_hyperparameters(self, group: Mapping[str, Any]) -> None:
        for name in ("lr", "momentum", "weight_decay"):
            if group[name] < 0:
                raise ValueError(f"ExtraSGD: {name} must be >= 0, got {group[name]}")
        if group["nesterov"]:
            if group["momentum"] <= 0:
                raise ValueError(f"ExtraSGD: nesterov=True requires momentum > 0, got {group['momentum']}")
            if group["dampening"] != 0:
                raise ValueError(f"ExtraSGD: nesterov=True requires dampening == 0, got {group['dampening']}")

    def update(self, p: torch.Tensor, group: dict[str, Any]) -> torch.Tensor | None:
        """The SGD update of ``p`` (sparse for a sparse gradient); updates the momentum buffer.

        Raises:
            RuntimeError: If the gradient is sparse and the group uses momentum.
        """
        grad = p.grad
        if grad is None:
            return None
        if grad.is_sparse:
            return self._sparse_update(p, grad, group)
        state = self.state[p]
        update, buffer = sgd_update(
            grad,
            p,
            state.get("momentum_buffer"),
            lr=group["lr"],
            momentum=group["momentum"],
            dampening=group["dampening"],
            weight_decay=group["weight_decay"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
        )
        if buffer is not None:
            state["momentum_buffer"] = buffer
        return update

    def _sparse_update(self, p: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        if group["momentum"] != 0:
            raise RuntimeError(
                f"ExtraSGD: sparse gradients are only supported with momentum == 0, got {group['momentum']}"
            )
        rows, values = rows_of_sparse_grad(grad)
        update, _ = sgd_update(
            values,
            p.index_select(0, rows),
            None,
            lr=group["lr"],
            momentum=0.0,
            dampening=0.0,
            weight_decay=group["weight_decay"],
            nesterov=False,
            maximize=group["maximize"],
        )
        return _sparse_rows_update(rows, update, p)


class ExtraAdam(ExtragradientOptimizer):
    r"""Extragradient with Adam (optionally AMSGrad) as the base method.

    The base update is that of ``torch.optim.Adam`` with L2 weight decay added to the gradient (see
    :func:`adam_update`). The moments and the step count are updated by both :meth:`extrapolation` and
    :meth:`step`, so one extragradient iteration advances the step count by two.

    Args:
        params: Parameters to optimise, or dicts defining parameter groups.
        lr: Learning rate :math:`\eta \ge 0`. Defaults to ``1e-3``.
        betas: :math:`(\beta_1, \beta_2)`, each in :math:`[0, 1)`. Defaults to ``(0.9, 0.999)``.
        eps: :math:`\epsilon \ge 0`. Defaults to ``1e-8``.
        weight_decay: L2 coefficient :math:`\lambda \ge 0`. Defaults to 0.
        amsgrad: Use the AMSGrad variant. Defaults to ``False``.
        maximize: Ascend instead of descend. Defaults to ``False``.

    Raises:
        ValueError: If ``lr``, ``eps`` or ``weight_decay`` is negative or a beta is outside :math:`[0, 1)`.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        maximize: bool = False,
    ) -> None:
        defaults: dict[str, Any] = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    row_state_keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def _check_hyperparameters(self, group: Mapping[str, Any]) -> None:
        for name in ("lr", "eps", "weight_decay"):
            if group[name] < 0:
                raise ValueError(f"ExtraAdam: {name} must be >= 0, got {group[name]}")
        for index, beta in enumerate(group["betas"]):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"ExtraAdam: betas[{index}] must be in [0, 1), got {beta}")

    def update(self, p: torch.Tensor, group: dict[str, Any]) -> torch.Tensor | None:
        """The Adam update of ``p``; updates the moments and the step count.

        Raises:
            RuntimeError: If the gradient is sparse.
        """
        grad = p.grad
        if grad is None:
            return None
        if grad.is_sparse:
            raise RuntimeError(
                "ExtraAdam: sparse gradients are not supported (got a sparse gradient for a parameter of "
                f"shape {tuple(p.shape)}); use ExtraSGD or densify the gradient"
            )
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"] != 0:
            grad = grad.add(p, alpha=group["weight_decay"])

        state = self.state[p]
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        update, exp_avg, exp_avg_sq, max_exp_avg_sq = adam_update(
            grad,
            state["exp_avg"],
            state["exp_avg_sq"],
            state.get("max_exp_avg_sq") if group["amsgrad"] else None,
            step=state["step"],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
        )
        state["exp_avg"].copy_(exp_avg)
        state["exp_avg_sq"].copy_(exp_avg_sq)
        if max_exp_avg_sq is not None:
            state["max_exp_avg_sq"].copy_(max_exp_avg_sq)
        return update
