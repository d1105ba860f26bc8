"""Lean calls of torch optimizers: ``zero_grad(set_to_none=True)`` and ``step()`` without their wrappers.

Every torch optimizer's ``step`` is wrapped (``Optimizer.profile_hook_step``) in a function that opens a
profiler range and runs the registered step hooks, and ``zero_grad`` opens a profiler range as well —
even when no profiler is recording. For a small model that bookkeeping costs as much as the updates.
The functions below call the wrapped function directly, or set the gradients to ``None`` directly, when
the result cannot differ: no profiler recording, no step hook registered (globally or on the optimizer),
and the method neither overridden nor replaced on the instance (an LR scheduler replaces ``step`` to
count calls) — and only on the torch versions listed in :data:`VERIFIED_TORCH_VERSIONS`. Otherwise they
make the ordinary call.
"""

from __future__ import annotations

import torch
from torch.optim import optimizer as torch_optimizer

#: ``major.minor`` torch versions whose private internals used here (the undecorated ``step``, the hook
#: dictionaries, the profiler flag) the test suite has verified; on any other version every call below
#: is the public one.
VERIFIED_TORCH_VERSIONS = ("2.13",)


def torch_internals_verified(version: str | None = None) -> bool:
    """Whether the lean calls may use torch's private internals on this torch (``version`` for tests)."""
    release = (version or torch.__version__).split("+")[0]
    return ".".join(release.split(".")[:2]) in VERIFIED_TORCH_VERSIONS


LEAN_CALLS = torch_internals_verified()


def profiler_recording() -> bool:
    """Whether a torch profiler is recording (``True`` if torch no longer exposes the flag)."""
    return bool(getattr(torch.autograd.profiler, "_is_profiler_enabled", True))


def step_hooks_registered(optimizer: torch.optim.Optimizer) -> bool:
    """Whether a step pre- or post-hook is registered globally or on ``optimizer``."""
    return bool(
        optimizer._optimizer_step_pre_hooks
        or optimizer._optimizer_step_post_hooks
        or torch_optimizer._global_optimizer_pre_hooks
        or torch_optimizer._global_optimizer_post_hooks
    )


def clear_gradients(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.zero_grad(set_to_none=True)``: the gradients of its parameters become ``None``."""
    if (
        not LEAN_CALLS
        or type(optimizer).zero_grad is not torch.optim.Optimizer.zero_grad
        or "zero_grad" in optimizer.__dict__
        or profiler_recording()
    ):
        optimizer.zero_grad(set_to_none=True)
        return
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            parameter.grad = None


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``: the same update, through the undecorated ``step`` when nothing else would run."""
    step = type(optimizer).step
    undecorated = getattr(step, "__wrapped__", None)
    if (
        not LEAN_CALLS
        or undecorated is None
        or not getattr(step, "hooked", False)  # not torch's profiling wrapper
        or "step" in optimizer.__dict__
        or step_hooks_registered(optimizer)
        or profiler_recording()
    ):
        optimizer.step()
        return
    undecorated(optimizer)
