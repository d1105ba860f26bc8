r"""The differential oracle's two runs of one case: the library, and a reference from the equations.

The problem: :math:`\min_x \tfrac12\|Ax - b\|^2` subject to :math:`g_r(x) = c_r^\top x - e_r` (:math:`\le 0` or
:math:`= 0`) for rows :math:`r = 0..n-1`, of which each step observes some (with repeats for the
indexed cases). The strict violation, when present, is :math:`\tilde g_r = g_r + \delta_r`.

The reference keeps every quantity as a dense tensor over all rows and applies the update rules of each
scheme, formulation, optimizer, restart and penalty updater as written in their docstrings and papers:
no caches, no sparse tensors, no library code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch

import cooper_like as cooper
from cooper_like.formulations import ContributionStore
from tests.oracle_cases import INDEXED, Case

NUM_ROWS, DIM, NUM_STEPS, BATCH = 6, 3, 4, 4
PRIMAL_LR, DUAL_LR, MOMENTUM, KAPPA = 0.05, 0.2, 0.5, 3.0
BETAS, EPS = (0.9, 0.99), 1e-8
NUPI = {"Kp": 0.7, "Ki": 1.3, "ema_nu": 0.4}
GROWTH, TOLERANCE = 1.5, 1e-3


@dataclass
class Data:
    A: torch.Tensor
    b: torch.Tensor
    C: torch.Tensor
    e: torch.Tensor
    delta: torch.Tensor
    features: torch.Tensor  # implicit multiplier: one feature row per constraint
    x0: torch.Tensor
    multiplier0: torch.Tensor  # explicit: one value per row; implicit: the model weights
    penalty0: torch.Tensor
    ids: list[torch.Tensor] = field(default_factory=list)  # observed rows per step (None: all)

    def to(self, device: str) -> Data:
        """The same data on ``device``."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self) if f.name != "ids"}
        return Data(**moved, ids=[rows.to(device) for rows in self.ids])


def make_data(case: Case, seed: int) -> Data:
    generator = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, case.dtype)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return (low + (high - low) * torch.rand(*shape, generator=generator, dtype=torch.float64)).to(dtype)

    inequality = case.constraint == "inequality"
    if case.multiplier == "implicit":
        multiplier0 = uniform(0.1, 0.6, 2)
    else:
        multiplier0 = uniform(0.1, 1.0, NUM_ROWS) if inequality else normal(NUM_ROWS)
    data = Data(
        A=normal(5, DIM),
        b=normal(5),
        C=normal(NUM_ROWS, DIM),
        e=0.5 * normal(NUM_ROWS),
        delta=0.3 * normal(NUM_ROWS),
        features=uniform(0.0, 1.0, NUM_ROWS, 2),
        x0=normal(DIM),
        multiplier0=multiplier0,
        penalty0=uniform(0.5, 1.5, NUM_ROWS),
    )
    repeated = torch.randint(0, NUM_ROWS, (BATCH,), generator=generator)
    for _ in range(NUM_STEPS):
        if case.multiplier in {"indexed_random", "indexed_buffer"}:
            data.ids.append(torch.randint(0, NUM_ROWS, (BATCH,), generator=generator))
        elif case.multiplier == "indexed_all":
            data.ids.append(torch.randperm(NUM_ROWS, generator=generator))
        elif case.multiplier == "indexed_repeated":
            data.ids.append(repeated.clone())
        else:
            data.ids.append(torch.arange(NUM_ROWS))
    return data


# =====================================================================================================
# The library run
# =====================================================================================================


class LinearImplicitMultiplier(cooper.multipliers.ImplicitMultiplier):
    """λ(φ) = φᵀw."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.weights = torch.nn.Parameter(weights.clone())

    def forward(self, constraint_features: torch.Tensor) -> torch.Tensor:
        return constraint_features @ self.weights


class UserDualOverride(cooper.formulations.Lagrangian):
    """A user's formulation (Cooper 1.0's signature) whose dual contribution is 2·λᵀg̃."""

    def compute_contribution_to_dual_lagrangian(self, constraint_state, multiplier):  # type: ignore[no-untyped-def,override]
        if not constraint_state.contributes_to_dual_update:
            return None
        _, strict = constraint_state.extract_violations(do_unsqueeze=False)
        _, features = constraint_state.extract_constraint_features()
        value = multiplier(features) if multiplier.expects_constraint_features else multiplier()
        return ContributionStore(2 * (value.reshape(strict.shape) * strict.detach()).sum(), value)


FORMULATIONS = {
    "lagrangian": cooper.formulations.Lagrangian,
    "quadratic_penalty": cooper.formulations.QuadraticPenalty,
    "augmented_lagrangian": cooper.formulations.AugmentedLagrangian,
    "user_dual_override": UserDualOverride,
}


class ModifiedPrimalState(cooper.CMPState):
    """A state whose primal Lagrangian the user changes before ``backward()``: + κ·Σx."""

    def compute_primal_lagrangian(self) -> cooper.LagrangianStore:
        store = super().compute_primal_lagrangian()
        assert self.misc is not None and store.lagrangian is not None
        store.lagrangian = store.lagrangian + KAPPA * self.misc["x"].sum()
        return store


class OracleProblem(cooper.ConstrainedMinimizationProblem):
    def __init__(self, case: Case, data: Data) -> None:
        super().__init__()
        self.case, self.data = case, data
        dtype = getattr(torch, case.dtype)
        constraint_type = getattr(cooper.ConstraintType, case.constraint.upper())
        formulation = FORMULATIONS[case.formulation]
        restart = case.restarts == "on"
        multiplier: cooper.multipliers.Multiplier | None = None
        if formulation.expects_multiplier:
            if case.multiplier == "dense":
                multiplier = cooper.multipliers.DenseMultiplier(
                    init=data.multiplier0, dtype=dtype, restart_on_feasible=restart
                )
            elif case.multiplier in INDEXED:
                multiplier = cooper.multipliers.IndexedMultiplier(
                    init=data.multiplier0,
                    dtype=dtype,
                    restart_on_feasible=restart,
                    sparse_grad=case.sparse_grad == "on",
                )
            else:
                multiplier = LinearImplicitMultiplier(data.multiplier0)
        penalty: cooper.penalty_coefficients.PenaltyCoefficient | None = None
        if formulation.expects_penalty_coefficient:
            kind = (
                cooper.penalty_coefficients.IndexedPenaltyCoefficient
                if case.multiplier in INDEXED
                else cooper.penalty_coefficients.DensePenaltyCoefficient
            )
            penalty = kind(data.penalty0)
        self.c = cooper.Constraint(
            constraint_type, formulation_type=formulation, multiplier=multiplier, penalty_coefficient=penalty
        )
        self.buffer = torch.zeros(BATCH, dtype=torch.long, device=data.x0.device)
        if case.scheme == "alt_primal_dual_instance_violations":
            self.compute_violations = self.measure_violations  # type: ignore[method-assign]

    def features(self, step: int) -> torch.Tensor | None:
        if self.case.multiplier == "dense":
            return None
        if self.case.multiplier == "implicit":
            return self.data.features
        if self.case.multiplier == "indexed_buffer":
            self.buffer.copy_(self.data.ids[step])  # refilled in place: same tensor every step
            return self.buffer
        return self.data.ids[step]

    def measure(self, x: torch.Tensor, step: int) -> dict[cooper.Constraint, cooper.ConstraintState]:
        rows = self.data.ids[step]
        violation = self.data.C[rows] @ x - self.data.e[rows]
        strict = (violation + self.data.delta[rows]).detach() if self.case.strict == "present" else None
        state = cooper.ConstraintState(
            violation=violation, constraint_features=self.features(step), strict_violation=strict
        )
        return {self.c: state}

    def compute_cmp_state(self, x: torch.Tensor, step: int) -> cooper.CMPState:
        loss = 0.5 * (self.data.A @ x - self.data.b).pow(2).sum()
        state_class = ModifiedPrimalState if self.case.primal_store == "modified" else cooper.CMPState
        return state_class(loss=loss, observed_constraints=self.measure(x, step), misc={"x": x})

    def measure_violations(self, x: torch.Tensor, step: int) -> cooper.CMPState:
        return cooper.CMPState(observed_constraints=self.measure(x, step))


class ProblemWithViolations(OracleProblem):
    def compute_violations(self, x: torch.Tensor, step: int) -> cooper.CMPState:
        return self.measure_violations(x, step)


class DataWritingAscent(torch.optim.Optimizer):
    """A hand-written stateless ascent that writes through ``p.data`` in place."""

    def __init__(self, params: Any, lr: float) -> None:
        super().__init__(params, {"lr": lr, "maximize": True})

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.data.add_(p.grad.to_dense(), alpha=group["lr"])


def dual_optimizer(name: str, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=DUAL_LR, maximize=True)
    if name == "sgd_momentum":
        return torch.optim.SGD(params, lr=DUAL_LR, momentum=MOMENTUM, maximize=True)
    if name == "adam":
        return torch.optim.Adam(params, lr=DUAL_LR, betas=BETAS, eps=EPS, maximize=True)
    if name.startswith("nupi"):
        init = cooper.optim.nuPIInitType.ZEROS if name == "nupi_zeros" else cooper.optim.nuPIInitType.SGD
        return cooper.optim.nuPI(params, lr=DUAL_LR, init_type=init, maximize=True, **NUPI)
    if name == "extra_sgd":
        return cooper.optim.ExtraSGD(params, lr=DUAL_LR, maximize=True)
    if name == "extra_adam":
        return cooper.optim.ExtraAdam(params, lr=DUAL_LR, betas=BETAS, eps=EPS, maximize=True)
    assert name == "data_writer"
    return DataWritingAscent(params, lr=DUAL_LR)


SCHEMES = {
    "simultaneous": cooper.optim.SimultaneousOptimizer,
    "alt_primal_dual": cooper.optim.AlternatingPrimalDualOptimizer,
    "alt_primal_dual_class_violations": cooper.optim.AlternatingPrimalDualOptimizer,
    "alt_primal_dual_instance_violations": cooper.optim.AlternatingPrimalDualOptimizer,
    "alt_dual_primal": cooper.optim.AlternatingDualPrimalOptimizer,
    "extrapolation": cooper.optim.ExtrapolationConstrainedOptimizer,
}


def library_run(case: Case, data: Data, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Run the case through the public API on ``device``; return every parameter, multiplier,
    coefficient and state entry (on the CPU)."""
    return {key: value.cpu() for key, value in library_run_on(case, data.to(device)).items()}


def library_run_on(case: Case, data: Data) -> dict[str, torch.Tensor]:
    """:func:`library_run` on the device of ``data``."""
    problem_class = (
        ProblemWithViolations if case.scheme == "alt_primal_dual_class_violations" else OracleProblem
    )
    problem = problem_class(case, data)
    x = torch.nn.Parameter(data.x0.clone())
    if case.scheme == "unconstrained":
        optimizer: cooper.optim.CooperOptimizer = cooper.optim.UnconstrainedOptimizer(
            problem, torch.optim.SGD([x], lr=PRIMAL_LR)
        )
        dual = None
    else:
        primal = (
            cooper.optim.ExtraSGD([x], lr=PRIMAL_LR)
            if case.scheme == "extrapolation"
            else torch.optim.SGD([x], lr=PRIMAL_LR)
        )
        dual = dual_optimizer(case.dual_optimizer, list(problem.dual_parameters()))
        updater = (
            cooper.penalty_coefficients.MultiplicativePenaltyCoefficientUpdater(
                growth_factor=GROWTH, violation_tolerance=TOLERANCE
            )
            if case.penalty_updater == "on"
            else None
        )
        optimizer = SCHEMES[case.scheme](problem, primal, dual, penalty_coefficient_updater=updater)
    for step in range(NUM_STEPS):
        kwargs = {"x": x, "step": step}
        if case.scheme.startswith("alt_primal_dual"):
            optimizer.roll(kwargs, kwargs)  # type: ignore[call-arg]
        else:
            optimizer.roll(kwargs)
    result = {"x": x.detach().clone()}
    multiplier = problem.c.multiplier
    if multiplier is not None:
        (weight,) = list(multiplier.parameters())
        result["multiplier"] = weight.detach().reshape(-1).clone()
        for key, value in (dual.state.get(weight, {}) if dual is not None else {}).items():
            if key == "observed_rows":  # nuPI's per-row "initialised" flags
                result["state.initialised"] = value.clone()
            elif isinstance(value, torch.Tensor):
                result[f"state.{key}"] = (
                    value.to_dense().reshape(-1).clone() if value.dim() else value.clone()
                )
            elif isinstance(value, (int, float)):  # e.g. ExtraAdam's step count
                result[f"state.{key}"] = torch.tensor(float(value))
        nupi_state = dual.state.get(weight, {}) if dual is not None else {}
        if case.dual_optimizer == "nupi_sgd" and "xi" in nupi_state and "observed_rows" not in nupi_state:
            result["state.initialised"] = torch.ones(
                weight.shape[0], dtype=torch.bool, device=weight.device
            )  # a dense step saw all
    if problem.c.penalty_coefficient is not None:
        result["penalty"] = problem.c.penalty_coefficient.value.clone()
    return result


# =====================================================================================================
# The reference, from the equations
# =====================================================================================================


class ReferenceDual:
    """Dual variable(s) Λ (one per row, or the implicit model's weights) and the optimizer's state."""

    def __init__(self, case: Case, values: torch.Tensor) -> None:
        self.case, self.values = case, values.clone()
        self.state: dict[str, torch.Tensor] = {}
        self.origin: torch.Tensor | None = None
        # rows a sparse-gradient step moves (only for optimizers whose sparse step is row-local)
        self.row_local = case.sparse_grad == "on" and case.dual_optimizer in {
            "sgd",
            "nupi_zeros",
            "nupi_sgd",
            "extra_sgd",
        }

    def update(self, gradient: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The additive change of one base-method step from ``gradient`` (ascent); updates the state."""
        name = self.case.dual_optimizer
        active = torch.zeros_like(self.values, dtype=torch.bool)
        if self.row_local:
            active[rows] = True
        else:
            active[:] = True
        if name in {"sgd", "extra_sgd", "data_writer"}:
            return torch.where(active, DUAL_LR * gradient, torch.zeros_like(gradient))
        if name == "sgd_momentum":  # torch SGD, maximize: direction -G, buffer b = μ b + d
            direction = -gradient
            buffer = self.state.get("momentum_buffer")
            self.state["momentum_buffer"] = (
                direction.clone() if buffer is None else MOMENTUM * buffer + direction
            )
            return -DUAL_LR * self.state["momentum_buffer"]
        if name in {"adam", "extra_adam"}:
            g = -gradient
            if "step" not in self.state:
                self.state.update(
                    step=torch.tensor(0.0), exp_avg=torch.zeros_like(g), exp_avg_sq=torch.zeros_like(g)
                )
            self.state["step"] = self.state["step"] + 1
            t = self.state["step"].item()
            self.state["exp_avg"] = BETAS[0] * self.state["exp_avg"] + (1 - BETAS[0]) * g
            self.state["exp_avg_sq"] = BETAS[1] * self.state["exp_avg_sq"] + (1 - BETAS[1]) * g * g
            denominator = self.state["exp_avg_sq"].sqrt() / math.sqrt(1 - BETAS[1] ** t) + EPS
            return -(DUAL_LR / (1 - BETAS[0] ** t)) * self.state["exp_avg"] / denominator
        assert name in {"nupi_zeros", "nupi_sgd"}  # ξ = ν ξ₋ + (1-ν) e, d = Ki e + Kp (ξ - ξ₋)
        error = gradient
        if "xi" not in self.state:
            self.state["xi"] = torch.zeros_like(error)
            self.state["initialised"] = torch.zeros_like(error, dtype=torch.bool)
        previous = self.state["xi"]
        if name == "nupi_sgd":
            previous = torch.where(self.state["initialised"], previous, error)
        xi = NUPI["ema_nu"] * previous + (1 - NUPI["ema_nu"]) * error
        direction = NUPI["Ki"] * error + NUPI["Kp"] * (xi - previous)
        self.state["xi"] = torch.where(active, xi, self.state["xi"])
        self.state["initialised"] = self.state["initialised"] | active
        return torch.where(active, DUAL_LR * direction, torch.zeros_like(direction))

    def reset_rows(self, rows: torch.Tensor) -> None:
        """Dual restarts: Λ_r = 0 and the optimizer forgets rows r (its per-element statistics)."""
        self.values[rows] = 0
        for key in ("momentum_buffer", "exp_avg", "exp_avg_sq", "xi"):
            if key in self.state:
                self.state[key][rows] = 0
        if "initialised" in self.state and self.case.dual_optimizer == "nupi_sgd":
            self.state["initialised"][rows] = False


def reference_run(case: Case, data: Data) -> dict[str, torch.Tensor]:
    """The same case from the equations (see the module docstring)."""
    inequality = case.constraint == "inequality"
    implicit = case.multiplier == "implicit"
    has_multiplier = case.formulation != "quadratic_penalty"
    x = data.x0.clone()
    dual = ReferenceDual(case, data.multiplier0)
    penalty = data.penalty0.clone()
    penalty_init = data.penalty0.clone()
    dual_factor = 2.0 if case.formulation == "user_dual_override" else 1.0

    def violations(x: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = data.ids[step]
        g = data.C[rows] @ x - data.e[rows]
        strict = g + data.delta[rows] if case.strict == "present" else g
        return rows, g, strict

    def multipliers_at(rows: torch.Tensor) -> torch.Tensor:
        return data.features[rows] @ dual.values if implicit else dual.values[rows]

    def primal_gradient(x: torch.Tensor, step: int) -> torch.Tensor:
        rows, g, _ = violations(x, step)
        gradient = data.A.T @ (data.A @ x - data.b)
        lam, c = (multipliers_at(rows) if has_multiplier else None), penalty[rows]
        if case.formulation in {"lagrangian", "user_dual_override"}:
            weight = lam
        elif case.formulation == "quadratic_penalty":  # ½ c [g]₊² or ½ c h²
            weight = c * (g.clamp(min=0) if inequality else g)
        elif inequality:  # ([λ + c g]₊² - λ²) / 2c
            weight = (lam + c * g).clamp(min=0)
        else:  # λ h + ½ c h²
            weight = lam + c * g
        gradient = gradient + data.C[rows].T @ weight
        if case.primal_store == "modified":
            gradient = gradient + KAPPA
        return gradient

    def dual_gradient(x: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows, _, strict = violations(x, step)
        if implicit:
            return data.features[rows].T @ (dual_factor * strict), rows
        gradient = torch.zeros_like(dual.values).index_add_(0, rows, dual_factor * strict)
        return gradient, rows

    def restart_and_project(gradient: torch.Tensor, rows: torch.Tensor) -> None:
        if implicit or not inequality:
            return
        if case.restarts == "on":
            observed = rows.unique()
            dual.reset_rows(observed[gradient[observed] <= 0])
        dual.values = dual.values.clamp(min=0)

    def dual_step(x: torch.Tensor, step: int) -> None:
        gradient, rows = dual_gradient(x, step)
        dual.values = dual.values + dual.update(gradient, rows)
        restart_and_project(gradient, rows)

    def update_penalties(x: torch.Tensor, step: int) -> None:
        if case.penalty_updater != "on":
            return
        rows, _, strict = violations(x, step)
        measure = strict.clamp(min=0).abs() if inequality else strict.abs()
        for row in rows.unique().tolist():
            largest = measure[rows == row].max()
            if largest > TOLERANCE:
                penalty[row] = penalty[row] * GROWTH
            elif inequality and largest == 0:
                penalty[row] = penalty_init[row]

    for step in range(NUM_STEPS):
        if case.scheme == "unconstrained":
            x = x - PRIMAL_LR * primal_gradient(x, step)
        elif case.scheme == "simultaneous":
            primal = primal_gradient(x, step)
            dual_step(x, step)
            update_penalties(x, step)
            x = x - PRIMAL_LR * primal
        elif case.scheme.startswith("alt_primal_dual"):
            x = x - PRIMAL_LR * primal_gradient(x, step)
            dual_step(x, step)
            update_penalties(x, step)
        elif case.scheme == "alt_dual_primal":
            dual_step(x, step)
            update_penalties(x, step)
            x = x - PRIMAL_LR * primal_gradient(x, step)
        else:  # extrapolation: half-step from (x, Λ), then the step from (x, Λ) with the half-point gradients
            x_origin, lam_origin = x.clone(), dual.values.clone()
            primal = primal_gradient(x, step)
            gradient, rows = dual_gradient(x, step)
            x = x - PRIMAL_LR * primal
            dual.values = dual.values + dual.update(gradient, rows)
            restart_and_project(gradient, rows)
            primal = primal_gradient(x, step)
            gradient, rows = dual_gradient(x, step)
            new_x = x_origin - PRIMAL_LR * primal
            dual.values = lam_origin + dual.update(gradient, rows)
            restart_and_project(gradient, rows)
            update_penalties(x, step)
            x = new_x

    result = {"x": x}
    if has_multiplier:
        result["multiplier"] = dual.values
        for key, value in dual.state.items():
            if key == "initialised" and case.dual_optimizer != "nupi_sgd":
                continue
            result[f"state.{key}"] = value
    if case.formulation in {"quadratic_penalty", "augmented_lagrangian"}:
        result["penalty"] = penalty
    return result
