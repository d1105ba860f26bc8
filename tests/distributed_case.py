"""Workers of the distributed tests: 2 gloo processes on the loopback interface, spawned by the tests.

Every worker writes what it saw to ``OUT/rank{r}.pt`` (``torch.save``); the test process compares the
ranks with each other and with a single-process reference run of the same problem.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import cooper_like as cooper
from cooper_like.distributed import global_mean, global_ratio, global_sum

NUM_SAMPLES, DIM, GLOBAL_BATCH, STEPS = 64, 5, 16, 6
SCHEMES = ("simultaneous", "alternating_primal_dual", "alternating_dual_primal", "extrapolation", "nupi")
INIT_TIMEOUT_S = 60


# ---------------------------------------------------------------------------------------------------
# Launching
# ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loopback_environment(port: int) -> dict[str, str]:
    return {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
    }


def launch(scenario: str, out: Path, world: int = 2, timeout: float = 240.0) -> list[dict[str, Any]]:
    """Run ``scenario`` on ``world`` spawned processes; return each rank's results (rank order)."""
    out.mkdir(parents=True, exist_ok=True)
    context = mp.start_processes(
        worker, args=(world, free_port(), scenario, str(out)), nprocs=world, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=max(1.0, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                raise TimeoutError(f"distributed scenario {scenario!r} did not finish in {timeout} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(world)]


def worker(rank: int, world: int, port: int, scenario: str, out: str) -> None:
    os.environ.update(loopback_environment(port))
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=INIT_TIMEOUT_S)
    )
    try:
        results = SCENARIOS[scenario](rank, world, Path(out))
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------------
# A deterministic problem (no sampling): every kind of dual measurement
# ---------------------------------------------------------------------------------------------------


def dataset() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    inputs = torch.randn(NUM_SAMPLES, DIM, generator=generator)
    labels = (torch.rand(NUM_SAMPLES, generator=generator) < 0.5).float()
    groups = (torch.rand(NUM_SAMPLES, generator=generator) < 0.4).float()
    return inputs, labels, groups


def batch_ids(step: int) -> torch.Tensor:
    """The global batch of one step (a function of the step only)."""
    return torch.randperm(NUM_SAMPLES, generator=torch.Generator().manual_seed(100 + step))[:GLOBAL_BATCH]


def shard(ids: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's contiguous share of a global batch."""
    return ids.tensor_split(world)[rank]


class Problem(cooper.ConstrainedMinimizationProblem):
    r"""Logistic regression s.t. a batch-mean rate, a group rate (a ratio), per-sample losses and a norm.

    Every primal term is a mean over the local batch (what DDP's gradient averaging expects): the
    per-sample violations enter the primal Lagrangian divided by the local batch size, while their
    strict (dual) values are the raw per-sample margins.
    """

    def __init__(self) -> None:
        super().__init__()
        self.inputs, self.labels, self.groups = dataset()
        self.rate = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY, multiplier=cooper.multipliers.DenseMultiplier(1)
        )
        self.group_rate = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY, multiplier=cooper.multipliers.DenseMultiplier(1)
        )
        self.per_sample = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY,
            multiplier=cooper.multipliers.IndexedMultiplier(NUM_SAMPLES),
        )
        self.norm = cooper.Constraint(
            cooper.ConstraintType.EQUALITY,
            formulation_type=cooper.formulations.AugmentedLagrangian,
            multiplier=cooper.multipliers.DenseMultiplier(1),
            penalty_coefficient=cooper.penalty_coefficients.DensePenaltyCoefficient(torch.tensor(0.5)),
        )

    def compute_cmp_state(self, model: nn.Module, ids: torch.Tensor) -> cooper.CMPState:
        inputs, labels, groups = self.inputs[ids], self.labels[ids], self.groups[ids]
        logits = model(inputs).squeeze(-1)
        losses = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        scores = torch.sigmoid(logits)
        count = len(ids)
        positives = ((logits > 0).float() * groups).sum()
        norm = sum(p.pow(2).sum() for p in model.parameters())
        assert isinstance(norm, torch.Tensor)
        observed = {
            self.rate: cooper.ConstraintState(scores.mean() - 0.3, num_samples=count),
            self.group_rate: cooper.ConstraintState(
                ((scores - 0.4) * groups).mean(),
                strict_violation=global_ratio(positives, groups.sum()) - 0.4,
            ),
            self.per_sample: cooper.ConstraintState(
                (losses - 0.5) / count, constraint_features=ids, strict_violation=(losses - 0.5).detach()
            ),
            self.norm: cooper.ConstraintState(norm - 1.0),
        }
        return cooper.CMPState(loss=losses.mean(), observed_constraints=observed)


def build(scheme: str, model: nn.Module, problem: Problem, distributed: bool | None) -> Any:
    dual_params = list(problem.dual_parameters())
    updater = cooper.penalty_coefficients.MultiplicativePenaltyCoefficientUpdater(1.5, 1e-3)
    kwargs: dict[str, Any] = {"distributed": distributed, "penalty_coefficient_updater": updater}
    if scheme == "extrapolation":
        return cooper.optim.ExtrapolationConstrainedOptimizer(
            cmp=problem,
            primal_optimizers=cooper.optim.ExtraSGD(model.parameters(), lr=0.2),
            dual_optimizers=cooper.optim.ExtraSGD(dual_params, lr=0.5, maximize=True),
            **kwargs,
        )
    primal = torch.optim.SGD(model.parameters(), lr=0.2)
    if scheme == "nupi":
        dual: torch.optim.Optimizer = cooper.optim.nuPI(dual_params, lr=0.5, Kp=0.3, maximize=True)
        return cooper.optim.SimultaneousOptimizer(problem, primal, dual, **kwargs)
    dual = torch.optim.SGD(dual_params, lr=0.5, maximize=True)
    cls: Any = {
        "simultaneous": cooper.optim.SimultaneousOptimizer,
        "alternating_primal_dual": cooper.optim.AlternatingPrimalDualOptimizer,
        "alternating_dual_primal": cooper.optim.AlternatingDualPrimalOptimizer,
    }[scheme]
    return cls(problem, primal, dual, **kwargs)


def weight(constraint: cooper.Constraint) -> torch.Tensor:
    """A copy of the values of an explicit multiplier."""
    multiplier = constraint.multiplier
    assert isinstance(multiplier, cooper.multipliers.ExplicitMultiplier)
    return multiplier.weight.detach().clone()


def multipliers(problem: Problem) -> dict[str, torch.Tensor]:
    values = {name: weight(constraint) for name, constraint in problem.named_constraints()}
    coefficient = problem.norm.penalty_coefficient
    assert coefficient is not None
    values["penalty/norm"] = coefficient.value.detach().clone()
    return values


def run(scheme: str, rank: int = 0, world: int = 1, distributed: bool | None = None) -> dict[str, Any]:
    """``STEPS`` steps on shards of the global batches (the whole batch when ``world == 1``)."""
    torch.manual_seed(0)
    linear = nn.Linear(DIM, 1)
    model: nn.Module = nn.parallel.DistributedDataParallel(linear) if world > 1 else linear
    problem = Problem()
    optimizer = build(scheme, model, problem, distributed)
    history = []
    for step in range(STEPS):
        optimizer.roll({"model": model, "ids": shard(batch_ids(step), rank, world)})
        history.append(multipliers(problem))
    return {"history": history, "weights": {k: v.detach().clone() for k, v in linear.state_dict().items()}}


def reference(scheme: str) -> dict[str, Any]:
    """One process, the whole global batch: what the distributed runs must reproduce."""
    return run(scheme)


# ---------------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------------


def equivalence(rank: int, world: int, out: Path) -> dict[str, Any]:
    return {scheme: run(scheme, rank, world) for scheme in SCHEMES}


def outcome(call: Callable[[], Any]) -> Any:
    """The value of ``call()``, or ``"TypeName: message"`` of what it raised."""
    try:
        return call()
    except Exception as error:  # recorded for the test process to assert on
        return f"{type(error).__name__}: {error}"


class Mismatched(cooper.ConstrainedMinimizationProblem):
    """Rank 1 measures one more constraint than rank 0."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank
        self.first = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY, multiplier=cooper.multipliers.DenseMultiplier(1)
        )
        self.second = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY, multiplier=cooper.multipliers.DenseMultiplier(1)
        )

    def compute_cmp_state(self, x: torch.Tensor, value: float = 0.5) -> cooper.CMPState:
        observed = {self.first: cooper.ConstraintState(x.sum() - value)}
        if self.rank == 1:
            observed[self.second] = cooper.ConstraintState(x.sum() - 1.0)
        return cooper.CMPState(loss=x.pow(2).sum(), observed_constraints=observed)


def small_optimizer(problem: cooper.ConstrainedMinimizationProblem, x: torch.Tensor, **kwargs: Any) -> Any:
    return cooper.optim.SimultaneousOptimizer(
        problem,
        torch.optim.SGD([x], lr=0.1),
        torch.optim.SGD(problem.dual_parameters(), lr=1.0, maximize=True),
        **kwargs,
    )


def mechanics(rank: int, world: int, out: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    # helpers
    results["global_mean"] = global_mean(torch.tensor([1.0, 2.0]) * (rank + 1), count=3 + 2 * rank)
    results["global_mean_empty"] = global_mean(
        torch.tensor(float("nan")) if rank == 1 else torch.tensor(4.0), count=0 if rank == 1 else 2
    )
    results["global_ratio"] = global_ratio(torch.tensor([1.0, 0.0]) + rank, torch.tensor([2.0, 4.0]))
    results["global_sum"] = global_sum(torch.tensor([rank + 1], dtype=torch.int64))

    # the synchronized state: dense weighted mean, indexed rows (rank 1 observes none), implicit features
    indexed = cooper.Constraint(
        cooper.ConstraintType.INEQUALITY, multiplier=cooper.multipliers.IndexedMultiplier(10)
    )
    dense = cooper.Constraint(
        cooper.ConstraintType.INEQUALITY, multiplier=cooper.multipliers.DenseMultiplier(2)
    )
    featured = cooper.Constraint(
        cooper.ConstraintType.EQUALITY, multiplier=cooper.multipliers.DenseMultiplier(3)
    )
    ids = torch.tensor([1, 7, 3]) if rank == 0 else torch.zeros(0, dtype=torch.long)
    state = cooper.CMPState(
        observed_constraints={
            dense: cooper.ConstraintState(
                torch.tensor([1.0, -1.0]) * (rank + 1), num_samples=1 if rank == 0 else 3
            ),
            indexed: cooper.ConstraintState(ids.float() / 10, constraint_features=ids),
            featured: cooper.ConstraintState(
                torch.full((2,), float(rank)).to(torch.bfloat16),
                constraint_features=torch.full((2, 2), rank + 0.25, dtype=torch.float16),
            ),
        }
    )
    synced = cooper.distributed.synchronize_dual_measurements(state)
    results["dense"] = synced.observed_constraints[dense].strict_violation
    results["indexed_values"] = synced.observed_constraints[indexed].strict_violation
    results["indexed_rows"] = synced.observed_constraints[indexed].strict_constraint_features
    results["featured_values"] = synced.observed_constraints[featured].strict_violation
    results["featured_features"] = synced.observed_constraints[featured].strict_constraint_features
    results["primal_untouched"] = synced.observed_constraints[dense].violation

    # a different set of constraints on each rank: an error on every rank, no hang
    x = torch.tensor([1.0], requires_grad=True)
    mismatched = Mismatched(rank)
    results["mismatch"] = outcome(lambda: small_optimizer(mismatched, x).roll({"x": x}))

    # NaN on rank 1 only: both ranks skip, or both raise
    problem = Mismatched(0)
    x = torch.tensor([1.0], requires_grad=True)
    skipping = small_optimizer(problem, x, non_finite="skip")
    value = float("nan") if rank == 1 else 0.5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        skipping.roll({"x": x, "value": value})
    results["skip_count"] = skipping.skipped_steps
    results["skip_warning"] = [str(w.message) for w in caught]
    results["skip_multiplier"] = weight(problem.first)
    results["skip_x"] = x.detach().clone()
    raising = small_optimizer(Mismatched(0), torch.tensor([1.0], requires_grad=True))
    results["raise"] = outcome(lambda: raising.roll({"x": x, "value": value}))

    # distributed=False: each rank moves its multiplier from its own measurement
    local = Mismatched(0)
    y = torch.tensor([1.0], requires_grad=True)
    small_optimizer(local, y, distributed=False).roll({"x": y, "value": 0.5 * rank})
    results["local_multiplier"] = weight(local.first)
    synced_problem = Mismatched(0)
    z = torch.tensor([1.0], requires_grad=True)
    small_optimizer(synced_problem, z, distributed=True).roll({"x": z, "value": 0.5 * rank})
    results["global_multiplier"] = weight(synced_problem.first)
    return results


def trainer(rank: int, world: int, out: Path) -> dict[str, Any]:
    """The sparsity trainer (gate sampling, dual restarts, layer-wise multipliers) on every rank.

    After every step the ranks compare their multipliers (an ``all_gather``) and stop at the first
    difference.
    """
    from problems.sparsity.config import SparsityConfig
    from problems.sparsity.train import Run, train

    seen: list[torch.Tensor] = []

    def on_step(run: Run, step: int) -> None:
        values = torch.cat([p.detach().flatten() for p in run.problem.dual_parameters()])
        everyone = [torch.empty_like(values) for _ in range(world)]
        dist.all_gather(everyone, values)
        if not all(torch.equal(everyone[0], other) for other in everyone):
            raise AssertionError(f"multipliers differ across ranks after step {step}: {everyone}")
        seen.append(values)

    config = SparsityConfig(
        model="tiny",
        dataset="digits",
        epochs=1,
        layerwise=True,
        target_density=[0.5],
        dual_lr=0.5,
        distributed=True,
        out=out / "trainer",
    )
    train(config, on_step=on_step)
    return {"multipliers": seen, "checked_on_every_step": len(seen) > 0}


def mechanics_and_trainer(rank: int, world: int, out: Path) -> dict[str, Any]:
    return {"mechanics": mechanics(rank, world, out), "trainer": trainer(rank, world, out)}


SCENARIOS: dict[str, Callable[[int, int, Path], dict[str, Any]]] = {
    "equivalence": equivalence,
    "mechanics": mechanics,
    "trainer": trainer,
    "mechanics_and_trainer": mechanics_and_trainer,
}
