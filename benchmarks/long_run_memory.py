"""Long-run stability: memory stays flat over 10^5 constrained steps (no state growth, no graph kept alive).

A small problem exercises every kind of state at once: a logistic model trained on a fixed data set
under a batch-mean rate constraint (``DenseMultiplier``), one constraint per training example
(``IndexedMultiplier``, sparse gradients, a few rows observed per step, nuPI with its per-row state) and
an augmented-Lagrangian norm constraint whose penalty coefficient grows (``DensePenaltyCoefficient``
and its updater), with Adam on the model and the default NaN/Inf guard. Every ``--every`` steps the
script samples:

* the resident set size (``/proc/self/statm``, Linux),
* the number of live ``torch.Tensor`` objects (``gc.get_objects()``),
* the bytes held by the optimizer states, the multipliers and the penalty coefficients,
* whether the autograd graph of the step before is still alive (a weak reference to its loss).

It then compares the last sample with the first one taken after the warm-up. Usage::

    python benchmarks/long_run_memory.py                 # 10^5 steps, prints the table
    python benchmarks/long_run_memory.py --out           # also writes results/long_run_memory.md
    python benchmarks/long_run_memory.py --steps 5000    # a quick check
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import warnings
import weakref
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common

import cooper_like as cooper

NUM_SAMPLES, DIM, BATCH = 4096, 16, 32


class LongRunProblem(cooper.ConstrainedMinimizationProblem):
    """Logistic regression s.t. a rate, per-sample losses and a weight norm (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(NUM_SAMPLES, DIM, generator=generator)
        self.labels = (torch.rand(NUM_SAMPLES, generator=generator) < 0.5).float()
        self.rate = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY, multiplier=cooper.multipliers.DenseMultiplier(1)
        )
        self.per_sample = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY, multiplier=cooper.multipliers.IndexedMultiplier(NUM_SAMPLES)
        )
        self.norm = cooper.Constraint(
            cooper.ConstraintType.INEQUALITY,
            formulation_type=cooper.formulations.AugmentedLagrangian,
            multiplier=cooper.multipliers.DenseMultiplier(1),
            penalty_coefficient=cooper.penalty_coefficients.DensePenaltyCoefficient(torch.tensor(1.0)),
        )

    def compute_cmp_state(self, model: torch.nn.Module, ids: torch.Tensor) -> cooper.CMPState:
        logits = model(self.inputs[ids]).squeeze(-1)
        losses = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, self.labels[ids], reduction="none"
        )
        norm = sum(p.pow(2).sum() for p in model.parameters())
        assert isinstance(norm, torch.Tensor)
        observed = {
            self.rate: cooper.ConstraintState(torch.sigmoid(logits).mean() - 0.4),
            self.per_sample: cooper.ConstraintState(losses - 0.6, constraint_features=ids),
            self.norm: cooper.ConstraintState(norm - 0.5),
        }
        return cooper.CMPState(loss=losses.mean(), observed_constraints=observed)


def resident_mib() -> float:
    """Current resident set size in MiB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance() on some torch module objects warns about deprecations
        warnings.simplefilter("ignore")
        return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def tensor_bytes(tree: Any) -> int:
    """Bytes of every tensor in a nested structure (state dicts)."""
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    if isinstance(tree, dict):
        return sum(tensor_bytes(value) for value in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(tensor_bytes(value) for value in tree)
    return 0


def weight(constraint: cooper.Constraint) -> torch.nn.Parameter:
    """The parameter of an explicit multiplier."""
    multiplier = constraint.multiplier
    assert isinstance(multiplier, cooper.multipliers.ExplicitMultiplier)
    return multiplier.weight


def build() -> tuple[torch.nn.Module, LongRunProblem, cooper.optim.SimultaneousOptimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(DIM, 1)
    problem = LongRunProblem()
    dense = [weight(problem.rate), weight(problem.norm)]
    indexed = [weight(problem.per_sample)]
    optimizer = cooper.optim.SimultaneousOptimizer(
        problem,
        torch.optim.Adam(model.parameters(), lr=1e-3),
        [
            torch.optim.SGD(dense, lr=0.01, maximize=True),
            cooper.optim.nuPI(indexed, lr=0.01, Kp=0.5, maximize=True),
        ],
        penalty_coefficient_updater=cooper.penalty_coefficients.MultiplicativePenaltyCoefficientUpdater(
            growth_factor=1.00001, violation_tolerance=1e-3
        ),
    )
    return model, problem, optimizer


def run(steps: int, every: int, warmup: int) -> tuple[list[dict[str, float]], list[str]]:
    model, problem, optimizer = build()
    generator = torch.Generator().manual_seed(1)
    samples: list[dict[str, float]] = []
    previous_loss: weakref.ref[torch.Tensor] | None = None
    graphs_alive = 0
    started = time.perf_counter()
    block_start, block_steps = started, 0
    for step in range(1, steps + 1):
        ids = torch.randint(0, NUM_SAMPLES, (BATCH,), generator=generator)
        roll_out = optimizer.roll({"model": model, "ids": ids})
        assert roll_out.loss is not None
        loss_ref = weakref.ref(roll_out.loss)
        del roll_out
        if previous_loss is not None and previous_loss() is not None:
            graphs_alive += 1
        previous_loss = loss_ref
        block_steps += 1
        if step in (warmup, steps) or step % every == 0:
            now = time.perf_counter()
            state = {
                "optimizer": optimizer.state_dict(),
                "problem": problem.state_dict(),
            }
            samples.append(
                {
                    "step": step,
                    "rss_mib": resident_mib(),
                    "live_tensors": live_tensors(),
                    "state_bytes": tensor_bytes(state),
                    "us_per_step": 1e6 * (now - block_start) / block_steps,
                    "graphs_alive": graphs_alive,
                    "elapsed_s": now - started,
                }
            )
            block_start, block_steps = time.perf_counter(), 0
    multipliers = weight(problem.per_sample).detach()
    coefficient = problem.norm.penalty_coefficient
    assert coefficient is not None
    notes = [
        f"rows of the indexed multiplier ever observed: {int((multipliers != 0).sum())} / {NUM_SAMPLES}",
        f"final multipliers: rate {weight(problem.rate).item():.4f}, norm {weight(problem.norm).item():.4f}; "
        f"penalty coefficient {coefficient.value.item():.4f}",
        f"skipped steps: {optimizer.skipped_steps}",
        "the rate constraint (mean score <= 0.4) and the per-sample ones (each loss <= 0.6) pull against each "
        "other, so the rate multiplier keeps growing: values grow, memory does not",
    ]
    return samples, notes


def report(samples: list[dict[str, float]], notes: list[str], warmup: int) -> tuple[str, bool]:
    rows = [
        [
            f"{int(s['step']):,}",
            f"{s['rss_mib']:.1f}",
            f"{int(s['live_tensors'])}",
            f"{int(s['state_bytes']):,}",
            f"{s['us_per_step']:.0f}",
            f"{int(s['graphs_alive'])}",
        ]
        for s in samples
    ]
    header = ["step", "RSS MiB", "live tensors", "state bytes", "us/step (block)", "graphs alive"]
    base = next(s for s in samples if s["step"] >= warmup)
    last = samples[-1]
    rss_growth = last["rss_mib"] - base["rss_mib"]
    tensor_growth = last["live_tensors"] - base["live_tensors"]
    state_growth = last["state_bytes"] - base["state_bytes"]
    flat = rss_growth <= 4.0 and tensor_growth <= 0 and state_growth <= 0 and last["graphs_alive"] == 0
    summary = [
        f"From step {int(base['step']):,} (after warm-up) to step {int(last['step']):,}: RSS "
        f"{base['rss_mib']:.1f} -> {last['rss_mib']:.1f} MiB ({rss_growth:+.1f} MiB), live tensors "
        f"{int(base['live_tensors'])} -> {int(last['live_tensors'])} ({tensor_growth:+d}), state bytes "
        f"{int(base['state_bytes']):,} -> {int(last['state_bytes']):,} ({state_growth:+,d}); steps whose "
        f"graph outlived them: {int(last['graphs_alive'])}.",
        f"Verdict: {'FLAT' if flat else 'GROWING'} (criteria: RSS growth <= 4 MiB, no new live tensor, "
        "no state growth, no graph kept alive).",
    ]
    return "\n".join(
        [_common.markdown_table(header, rows), "", *summary, "", *[f"- {n}" for n in notes]]
    ), flat


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=10_000, help="sample every this many steps")
    parser.add_argument("--warmup", type=int, default=2_000, help="first sample compared against")
    parser.add_argument(
        "--out",
        nargs="?",
        const=str(_common.RESULTS_DIR / "long_run_memory.md"),
        default=None,
        help="write the markdown report (default path under benchmarks/results/)",
    )
    arguments = parser.parse_args(argv)
    torch.set_num_threads(1)
    every = min(arguments.every, arguments.steps)
    warmup = min(arguments.warmup, arguments.steps)
    samples, notes = run(arguments.steps, every, warmup)
    table, flat = report(samples, notes, warmup)
    print(table)
    if arguments.out:
        text = "\n".join(
            [
                "# Long-run memory: 10^5 constrained steps",
                "",
                f"{arguments.steps:,} steps of `SimultaneousOptimizer.roll()` on the problem described in "
                "`benchmarks/long_run_memory.py` (dense + indexed (nuPI) + augmented-Lagrangian constraints, "
                f"batch {BATCH}, {NUM_SAMPLES} indexed rows).",
                "",
                table,
                "",
                *_common.environment_lines(["torch.set_num_threads(1)"]),
                "",
            ]
        )
        _common.write_atomic(Path(arguments.out), text)
    return 0 if flat else 1


if __name__ == "__main__":
    raise SystemExit(main())
