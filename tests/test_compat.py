"""A script written for Cooper 1.0 (its README example, made concrete) runs with ``import cooper_like as cooper``."""

from __future__ import annotations

import pytest
import torch

import cooper_like as cooper

DEVICE = "cpu"
NUM_EPOCHS = 60


class MyCMP(cooper.ConstrainedMinimizationProblem):
    """Logistic regression whose mean predicted probability must stay below 0.3."""

    def __init__(self) -> None:
        super().__init__()
        multiplier = cooper.multipliers.DenseMultiplier(num_constraints=1, device=DEVICE)
        # By default, constraints are built using `formulation_type=cooper.formulations.Lagrangian`
        self.constraint = cooper.Constraint(
            multiplier=multiplier, constraint_type=cooper.ConstraintType.INEQUALITY
        )

    def compute_cmp_state(self, model, inputs, targets):
        inputs, targets = inputs.to(DEVICE), targets.to(DEVICE)
        logits = model(inputs).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
        constraint_state = cooper.ConstraintState(violation=torch.sigmoid(logits).mean() - 0.3)
        observed_constraints = {self.constraint: constraint_state}

        return cooper.CMPState(loss=loss, observed_constraints=observed_constraints)


def test_cooper_readme_script_runs_and_converges() -> None:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(512, 4, generator=generator)
    targets = (inputs[:, 0] + 0.5 * torch.randn(512, generator=generator) > -0.5).float()  # ~70% positives
    train_loader = [(inputs[i : i + 64], targets[i : i + 64]) for i in range(0, 512, 64)]
    model = torch.nn.Linear(4, 1).to(DEVICE)
    cmp = MyCMP()

    primal_optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    # Must set `maximize=True` since the Lagrange multipliers solve a _maximization_ problem
    dual_optimizer = torch.optim.SGD(cmp.dual_parameters(), lr=1e-1, maximize=True)

    cooper_optimizer = cooper.optim.SimultaneousOptimizer(
        cmp=cmp, primal_optimizers=primal_optimizer, dual_optimizers=dual_optimizer
    )

    for epoch_num in range(NUM_EPOCHS):
        for inputs_batch, targets_batch in train_loader:
            compute_cmp_state_kwargs = {"model": model, "inputs": inputs_batch, "targets": targets_batch}
            roll_out = cooper_optimizer.roll(compute_cmp_state_kwargs=compute_cmp_state_kwargs)
        assert epoch_num >= 0 and roll_out.loss is not None

    with torch.no_grad():
        rate = torch.sigmoid(model(inputs).squeeze(1)).mean().item()
    assert abs(rate - 0.3) < 0.02, rate
    assert cmp.constraint.multiplier.weight.item() > 0.1
    # roll_out carries what Cooper's does
    assert set(roll_out._fields) == {"loss", "cmp_state", "primal_lagrangian_store", "dual_lagrangian_store"}
    assert cmp.constraint in roll_out.dual_lagrangian_store.multiplier_values


# --- Cooper's public behaviour: calls and exception types -------------------------------------------


class OneBound(cooper.ConstrainedMinimizationProblem):
    def __init__(self, penalty: bool = False) -> None:
        super().__init__()
        self.bound = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY,
            multiplier=cooper.multipliers.DenseMultiplier(num_constraints=1),
        )

    def compute_cmp_state(self, x: torch.Tensor) -> cooper.CMPState:
        state = cooper.ConstraintState(violation=(x.sum() - 1).reshape(1))
        return cooper.CMPState(loss=x.pow(2).sum(), observed_constraints={self.bound: state})


def test_unconstrained_optimizer_takes_dual_optimizers_none() -> None:
    x = torch.ones(2, requires_grad=True)
    primal = torch.optim.SGD([x], lr=0.1)
    cooper.optim.UnconstrainedOptimizer(OneBound(), primal, None)
    cooper.optim.UnconstrainedOptimizer(OneBound(), primal, dual_optimizers=None)
    dual = torch.optim.SGD(OneBound().dual_parameters(), lr=0.1, maximize=True)
    with pytest.raises(ValueError, match="dual_optimizers must be None"):
        cooper.optim.UnconstrainedOptimizer(OneBound(), primal, dual)


def test_exception_types_catch_like_coopers() -> None:
    """Code that catches Cooper's exception type catches ours (ours may be more precise)."""
    with pytest.raises(ValueError, match="constraint_type must be a ConstraintType"):
        cooper.Constraint("inequality")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="integer tensor"):
        cooper.multipliers.IndexedMultiplier(num_constraints=3)(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="integer tensor"):
        cooper.penalty_coefficients.IndexedPenaltyCoefficient(torch.ones(3))(torch.tensor([0.0]))
    problem = OneBound()
    x = torch.ones(2, requires_grad=True)
    dual = torch.optim.SGD(problem.dual_parameters(), lr=0.1, maximize=True)
    with pytest.raises(RuntimeError, match="extrapolation"):
        cooper.optim.ExtrapolationConstrainedOptimizer(problem, torch.optim.SGD([x], lr=0.1), dual)
    with pytest.raises(ValueError, match="must not require gradients"):
        cooper.penalty_coefficients.DensePenaltyCoefficient(torch.ones(2, requires_grad=True))
    with pytest.raises(TypeError, match="primal_optimizers is required"):
        cooper.optim.SimultaneousOptimizer(problem, None, dual)  # type: ignore[arg-type]


def test_penalty_updater_names_a_missing_penalty_coefficient() -> None:
    updater = cooper.penalty_coefficients.MultiplicativePenaltyCoefficientUpdater()
    constraint = OneBound().bound
    state = cooper.ConstraintState(violation=torch.ones(1))
    with pytest.raises(TypeError, match="must be a PenaltyCoefficient, got NoneType"):
        updater.update_penalty_coefficient_(constraint, state)
    updater.step({constraint: state})  # Cooper's step skips constraints without a coefficient
    constraint.penalty_coefficient = torch.ones(1)  # type: ignore[assignment]
    with pytest.raises(TypeError, match="must be a PenaltyCoefficient, got Tensor"):
        updater.step({constraint: state})


# --- Mistakes that used to pass silently --------------------------------------------------------------


def test_an_unregistered_constraint_is_an_error_naming_it() -> None:
    class Forgetful(cooper.ConstrainedMinimizationProblem):
        def __init__(self) -> None:
            super().__init__()
            self.constraints_by_name = {  # kept in a dict: not registered
                "cap": cooper.Constraint(
                    cooper.ConstraintType.INEQUALITY, multiplier=cooper.multipliers.DenseMultiplier(1)
                )
            }

        def compute_cmp_state(self, x: torch.Tensor) -> cooper.CMPState:
            state = cooper.ConstraintState(violation=x.sum().reshape(1))
            return cooper.CMPState(
                loss=x.sum(), observed_constraints={self.constraints_by_name["cap"]: state}
            )

    problem = Forgetful()
    x = torch.ones(2, requires_grad=True)
    registered = OneBound()
    dual = torch.optim.SGD(registered.dual_parameters(), lr=0.1, maximize=True)
    optimizer = cooper.optim.SimultaneousOptimizer(problem, torch.optim.SGD([x], lr=0.1), dual)
    with pytest.raises(cooper.exceptions.UnregisteredConstraintError, match="not registered .*Constraint\\("):
        optimizer.roll({"x": x})
    assert x.tolist() == [1.0, 1.0]


def test_nupi_rejects_nan_hyperparameters() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    for kwargs in ({"lr": float("nan")}, {"lr": 0.1, "Kp": float("nan")}, {"lr": 0.1, "Ki": float("nan")}):
        with pytest.raises(ValueError, match="nuPI"):
            cooper.optim.nuPI(params, **kwargs)
    with pytest.raises(ValueError, match="weight_decay"):
        cooper.optim.nuPI(params, lr=0.1, weight_decay=float("nan"))
    with pytest.raises(ValueError, match="Kp must be finite"):
        cooper.optim.nuPI(params, lr=0.1, Kp=torch.tensor([float("nan")]))


def test_a_non_scalar_loss_is_named_with_its_shape() -> None:
    class VectorLoss(OneBound):
        def compute_cmp_state(self, x: torch.Tensor) -> cooper.CMPState:
            state = super().compute_cmp_state(x)
            return cooper.CMPState(loss=x.pow(2), observed_constraints=state.observed_constraints)

    problem = VectorLoss()
    x = torch.ones(2, requires_grad=True)
    dual = torch.optim.SGD(problem.dual_parameters(), lr=0.1, maximize=True)
    optimizer = cooper.optim.SimultaneousOptimizer(problem, torch.optim.SGD([x], lr=0.1), dual)
    with pytest.raises(ValueError, match=r"loss of shape \(2,\): CMPState.loss must be a scalar"):
        optimizer.roll({"x": x})


def test_a_constant_violation_warns_once_per_constraint() -> None:
    class ConstantViolation(OneBound):
        def compute_cmp_state(self, x: torch.Tensor) -> cooper.CMPState:
            state = cooper.ConstraintState(violation=torch.ones(1))  # not computed from x
            return cooper.CMPState(loss=x.pow(2).sum(), observed_constraints={self.bound: state})

    problem = ConstantViolation()
    x = torch.ones(2, requires_grad=True)
    dual = torch.optim.SGD(problem.dual_parameters(), lr=0.1, maximize=True)
    optimizer = cooper.optim.SimultaneousOptimizer(problem, torch.optim.SGD([x], lr=0.1), dual)
    with pytest.warns(UserWarning, match="'bound' does not require grad") as record:
        optimizer.roll({"x": x})
        optimizer.roll({"x": x})
    assert len([w for w in record if "does not require grad" in str(w.message)]) == 1


def test_an_empty_sequence_of_optimizers_is_refused() -> None:
    problem = OneBound()
    dual = torch.optim.SGD(problem.dual_parameters(), lr=0.1, maximize=True)
    with pytest.raises(ValueError, match="primal_optimizers must hold at least one"):
        cooper.optim.SimultaneousOptimizer(problem, [], dual)
