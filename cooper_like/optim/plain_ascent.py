r"""A fast path for the most common multiplier updater: ``torch.optim.SGD(maximize=True)`` without extras.

For such an optimizer ``step()`` computes :math:`\lambda \leftarrow \lambda - \eta\,(-\nabla)`, i.e.
:math:`\lambda \leftarrow \lambda + \eta\,\nabla` for every parameter that has a gradient, and keeps no
state. :func:`plain_ascent_step_` applies exactly that update (bitwise: negating both factors of a
product is exact) without the per-call machinery of ``Optimizer.step`` — profiler scope, hook
dispatch, implementation selection — which costs more than the update itself for a few multipliers.

It declines (returns ``False``, and the caller runs ``optimizer.step()``) whenever the result could
differ: a subclass of SGD, momentum, weight decay, Nesterov, ``maximize=False``, a differentiable, fused
or foreach configuration, a tensor learning rate, a ``grad_scale``, a registered step hook (global or
per optimizer), or a ``step`` replaced on the instance (as an LR scheduler does to track calls), and on a torch version
whose internals the suite has not verified (:data:`~cooper_like.optim.torch_calls.VERIFIED_TORCH_VERSIONS`).
"""

from __future__ import annotations

import torch

from cooper_like.optim import torch_calls


def is_plain_ascent(optimizer: torch.optim.Optimizer) -> bool:
    """``True`` when ``optimizer.step()`` is exactly :math:`\\lambda \\leftarrow \\lambda + \\eta\\nabla`."""
    if not torch_calls.LEAN_CALLS or type(optimizer) is not torch.optim.SGD or "step" in optimizer.__dict__:
        return False
    if torch_calls.step_hooks_registered(optimizer):
        return False
    if optimizer.__dict__.get("grad_scale") is not None:
        return False
    for group in optimizer.param_groups:
        if (
            type(group["lr"]) is not float
            or group["momentum"] != 0
            or group["weight_decay"] != 0
            or group["nesterov"]
            or not group["maximize"]
            or group.get("differentiable")
            or group.get("fused")
            or group.get("foreach")
        ):
            return False
    return True


def plain_ascent_step_(optimizer: torch.optim.Optimizer) -> bool:
    """Apply the update of a plain ascending SGD in place (in any grad mode: it writes through ``detach()``).

    Returns ``False``, having done nothing, when ``optimizer`` is not plain (see the module docstring).
    """
    if not is_plain_ascent(optimizer):
        return False
    for group in optimizer.param_groups:
        lr = group["lr"]
        for parameter in group["params"]:
            gradient = parameter.grad
            if gradient is not None:
                parameter.detach().add_(gradient, alpha=lr)
    return True
