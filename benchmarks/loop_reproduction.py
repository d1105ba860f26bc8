"""Reproduce every committed problem result through a given checkout of the code, and compare two checkouts.

``run`` trains each committed configuration (the README demo; sparsity MLP and LeNet-5, model-wise, targets
0.1 and 0.5, seeds 0-2; fairness DP and EO with the logistic model and DP with the MLP; Neyman-Pearson at
alpha = 0.05; feasible learning at epsilon = 0.1; l1 at target 0.1 and the iris path, three methods) by
its command line, with the checkout's ``problems`` package first on ``PYTHONPATH``, and keeps each run's
``metrics.json``. ``compare`` puts two such result folders side by side: the headline metrics of every
run, whether they are identical, and for the sparsity runs the paired old - new differences (mean +- s.e.).

    python benchmarks/loop_reproduction.py run --code OLD_CHECKOUT --out /tmp/repro/old
    python benchmarks/loop_reproduction.py run --code . --out /tmp/repro/new
    python benchmarks/loop_reproduction.py compare /tmp/repro/old /tmp/repro/new --write
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "loop_reproduction.md"

SPARSITY_KEYS = ("test_time_density", "expected_density", "test_accuracy", "train_accuracy")
RUNS: list[tuple[str, list[str], tuple[str, ...]]] = [
    (
        "readme-demo",
        ["sparsity", "train", "--model", "mlp", "--target-density", "0.3"],
        SPARSITY_KEYS,
    ),
    *[
        (
            f"sparsity-{model}-{target}-s{seed}",
            ["sparsity", "train", "--model", model, "--target-density", target, "--seed", str(seed)],
            SPARSITY_KEYS,
        )
        for model in ("mlp", "lenet")
        for target in ("0.1", "0.5")
        for seed in (0, 1, 2)
    ],
    *[
        (
            f"fairness-{model}-{key}",
            ["fairness", "train", "--model", model, "--constraint", constraint, "--threads", "1"],
            ("test_accuracy", f"test_{key}_difference", f"test_{key}_max_deviation", "returned"),
        )
        for model, constraint, key in (
            ("logistic", "demographic-parity", "dp"),
            ("logistic", "equalized-odds", "eo"),
            ("mlp", "demographic-parity", "dp"),
        )
    ],
    (
        "neyman-pearson-0.05",
        ["rates", "neyman-pearson", "--alpha", "0.05", "--threads", "1"],
        ("train_false_positive_rate", "test_false_positive_rate", "test_false_negative_rate", "returned"),
    ),
    (
        "feasible-0.1",
        ["feasible", "train", "--epsilon", "0.1", "--threads", "1"],
        ("train_fraction_feasible", "train_max_loss", "test_accuracy", "multiplier_fraction_positive"),
    ),
    (
        "l1-target-0.1",
        ["l1", "target", "--target-density", "0.1", "--method", "constrained"],
        ("density", "test_accuracy", "gradient_evaluations"),
    ),
    *[
        (
            f"l1-path-iris-{method}",
            ["l1", "path", "--dataset", "iris", "--method", method],
            ("hypervolume_self_normalised", "monotone", "non_dominated_points", "gradient_evaluations"),
        )
        for method in ("continuation", "epsilon-constraint", "weighted-sum")
    ],
]


def run(code: Path, out: Path, only: list[str] | None) -> None:
    """Train every run with ``code``'s ``problems`` package; write ``out/NAME/metrics.json``."""
    env = {**os.environ, "PYTHONPATH": str(code.resolve())}
    for name, argv, _ in RUNS:
        if only and not any(part in name for part in only):
            continue
        directory = out / name
        if (directory / "metrics.json").is_file():
            continue
        started = time.perf_counter()
        command = [sys.executable, "-m", f"problems.{argv[0]}", *argv[1:], "--out", str(directory)]
        completed = subprocess.run(command, env=env, capture_output=True, text=True, cwd=code)
        status = "ok" if completed.returncode == 0 else f"FAILED ({completed.returncode})"
        print(f"{name}: {status} in {time.perf_counter() - started:.0f} s", flush=True)
        if completed.returncode != 0:
            print(completed.stderr[-2000:], file=sys.stderr)


def load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / name / "metrics.json"
    if not path.is_file():
        return None
    metrics: dict[str, Any] = json.loads(path.read_text())
    return metrics


def shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def compare(old: Path, new: Path) -> str:
    lines = [
        "# Every committed problem result, through the old trainers and through the shared loop",
        "",
        "Each run's headline metrics from `metrics.json`, old code (the per-problem training loops) against "
        "new code (every problem on `problems/scaffold/loop.py`), same machine, same commands "
        "(`benchmarks/loop_reproduction.py`). Wall times are not compared (the machine was shared).",
        "",
        "| run | metric | old | new | identical |",
        "|---|---|---|---|---|",
    ]
    identical_runs = 0
    paired: dict[str, list[float]] = {}
    for name, _, keys in RUNS:
        before, after = load(old, name), load(new, name)
        if before is None or after is None:
            lines.append(
                f"| {name} | - | {'missing' if before is None else 'ok'} | "
                f"{'missing' if after is None else 'ok'} | - |"
            )
            continue
        same_run = True
        for key in keys:
            same = before.get(key) == after.get(key)
            same_run &= same
            lines.append(
                f"| {name} | {key} | {shown(before.get(key))} | {shown(after.get(key))} | {'yes' if same else 'no'} |"
            )
            if name.startswith("sparsity-") and isinstance(before.get(key), float):
                group = f"{name.rsplit('-s', 1)[0]} {key}"
                paired.setdefault(group, []).append(float(before[key]) - float(after[key]))
        identical_runs += same_run
    lines += ["", f"runs with identical headline metrics: {identical_runs} of {len(RUNS)}", ""]
    lines += ["| sparsity setting, metric | old - new per seed | mean ± s.e. |", "|---|---|---|"]
    for group, differences in paired.items():
        mean = statistics.fmean(differences)
        error = statistics.stdev(differences) / math.sqrt(len(differences)) if len(differences) > 1 else 0.0
        per_seed = ", ".join(f"{d:+.4f}" for d in differences)
        lines.append(f"| {group} | {per_seed} | {mean:+.4f} ± {error:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="train every committed configuration with one checkout")
    run_parser.add_argument(
        "--code", type=Path, required=True, help="checkout whose problems/ package to use"
    )
    run_parser.add_argument("--out", type=Path, required=True, help="folder of the runs")
    run_parser.add_argument("--only", nargs="*", help="run only the names containing one of these")
    compare_parser = commands.add_parser("compare", help="old and new side by side")
    compare_parser.add_argument("old", type=Path)
    compare_parser.add_argument("new", type=Path)
    compare_parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    arguments = parser.parse_args()
    if arguments.command == "run":
        run(arguments.code, arguments.out, arguments.only)
        return 0
    table = compare(arguments.old, arguments.new)
    print(table)
    if arguments.write:
        RESULTS.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
