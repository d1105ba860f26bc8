"""The constrained optimizers: hand-computed steps, argument checks, NaN policy, schedulers, copies."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import cooper_like as cooper
from cooper_like.multipliers import DenseMultiplier
from cooper_like.optim import NonFiniteError
from tests.conftest import QuadraticProblem

TARGET = torch.zeros(1, dtype=torch.float64)


def setup(scheme, primal_cls=torch.optim.SGD, dual_cls=torch.optim.SGD, **optimizer_kwargs):
    """min x^2 s.t. x - 1 <= 0 from x0 = 2, lambda0 = 1; primal lr 0.1, dual lr 0.5."""
    problem = QuadraticProblem(bound=1.0)
    with torch.no_grad():
        problem.sum_constraint.multiplier.weight.fill_(1.0)
    x = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    optimizer = scheme(
        cmp=problem,
        primal_optimizers=primal_cls([x], lr=0.1),
        dual_optimizers=dual_cls(problem.dual_parameters(), lr=0.5, maximize=True),
        **optimizer_kwargs,
    )
    return problem, x, optimizer


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        # x1 = 2 - 0.1 (2*2 + 1) = 1.5, l1 = 1 + 0.5 (2 - 1) = 1.5; x2 = 1.5 - 0.1 (3 + 1.5), l2 = 1.5 + 0.5 * 0.5
        (cooper.optim.SimultaneousOptimizer, [(1.5, 1.5), (1.05, 1.75)]),
        # l1 = 1 + 0.5 * 1 = 1.5, x1 = 2 - 0.1 (4 + 1.5) = 1.45; l2 = 1.5 + 0.5 * 0.45, x2 = 1.45 - 0.1 (2.9 + 1.725)
        (cooper.optim.AlternatingDualPrimalOptimizer, [(1.45, 1.5), (0.9875, 1.725)]),
        # x1 = 2 - 0.1 (4 + 1) = 1.5, l1 = 1 + 0.5 (1.5 - 1) = 1.25; x2 = 1.5 - 0.1 (3 + 1.25), l2 = 1.25 + 0.5 * 0.075
        (cooper.optim.AlternatingPrimalDualOptimizer, [(1.5, 1.25), (1.075, 1.2875)]),
    ],
)
def test_two_steps_by_hand(scheme, expected) -> None:
    problem, x, optimizer = setup(scheme)
    for x_expected, lam_expected in expected:
        optimizer.roll(compute_cmp_state_kwargs={"x": x, "target": TARGET})
        assert x.item() == pytest.approx(x_expected, abs=1e-12)
        assert problem.sum_constraint.multiplier.weight.item() == pytest.approx(lam_expected, abs=1e-12)


def test_extragradient_step_by_hand() -> None:
    # extrapolate: x = 2 - 0.1 * 5 = 1.5, l = 1 + 0.5 * 1 = 1.5
    # update from (2, 1) with the gradients at (1.5, 1.5): dx = 3 + 1.5, dl = 0.5 -> x = 1.55, l = 1.25
    problem, x, optimizer = setup(
        cooper.optim.ExtrapolationConstrainedOptimizer, cooper.optim.ExtraSGD, cooper.optim.ExtraSGD
    )
    roll_out = optimizer.roll(compute_cmp_state_kwargs={"x": x, "target": TARGET})
    assert x.item() == pytest.approx(1.55, abs=1e-12)
    assert problem.sum_constraint.multiplier.weight.item() == pytest.approx(1.25, abs=1e-12)
    assert roll_out.loss is not None and roll_out.loss.item() == pytest.approx(4.0)  # measured at x_t


def test_unconstrained_optimizer_minimizes_the_loss() -> None:
    problem = QuadraticProblem(
        formulation=cooper.formulations.QuadraticPenalty,
        penalty=cooper.penalty_coefficients.DensePenaltyCoefficient(torch.tensor(0.0, dtype=torch.float64)),
    )
    x = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    optimizer = cooper.optim.UnconstrainedOptimizer(
        cmp=problem, primal_optimizers=torch.optim.SGD([x], lr=0.1)
    )
    roll_out = optimizer.roll({"x": x, "target": TARGET})
    assert x.item() == pytest.approx(1.6) and roll_out.dual_lagrangian_store.lagrangian is None
    assert optimizer.state_dict()["dual_optimizer_states"] is None


def test_dual_optimizer_must_maximize() -> None:
    problem = QuadraticProblem()
    x = torch.zeros(1, requires_grad=True)
    with pytest.raises(ValueError, match=r"dual_optimizers\[0\] \(SGD\) param group 0 has maximize=False"):
        cooper.optim.SimultaneousOptimizer(
            cmp=problem,
            primal_optimizers=torch.optim.SGD([x], lr=0.1),
            dual_optimizers=torch.optim.SGD(problem.dual_parameters(), lr=0.1),
        )


def test_constructor_argument_errors() -> None:
    problem = QuadraticProblem()
    x = torch.zeros(1, requires_grad=True)
    primal = torch.optim.SGD([x], lr=0.1)
    dual = torch.optim.SGD(problem.dual_parameters(), lr=0.1, maximize=True)
    with pytest.raises(TypeError, match="needs dual_optimizers"):
        cooper.optim.SimultaneousOptimizer(cmp=problem, primal_optimizers=primal)
    with pytest.raises(TypeError, match="cmp must be a ConstrainedMinimizationProblem, got str"):
        cooper.optim.SimultaneousOptimizer(cmp="cmp", primal_optimizers=primal, dual_optimizers=dual)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match="primal_optimizers must be torch.optim.Optimizer instances, got Tensor"
    ):
        cooper.optim.SimultaneousOptimizer(cmp=problem, primal_optimizers=[x], dual_optimizers=dual)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="dual_optimizers must hold at least one"):
        cooper.optim.SimultaneousOptimizer(cmp=problem, primal_optimizers=primal, dual_optimizers=[])
    with pytest.raises(TypeError, match="must have an extrapolation\\(\\) method .* got SGD"):
        cooper.optim.ExtrapolationConstrainedOptimizer(
            cmp=problem, primal_optimizers=primal, dual_optimizers=dual
        )
    with pytest.raises(
        ValueError, match=r"non_finite must be one of \['raise', 'skip', 'off'\], got 'ignore'"
    ):
        cooper.optim.SimultaneousOptimizer(
            cmp=problem, primal_optimizers=primal, dual_optimizers=dual, non_finite="ignore"
        )
    with pytest.raises(ValueError, match="Invalid learning rate"):  # torch's own check
        torch.optim.SGD(problem.dual_parameters(), lr=-0.1, maximize=True)


def test_compute_cmp_state_must_return_a_cmp_state() -> None:
    class Broken(QuadraticProblem):
        def compute_cmp_state(self, x, target):  # type: ignore[override]
            return (x - target).pow(2).sum()

    _, x, optimizer = setup(cooper.optim.SimultaneousOptimizer)
    optimizer.cmp = Broken()
    with pytest.raises(TypeError, match="Broken.compute_cmp_state must return a CMPState, got Tensor"):
        optimizer.roll({"x": x, "target": TARGET})


def test_compute_violations_contract() -> None:
    class WithLoss(QuadraticProblem):
        def compute_violations(self, x, target):  # type: ignore[override]
            return self.compute_cmp_state(x, target)

    class WrongType(QuadraticProblem):
        def compute_violations(self, x, target):  # type: ignore[override]
            return {}

    for problem_cls, error, message in [
        (WithLoss, RuntimeError, "compute_violations must leave loss=None"),
        (WrongType, TypeError, "compute_violations must return a CMPState, got dict"),
    ]:
        problem = problem_cls()
        x = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
        optimizer = cooper.optim.AlternatingPrimalDualOptimizer(
            cmp=problem,
            primal_optimizers=torch.optim.SGD([x], lr=0.1),
            dual_optimizers=torch.optim.SGD(problem.dual_parameters(), lr=0.5, maximize=True),
        )
        kwargs = {"x": x, "target": TARGET}
        with pytest.raises(error, match=message):
            optimizer.roll(compute_cmp_state_kwargs=kwargs, compute_violations_kwargs=kwargs)


def test_compute_violations_is_used_when_implemented() -> None:
    calls = []

    class Measured(QuadraticProblem):
        def compute_violations(self, x, target):  # type: ignore[override]
            calls.append(torch.is_grad_enabled())
            state = cooper.ConstraintState(violation=x.sum() - self.bound)
            return cooper.CMPState(observed_constraints={self.sum_constraint: state})

    problem = Measured()
    x = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    optimizer = cooper.optim.AlternatingPrimalDualOptimizer(
        cmp=problem,
        primal_optimizers=torch.optim.SGD([x], lr=0.1),
        dual_optimizers=torch.optim.SGD(problem.dual_parameters(), lr=0.5, maximize=True),
    )
    kwargs = {"x": x, "target": TARGET}
    roll_out = optimizer.roll(compute_cmp_state_kwargs=kwargs, compute_violations_kwargs=kwargs)
    assert calls == [False]
    # the loss is the one at x_t since compute_violations does not measure it
    assert roll_out.loss is not None and roll_out.loss.item() == pytest.approx(4.0)
    # x1 = 2 - 0.1 * 4 = 1.6 (lambda0 = 0); the dual step uses g(x1) = 0.6: lambda1 = 0.5 * 0.6
    assert problem.sum_constraint.multiplier.weight.item() == pytest.approx(0.3)


class NaNProblem(QuadraticProblem):
    """Injects NaN into the loss, the violation or the strict violation on chosen calls."""

    def __init__(self, where: str, on_calls: set[int]) -> None:
        super().__init__()
        self.where, self.on_calls, self.calls = where, on_calls, 0

    def compute_cmp_state(self, x, target):  # type: ignore[override]
        bad = self.calls in self.on_calls
        self.calls += 1
        nan = float("nan") if bad else 0.0
        loss = (x - target).pow(2).sum() + (nan if self.where == "loss" else 0.0)
        violation = x.sum() - self.bound + (nan if self.where == "violation" else 0.0)
        strict = violation.detach() + (nan if self.where == "strict_violation" else 0.0)
        state = cooper.ConstraintState(violation=violation, strict_violation=strict)
        return cooper.CMPState(loss=loss, observed_constraints={self.sum_constraint: state})


@pytest.mark.parametrize("where", ["loss", "violation", "strict_violation"])
def test_non_finite_raises_by_default_and_updates_nothing(where: str) -> None:
    problem = NaNProblem(where, on_calls={0})
    x = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    optimizer = cooper.optim.SimultaneousOptimizer(
        cmp=problem,
        primal_optimizers=torch.optim.SGD([x], lr=0.1),
        dual_optimizers=torch.optim.SGD(problem.dual_parameters(), lr=0.5, maximize=True),
    )
    with pytest.raises(NonFiniteError, match=where if where != "violation" else "violation of constraint"):
        optimizer.roll({"x": x, "target": TARGET})
    assert x.item() == 2.0 and problem.sum_constraint.multiplier.weight.item() == 0.0


@pytest.mark.parametrize(
    "scheme",
    [
        cooper.optim.SimultaneousOptimizer,
        cooper.optim.AlternatingDualPrimalOptimizer,
        cooper.optim.AlternatingPrimalDualOptimizer,
    ],
)
def test_skip_policy_skips_the_step_counts_it_and_checkpoints_the_count(scheme) -> None:
    problem = NaNProblem("loss", on_calls={0})
    x = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    optimizer = scheme(
        cmp=problem,
        primal_optimizers=torch.optim.SGD([x], lr=0.1),
        dual_optimizers=torch.optim.SGD(problem.dual_parameters(), lr=0.5, maximize=True),
        non_finite="skip",
    )
    with pytest.warns(RuntimeWarning, match="skipping a step with a non-finite value"):
        optimizer.roll({"x": x, "target": TARGET})
    assert x.item() == 2.0 and problem.sum_constraint.multiplier.weight.item() == 0.0
    assert optimizer.skipped_steps == 1 and optimizer.state_dict()["skipped_steps"] == 1
    optimizer.roll({"x": x, "target": TARGET})  # the next, finite step proceeds
    assert x.item() < 2.0 and optimizer.skipped_steps == 1
    state = optimizer.state_dict()
    fresh = scheme(
        cmp=problem,
        primal_optimizers=torch.optim.SGD([x], lr=0.1),
        dual_optimizers=torch.optim.SGD(problem.dual_parameters(), lr=0.5, maximize=True),
    )
    fresh.load_state_dict(state)
    assert fresh.skipped_steps == 1


def test_skip_at_the_extrapolated_point_rolls_the_extrapolation_back() -> None:
    problem = NaNProblem("violation", on_calls={1})
    x = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    optimizer = cooper.optim.ExtrapolationConstrainedOptimizer(
        cmp=problem,
        primal_optimizers=cooper.optim.ExtraSGD([x], lr=0.1),
        dual_optimizers=cooper.optim.ExtraSGD(problem.dual_parameters(), lr=0.5, maximize=True),
        non_finite="skip",
    )
    with pytest.warns(RuntimeWarning):
        optimizer.roll({"x": x, "target": TARGET})
    assert x.item() == 2.0 and problem.sum_constraint.multiplier.weight.item() == 0.0
    assert optimizer.skipped_steps == 1
    optimizer.roll({"x": x, "target": TARGET})
    assert x.item() != 2.0


def test_off_policy_does_not_check() -> None:
    problem = NaNProblem("loss", on_calls={0})
    x = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    optimizer = cooper.optim.SimultaneousOptimizer(
        cmp=problem,
        primal_optimizers=torch.optim.SGD([x], lr=0.1),
        dual_optimizers=torch.optim.SGD(problem.dual_parameters(), lr=0.5, maximize=True),
        non_finite="off",
    )
    optimizer.roll({"x": x, "target": TARGET})
    assert x.item() != 2.0


def test_contributes_to_dual_update_false_leaves_the_multiplier_untouched() -> None:
    class PrimalOnly(QuadraticProblem):
        def compute_cmp_state(self, x, target):  # type: ignore[override]
            state = cooper.ConstraintState(violation=x.sum() - self.bound, contributes_to_dual_update=False)
            return cooper.CMPState(
                loss=(x - target).pow(2).sum(), observed_constraints={self.sum_constraint: state}
            )

    problem = PrimalOnly()
    with torch.no_grad():
        problem.sum_constraint.multiplier.weight.fill_(1.0)
    x = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    optimizer = cooper.optim.SimultaneousOptimizer(
        cmp=problem,
        primal_optimizers=torch.optim.SGD([x], lr=0.1),
        dual_optimizers=cooper.optim.nuPI(problem.dual_parameters(), lr=0.5, Kp=1.0, maximize=True),
    )
    for _ in range(3):
        optimizer.roll({"x": x, "target": TARGET})
    assert problem.sum_constraint.multiplier.weight.item() == 1.0
    assert x.item() == pytest.approx(2.0 - 0.1 * 5.0 - 0.1 * 4.0 - 0.1 * (2 * 1.1 + 1.0))


def test_dual_restarts_zero_feasible_entries_and_clear_their_state() -> None:
    class Two(cooper.ConstrainedMinimizationProblem):
        def __init__(self) -> None:
            super().__init__()
            self.c = cooper.Constraint(
                cooper.ConstraintType.INEQUALITY,
                multiplier=DenseMultiplier(init=torch.tensor([1.0, 1.0]), restart_on_feasible=True),
            )

        def compute_cmp_state(self, violation):  # type: ignore[override]
            return cooper.CMPState(observed_constraints={self.c: cooper.ConstraintState(violation)})

    problem = Two()
    dual = cooper.optim.nuPI(problem.dual_parameters(), lr=0.1, Kp=1.0, maximize=True)
    x = torch.zeros(1, requires_grad=True)
    optimizer = cooper.optim.SimultaneousOptimizer(
        cmp=problem, primal_optimizers=torch.optim.SGD([x], lr=0.1), dual_optimizers=dual
    )
    violation = x.sum() + torch.tensor([0.5, -0.5])
    optimizer.roll({"violation": violation})
    weight = problem.c.multiplier.weight
    assert weight[0].item() == pytest.approx(1.05) and weight[1].item() == 0.0
    assert dual.state[weight]["xi"][1].item() == 0.0 and dual.state[weight]["xi"][0].item() == 0.5


@pytest.mark.parametrize("updater", ["sgd", "nupi"])
def test_lr_scheduler_on_the_dual_optimizer_survives_a_round_trip(updater: str) -> None:
    def build():
        problem, x, optimizer = setup(cooper.optim.SimultaneousOptimizer)
        if updater == "nupi":
            dual = cooper.optim.nuPI(problem.dual_parameters(), lr=0.5, Kp=0.5, maximize=True)
            optimizer = cooper.optim.SimultaneousOptimizer(
                cmp=problem, primal_optimizers=optimizer.primal_optimizers, dual_optimizers=dual
            )
        assert optimizer.dual_optimizers is not None
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer.dual_optimizers[0], step_size=2, gamma=0.1)
        return problem, x, optimizer, scheduler

    problem, x, optimizer, scheduler = build()
    for _ in range(3):
        optimizer.roll({"x": x, "target": TARGET})
        scheduler.step()
    assert optimizer.dual_optimizers is not None
    assert optimizer.dual_optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05)
    # state_dict()s reference live tensors (as in torch): copy them, as torch.save would
    saved = copy.deepcopy(
        {
            "cmp": problem.state_dict(),
            "opt": optimizer.state_dict(),
            "sched": scheduler.state_dict(),
            "x": x.detach(),
        }
    )
    optimizer.roll({"x": x, "target": TARGET})
    scheduler.step()
    optimizer.roll({"x": x, "target": TARGET})
    expected = problem.sum_constraint.multiplier.weight.detach().clone()

    problem2, x2, optimizer2, scheduler2 = build()
    problem2.load_state_dict(saved["cmp"])
    optimizer2.load_state_dict(saved["opt"])
    scheduler2.load_state_dict(saved["sched"])
    with torch.no_grad():
        x2.copy_(saved["x"])
    optimizer2.roll({"x": x2, "target": TARGET})
    scheduler2.step()
    assert optimizer2.dual_optimizers is not None
    assert optimizer2.dual_optimizers[0].param_groups[0]["lr"] == pytest.approx(0.005)
    optimizer2.roll({"x": x2, "target": TARGET})
    assert torch.equal(problem2.sum_constraint.multiplier.weight.detach(), expected)


@pytest.mark.parametrize(
    ("scheme", "primal_cls", "dual_cls"),
    [
        (cooper.optim.SimultaneousOptimizer, torch.optim.SGD, cooper.optim.nuPI),
        (cooper.optim.ExtrapolationConstrainedOptimizer, cooper.optim.ExtraAdam, cooper.optim.ExtraSGD),
        (cooper.optim.AlternatingPrimalDualOptimizer, torch.optim.Adam, torch.optim.SGD),
    ],
)
def test_deepcopy_and_pickle_of_optimizers(scheme, primal_cls, dual_cls) -> None:
    _, x, optimizer = setup(scheme, primal_cls, dual_cls)
    optimizer.roll({"x": x, "target": TARGET})
    for clone in (copy.deepcopy(optimizer), pickle.loads(pickle.dumps(optimizer))):
        assert type(clone) is scheme and clone.cmp is not optimizer.cmp
        assert clone.dual_optimizers is not None
        clone_x = clone.primal_optimizers[0].param_groups[0]["params"][0]
        clone.roll({"x": clone_x, "target": TARGET})


def test_load_state_dict_checks_optimizer_counts() -> None:
    _, _, optimizer = setup(cooper.optim.SimultaneousOptimizer)
    state = optimizer.state_dict()
    with pytest.raises(ValueError, match="state holds 2 primal optimizer states, this optimizer has 1"):
        optimizer.load_state_dict({**state, "primal_optimizer_states": state["primal_optimizer_states"] * 2})
    with pytest.raises(ValueError, match="state holds None dual optimizer states, this optimizer has 1"):
        optimizer.load_state_dict({**state, "dual_optimizer_states": None})
