"""Feasible learning (one constraint and one multiplier per example): feasibility reached, and step cost vs n.

What is measured
    1. Step time vs the number of examples n. ``problems.feasible.FeasibleLearning`` on the synthetic
       teacher-labelled set (20 features, 4 classes) with n = 1e3 and n = 1e6 examples (``--sizes``),
       an MLP 20-64-4, batches of 256 examples drawn uniformly from [0, n) (pre-drawn, cycled). A timed
       step is one ``SimultaneousOptimizer.roll()``: gather of the batch, forward, backward, Adam step
       on the model, dual step on the observed rows of the ``IndexedMultiplier`` and its projection.
       Dual updaters: gradient ascent (``torch.optim.SGD``) and ``cooper_like.optim.nuPI``, both with
       sparse gradients. The sizes are timed round-robin (``_common.run_interleaved``: blocks of
       ``--steps-per-block`` steps, order drawn at random per repeat, one torch thread); the ratio is the median
       over repeats of time(n) / time(1e3) measured in the same round.
    2. Feasibility reached. ``python -m problems.feasible train`` defaults on MNIST-5k (4,000 training
       digits, MLP 784-256-10, cross-entropy_i <= 0.1 for every example, 30 epochs) for ``--seeds``:
       fraction of training examples meeting their constraint, test accuracy, wall time; and one epoch
       on the synthetic set with 1e6 examples (the fraction after one pass, and the in-run median step
       time).

Target (issue 4)
    per-step time at 1e6 examples / at 1e3 examples <= 1.2; report the fraction of training examples
    meeting their constraint.

Command
    python benchmarks/feasible_scale.py [--quick] [--repeats 15] [--out [PATH]]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from _common import RESULTS_DIR, environment_lines, markdown_table, run_interleaved, text_table, write_atomic

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from problems.feasible.config import FeasibleConfig  # noqa: E402
from problems.feasible.data import synthetic_classification  # noqa: E402
from problems.feasible.train import build_feasible, train_feasible  # noqa: E402

TARGET_RATIO = 1.2
REFERENCE_N = 10**3
BATCH = 256
NUM_BATCHES = 64


def make_stepper(n: int, dual: str, seed: int) -> Callable[[], None]:
    """One roll() per call on a FeasibleLearning problem with n examples (batches pre-drawn, cycled)."""
    data = synthetic_classification(n, num_test=10, seed=seed)
    config = FeasibleConfig(dataset="synthetic", hidden=64, dual_optimizer=dual, epsilon=0.3)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    _, optimizer = build_feasible(config, data)
    generator = torch.Generator().manual_seed(seed + n)
    batches = [torch.randint(0, n, (BATCH,), generator=generator) for _ in range(NUM_BATCHES)]
    cycle = itertools.cycle(batches)
    x, y = data.x_train, data.y_train

    def step() -> None:
        batch = next(cycle)
        optimizer.roll({"inputs": x[batch], "labels": y[batch], "indices": batch})

    for _ in range(10):  # warm-up
        step()
    return step


def timing_rows(args: argparse.Namespace) -> tuple[list[list[str]], list[list[str]]]:
    rows, verdicts = [], []
    for dual in ("sgd", "nupi"):
        steps = {f"n={n:.0e}": make_stepper(n, dual, 0) for n in sorted({REFERENCE_N, *args.sizes})}
        times = run_interleaved(steps, args.repeats, args.steps_per_block)
        reference = times[f"n={REFERENCE_N:.0e}"]
        for name, values in times.items():
            ratios = [value / ref for value, ref in zip(values, reference)]
            rows.append(
                [
                    dual,
                    name,
                    f"{statistics.median(values):.0f}",
                    f"{statistics.median(ratios):.2f}",
                    f"[{min(ratios):.2f}, {max(ratios):.2f}]",
                ]
            )
        largest = f"n={max(args.sizes):.0e}"
        ratio = statistics.median(value / ref for value, ref in zip(times[largest], reference))
        verdicts.append(
            [
                f"{dual}: step time {largest} / n=1e+03 <= {TARGET_RATIO}",
                f"{ratio:.2f}",
                "met" if ratio <= TARGET_RATIO else "missed",
            ]
        )
    return rows, verdicts


def feasibility_rows(args: argparse.Namespace) -> list[list[str]]:
    scratch = Path(tempfile.mkdtemp(prefix="feasible_bench_"))
    rows = []
    epochs = 5 if args.quick else 30
    for seed in args.seeds:
        print(f"MNIST-5k seed {seed} ...", flush=True)
        metrics = train_feasible(FeasibleConfig(seed=seed, epochs=epochs, out=scratch / f"mnist-{seed}"))
        rows.append(_feasibility_row(f"MNIST-5k, {epochs} epochs", seed, metrics))
    size = 10**5 if args.quick else 10**6
    print(f"synthetic n={size:.0e}, 1 epoch ...", flush=True)
    config = FeasibleConfig(
        dataset="synthetic",
        num_examples=size,
        epochs=1,
        batch_size=BATCH,
        hidden=64,
        epsilon=0.3,
        out=scratch / "synthetic",
    )
    metrics = train_feasible(config)
    rows.append(_feasibility_row(f"synthetic n={size:.0e}, 1 epoch, eps=0.3", 0, metrics))
    return rows


def _feasibility_row(name: str, seed: int, metrics: dict) -> list[str]:
    return [
        name,
        str(seed),
        f"{metrics['epsilon']}",
        f"{metrics['num_constraints']}",
        f"{metrics['train_fraction_feasible']:.4f}",
        f"{metrics['train_max_loss']:.3f}",
        f"{metrics['test_accuracy']:.4f}",
        f"{metrics['multiplier_fraction_positive']:.3f}",
        f"{metrics['step_time_median_us']:.0f}",
        f"{metrics['wall_time_s']:.1f}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**6])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps-per-block", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer repeats, epochs, examples")
    parser.add_argument(
        "--out", nargs="?", const="", default=None, help="write the markdown table (default path)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.steps_per_block, args.seeds = 3, 5, [0]
    torch.set_num_threads(1)
    timing, verdicts = timing_rows(args)
    timing_header = ["dual", "examples", "us/step", "ratio vs 1e3", "ratio range"]
    print(text_table(timing_header, timing))
    feasibility = feasibility_rows(args)
    feasibility_header = [
        "run",
        "seed",
        "epsilon",
        "constraints",
        "fraction feasible",
        "max loss",
        "test acc",
        "multipliers > 0",
        "us/step",
        "wall s",
    ]
    print(text_table(feasibility_header, feasibility))
    print(text_table(["target", "measured", "verdict"], verdicts))
    lines = [
        "# Feasible learning: per-example constraints, step time vs number of examples",
        "",
        markdown_table(timing_header, timing),
        "",
        markdown_table(["target", "measured", "verdict"], verdicts),
        "",
        markdown_table(feasibility_header, feasibility),
        "",
        f"Step time: one roll() (batch {BATCH}, MLP 20-64-4, Adam + dual SGD/nuPI with sparse multiplier gradients), "
        f"median over {args.repeats} repeats of {args.steps_per_block} steps, sizes interleaved; ratio = median of "
        "per-repeat time(n)/time(1e3). Fraction feasible: training examples with cross-entropy <= epsilon after "
        "training (final model).",
        "",
        *environment_lines(["torch.set_num_threads(1)"]),
    ]
    text = "\n".join(lines) + "\n"
    if args.out is not None:
        path = Path(args.out) if args.out else RESULTS_DIR / "feasible_scale.md"
        write_atomic(path, text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
