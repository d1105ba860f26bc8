"""The problem, constraint and state records: registration, iteration, checkpoints, sanity checks."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import cooper_like as cooper
from cooper_like.multipliers import DenseMultiplier, IndexedMultiplier
from cooper_like.penalty_coefficients import DensePenaltyCoefficient
from tests.conftest import QuadraticProblem


class TwoConstraints(cooper.ConstrainedMinimizationProblem):
    def __init__(self) -> None:
        super().__init__()
        shared = DenseMultiplier(num_constraints=2)
        self.first = cooper.Constraint(cooper.ConstraintType.INEQUALITY, multiplier=shared)
        self.second = cooper.Constraint(cooper.ConstraintType.INEQUALITY, multiplier=shared)
        self.per_sample = cooper.Constraint(
            cooper.ConstraintType.EQUALITY,
            formulation_type=cooper.formulations.AugmentedLagrangian,
            multiplier=IndexedMultiplier(num_constraints=5),
            penalty_coefficient=DensePenaltyCoefficient(torch.tensor(2.0)),
        )
        self.not_a_constraint = 3

    def compute_cmp_state(self) -> cooper.CMPState:
        return cooper.CMPState()


def test_constraints_register_by_attribute_in_order() -> None:
    problem = TwoConstraints()
    assert [name for name, _ in problem.named_constraints()] == ["first", "second", "per_sample"]
    assert problem.first.name == "first" and problem.not_a_constraint == 3
    assert [name for name, _ in problem.named_multipliers()] == ["first", "second", "per_sample"]
    assert [name for name, _ in problem.named_penalty_coefficients()] == ["per_sample"]
    assert len(list(problem.penalty_coefficients())) == 1
    # the shared multiplier is optimized once, in registration order
    parameters = list(problem.dual_parameters())
    assert len(parameters) == 2 and parameters[0] is problem.first.multiplier.weight
    del problem.second
    assert [name for name, _ in problem.named_constraints()] == ["first", "per_sample"]


def test_registering_a_name_twice_raises() -> None:
    problem = TwoConstraints()
    with pytest.raises(ValueError, match="'first' is already registered"):
        problem.first = cooper.Constraint(cooper.ConstraintType.INEQUALITY, multiplier=DenseMultiplier(1))


def test_a_constraint_cannot_be_renamed() -> None:
    constraint = cooper.Constraint(cooper.ConstraintType.INEQUALITY, multiplier=DenseMultiplier(1))
    constraint.name = "a"
    with pytest.raises(ValueError, match="already registered as 'a'"):
        constraint.name = "b"


def test_missing_attribute_message() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = TwoConstraints().nope


def test_subclass_without_super_init_still_registers() -> None:
    class Forgetful(cooper.ConstrainedMinimizationProblem):
        def __init__(self) -> None:
            self.c = cooper.Constraint(cooper.ConstraintType.INEQUALITY, multiplier=DenseMultiplier(1))

        def compute_cmp_state(self) -> cooper.CMPState:
            return cooper.CMPState()

    assert [name for name, _ in Forgetful().named_constraints()] == ["c"]


def test_state_dict_round_trip_weights_only(tmp_path) -> None:
    problem = TwoConstraints()
    with torch.no_grad():
        problem.first.multiplier.weight.copy_(torch.tensor([1.0, 2.0]))
        problem.per_sample.multiplier.weight.copy_(torch.arange(5.0).unsqueeze(1))
    problem.per_sample.penalty_coefficient.value = torch.tensor(7.0)
    torch.save(problem.state_dict(), tmp_path / "cmp.pt")
    fresh = TwoConstraints()
    fresh.load_state_dict(torch.load(tmp_path / "cmp.pt", weights_only=True))
    assert torch.equal(fresh.first.multiplier.weight, problem.first.multiplier.weight)
    assert torch.equal(fresh.per_sample.multiplier.weight, problem.per_sample.multiplier.weight)
    assert fresh.per_sample.penalty_coefficient.value.item() == 7.0


def test_load_state_dict_names_unknown_and_missing_constraints() -> None:
    state = TwoConstraints().state_dict()
    state["multipliers"]["ghost"] = state["multipliers"].pop("first")
    with pytest.raises(KeyError, match=r"unknown: \['ghost'\], missing: \['first'\]"):
        TwoConstraints().load_state_dict(state)


def test_load_state_dict_rejects_negative_inequality_multiplier() -> None:
    state = TwoConstraints().state_dict()
    state["multipliers"]["first"]["weight"] = torch.tensor([-1.0, 0.0])
    with pytest.raises(ValueError, match="must be >= 0"):
        TwoConstraints().load_state_dict(state)


def test_to_moves_multipliers_and_penalties() -> None:
    problem = TwoConstraints().to(dtype=torch.float64)
    assert problem.first.multiplier.weight.dtype == torch.float64
    assert problem.per_sample.penalty_coefficient.value.dtype == torch.float64


def test_deepcopy_and_pickle_of_a_problem() -> None:
    problem = TwoConstraints()
    for clone in (copy.deepcopy(problem), pickle.loads(pickle.dumps(problem))):
        assert [name for name, _ in clone.named_constraints()] == ["first", "second", "per_sample"]
        assert clone.first.multiplier is clone.second.multiplier
        assert clone.first.multiplier is not problem.first.multiplier


def test_constraint_argument_checks() -> None:
    with pytest.raises(TypeError, match="constraint_type must be a ConstraintType"):
        cooper.Constraint("inequality", multiplier=DenseMultiplier(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="formulation_type must be a Formulation subclass"):
        cooper.Constraint(cooper.ConstraintType.INEQUALITY, formulation_type=int)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Lagrangian needs a multiplier"):
        cooper.Constraint(cooper.ConstraintType.INEQUALITY)
    with pytest.raises(ValueError, match="AugmentedLagrangian needs a penalty coefficient"):
        cooper.Constraint(
            cooper.ConstraintType.INEQUALITY,
            formulation_type=cooper.formulations.AugmentedLagrangian,
            multiplier=DenseMultiplier(1),
        )
    with pytest.raises(ValueError, match="QuadraticPenalty has no multiplier"):
        cooper.Constraint(
            cooper.ConstraintType.INEQUALITY,
            formulation_type=cooper.formulations.QuadraticPenalty,
            multiplier=DenseMultiplier(1),
            penalty_coefficient=DensePenaltyCoefficient(torch.tensor(1.0)),
        )
    with pytest.raises(ValueError, match="Lagrangian has no penalty coefficient"):
        cooper.Constraint(
            cooper.ConstraintType.INEQUALITY,
            multiplier=DenseMultiplier(1),
            penalty_coefficient=DensePenaltyCoefficient(torch.tensor(1.0)),
        )
    with pytest.raises(TypeError, match="multiplier must be a cooper_like Multiplier"):
        cooper.Constraint(cooper.ConstraintType.INEQUALITY, multiplier=torch.zeros(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="penalty_coefficient must be a PenaltyCoefficient"):
        cooper.Constraint(
            cooper.ConstraintType.INEQUALITY,
            formulation_type=cooper.formulations.QuadraticPenalty,
            penalty_coefficient=torch.ones(1),  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError, match="primal_or_dual must be 'primal' or 'dual'"):
        TwoConstraints().first.compute_contribution_to_lagrangian(
            cooper.ConstraintState(torch.zeros(2)),
            "both",  # type: ignore[arg-type]
        )


def test_constraint_state_checks() -> None:
    with pytest.raises(TypeError, match="violation must be a torch.Tensor, got float"):
        cooper.ConstraintState(violation=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="strict_violation must be a torch.Tensor or None, got int"):
        cooper.ConstraintState(violation=torch.zeros(1), strict_violation=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="strict_constraint_features was given without strict_violation"):
        cooper.ConstraintState(
            violation=torch.zeros(1), strict_constraint_features=torch.zeros(1, dtype=torch.long)
        )
    state = cooper.ConstraintState(violation=torch.tensor(2.0))
    violation, strict = state.extract_violations()
    assert violation.shape == (1,) and torch.equal(strict, torch.tensor([2.0]))


def test_cmp_state_named_iterators() -> None:
    problem = TwoConstraints()
    features = torch.tensor([1, 3])
    state = cooper.CMPState(
        observed_constraints={
            problem.first: cooper.ConstraintState(torch.zeros(2), strict_violation=torch.ones(2)),
            problem.per_sample: cooper.ConstraintState(torch.zeros(2), constraint_features=features),
        }
    )
    assert [name for name, _ in state.named_observed_violations()] == ["first", "per_sample"]
    strict = dict(state.named_observed_strict_violations())
    assert torch.equal(strict["first"], torch.ones(2)) and torch.equal(strict["per_sample"], torch.zeros(2))
    assert dict(state.named_observed_constraint_features())["per_sample"] is features
    assert dict(state.named_observed_strict_constraint_features())["per_sample"] is features


def test_sanity_check_accepts_a_non_leaf_loss() -> None:
    x = torch.ones(2, requires_grad=True)
    problem = QuadraticProblem()
    state = problem.compute_cmp_state(x=x, target=torch.zeros(2))
    assert state.loss is not None and not state.loss.is_leaf
    cooper.ConstrainedMinimizationProblem.sanity_check_cmp_state(state)


def test_sanity_check_errors() -> None:
    problem = QuadraticProblem()
    check = cooper.ConstrainedMinimizationProblem.sanity_check_cmp_state
    with pytest.raises(TypeError, match="expected a CMPState, got dict"):
        check({})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loss must be a scalar tensor"):
        check(cooper.CMPState(loss=torch.ones(3, requires_grad=True)))
    with pytest.raises(ValueError, match="loss does not require grad"):
        check(cooper.CMPState(loss=torch.tensor(1.0)))
    flat = cooper.ConstraintState(torch.tensor(1.0))
    with pytest.raises(ValueError, match="violation of constraint 'sum_constraint' does not require grad"):
        check(cooper.CMPState(observed_constraints={problem.sum_constraint: flat}))
    graded = torch.tensor(1.0, requires_grad=True)
    bad_strict = cooper.ConstraintState(graded * 2, strict_violation=graded * 3)
    with pytest.raises(ValueError, match="strict_violation of constraint 'sum_constraint' requires grad"):
        check(cooper.CMPState(observed_constraints={problem.sum_constraint: bad_strict}))
    with pytest.raises(TypeError, match="must map Constraint to ConstraintState"):
        check(cooper.CMPState(observed_constraints={problem.sum_constraint: graded}))  # type: ignore[dict-item]


def test_utils_constraint_type_is_the_top_level_one() -> None:
    assert cooper.utils.ConstraintType is cooper.ConstraintType
    assert isinstance(cooper.__version__, str)
