"""The common frame of every optimizer: primal/dual torch optimizers around a problem, and checkpoints."""

from __future__ import annotations

import abc
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple, TypedDict, TypeVar

import torch

from cooper_like import distributed as distributed_training
from cooper_like.exceptions import UnregisteredConstraintError
from cooper_like.optim.non_finite import NonFiniteGuard, NonFinitePolicy
from cooper_like.optim.torch_calls import clear_gradients, optimizer_step
from cooper_like.problem import CMPState, ConstrainedMinimizationProblem, LagrangianStore

T = TypeVar("T")


class CooperOptimizerState(TypedDict, total=False):
    """A checkpoint of a :class:`CooperOptimizer` (``torch.load(weights_only=True)`` safe).

    Keys: ``primal_optimizer_states`` and ``dual_optimizer_states`` (lists of torch optimizer
    ``state_dict``\\ s; the latter ``None`` when unconstrained), ``skipped_steps`` (non-finite steps skipped).
    """

    primal_optimizer_states: list[dict[str, Any]]
    dual_optimizer_states: list[dict[str, Any]] | None
    skipped_steps: int


class RollOut(NamedTuple):
    """What ``roll()`` returns: the loss, the measured state and the two Lagrangians of the step."""

    loss: torch.Tensor | None
    cmp_state: CMPState
    primal_lagrangian_store: LagrangianStore
    dual_lagrangian_store: LagrangianStore


def as_optimizer_list(
    optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer], role: str
) -> list[torch.optim.Optimizer]:
    """Wrap one optimizer into a list and check every entry is a ``torch.optim.Optimizer``."""
    if optimizers is None:
        raise TypeError(f"{role} is required: pass a torch.optim.Optimizer or a sequence of them, got None")
    items = [optimizers] if isinstance(optimizers, torch.optim.Optimizer) else list(optimizers)
    if not items:
        raise ValueError(f"{role} must hold at least one torch.optim.Optimizer, got an empty sequence")
    for item in items:
        if not isinstance(item, torch.optim.Optimizer):
            raise TypeError(f"{role} must be torch.optim.Optimizer instances, got {type(item).__name__}")
    return items


class CooperOptimizer(abc.ABC):
    """Base of the constrained and unconstrained optimizers.

    Args:
        cmp: The problem; ``roll()`` calls its ``compute_cmp_state``.
        primal_optimizers: Optimizer(s) of the model parameters.
        dual_optimizers: Optimizer(s) of the multipliers (``maximize=True``), or ``None``.
        non_finite: :class:`NonFinitePolicy` for NaN/Inf values: ``"raise"`` (default), ``"skip"``, ``"off"``.
        distributed: Multi-process training (see :mod:`cooper_like.distributed`). ``None`` (default):
            when a ``torch.distributed`` process group with more than one process is initialised, the
            dual updates use the global violations (so every process keeps identical multipliers) and
            NaN/Inf decisions are shared; otherwise nothing changes and nothing is communicated.
            ``True``: the same, but a process group must exist when the optimizer is built.
            ``False``: never communicate (each process updates its multipliers from its own shard).
    """

    def __init__(
        self,
        cmp: ConstrainedMinimizationProblem,
        primal_optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
        dual_optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None,
        *,
        non_finite: NonFinitePolicy | str = NonFinitePolicy.RAISE,
        distributed: bool | None = None,
    ) -> None:
        if not isinstance(cmp, ConstrainedMinimizationProblem):
            raise TypeError(f"cmp must be a ConstrainedMinimizationProblem, got {type(cmp).__name__}")
        self.cmp = cmp
        self.primal_optimizers = as_optimizer_list(primal_optimizers, "primal_optimizers")
        self.dual_optimizers = (
            None if dual_optimizers is None else as_optimizer_list(dual_optimizers, "dual_optimizers")
        )
        self.distributed = distributed_training.resolve_switch(distributed)
        self.guard = NonFiniteGuard(non_finite, distributed=self.distributed)
        self._warned_constant_violations: set[str | None] = set()

    @property
    def skipped_steps(self) -> int:
        """Number of steps skipped because of non-finite values (``non_finite="skip"``)."""
        return self.guard.skipped_steps

    def zero_grad(self) -> None:
        """Clear (set to ``None``) the gradients of the primal and dual parameters.

        The effect of ``optimizer.zero_grad(set_to_none=True)`` on every optimizer (see
        :func:`~cooper_like.optim.torch_calls.clear_gradients`).
        """
        for optimizer in self.primal_optimizers:
            clear_gradients(optimizer)
        for optimizer in self.dual_optimizers or ():
            clear_gradients(optimizer)

    def primal_step(self) -> None:
        """Step every primal optimizer (see :func:`~cooper_like.optim.torch_calls.optimizer_step`)."""
        for optimizer in self.primal_optimizers:
            optimizer_step(optimizer)

    def evaluate(
        self,
        compute_cmp_state_kwargs: dict[str, Any] | None,
        *,
        for_dual_update: bool = True,
        for_primal_update: bool = True,
        communicate: bool | None = None,
    ) -> CMPState:
        """Call ``cmp.compute_cmp_state(**kwargs)`` and check what it returned (:meth:`check_measurement`).

        In distributed training (see ``distributed``) and when the measurement will drive a dual update,
        its strict violations are replaced by their global values
        (:func:`~cooper_like.distributed.synchronize_dual_measurements`). ``communicate``: the step's
        :meth:`communicates` when the caller has it (``None``: asked here).
        """
        cmp_state = self.cmp.compute_cmp_state(**(compute_cmp_state_kwargs or {}))
        self.check_measurement(cmp_state, "compute_cmp_state", for_primal_update=for_primal_update)
        return self.synchronize(cmp_state, communicate) if for_dual_update else cmp_state

    def check_measurement(self, cmp_state: CMPState, source: str, *, for_primal_update: bool) -> None:
        """Raise on mistakes that would otherwise pass silently (a few attribute reads per constraint).

        * a result that is not a :class:`CMPState` (``TypeError``);
        * a measured constraint that is not registered on the problem (its multiplier would never move):
          :class:`~cooper_like.exceptions.UnregisteredConstraintError`;
        * for a primal step, a loss that is not a scalar (``ValueError`` naming its shape), and a violation
          that contributes to the primal update but does not require grad (it cannot move the model): a
          ``UserWarning``, once per constraint.
        """
        if not isinstance(cmp_state, CMPState):
            raise TypeError(
                f"{type(self.cmp).__name__}.{source} must return a CMPState, got {type(cmp_state).__name__}"
            )
        loss = cmp_state.loss
        if (
            for_primal_update
            and loss is not None
            and (not isinstance(loss, torch.Tensor) or loss.numel() != 1)
        ):
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(
                f"{type(self.cmp).__name__}.{source} returned a loss of shape {shape}: CMPState.loss must be "
                "a scalar tensor (reduce it, e.g. with .mean())"
            )
        check_gradients = for_primal_update and torch.is_grad_enabled()
        for constraint, state in cmp_state.observed_constraints.items():
            if not self.cmp.is_registered(constraint):
                raise UnregisteredConstraintError(
                    f"{type(self.cmp).__name__}.{source} measured a constraint that is not registered on the "
                    f"problem ({constraint!r}); assign it as an attribute in __init__ "
                    "(self.name = Constraint(...)) so that its multiplier is a dual parameter"
                )
            if check_gradients and state.contributes_to_primal_update and not state.violation.requires_grad:
                self.warn_constant_violation(constraint.name)

    def warn_constant_violation(self, name: str | None) -> None:
        """Warn, once per constraint, that a violation cannot move the model (it does not require grad)."""
        if name in self._warned_constant_violations:
            return
        self._warned_constant_violations.add(name)
        warnings.warn(
            f"the violation of constraint {name!r} does not require grad, so it cannot move the model; "
            "compute it from the parameters, or pass contributes_to_primal_update=False if it only drives "
            "the multiplier",
            UserWarning,
            stacklevel=5,
        )

    def communicates(self) -> bool:
        """Whether this optimizer communicates now (its ``distributed`` switch and the process group).

        The simultaneous, extrapolation and dual-primal schemes ask once per step and pass the answer on.
        """
        return distributed_training.switch_is_on(self.distributed)

    def synchronize(self, cmp_state: CMPState, communicate: bool | None = None) -> CMPState:
        """``cmp_state`` with global dual measurements when distributed training is on, else unchanged."""
        if not (self.communicates() if communicate is None else communicate):
            return cmp_state
        return distributed_training.synchronize_dual_measurements(cmp_state)

    def state_dict(self) -> CooperOptimizerState:
        """Primal and dual optimizer states (LR-scheduler state is saved by the scheduler itself)."""
        return CooperOptimizerState(
            primal_optimizer_states=[optimizer.state_dict() for optimizer in self.primal_optimizers],
            dual_optimizer_states=None
            if self.dual_optimizers is None
            else [optimizer.state_dict() for optimizer in self.dual_optimizers],
            skipped_steps=self.guard.skipped_steps,
        )

    def load_state_dict(self, state: CooperOptimizerState) -> None:
        """Restore a :meth:`state_dict`; raise if the number of optimizers does not match."""
        primal_states = state["primal_optimizer_states"]
        dual_states = state.get("dual_optimizer_states")
        if len(primal_states) != len(self.primal_optimizers):
            raise ValueError(
                f"state holds {len(primal_states)} primal optimizer states, "
                f"this optimizer has {len(self.primal_optimizers)}"
            )
        if (dual_states is None) != (self.dual_optimizers is None) or (
            dual_states is not None
            and self.dual_optimizers is not None
            and len(dual_states) != len(self.dual_optimizers)
        ):
            have = None if self.dual_optimizers is None else len(self.dual_optimizers)
            got = None if dual_states is None else len(dual_states)
            raise ValueError(f"state holds {got} dual optimizer states, this optimizer has {have}")
        for optimizer, saved in zip(self.primal_optimizers, primal_states):
            optimizer.load_state_dict(saved)
        for optimizer, saved in zip(self.dual_optimizers or (), dual_states or ()):
            optimizer.load_state_dict(saved)
        self.guard.skipped_steps = int(state.get("skipped_steps", 0))

    @abc.abstractmethod
    def roll(self, *args: Any, **kwargs: Any) -> RollOut:
        """One full update of the primal (and dual) variables."""
