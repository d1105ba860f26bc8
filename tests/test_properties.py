"""Property-based tests: random shapes, dtypes, NaN/Inf and wrong features thrown at the whole stack.

Every case ends either in a correct result or in one of the documented exceptions (``TypeError``,
``ValueError``, ``IndexError`` naming the bad argument, :class:`~cooper_like.optim.NonFiniteError` for
NaN/Inf under ``non_finite="raise"``); multipliers of inequality constraints are never negative and
never NaN, and a skipped step changes nothing. ``python -m pytest tests/test_properties.py
--hypothesis-show-statistics`` prints the number of cases tried.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cooper_like as cooper
from cooper_like.optim import NonFiniteError

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
SPECIAL = (math.nan, math.inf, -math.inf)
SCHEMES = ("simultaneous", "alternating_primal_dual", "alternating_dual_primal", "extrapolation")
FEATURES = ("ok", "int32", "missing", "float", "out_of_range", "wrong_length")
SHAPES = ("vector", "column", "wrong_numel")
NUM_ROWS = 8  # size of an indexed multiplier

# COOPER_LIKE_PROPERTY_EXAMPLES raises the number of cases for a deeper search (the suite stays < 60 s).
EXAMPLES = int(os.environ.get("COOPER_LIKE_PROPERTY_EXAMPLES", "400"))
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

documented = (TypeError, ValueError, IndexError, NonFiniteError)


@dataclass
class Case:
    """One random configuration of the stack."""

    indexed: bool
    inequality: bool
    formulation: type[cooper.formulations.Formulation]
    multiplier_dtype: torch.dtype
    violation_dtype: torch.dtype
    strict_dtype: torch.dtype | None
    num_constraints: int
    features: str
    shape: str
    scheme: str
    updater: str
    policy: str
    steps: list[tuple[list[float], list[float], list[int]]]  # per step: violation, strict, observed rows


finite_values = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def entries(draw: st.DrawFn, size: int) -> list[float]:
    values = draw(st.lists(finite_values, min_size=size, max_size=size))
    if size and draw(st.integers(0, 4)) == 0:  # one case in five holds a NaN or an infinity
        values[draw(st.integers(0, size - 1))] = draw(st.sampled_from(SPECIAL))
    return values


@st.composite
def cases(draw: st.DrawFn) -> Case:
    indexed = draw(st.booleans())
    formulation: Any = draw(
        st.sampled_from(
            [cooper.formulations.Lagrangian, cooper.formulations.AugmentedLagrangian]
            + ([] if indexed else [cooper.formulations.QuadraticPenalty])
        )
    )
    scheme = draw(st.sampled_from(SCHEMES))
    updater = "extra" if scheme == "extrapolation" else draw(st.sampled_from(["sgd", "nupi", "adam"]))
    num_constraints = draw(st.integers(1, 4))
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        observed = draw(st.lists(st.integers(0, NUM_ROWS - 1), min_size=0, max_size=5)) if indexed else []
        size = len(observed) if indexed else num_constraints
        steps.append((draw(entries(size)), draw(entries(size)), observed))
    return Case(
        indexed=indexed,
        inequality=draw(st.booleans()),
        formulation=formulation,
        multiplier_dtype=draw(st.sampled_from(DTYPES)),
        violation_dtype=draw(st.sampled_from(DTYPES)),
        strict_dtype=draw(st.one_of(st.none(), st.sampled_from(DTYPES))),
        num_constraints=num_constraints,
        features=draw(st.sampled_from(FEATURES)) if indexed else "ok",
        shape=draw(st.sampled_from(SHAPES)),
        scheme=scheme,
        updater=updater,
        policy=draw(st.sampled_from(["raise", "skip"])),
        steps=steps,
    )


class RandomProblem(cooper.ConstrainedMinimizationProblem):
    """One constraint whose measurements are fed in from outside; ``scale`` is the primal parameter."""

    def __init__(self, case: Case) -> None:
        super().__init__()
        self.case = case
        self.scale = torch.ones((), requires_grad=True)
        multiplier: cooper.multipliers.Multiplier | None = None
        if case.formulation.expects_multiplier:
            if case.indexed:
                multiplier = cooper.multipliers.IndexedMultiplier(
                    NUM_ROWS, dtype=case.multiplier_dtype, sparse_grad=case.updater != "adam"
                )
            else:
                multiplier = cooper.multipliers.DenseMultiplier(
                    case.num_constraints, dtype=case.multiplier_dtype
                )
        penalty: cooper.penalty_coefficients.PenaltyCoefficient | None = None
        if case.formulation.expects_penalty_coefficient:
            if case.indexed:
                penalty = cooper.penalty_coefficients.IndexedPenaltyCoefficient(torch.full((NUM_ROWS,), 0.5))
            else:
                penalty = cooper.penalty_coefficients.DensePenaltyCoefficient(
                    torch.full((case.num_constraints,), 0.5)
                )
        kind = cooper.ConstraintType.INEQUALITY if case.inequality else cooper.ConstraintType.EQUALITY
        self.constraint = cooper.Constraint(kind, case.formulation, multiplier, penalty)
        self.step = 0

    def measurement(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """This step's violation, strict violation and features, shaped and typed as the case says."""
        case = self.case
        violation, strict, rows = case.steps[self.step]
        values = torch.tensor(violation, dtype=torch.float64).to(case.violation_dtype)
        strict_values = (
            None
            if case.strict_dtype is None
            else torch.tensor(strict, dtype=torch.float64).to(case.strict_dtype)
        )
        ids = torch.tensor(rows, dtype=torch.long)
        if case.shape == "column":
            values, ids = values.reshape(-1, 1), ids.reshape(-1, 1)
            strict_values = None if strict_values is None else strict_values.reshape(-1, 1)
        elif case.shape == "wrong_numel":  # one violation entry too many
            values = torch.cat([values, torch.zeros(1, dtype=values.dtype)])
        features = None
        if case.indexed:
            features = {
                "ok": ids,
                "int32": ids.to(torch.int32),
                "missing": None,
                "float": ids.float(),
                "out_of_range": ids + NUM_ROWS,
                "wrong_length": torch.cat([ids.reshape(-1), torch.zeros(1, dtype=torch.long)]),
            }[case.features]
        return values, strict_values, features

    def compute_cmp_state(self) -> cooper.CMPState:
        values, strict, features = self.measurement()
        state = cooper.ConstraintState(
            violation=values * self.scale.to(values.dtype),
            constraint_features=features,
            strict_violation=strict,
            strict_constraint_features=features if strict is not None else None,
        )
        return cooper.CMPState(loss=self.scale.pow(2), observed_constraints={self.constraint: state})


def build_optimizer(case: Case, problem: RandomProblem) -> cooper.optim.CooperOptimizer:
    primal: torch.optim.Optimizer
    if case.scheme == "extrapolation" and case.formulation.expects_multiplier:
        primal = cooper.optim.ExtraSGD([problem.scale], lr=0.01)
    else:
        primal = torch.optim.SGD([problem.scale], lr=0.01)
    dual_parameters = list(problem.dual_parameters())
    if not dual_parameters:
        return cooper.optim.UnconstrainedOptimizer(problem, primal, non_finite=case.policy)
    dual: torch.optim.Optimizer = {
        "sgd": lambda: torch.optim.SGD(dual_parameters, lr=0.1, maximize=True),
        "nupi": lambda: cooper.optim.nuPI(dual_parameters, lr=0.1, Kp=0.5, maximize=True),
        "adam": lambda: torch.optim.Adam(dual_parameters, lr=0.1, maximize=True),
        "extra": lambda: cooper.optim.ExtraSGD(dual_parameters, lr=0.1, maximize=True),
    }[case.updater]()
    scheme: Any = {
        "simultaneous": cooper.optim.SimultaneousOptimizer,
        "alternating_primal_dual": cooper.optim.AlternatingPrimalDualOptimizer,
        "alternating_dual_primal": cooper.optim.AlternatingDualPrimalOptimizer,
        "extrapolation": cooper.optim.ExtrapolationConstrainedOptimizer,
    }[case.scheme]
    return scheme(problem, primal, dual, non_finite=case.policy)


def malformed(case: Case, rows: list[int]) -> bool:
    """Whether a step's measurement does not fit the multiplier/penalty (a documented error is due)."""
    extra = int(case.shape == "wrong_numel")
    if not case.indexed:  # a single penalty coefficient applies to any number of entries
        fits = case.formulation.expects_multiplier or case.num_constraints > 1
        return bool(extra) and (fits or case.strict_dtype is not None)
    if case.features in ("missing", "float"):
        return True
    if case.features == "out_of_range" and rows:  # (no observed row is never out of range)
        return True
    num_features = len(rows) + int(case.features == "wrong_length")
    violation_mismatch = len(rows) + extra != num_features
    strict_mismatch = case.strict_dtype is not None and len(rows) != num_features
    return violation_mismatch or strict_mismatch


def snapshot(problem: RandomProblem) -> list[torch.Tensor]:
    return [p.detach().clone() for p in problem.dual_parameters()] + [problem.scale.detach().clone()]


def check_invariants(case: Case, problem: RandomProblem) -> None:
    multiplier = problem.constraint.multiplier
    if isinstance(multiplier, cooper.multipliers.ExplicitMultiplier):
        weight = multiplier.weight.detach()
        assert weight.dtype == case.multiplier_dtype
        assert not bool(weight.isnan().any()), weight
        if case.inequality:
            assert bool((weight >= 0).all()), weight


@PROPERTY_SETTINGS
@given(cases())
def test_random_stacks_end_in_a_result_or_a_documented_error(case: Case) -> None:
    problem = RandomProblem(case)
    if (
        case.updater == "adam"
        and case.multiplier_dtype == torch.float16
        and case.formulation.expects_multiplier
    ):
        with pytest.raises(ValueError, match="eps=1e-08 is 0 in torch.float16"):
            build_optimizer(case, problem)
        return
    optimizer = build_optimizer(case, problem)
    for index, (_, _, rows) in enumerate(case.steps):
        problem.step = index  # every measurement of this roll reads the same data
        before, skipped = snapshot(problem), optimizer.skipped_steps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                optimizer.roll()
            except documented as error:
                assert str(error), "a documented error must say what is wrong"
                if isinstance(error, NonFiniteError):
                    assert case.policy == "raise"
                else:
                    assert malformed(case, rows), f"{type(error).__name__}: {error}"
                if not case.scheme.startswith("alternating"):  # these may reject their second half only
                    for old, new in zip(before, snapshot(problem)):
                        assert torch.equal(old.nan_to_num(), new.nan_to_num()), (
                            "a rejected step changed state"
                        )
                check_invariants(case, problem)
                return
        assert not malformed(case, rows), "a malformed measurement was accepted"
        if optimizer.skipped_steps > skipped:
            assert case.policy == "skip"
            if not case.scheme.startswith("alternating"):  # these may skip their second half only
                for old, new in zip(before, snapshot(problem)):
                    assert torch.equal(old, new), "a skipped step changed state"
        check_invariants(case, problem)


# ---------------------------------------------------------------------------------------------------
# One step by hand: the exact result, whatever the dtypes
# ---------------------------------------------------------------------------------------------------

TOLERANCE = {torch.float16: 2e-2, torch.bfloat16: 2e-2, torch.float32: 1e-5, torch.float64: 1e-9}


@PROPERTY_SETTINGS
@given(
    indexed=st.booleans(),
    inequality=st.booleans(),
    multiplier_dtype=st.sampled_from(DTYPES),
    violation_dtype=st.sampled_from(DTYPES),
    values=st.lists(finite_values, min_size=1, max_size=6),
    rows=st.lists(st.integers(0, NUM_ROWS - 1), min_size=6, max_size=6),
    initial=st.lists(st.floats(0, 10, width=32), min_size=NUM_ROWS, max_size=NUM_ROWS),
    lr=st.floats(1e-3, 1.0),
)
def test_one_gradient_ascent_step_is_exact(
    indexed: bool,
    inequality: bool,
    multiplier_dtype: torch.dtype,
    violation_dtype: torch.dtype,
    values: list[float],
    rows: list[int],
    initial: list[float],
    lr: float,
) -> None:
    r""":math:`\lambda \leftarrow [\lambda + \eta \sum_{i \to r} g_i]_+` (inequality) or without projection."""
    size = len(values)
    start = torch.tensor(initial[: NUM_ROWS if indexed else size], dtype=torch.float64)
    if indexed:
        multiplier: cooper.multipliers.ExplicitMultiplier = cooper.multipliers.IndexedMultiplier(
            init=start, dtype=multiplier_dtype
        )
    else:
        multiplier = cooper.multipliers.DenseMultiplier(init=start, dtype=multiplier_dtype)
    kind = cooper.ConstraintType.INEQUALITY if inequality else cooper.ConstraintType.EQUALITY
    constraint = cooper.Constraint(kind, multiplier=multiplier)
    violation = torch.tensor(values, dtype=torch.float64).to(violation_dtype)
    ids = torch.tensor(rows[:size])
    state = cooper.ConstraintState(violation, constraint_features=ids if indexed else None)
    store = cooper.CMPState(observed_constraints={constraint: state}).compute_dual_lagrangian()
    store.backward()
    torch.optim.SGD(multiplier.parameters(), lr=lr, maximize=True).step()
    multiplier.post_step_()

    gradient = torch.zeros_like(start)
    targets = ids if indexed else torch.arange(size)
    gradient.index_add_(0, targets, violation.to(multiplier_dtype).double())
    expected = start.to(multiplier_dtype).double() + lr * gradient
    moved = torch.zeros(len(start), dtype=torch.bool)
    moved[targets] = True
    if inequality:
        expected = torch.where(moved, expected.clamp(min=0), expected)
    got = multiplier.weight.detach().double().flatten()
    magnitude = torch.zeros_like(start).index_add_(0, targets, violation.double().abs())
    scale = 1 + start.abs() + lr * magnitude  # rounding errors scale with the terms, not with their sum
    assert bool(((got - expected).abs() <= TOLERANCE[multiplier_dtype] * scale).all()), (got, expected)
    assert multiplier.weight.dtype == multiplier_dtype
    if inequality:
        assert bool((got >= 0).all())


# ---------------------------------------------------------------------------------------------------
# Constructors: random arguments give an object or a documented error
# ---------------------------------------------------------------------------------------------------

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 5),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.builds(lambda n, d: torch.zeros(n, dtype=d), st.integers(0, 3), st.sampled_from(DTYPES)),
    st.builds(lambda n: torch.arange(n), st.integers(0, 3)),
    st.builds(lambda: torch.zeros(2, 2)),
    st.just(torch.tensor([1.0, math.nan])),
)


@PROPERTY_SETTINGS
@given(
    num_constraints=anything,
    init=anything,
    dtype=st.sampled_from([*DTYPES, torch.int64]),
    indexed=st.booleans(),
)
def test_multiplier_constructor_arguments(
    num_constraints: Any, init: Any, dtype: torch.dtype, indexed: bool
) -> None:
    cls = cooper.multipliers.IndexedMultiplier if indexed else cooper.multipliers.DenseMultiplier
    try:
        multiplier = cls(num_constraints=num_constraints, init=init, dtype=dtype)
    except (TypeError, ValueError) as error:
        assert str(error).startswith("Multiplier:")
        return
    weight = multiplier.weight.detach()
    assert weight.dtype == dtype and bool(torch.isfinite(weight).all())
    assert weight.shape[0] == (num_constraints if init is None else len(init))


@PROPERTY_SETTINGS
@given(
    violation=anything,
    strict=anything,
    features=anything,
    strict_features=anything,
    num_samples=st.one_of(anything, st.integers(0, 100)),
)
def test_constraint_state_arguments(
    violation: Any, strict: Any, features: Any, strict_features: Any, num_samples: Any
) -> None:
    try:
        state = cooper.ConstraintState(
            violation,
            constraint_features=features,
            strict_violation=strict,
            strict_constraint_features=strict_features,
            num_samples=num_samples,
        )
    except (TypeError, ValueError) as error:
        assert str(error).startswith("ConstraintState:")
        return
    assert isinstance(state.violation, torch.Tensor)
    _, dual = state.extract_violations()
    assert dual.dim() >= 1 and not dual.requires_grad


@PROPERTY_SETTINGS
@given(
    init=st.lists(st.floats(0, 10, width=32), min_size=1, max_size=4),
    violation=st.lists(finite_values, min_size=1, max_size=4),
    features=st.sampled_from(["ok", "none", "float"]),
    indexed=st.booleans(),
)
def test_penalty_coefficients_fit_the_violation_or_raise(
    init: list[float], violation: list[float], features: str, indexed: bool
) -> None:
    cls = (
        cooper.penalty_coefficients.IndexedPenaltyCoefficient
        if indexed
        else cooper.penalty_coefficients.DensePenaltyCoefficient
    )
    coefficient = cls(torch.tensor(init))
    values = torch.tensor(violation, requires_grad=True)
    ids = torch.arange(len(violation)) % len(init)
    feature = {"ok": ids, "none": None, "float": ids.float()}[features]
    constraint = cooper.Constraint(
        cooper.ConstraintType.INEQUALITY,
        formulation_type=cooper.formulations.QuadraticPenalty,
        penalty_coefficient=coefficient,
    )
    state = cooper.ConstraintState(values, constraint_features=feature)
    try:
        store = cooper.CMPState(observed_constraints={constraint: state}).compute_primal_lagrangian()
    except (TypeError, ValueError) as error:
        assert "PenaltyCoefficient" in str(error)
        assert (indexed and features != "ok") or (not indexed and len(init) not in (1, len(violation)))
        return
    assert not indexed or features == "ok"
    lagrangian = store.lagrangian
    assert lagrangian is not None and float(lagrangian.detach()) >= 0  # ½ Σ c [g]_+² with c ≥ 0


@PROPERTY_SETTINGS
@given(
    values=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=0, max_size=6),
    dtype=st.sampled_from([*DTYPES, torch.int64, torch.int32, torch.bool]),
)
def test_distributed_packing_is_lossless(values: list[float], dtype: torch.dtype) -> None:
    if dtype.is_floating_point:
        tensor = torch.tensor(values, dtype=torch.float64).to(dtype)
    else:
        tensor = torch.tensor([v for v in values if math.isfinite(v) and abs(v) < 2**31]).to(dtype)
    back = cooper.distributed.unpack_bits(cooper.distributed.pack_bits(tensor), tensor.dtype)
    assert back.dtype == tensor.dtype
    assert torch.equal(back.view(torch.uint8), tensor.view(torch.uint8))
