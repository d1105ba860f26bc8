"""A deterministic small constrained problem for the exact-resume tests (also run as a script)."""

from __future__ import annotations

import sys
from typing import Any

import torch

import cooper_like as cooper

SCHEMES = ("simultaneous", "alternating_primal_dual", "alternating_dual_primal", "extrapolation")
UPDATERS = ("sgd", "nupi", "adam")
NUM_SAMPLES = 64


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The data of one step, a function of the step index only (so that a resumed run sees the same)."""
    generator = torch.Generator().manual_seed(1000 + step)
    ids = torch.randperm(NUM_SAMPLES, generator=generator)[:16]
    inputs = torch.randn(16, 5, generator=generator)
    targets = torch.randint(0, 3, (16,), generator=generator)
    return inputs, targets, ids


class Problem(cooper.ConstrainedMinimizationProblem):
    """Cross-entropy s.t. mean squared logit <= 0.5, each per-sample loss <= 1.2 and an AL norm constraint."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY, multiplier=cooper.multipliers.DenseMultiplier(num_constraints=1)
        )
        self.per_sample = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY,
            multiplier=cooper.multipliers.IndexedMultiplier(num_constraints=NUM_SAMPLES),
        )
        self.norm = cooper.Constraint(
            cooper.ConstraintType.EQUALITY,
            formulation_type=cooper.formulations.AugmentedLagrangian,
            multiplier=cooper.multipliers.DenseMultiplier(num_constraints=1),
            penalty_coefficient=cooper.penalty_coefficients.DensePenaltyCoefficient(torch.tensor(0.5)),
        )

    def compute_cmp_state(self, model: torch.nn.Module, step: int) -> cooper.CMPState:
        inputs, targets, ids = batch(step)
        logits = model(inputs)
        losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        norm = sum(p.pow(2).sum() for p in model.parameters())
        assert isinstance(norm, torch.Tensor)
        observed = {
            self.logits: cooper.ConstraintState(logits.pow(2).mean() - 0.5),
            self.per_sample: cooper.ConstraintState(losses - 1.2, constraint_features=ids),
            self.norm: cooper.ConstraintState(norm - 2.0),
        }
        return cooper.CMPState(loss=losses.mean(), observed_constraints=observed)


def build(scheme: str, updater: str) -> tuple[torch.nn.Module, Problem, Any]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    problem = Problem()
    dense = [problem.logits.multiplier.weight, problem.norm.multiplier.weight]
    indexed = [problem.per_sample.multiplier.weight]
    if scheme == "extrapolation":
        primal: torch.optim.Optimizer = cooper.optim.ExtraAdam(model.parameters(), lr=1e-2)
        dual_cls = cooper.optim.ExtraSGD if updater != "adam" else cooper.optim.ExtraAdam
        duals = [
            dual_cls(dense, lr=0.05, maximize=True),
            cooper.optim.ExtraSGD(indexed, lr=0.05, maximize=True),
        ]
    else:
        primal = torch.optim.Adam(model.parameters(), lr=1e-2)
        if updater == "sgd":
            duals = [torch.optim.SGD(dense + indexed, lr=0.05, maximize=True)]
        elif updater == "nupi":
            duals = [cooper.optim.nuPI(dense + indexed, lr=0.05, Kp=2.0, Ki=1.0, ema_nu=0.3, maximize=True)]
        else:
            duals = [
                torch.optim.Adam(dense, lr=0.05, maximize=True),
                torch.optim.SGD(indexed, lr=0.05, maximize=True),
            ]
    optimizer_cls = {
        "simultaneous": cooper.optim.SimultaneousOptimizer,
        "alternating_primal_dual": cooper.optim.AlternatingPrimalDualOptimizer,
        "alternating_dual_primal": cooper.optim.AlternatingDualPrimalOptimizer,
        "extrapolation": cooper.optim.ExtrapolationConstrainedOptimizer,
    }[scheme]
    optimizer = optimizer_cls(cmp=problem, primal_optimizers=primal, dual_optimizers=duals)
    return model, problem, optimizer


def run(scheme: str, updater: str, first_step: int, last_step: int, checkpoint: dict | None = None) -> dict:
    """Run steps [first_step, last_step), optionally from a checkpoint; return the final checkpoint."""
    model, problem, optimizer = build(scheme, updater)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        problem.load_state_dict(checkpoint["cmp"])
        optimizer.load_state_dict(checkpoint["optimizer"])
    for step in range(first_step, last_step):
        optimizer.roll(compute_cmp_state_kwargs={"model": model, "step": step})
    return {"model": model.state_dict(), "cmp": problem.state_dict(), "optimizer": optimizer.state_dict()}


def combinations() -> list[tuple[str, str]]:
    return [(s, u) for s in SCHEMES for u in UPDATERS if not (s == "extrapolation" and u == "nupi")]


if __name__ == "__main__":
    # usage: resume_case.py CHECKPOINTS_IN RESULTS_OUT FIRST LAST
    torch.set_num_threads(1)
    source, target, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    saved = torch.load(source, weights_only=True)
    results = {f"{s}/{u}": run(s, u, first, last, saved[f"{s}/{u}"]) for s, u in combinations()}
    torch.save(results, target)
