"""The l1 regularization path three ways, measured in one run: continuation vs epsilon-constraint vs weighted-sum.

Every method traces ``--points`` points of the front (l1 norm of the weights, mean training
cross-entropy) from the same initial model, with the defaults of ``problems.l1.config.PathConfig``
for the data set. Hypervolumes use the issue's normalisation: both objectives scaled to [0, 1] by the
extremes of the union of the three fronts, reference point (1.1, 1.1). The epsilon-constraint sweep is
also run with more updates per point (``--extra-steps``) to show its cost/quality trade-off; those
extra runs are normalised on the same extremes (they do not enter the union).

    python benchmarks/l1_path.py [--dataset iris] [--points 30] [--extra-steps 10 20] [--out]

``--out`` writes ``benchmarks/results/l1_path_<dataset>.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, environment_lines, markdown_table, write_atomic  # noqa: E402

from problems.l1.config import PathConfig  # noqa: E402
from problems.l1.data import load_split  # noqa: E402
from problems.l1.front import hypervolume_2d, is_monotone, non_dominated_mask  # noqa: E402
from problems.l1.path import PathResult, run_path  # noqa: E402

METHODS = ("continuation", "epsilon-constraint", "weighted-sum")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=["iris", "mnist5k"], default="iris")
    parser.add_argument("--points", type=int, default=30)
    parser.add_argument("--extra-steps", type=int, nargs="*", default=[10, 20])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", action="store_true")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    data = load_split(arguments.dataset)
    results: dict[str, PathResult] = {}
    configs: dict[str, PathConfig] = {}
    for method in METHODS:
        config = PathConfig(
            dataset=arguments.dataset, method=method, points=arguments.points, seed=arguments.seed
        )
        configs[method] = config
        results[method] = run_path(config, data)
        print(method, results[method].budget.as_dict(), flush=True)
    for steps in arguments.extra_steps:
        name = f"epsilon-constraint, {steps} steps/point"
        config = PathConfig(
            dataset=arguments.dataset,
            method="epsilon-constraint",
            points=arguments.points,
            seed=arguments.seed,
            steps_per_point=steps,
        )
        configs[name] = config
        results[name] = run_path(config, data)
        print(name, results[name].budget.as_dict(), flush=True)

    union = np.concatenate([np.asarray(results[m].front()) for m in METHODS])
    low, high = union.min(axis=0), union.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    reference_grads = results["continuation"].budget.gradient_evaluations
    rows = []
    hypervolumes = {}
    for name, result in results.items():
        front = np.asarray(result.front())
        hv = hypervolume_2d((front - low) / span, (1.1, 1.1))
        hypervolumes[name] = hv
        grads = result.budget.gradient_evaluations
        rows.append(
            [
                name,
                str(len(front)),
                f"{hv:.4f}",
                f"{grads:,}",
                f"{grads / reference_grads:.2f}",
                f"{result.budget.loss_evaluations:,}",
                str(result.budget.runs),
                f"{result.budget.wall_time():.1f}",
                "yes" if is_monotone(front) else "no",
                f"{int(non_dominated_mask(front).sum())}/{len(front)}",
                f"{front[:, 0].max():.2f}",
                f"{front[:, 1].min():.4f}",
            ]
        )
    header = [
        "method",
        "points",
        "hypervolume",
        "gradient evals",
        "grads / continuation",
        "line-search losses",
        "runs",
        "wall (s)",
        "monotone",
        "non-dominated",
        "max ‖θ‖₁",
        "min loss",
    ]
    eps, cont = "epsilon-constraint", "continuation"
    met = hypervolumes[eps] >= hypervolumes[cont] and (
        results[eps].budget.gradient_evaluations <= 0.5 * results[cont].budget.gradient_evaluations
    )
    verdict = (
        f"target (epsilon-constraint HV >= continuation HV with <= 1/2 of its gradient evaluations): "
        f"{'MET' if met else 'NOT met'} -- HV {hypervolumes[eps]:.4f} vs {hypervolumes[cont]:.4f}, "
        f"gradient evaluations {results[eps].budget.gradient_evaluations:,} vs "
        f"{results[cont].budget.gradient_evaluations:,}"
    )
    defaults = configs[cont]
    notes = [
        f"data: {arguments.dataset}; model: {'MLP 784-20-20-10' if arguments.dataset == 'mnist5k' else 'MLP 4-8-3'}; "
        f"start: default init x {defaults.init_scale}; l1 grid up to {defaults.l1_max}",
        f"continuation: MOPG step t = lr = {defaults.lr}, Armijo line search (full batch), at most "
        f"{defaults.initial_steps} initial iterations, predictor = loss-gradient step to the next l1 value "
        f"(capped at {defaults.max_predictor_step}), corrector = {defaults.corrector_steps} MOPG iterations",
        f"epsilon-constraint: {configs[eps].scheme} updates, dual SGD lr {configs[eps].dual_lr}, "
        f"{configs[eps].steps_per_point} steps per point, weights and multiplier warm-started"
        + (
            ", the weights by a secant predictor (along the last two points up to the new bound, no gradient)"
            if configs[eps].secant_predictor
            else ""
        ),
        f"weighted-sum: {configs['weighted-sum'].epochs} epochs per point from the same start, lambda geometric "
        f"from max|grad| at the default init down to {configs['weighted-sum'].lambda_ratio} x it",
        "hypervolume: (l1, loss) normalised by the extremes of the union of the three main fronts, reference (1.1, 1.1)",
        "gradient evaluations: per-example gradients; line-search losses: per-example forward passes",
    ]
    text = "\n".join(
        [
            f"# l1 regularization path on {arguments.dataset}: three methods in one run",
            "",
            markdown_table(header, rows),
            "",
            verdict,
            "",
            *environment_lines(notes),
            "",
        ]
    )
    print(text)
    if arguments.out:
        write_atomic(RESULTS_DIR / f"l1_path_{arguments.dataset}.md", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
