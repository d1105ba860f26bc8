"""The problem a user writes (:class:`ConstrainedMinimizationProblem`) and what one evaluation of it
returns (:class:`CMPState`), plus the Lagrangians built from that evaluation (:class:`LagrangianStore`).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from cooper_like.constraint_state import ConstraintState
from cooper_like.constraints import Constraint
from cooper_like.formulations import lagrangian_term
from cooper_like.multipliers import ExplicitMultiplier, Multiplier
from cooper_like.penalty_coefficients import PenaltyCoefficient


class DirectDualTerm(NamedTuple):
    r"""A dual term :math:`\lambda^\top \tilde g` of an explicit multiplier whose gradient :math:`\tilde g` is
    written without autograd (its formulation declares it, see
    :attr:`~cooper_like.formulations.Formulation.dual_gradient_is_violation`)."""

    multiplier: ExplicitMultiplier
    multiplier_value: torch.Tensor
    violation: torch.Tensor
    constraint_features: torch.Tensor | None


class _LagrangianValue:
    """The ``lagrangian`` field of :class:`LagrangianStore`: reading it folds in the pending direct terms."""

    def __get__(self, store: LagrangianStore | None, owner: type | None = None) -> torch.Tensor | None:
        if store is None:
            return None  # the dataclass default
        state = store.__dict__
        if not state["_direct_terms"] and "_written_terms" not in state:
            return state["_value"]  # nothing pending (always so for a primal store)
        return store._value_with_direct_terms()

    def __set__(self, store: LagrangianStore, value: torch.Tensor | None) -> None:
        store.__dict__["_value"] = value
        store.__dict__["_direct_terms"] = []
        store.__dict__.pop("_written_terms", None)


@dataclass(init=False)
class LagrangianStore:
    r"""A primal or dual Lagrangian with the multiplier and penalty values of the observed constraints.

    Args:
        lagrangian: The Lagrangian's value (``None`` when nothing contributes).
        multiplier_values: Observed multiplier values (snapshots taken when the store was built).
        penalty_coefficient_values: Observed penalty coefficients.

    :meth:`backward` back-propagates exactly the value :attr:`lagrangian` holds, including any change
    made to it. In a dual store built by the library, the terms :math:`\lambda^\top \tilde g` of explicit
    multipliers stay pending until :attr:`lagrangian` is first read: if it never is, :meth:`backward`
    writes their gradient :math:`\tilde g` directly (the same gradient, without autograd); once read, they
    are part of the (differentiable) value and go through autograd with the rest.
    """

    lagrangian: torch.Tensor | None = _LagrangianValue()  # type: ignore[assignment]
    multiplier_values: dict[Constraint, torch.Tensor] = field(default_factory=dict)
    penalty_coefficient_values: dict[Constraint, torch.Tensor] = field(default_factory=dict)

    def __init__(
        self,
        lagrangian: torch.Tensor | None = None,
        multiplier_values: dict[Constraint, torch.Tensor] | None = None,
        penalty_coefficient_values: dict[Constraint, torch.Tensor] | None = None,
    ) -> None:
        state = self.__dict__  # written directly: the store is built twice per step
        state["_value"] = lagrangian
        state["_direct_terms"] = []  # pending DirectDualTerm's
        state["_observations"] = []  # (explicit multiplier, features) with a dual gradient
        state["multiplier_values"] = {} if multiplier_values is None else multiplier_values
        state["penalty_coefficient_values"] = (
            {} if penalty_coefficient_values is None else penalty_coefficient_values
        )

    def _value_with_direct_terms(self) -> torch.Tensor | None:
        value: torch.Tensor | None = self.__dict__["_value"]
        for term in self.__dict__.pop("_written_terms", ()):
            value = accumulate(value, lagrangian_term(term.multiplier_value, term.violation))
        with torch.enable_grad():  # a read under no_grad must not lose the terms' gradient
            for term in self.__dict__["_direct_terms"]:
                live = multiplier_forward(term.multiplier, term.constraint_features)
                # The value of the snapshot, the gradient of the live multiplier: d/dλ of λᵀg̃ is g̃.
                differentiable = term.multiplier_value + (live - live.detach()).reshape(
                    term.multiplier_value.shape
                )
                value = accumulate(value, lagrangian_term(differentiable, term.violation))
        self.__dict__["_value"] = value
        self.__dict__["_direct_terms"] = []
        return value

    def add_dual_term(
        self, constraint: Constraint, multiplier: ExplicitMultiplier, state: ConstraintState
    ) -> None:
        r"""Record an explicit multiplier's pending dual term :math:`\lambda^\top \tilde g` (gradient :math:`\tilde g`)."""
        strict_violation = state.strict_violation
        if strict_violation is None:
            strict_violation = state.violation.detach()
        strict_features = state.strict_constraint_features
        if strict_features is None:
            strict_features = state.constraint_features
        multiplier.check_observation(strict_violation, strict_features)
        snapshot = multiplier.detached_value(strict_features)
        self.multiplier_values[constraint] = snapshot
        self.__dict__["_direct_terms"].append(
            DirectDualTerm(multiplier, snapshot, strict_violation, strict_features)
        )
        if multiplier.tracks_observed_rows:
            self.__dict__["_observations"].append((multiplier, strict_features))

    def add_contribution(self, term: torch.Tensor) -> None:
        """Add a differentiable term to the value (without reading the pending direct terms)."""
        self.__dict__["_value"] = accumulate(self.__dict__["_value"], term)

    def note_observation(self, multiplier: ExplicitMultiplier, features: torch.Tensor | None) -> None:
        """Record that ``multiplier`` gets a dual gradient at ``features`` through autograd."""
        if multiplier.tracks_observed_rows:
            self.__dict__["_observations"].append((multiplier, features))

    def differentiable_part(self) -> torch.Tensor | None:
        """The value without the pending direct terms (what autograd will back-propagate)."""
        return self.__dict__["_value"]

    def backward(self) -> None:
        """Accumulate the gradients of :attr:`lagrangian` into the parameters (and multipliers).

        Pending direct terms write their gradient (the strict violation) into their multiplier; the rest
        of the value goes through ``autograd``. Each explicit multiplier records which rows received a
        gradient (:meth:`~cooper_like.multipliers.ExplicitMultiplier.observed_rows`).
        """
        observations = self.__dict__["_observations"]
        for multiplier, _ in observations:  # rows are recorded since the gradient was last cleared
            if multiplier.gradient() is None:
                multiplier.clear_observed_()
        for multiplier, features in observations:
            multiplier.note_observed_(features)
        direct_terms = self.__dict__["_direct_terms"]
        for term in direct_terms:
            term.multiplier.add_dual_gradient_(term.violation, term.constraint_features)
        value = self.__dict__["_value"]
        if value is not None and value.requires_grad:
            value.backward()
        if direct_terms:  # their gradient is written: a later read adds them as constants (no graph)
            self.__dict__["_written_terms"] = direct_terms
            self.__dict__["_direct_terms"] = []

    def observed_multiplier_values(self) -> Iterator[torch.Tensor]:
        yield from self.multiplier_values.values()

    def observed_penalty_coefficient_values(self) -> Iterator[torch.Tensor]:
        yield from self.penalty_coefficient_values.values()

    def __repr__(self) -> str:
        names = [constraint.name for constraint in self.multiplier_values]
        return f"LagrangianStore(lagrangian={self.lagrangian}, constraints={names})"


def multiplier_forward(multiplier: Multiplier, features: torch.Tensor | None) -> torch.Tensor:
    """The multiplier's differentiable values at ``features`` (no features for a dense multiplier)."""
    return multiplier(features) if multiplier.expects_constraint_features else multiplier()


def accumulate(total: torch.Tensor | None, term: torch.Tensor) -> torch.Tensor:
    """``total + term`` where ``None`` stands for an empty sum."""
    return term if total is None else total + term


@dataclass
class CMPState:
    """The loss and the observed constraints of a problem at one primal point.

    Args:
        loss: The objective :math:`f(\theta)` (may be ``None``, e.g. from ``compute_violations``).
        observed_constraints: Measured constraints: ``{constraint: ConstraintState}``.
        misc: Anything else worth keeping (logits, accuracy, ...).
    """

    loss: torch.Tensor | None = None
    observed_constraints: dict[Constraint, ConstraintState] = field(default_factory=dict)
    misc: dict[str, Any] | None = None

    def compute_primal_lagrangian(self) -> LagrangianStore:
        r""":math:`\mathcal{L}_p = f + \sum_c \text{contribution}_c`, differentiable in the primal parameters."""
        store = LagrangianStore(self.loss)
        for constraint, state in self.observed_constraints.items():
            add_primal_contribution(store, constraint, state)
        return store

    def compute_dual_lagrangian(self) -> LagrangianStore:
        r""":math:`\mathcal{L}_d = \sum_c \lambda_c^\top \tilde g_c`, differentiable in the multipliers (no loss term)."""
        store = LagrangianStore()
        for constraint, state in self.observed_constraints.items():
            add_dual_contribution(store, constraint, state)
        return store

    def compute_lagrangians(self) -> tuple[LagrangianStore, LagrangianStore]:
        """The primal and the dual Lagrangian of this measurement (what :meth:`compute_primal_lagrangian`
        and :meth:`compute_dual_lagrangian` return).

        Both are built from the same multiplier values, so a dense multiplier's snapshot is taken once and
        recorded in both stores (:meth:`~cooper_like.multipliers.ExplicitMultiplier.share_snapshot_`).
        """
        shared = [
            constraint.multiplier
            for constraint in self.observed_constraints
            if isinstance(constraint.multiplier, ExplicitMultiplier)
            and not constraint.multiplier.snapshot_depends_on_features
        ]
        for multiplier in shared:
            multiplier.share_snapshot_(True)
        try:
            return self.compute_primal_lagrangian(), self.compute_dual_lagrangian()
        finally:
            for multiplier in shared:
                multiplier.share_snapshot_(False)

    def named_observed_violations(self) -> Iterator[tuple[str | None, torch.Tensor]]:
        for constraint, state in self.observed_constraints.items():
            yield constraint.name, state.violation

    def named_observed_strict_violations(self) -> Iterator[tuple[str | None, torch.Tensor]]:
        """Strict violations, falling back to the (detached) violation when none was given."""
        for constraint, state in self.observed_constraints.items():
            yield constraint.name, state.extract_violations(do_unsqueeze=False)[1]

    def named_observed_constraint_features(self) -> Iterator[tuple[str | None, torch.Tensor | None]]:
        for constraint, state in self.observed_constraints.items():
            yield constraint.name, state.constraint_features

    def named_observed_strict_constraint_features(self) -> Iterator[tuple[str | None, torch.Tensor | None]]:
        for constraint, state in self.observed_constraints.items():
            yield constraint.name, state.extract_constraint_features()[1]


def add_primal_contribution(store: LagrangianStore, constraint: Constraint, state: ConstraintState) -> None:
    """Add the constraint's primal contribution (if it has one) to ``store``, with its factor values."""
    contribution = constraint.compute_contribution_to_primal_lagrangian(state)
    if contribution is None:
        return
    record_values(store, constraint, contribution.multiplier_value, contribution.penalty_coefficient_value)
    store.add_contribution(contribution.lagrangian_contribution)


def add_dual_contribution(store: LagrangianStore, constraint: Constraint, state: ConstraintState) -> None:
    """Add the constraint's dual contribution (if it has one) to ``store``.

    When the formulation declares its dual gradient to be the strict violation
    (:attr:`~cooper_like.formulations.Formulation.dual_gradient_is_violation`), an explicit multiplier gets a
    pending direct term (:meth:`LagrangianStore.add_dual_term`); anything else goes through the
    formulation's own contribution and autograd.
    """
    multiplier = constraint.multiplier
    if multiplier is None or not state.contributes_to_dual_update:
        return
    formulation = constraint.formulation
    if isinstance(multiplier, ExplicitMultiplier) and formulation.dual_gradient_is_violation:
        store.add_dual_term(constraint, multiplier, state)
        return
    contribution = constraint.compute_contribution_to_dual_lagrangian(state)
    if contribution is None:
        return
    store.add_contribution(contribution.lagrangian_contribution)
    if isinstance(multiplier, ExplicitMultiplier):
        store.note_observation(multiplier, state.extract_constraint_features()[1])
    record_values(store, constraint, contribution.multiplier_value, contribution.penalty_coefficient_value)


def record_values(
    store: LagrangianStore,
    constraint: Constraint,
    multiplier_value: torch.Tensor | None,
    penalty_value: torch.Tensor | None,
) -> None:
    if multiplier_value is not None:
        store.multiplier_values[constraint] = multiplier_value
    if penalty_value is not None:
        store.penalty_coefficient_values[constraint] = penalty_value


class ConstrainedMinimizationProblem(abc.ABC):
    r"""A constrained problem :math:`\min_\theta f(\theta)` s.t. :math:`g(\theta) \le 0,\ h(\theta) = 0`.

    Subclass it, assign each :class:`Constraint` as an attribute in ``__init__`` (that registers it),
    and implement :meth:`compute_cmp_state`. Optionally implement :meth:`compute_violations` (used by
    :class:`~cooper_like.optim.AlternatingPrimalDualOptimizer` to re-measure only the constraints).
    """

    def __init__(self) -> None:
        self._constraints: dict[str, Constraint] = {}

    # --- registration --------------------------------------------------------------------------------

    def _registry(self) -> dict[str, Constraint]:
        registry = self.__dict__.get("_constraints")
        if registry is None:  # a subclass that skipped super().__init__()
            registry = {}
            object.__setattr__(self, "_constraints", registry)
        return registry

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, Constraint):
            registry = self._registry()
            if name in registry:
                raise ValueError(f"{type(self).__name__}: a constraint named {name!r} is already registered")
            value.name = name
            registry[name] = value
        super().__setattr__(name, value)  # also an ordinary attribute: fast lookup on the hot path

    def __getattr__(self, name: str) -> Any:
        registry = self.__dict__.get("_constraints")
        if registry is not None and name in registry:
            return registry[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        registry = self.__dict__.get("_constraints")
        if registry is not None and name in registry:
            del registry[name]
            self.__dict__.pop(name, None)
        else:
            super().__delattr__(name)

    # --- iteration -----------------------------------------------------------------------------------

    def is_registered(self, constraint: Constraint) -> bool:
        """Whether ``constraint`` is registered on this problem (one dictionary lookup)."""
        registry = self.__dict__.get("_constraints") or self._registry()
        return registry.get(constraint._name) is constraint  # type: ignore[arg-type]

    def named_constraints(self) -> Iterator[tuple[str, Constraint]]:
        yield from self._registry().items()

    def constraints(self) -> Iterator[Constraint]:
        yield from self._registry().values()

    def named_multipliers(self) -> Iterator[tuple[str, Multiplier]]:
        for name, constraint in self._registry().items():
            if constraint.multiplier is not None:
                yield name, constraint.multiplier

    def multipliers(self) -> Iterator[Multiplier]:
        for constraint in self._registry().values():
            if constraint.multiplier is not None:
                yield constraint.multiplier

    def unique_multipliers(self) -> list[Multiplier]:
        """The multipliers, each shared multiplier once, in registration order."""
        unique: list[Multiplier] = []
        registry = self.__dict__.get("_constraints") or self._registry()
        for constraint in registry.values():
            multiplier = constraint.multiplier
            if multiplier is not None and not any(multiplier is seen for seen in unique):
                unique.append(multiplier)
        return unique

    def named_penalty_coefficients(self) -> Iterator[tuple[str, PenaltyCoefficient]]:
        for name, constraint in self.named_constraints():
            if constraint.penalty_coefficient is not None:
                yield name, constraint.penalty_coefficient

    def penalty_coefficients(self) -> Iterator[PenaltyCoefficient]:
        for _, coefficient in self.named_penalty_coefficients():
            yield coefficient

    def dual_parameters(self) -> Iterator[torch.nn.Parameter]:
        """Parameters of the multipliers, each shared multiplier once, in registration order."""
        for multiplier in self.unique_multipliers():
            yield from multiplier.parameters()

    # --- devices and checkpoints --------------------------------------------------------------------

    def to(self, *args: Any, **kwargs: Any) -> ConstrainedMinimizationProblem:
        """Move/cast multipliers and penalty coefficients like ``nn.Module.to``."""
        for multiplier in self.unique_multipliers():
            multiplier.to(*args, **kwargs)
        for coefficient in dict.fromkeys(self.penalty_coefficients()):
            coefficient.to(*args, **kwargs)
        return self

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """Multiplier and penalty-coefficient states by constraint name (plain tensors: ``weights_only`` safe)."""
        return {
            "multipliers": {name: m.state_dict() for name, m in self.named_multipliers()},
            "penalty_coefficients": {name: c.state_dict() for name, c in self.named_penalty_coefficients()},
        }

    def load_state_dict(self, state_dict: dict[str, dict[str, Any]]) -> None:
        """Restore what :meth:`state_dict` saved; raise on an unknown or missing constraint name."""
        multipliers = dict(self.named_multipliers())
        coefficients = dict(self.named_penalty_coefficients())
        for kind, owned in (("multipliers", multipliers), ("penalty_coefficients", coefficients)):
            saved = state_dict.get(kind, {})
            unknown = sorted(set(saved) - set(owned))
            missing = sorted(set(owned) - set(saved))
            if unknown or missing:
                raise KeyError(
                    f"{type(self).__name__}.load_state_dict: {kind} do not match the problem "
                    f"(unknown: {unknown}, missing: {missing})"
                )
        for name, saved_multiplier in state_dict.get("multipliers", {}).items():
            multipliers[name].load_state_dict(saved_multiplier)
            multipliers[name].sanity_check()
        for name, saved_coefficient in state_dict.get("penalty_coefficients", {}).items():
            coefficients[name].load_state_dict(saved_coefficient)

    # --- what the user writes ----------------------------------------------------------------------

    @abc.abstractmethod
    def compute_cmp_state(self, *args: Any, **kwargs: Any) -> CMPState:
        """Evaluate the loss and the constraints at the current primal point (on a mini-batch, say)."""

    def compute_violations(self, *args: Any, **kwargs: Any) -> CMPState:
        """Evaluate only the constraints (``loss=None``); optional, see the class docstring."""
        raise NotImplementedError

    @staticmethod
    def sanity_check_cmp_state(cmp_state: CMPState) -> None:
        """Check a state's types and differentiability; raise naming the offending constraint.

        Accepts any loss that is a differentiable scalar (leaf or not).
        """
        if not isinstance(cmp_state, CMPState):
            raise TypeError(f"expected a CMPState, got {type(cmp_state).__name__}")
        loss = cmp_state.loss
        if loss is not None:
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError(f"CMPState.loss must be a scalar tensor, got {loss!r}")
            if not loss.requires_grad:
                raise ValueError(
                    "CMPState.loss does not require grad: it is not differentiable in the parameters"
                )
        for constraint, state in cmp_state.observed_constraints.items():
            if not isinstance(constraint, Constraint) or not isinstance(state, ConstraintState):
                raise TypeError(
                    "CMPState.observed_constraints must map Constraint to ConstraintState, "
                    f"got {type(constraint).__name__} -> {type(state).__name__}"
                )
            if state.contributes_to_primal_update and not state.violation.requires_grad:
                raise ValueError(f"violation of constraint {constraint.name!r} does not require grad")
            if state.strict_violation is not None and state.strict_violation.requires_grad:
                raise ValueError(
                    f"strict_violation of constraint {constraint.name!r} requires grad; detach it "
                    "(it only drives the multipliers)"
                )

    def __repr__(self) -> str:
        names = ", ".join(name for name, _ in self.named_constraints())
        return f"{type(self).__name__}(constraints=[{names}])"
