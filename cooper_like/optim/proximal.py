r"""Proximal primal updates for an :math:`\ell_1` term: exact zeros during training.

For a composite objective :math:`f(\theta) + \lambda \|\theta\|_1` with :math:`f` smooth, the proximal
gradient step takes the gradient step on :math:`f` only and then applies the proximal map of the
non-smooth term, which for :math:`\ell_1` is the soft-thresholding operator:

.. math::
    \theta_{t+1} = S_{\eta\lambda}\big(\theta_t - \eta \nabla f(\theta_t)\big),
    \qquad S_\tau(x) = \operatorname{sign}(x)\,\max(|x| - \tau, 0).

Unlike a subgradient of :math:`\lambda\|\theta\|_1` added to the loss, the proximal map sets small
weights *exactly* to zero, so a network becomes sparse while it trains. The fixed points of the step
are exactly the stationary points of :math:`f + \lambda\|\theta\|_1`: :math:`\theta_j = 0` if and only
if :math:`|\partial_j f(\theta)| \le \lambda`.

:class:`ProximalL1` wraps any ``torch.optim.Optimizer`` (SGD, Adam, :class:`~cooper_like.optim.ExtraSGD`,
...) so that it can be handed to any constrained optimizer of this library as a primal optimizer. The
strength :math:`\lambda` is a constant, one value per group of parameters (per layer, say), or a
callable read at every step -- typically a Lagrange multiplier of the problem, which turns a
constraint on sparsity or on :math:`\|\theta\|_1` into a soft-threshold level that the dual update
tunes during training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = ["L1Strength", "ProximalL1", "soft_threshold", "soft_threshold_"]

L1Strength = float | torch.Tensor | Callable[[], torch.Tensor]
"""A constant (float or tensor with one entry, or one entry per group) or a callable returning one."""

_STATE_KEY = "proximal_l1"


# ---------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------


def soft_threshold(x: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    r"""The proximal map of :math:`\tau\|\cdot\|_1`, elementwise.

    .. math::
        S_\tau(x) = \operatorname*{arg\,min}_y \tfrac12 (y - x)^2 + \tau |y|
                  = \operatorname{sign}(x)\,\max(|x| - \tau, 0)
                  = \begin{cases} x - \tau & x > \tau, \\ 0 & |x| \le \tau, \\ x + \tau & x < -\tau. \end{cases}

    Args:
        x: Any tensor.
        threshold: :math:`\tau \ge 0`, a float or a tensor broadcastable to ``x``.

    Returns:
        A new tensor of the shape and dtype of ``x``; entries with :math:`|x| \le \tau` are exactly 0.
    """
    return x.sign() * (x.abs() - threshold).clamp_min(0)


def soft_threshold_(x: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    r"""In-place :func:`soft_threshold`: ``x`` :math:`\leftarrow S_\tau(x)`; returns ``x``."""
    shrunk = (x.abs() - threshold).clamp_min_(0)
    return x.copy_(shrunk.mul_(x.sign()))


# ---------------------------------------------------------------------------------------------------
# The optimizer wrapper
# ---------------------------------------------------------------------------------------------------


def _as_groups(params: Iterable[Any] | None, optimizer: torch.optim.Optimizer) -> list[list[torch.Tensor]]:
    """Normalise ``params`` into groups of tensors (see :class:`ProximalL1`)."""
    if params is None:
        return [list(group["params"]) for group in optimizer.param_groups]
    if isinstance(params, torch.Tensor):
        raise TypeError(
            "ProximalL1: params must be an iterable of tensors or of groups of tensors, got a single tensor "
            "(wrap it in a list)"
        )
    groups: list[list[torch.Tensor]] = []
    for entry in params:
        if isinstance(entry, torch.Tensor):
            groups.append([entry])
        elif isinstance(entry, Iterable):
            tensors = list(entry)
            if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
                raise TypeError(
                    f"ProximalL1: every group in params must be a non-empty list of tensors, got {entry!r}"
                )
            groups.append(tensors)
        else:
            raise TypeError(
                f"ProximalL1: params entries must be tensors or lists of tensors, got {type(entry).__name__}"
            )
    if not groups:
        raise ValueError("ProximalL1: params is empty; give the tensors to soft-threshold (or None for all)")
    return groups


def _check_strength_values(values: torch.Tensor, num_groups: int, where: str) -> torch.Tensor:
    """Flatten a strength tensor and check its size and values; return it detached, shape (1,) or (G,)."""
    flat = values.detach().reshape(-1)
    if flat.numel() not in (1, num_groups):
        raise ValueError(
            f"ProximalL1: {where} must have 1 entry or one per group ({num_groups}), got shape "
            f"{tuple(values.shape)}"
        )
    if not flat.dtype.is_floating_point:
        flat = flat.to(torch.get_default_dtype())
    if not bool(torch.isfinite(flat).all()):
        raise ValueError(f"ProximalL1: {where} must be finite, got {flat.tolist()}")
    if bool((flat < 0).any()):
        raise ValueError(f"ProximalL1: {where} must be >= 0, got {flat.tolist()}")
    return flat


class ProximalL1(torch.optim.Optimizer):
    r"""Wrap a torch optimizer: after each of its steps, soft-threshold chosen parameters by :math:`\eta\lambda`.

    .. math::
        \theta \leftarrow \mathrm{step}(\theta), \qquad
        \theta_j \leftarrow S_{\eta_j \lambda_{k(j)}}(\theta_j) \quad \text{for every penalised } \theta_j,

    where :math:`\eta_j` is the current learning rate of the wrapped optimizer's param group holding
    :math:`\theta_j` (so LR schedulers move the threshold too) and :math:`\lambda_{k(j)}` is the strength
    of the proximal group :math:`k` that holds it. With SGD this is the proximal gradient method on
    :math:`f + \sum_k \lambda_k \|\theta_{(k)}\|_1`; with Adam it is the decoupled variant (the
    threshold is :math:`\eta\lambda`, not preconditioned), as AdamW is for weight decay.

    The wrapper *is* the wrapped optimizer for everything else: ``param_groups``, ``state`` and
    ``defaults`` are the wrapped optimizer's own objects, so ``zero_grad``, LR schedulers and
    checkpoints behave as without it. If the wrapped optimizer has ``extrapolation()`` (``ExtraSGD``,
    ``ExtraAdam``), so does the wrapper (soft-thresholding after both half-steps), and it can be used
    in :class:`~cooper_like.optim.ExtrapolationConstrainedOptimizer`.

    Args:
        optimizer: The wrapped optimizer; every penalised tensor must be one of its parameters.
        params: Which tensors to soft-threshold, and how they are grouped: ``None`` (default) for every
            parameter, one group per param group of ``optimizer``; a list of tensors, one group per
            tensor (e.g. the weight of each layer); or a list of lists of tensors, one group per list.
            Biases are usually left out.
        strength: :math:`\lambda \ge 0`: a float or a tensor with one entry (shared by every group) or
            one per group; or a callable returning such a tensor, read before every soft-thresholding
            -- e.g. a :class:`~cooper_like.multipliers.DenseMultiplier` (a module: calling it returns its
            values) or ``lambda: multiplier.weight``. Values are detached.

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> optimizer = ProximalL1(torch.optim.SGD(model.parameters(), lr=0.1), [model.weight], 0.5)

    Raises:
        TypeError: ``optimizer`` is not a torch optimizer, or ``params`` is malformed.
        ValueError: A penalised tensor is not a parameter of ``optimizer`` or appears twice, or the
            strength is negative, not finite, or of the wrong size.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        params: Iterable[torch.Tensor] | Iterable[Iterable[torch.Tensor]] | None = None,
        strength: L1Strength = 0.0,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"ProximalL1: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        self.__setstate__({})  # the hook tables and the profiled step of torch.optim.Optimizer
        self.proximal_groups = _as_groups(params, optimizer)
        owner: dict[int, int] = {}
        for index, group in enumerate(optimizer.param_groups):
            for param in group["params"]:
                owner[id(param)] = index
        seen: set[int] = set()
        self._owner_group: list[list[int]] = []
        for k, tensors in enumerate(self.proximal_groups):
            indices = []
            for param in tensors:
                if id(param) not in owner:
                    raise ValueError(
                        f"ProximalL1: params group {k} holds a tensor of shape {tuple(param.shape)} that is not a "
                        "parameter of the wrapped optimizer"
                    )
                if id(param) in seen:
                    raise ValueError(
                        f"ProximalL1: a tensor of shape {tuple(param.shape)} appears twice in params"
                    )
                seen.add(id(param))
                indices.append(owner[id(param)])
            self._owner_group.append(indices)
        self._strength: torch.Tensor | Callable[[], torch.Tensor]
        self.strength = strength

    # --- forwarding: the wrapper shares the wrapped optimizer's groups, state and defaults -----------

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def state(self) -> Any:
        return self.optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self.optimizer.state = value

    @property
    def defaults(self) -> dict[str, Any]:
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.optimizer.defaults = value

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group to the wrapped optimizer (it is not soft-thresholded)."""
        self.optimizer.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    # --- strength ------------------------------------------------------------------------------------

    @property
    def num_groups(self) -> int:
        """Number of proximal groups (entries a per-group strength must have)."""
        return len(self.proximal_groups)

    @property
    def strength(self) -> torch.Tensor | Callable[[], torch.Tensor]:
        """The constant strength (a tensor of shape ``(1,)`` or ``(num_groups,)``) or the callable."""
        return self._strength

    @strength.setter
    def strength(self, value: L1Strength) -> None:
        if isinstance(value, torch.Tensor):
            self._strength = _check_strength_values(value, self.num_groups, "strength").clone()
        elif callable(value):
            self._strength = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"ProximalL1: strength must be a finite float >= 0, got {value!r}")
            self._strength = torch.tensor([float(value)])
        else:
            raise TypeError(
                f"ProximalL1: strength must be a float, a tensor or a callable returning a tensor, got {value!r}"
            )

    def current_strength(self) -> torch.Tensor:
        r"""The strengths :math:`\lambda_k` now, one entry per group (shape ``(num_groups,)``)."""
        value = self._strength
        if callable(value) and not isinstance(value, torch.Tensor):
            produced = value()
            if not isinstance(produced, torch.Tensor):
                raise TypeError(
                    f"ProximalL1: the strength callable must return a tensor, got {type(produced).__name__}"
                )
            value = _check_strength_values(produced, self.num_groups, "the strength callable's value")
        return value.expand(self.num_groups)

    # --- the update ---------------------------------------------------------------------------------

    @torch.no_grad()
    def apply_proximal_map(self) -> None:
        r"""Soft-threshold every penalised tensor by :math:`\eta \lambda_k` (no gradient needed)."""
        strengths = self.current_strength()
        groups = self.optimizer.param_groups
        for k, (tensors, owners) in enumerate(zip(self.proximal_groups, self._owner_group)):
            for param, owner in zip(tensors, owners):
                lr = groups[owner]["lr"]
                threshold = strengths[k].to(device=param.device, dtype=param.dtype) * lr
                soft_threshold_(param, threshold)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """The wrapped optimizer's step, then :meth:`apply_proximal_map`; returns the closure's loss."""
        loss = self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        self.apply_proximal_map()
        return loss

    @property
    def extrapolation(self) -> Callable[[], None]:
        """The wrapped optimizer's ``extrapolation()`` followed by soft-thresholding (if it has one)."""
        inner = getattr(self.optimizer, "extrapolation", None)
        if not callable(inner):
            raise AttributeError(f"the wrapped {type(self.optimizer).__name__} has no extrapolation()")

        @torch.no_grad()
        def extrapolate() -> None:
            inner()
            self.apply_proximal_map()

        return extrapolate

    @property
    def cancel_extrapolation(self) -> Callable[[], None]:
        """The wrapped optimizer's ``cancel_extrapolation()`` (if it has one)."""
        inner = getattr(self.optimizer, "cancel_extrapolation", None)
        if not callable(inner):
            raise AttributeError(f"the wrapped {type(self.optimizer).__name__} has no cancel_extrapolation()")
        return inner

    # --- checkpoints ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's ``state_dict`` plus the constant strength (``weights_only`` safe).

        A callable strength is not saved: it reads a multiplier, which the problem's ``state_dict`` saves.
        """
        saved = dict(self.optimizer.state_dict())
        strength = self._strength
        saved[_STATE_KEY] = {
            "num_groups": self.num_groups,
            "strength": strength.clone() if isinstance(strength, torch.Tensor) else None,
        }
        return saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (also accepts a plain ``state_dict`` of the wrapped optimizer)."""
        inner = {key: value for key, value in state_dict.items() if key != _STATE_KEY}
        extra = state_dict.get(_STATE_KEY)
        if extra is not None and int(extra["num_groups"]) != self.num_groups:
            raise ValueError(
                f"ProximalL1.load_state_dict: the state has {extra['num_groups']} proximal groups, "
                f"this optimizer has {self.num_groups}"
            )
        self.optimizer.load_state_dict(inner)
        if extra is not None and extra["strength"] is not None and isinstance(self._strength, torch.Tensor):
            self.strength = extra["strength"]

    def __repr__(self) -> str:
        strength = self._strength
        shown = (
            strength.tolist()
            if isinstance(strength, torch.Tensor)
            else getattr(strength, "__name__", "callable")
        )
        return f"ProximalL1({self.optimizer!r}, groups={self.num_groups}, strength={shown})"
