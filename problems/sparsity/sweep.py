"""Sweeps: many runs (targets x methods x seeds), resumable, summarised as a markdown table.

Each run lives in ``OUT/runs/<name>/``; a run whose ``metrics.json`` exists is skipped, a run with a
checkpoint resumes from it, so a sweep can be stopped and restarted (or left running in the
background across sessions) without losing work. The penalized baseline is calibrated by a λ search
per target (bisection, then regula falsi; one seed, model-wise): the number of full training runs it
needs to land within ±1 point of the target is the *cost of control* that one constrained run replaces.
The other seeds then run at the λ the search settled on, so that the baseline's accuracy is a mean over
the same seeds as the other methods' (and its densities show how far a calibrated λ carries to a new seed).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from problems.scaffold.checkpoints import atomic_write_text
from problems.scaffold.resumable import has_checkpoint
from problems.sparsity.config import SparsityConfig

TOLERANCE = 0.01  # ±1 percentage point of density


@dataclass(frozen=True)
class RunSpec:
    """One training run of a sweep."""

    model: str
    target: float
    method: str
    seed: int
    layerwise: bool = False
    lmbda: float | None = None
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        parts = [
            self.model,
            "layer" if self.layerwise else "model",
            f"t{self.target:g}",
            self.method,
            f"s{self.seed}",
        ]
        if self.lmbda is not None:
            parts.append(f"l{self.lmbda:.6g}")
        parts += [f"{key}-{value}" for key, value in self.overrides]
        return "_".join(parts)

    def config(self, root: Path, epochs: int | None) -> SparsityConfig:
        out = root / "runs" / self.name
        values: dict[str, Any] = {
            "model": self.model,
            "target_density": [self.target],
            "method": self.method,
            "seed": self.seed,
            "layerwise": self.layerwise,
            "out": out,
            **dict(self.overrides),
        }
        if self.lmbda is not None:
            values["lmbda"] = self.lmbda
        if epochs is not None:
            values["epochs"] = epochs
        if has_checkpoint(out / "checkpoint.pt"):
            values["resume"] = out
        return SparsityConfig(**values)


def run_once(spec: RunSpec, root: Path, epochs: int | None) -> dict[str, Any]:
    """Train ``spec`` unless its metrics exist; return its metrics."""
    metrics_path = root / "runs" / spec.name / "metrics.json"
    if metrics_path.exists():
        return dict(json.loads(metrics_path.read_text()))
    import torch

    from problems.sparsity.train import train

    torch.set_num_threads(1)  # parallel runs must not oversubscribe the cores

    return train(spec.config(root, epochs))


def run_all(
    specs: Iterable[RunSpec], root: Path, epochs: int | None, jobs: int
) -> dict[RunSpec, dict[str, Any]]:
    specs = list(specs)
    return dict(zip(specs, map_jobs(run_once, [(spec,) for spec in specs], root, epochs, jobs)))


def map_jobs(
    function: Callable[..., Any],
    argument_tuples: list[tuple[Any, ...]],
    root: Path,
    epochs: int | None,
    jobs: int,
) -> list[Any]:
    """``[function(*args, root, epochs) for args in argument_tuples]``, over ``jobs`` processes."""
    if jobs <= 1:
        return [function(*args, root, epochs) for args in argument_tuples]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(function, *(*args, root, epochs)) for args in argument_tuples]
        return [future.result() for future in futures]


def bisect_lambda(
    model: str,
    target: float,
    root: Path,
    epochs: int | None,
    low: float = 1e-3,
    high: float = 10.0,
    max_runs: int = 10,
) -> list[tuple[float, dict[str, Any]]]:
    r"""Search λ of the penalized method until the test-time density is within ±1 point of ``target``.

    Density decreases as λ grows. Geometric bisection of ``[low, high]`` until a run on each side of
    the target is known, then regula falsi in :math:`\log\lambda` between the two closest bracketing
    runs (:func:`next_lambda`). Returns every (λ, metrics) tried, in order.
    """
    tried: list[tuple[float, dict[str, Any]]] = []
    above: tuple[float, float] | None = None  # (λ, density) of the closest run still too dense
    below: tuple[float, float] | None = None  # (λ, density) of the closest run too sparse
    for _ in range(max_runs):
        lmbda = next_lambda(low, high, above, below, target)
        metrics = run_once(RunSpec(model, target, "penalized", 0, lmbda=round(lmbda, 8)), root, epochs)
        tried.append((lmbda, metrics))
        density = metrics["test_time_density"]
        if abs(density - target) <= TOLERANCE:
            break
        if density > target:
            low, above = lmbda, (lmbda, density)
        else:
            high, below = lmbda, (lmbda, density)
    return tried


def next_lambda(
    low: float,
    high: float,
    above: tuple[float, float] | None,
    below: tuple[float, float] | None,
    target: float,
) -> float:
    r"""The next λ: :math:`\sqrt{\text{low}\cdot\text{high}}` until the target is bracketed by two runs,
    then the point where the line through them in :math:`(\log\lambda, d)` crosses the target, kept
    in the middle 80% of the bracket."""
    if above is None or below is None:
        return math.sqrt(low * high)
    (lambda_a, density_a), (lambda_b, density_b) = above, below
    fraction = (density_a - target) / (density_a - density_b)
    fraction = min(max(fraction, 0.1), 0.9)
    return math.exp(math.log(lambda_a) + fraction * (math.log(lambda_b) - math.log(lambda_a)))


def summarize(
    results: dict[RunSpec, dict[str, Any]],
    bisections: dict[tuple[str, float], list[tuple[float, dict[str, Any]]]],
) -> str:
    """Three markdown tables: control and accuracy against the baselines (with the cost of control), the
    paired accuracy differences (same seed, same data split), and both sparse methods against the dense
    network of the same seed."""
    lines = [
        "| model | constraint | target | test-time density (mean, per seed) | max abs dev (pts) | within ±1 pt | "
        "expected density | acc constrained | acc penalized (λ, runs; density per seed) | acc magnitude |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, layerwise, target in constrained_cells(results):
        runs = list(by_seed(results, model, layerwise, target, "constrained").values())
        magnitude = list(by_seed(results, model, layerwise, target, "magnitude").values())
        deviations = [worst_deviation(m, target, layerwise) for m in runs]
        densities = [m["test_time_density"] for m in runs]
        penalized = "—"
        if not layerwise and (model, target) in bisections:
            tried = bisections[(model, target)]
            lmbda = tried[-1][0]
            seeds = penalized_by_seed(results, bisections, model, target)
            landed = abs(tried[-1][1]["test_time_density"] - target) <= TOLERANCE
            seed_densities = ", ".join(f"{m['test_time_density']:.3f}" for m in seeds.values())
            penalized = (
                f"{100 * statistics.mean(m['test_accuracy'] for m in seeds.values()):.2f} "
                f"(λ={lmbda:.3g}, {len(tried)} runs{'' if landed else ', not landed'}; {seed_densities})"
            )
        magnitude_cell = (
            f"{100 * statistics.mean(m['test_accuracy'] for m in magnitude):.2f}" if magnitude else "—"
        )
        lines.append(
            f"| {model} | {'layer-wise' if layerwise else 'model-wise'} | {target:g} | "
            f"{statistics.mean(densities):.4f} ({', '.join(f'{d:.4f}' for d in densities)}) | "
            f"{100 * max(deviations):.2f} | {'yes' if max(deviations) <= TOLERANCE else 'NO'} | "
            f"{statistics.mean(m['expected_density'] for m in runs):.4f} | "
            f"{100 * statistics.mean(m['test_accuracy'] for m in runs):.2f} | {penalized} | {magnitude_cell} |"
        )
    return "\n".join(lines) + "\n\n" + paired_differences(results, bisections) + "\n" + against_dense(results)


def constrained_cells(results: dict[RunSpec, dict[str, Any]]) -> list[tuple[str, bool, float]]:
    """The (model, layer-wise, target) cells of the grid that have constrained runs, sorted."""
    return sorted({(s.model, s.layerwise, s.target) for s in results if s.method == "constrained"})


def by_seed(
    results: dict[RunSpec, dict[str, Any]], model: str, layerwise: bool, target: float, method: str
) -> dict[int, dict[str, Any]]:
    """The metrics of one cell of the grid, by seed (sorted)."""
    cell = {
        spec.seed: metrics
        for spec, metrics in results.items()
        if (spec.model, spec.layerwise, spec.target, spec.method) == (model, layerwise, target, method)
    }
    return dict(sorted(cell.items()))


def penalized_by_seed(
    results: dict[RunSpec, dict[str, Any]],
    bisections: dict[tuple[str, float], list[tuple[float, dict[str, Any]]]],
    model: str,
    target: float,
) -> dict[int, dict[str, Any]]:
    """The penalized baseline at the λ its search settled on: seed 0's last search run, and the
    other seeds' runs at that λ."""
    lmbda, last = bisections[(model, target)][-1]
    others = {
        spec.seed: metrics
        for spec, metrics in results.items()
        if (spec.model, spec.target, spec.method, spec.layerwise) == (model, target, "penalized", False)
        and spec.seed != 0
        and spec.lmbda == round(lmbda, 8)
    }
    return dict(sorted({0: last, **others}.items()))


def paired_differences(
    results: dict[RunSpec, dict[str, Any]],
    bisections: dict[tuple[str, float], list[tuple[float, dict[str, Any]]]],
) -> str:
    """Constrained minus each baseline, in accuracy points, seed by seed and on average (shared seeds only)."""
    lines = [
        "| model | constraint | target | constrained − magnitude, per seed (pts) | mean ± s.e. | "
        "constrained − penalized, per seed (pts) | mean ± s.e. |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, layerwise, target in constrained_cells(results):
        constrained = by_seed(results, model, layerwise, target, "constrained")
        baselines = [by_seed(results, model, layerwise, target, "magnitude")]
        has_penalized = not layerwise and (model, target) in bisections
        baselines.append(penalized_by_seed(results, bisections, model, target) if has_penalized else {})
        cells = []
        for baseline in baselines:
            shared = [seed for seed in constrained if seed in baseline]
            gaps = [100 * (constrained[s]["test_accuracy"] - baseline[s]["test_accuracy"]) for s in shared]
            if gaps:
                mean_gap, standard_error = mean_and_standard_error(gaps)
                cells += [", ".join(f"{g:+.1f}" for g in gaps), f"{mean_gap:+.2f} ± {standard_error:.2f}"]
            else:
                cells += ["", ""]
        lines.append(
            f"| {model} | {'layer-wise' if layerwise else 'model-wise'} | {target:g} | {' | '.join(cells)} |"
        )
    return "\n".join(lines) + "\n"


def against_dense(results: dict[RunSpec, dict[str, Any]]) -> str:
    """Both sparse methods against the dense network of the same seed, and the noise of their gap (the gap
    itself, cell by cell, is in :func:`paired_differences`).

    The dense network is magnitude pruning's before it prunes (``test_accuracy_before_finetune``: the
    dense phase does not depend on the target). For each model, the paired standard deviation s of
    constrained − magnitude, pooled over its cells (mean of the variances), gives the standard error s/√n
    of one cell's mean over n seeds: the scale below which the ordering of the two methods is noise.
    """
    lines = [
        "| model | constraint | target | seeds | dense network | constrained − dense | magnitude − dense |",
        "|---|---|---|---|---|---|---|",
    ]
    variances: dict[str, list[float]] = {}
    seed_counts: dict[str, list[int]] = {}
    dense_by_model = {
        model: dense_accuracy_by_seed(results, model) for model in {spec.model for spec in results}
    }
    for model, layerwise, target in constrained_cells(results):
        constrained = by_seed(results, model, layerwise, target, "constrained")
        magnitude = by_seed(results, model, layerwise, target, "magnitude")
        dense = dense_by_model[model]
        seeds = [seed for seed in constrained if seed in magnitude and seed in dense]
        if not seeds:
            continue
        gaps = [100 * (constrained[s]["test_accuracy"] - magnitude[s]["test_accuracy"]) for s in seeds]
        if len(gaps) > 1:
            variances.setdefault(model, []).append(statistics.variance(gaps))
            seed_counts.setdefault(model, []).append(len(gaps))
        lines.append(
            f"| {model} | {'layer-wise' if layerwise else 'model-wise'} | {target:g} | {len(seeds)} | "
            f"{100 * statistics.mean(dense[s] for s in seeds):.2f} | "
            f"{statistics.mean(100 * (constrained[s]['test_accuracy'] - dense[s]) for s in seeds):+.2f} | "
            f"{statistics.mean(100 * (magnitude[s]['test_accuracy'] - dense[s]) for s in seeds):+.2f} |"
        )
    if len(lines) == 2:  # no cell has magnitude runs with their dense accuracy
        return ""
    for model, model_variances in sorted(variances.items()):
        spread = math.sqrt(statistics.mean(model_variances))
        n = min(seed_counts[model])
        lines.append(
            f"\n{model}: paired standard deviation of constrained − magnitude {spread:.2f} points (pooled over "
            f"{len(model_variances)} cells); the mean of one cell over {n} seeds carries ±{spread / math.sqrt(n):.2f}."
        )
    return "\n".join(lines) + "\n"


def dense_accuracy_by_seed(results: dict[RunSpec, dict[str, Any]], model: str) -> dict[int, float]:
    """The dense network's test accuracy per seed: magnitude pruning's before it prunes (mean over runs)."""
    accuracies: dict[int, list[float]] = {}
    for spec, metrics in results.items():
        if spec.model == model and spec.method == "magnitude" and "test_accuracy_before_finetune" in metrics:
            accuracies.setdefault(spec.seed, []).append(metrics["test_accuracy_before_finetune"])
    return {seed: statistics.mean(values) for seed, values in sorted(accuracies.items())}


def mean_and_standard_error(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error s/√n (0 for a single value)."""
    if len(values) < 2:
        return statistics.mean(values), 0.0
    return statistics.mean(values), statistics.stdev(values) / math.sqrt(len(values))


def worst_deviation(metrics: dict[str, Any], target: float, layerwise: bool) -> float:
    """Largest |density - target| over the model (model-wise) or over every layer (layer-wise)."""
    if layerwise:
        return max(abs(value - target) for value in metrics["per_layer_density"].values())
    return abs(metrics["test_time_density"] - target)


def sweep(
    root: Path,
    models: list[str],
    targets: list[float],
    seeds: list[int],
    methods: list[str],
    layerwise: list[bool],
    epochs: int | None = None,
    jobs: int = 1,
    bisect: bool = True,
) -> str:
    """Run the grid (skipping finished runs), the λ bisections, and write ``OUT/table.md``."""
    root.mkdir(parents=True, exist_ok=True)
    specs = [
        RunSpec(model, target, method, seed, lw)
        for method in methods
        if method != "penalized"
        for model in models
        for lw in layerwise
        for target in targets
        for seed in seeds
    ]
    results = run_all(specs, root, epochs, jobs)
    bisections = {}
    if bisect and "penalized" in methods:
        keys = [(model, target) for model in models for target in targets]
        bisections = dict(zip(keys, map_jobs(bisect_lambda, keys, root, epochs, jobs)))
        calibrated = [
            RunSpec(model, target, "penalized", seed, lmbda=round(tried[-1][0], 8))
            for (model, target), tried in bisections.items()
            for seed in seeds
            if seed != 0
        ]
        results.update(run_all(calibrated, root, epochs, jobs))
    table = summarize(results, bisections)
    atomic_write_text(root / "table.md", table)
    return table


def report(root: Path) -> str:
    """The table of whatever has finished under ``root/runs`` so far (a sweep may still be running)."""
    results: dict[RunSpec, dict[str, Any]] = {}
    penalized: dict[tuple[str, float], list[tuple[float, float, dict[str, Any]]]] = {}
    for path in sorted((root / "runs").glob("*/metrics.json")):
        metrics = json.loads(path.read_text())
        config = metrics["config"]
        model, target, method = config["model"], float(config["target_density"][0]), config["method"]
        if method == "penalized" and config["seed"] == 0:  # the λ search
            entry = (path.stat().st_mtime, float(config["lmbda"]), metrics)
            penalized.setdefault((model, target), []).append(entry)
        elif method == "penalized":  # another seed at the λ the search settled on
            spec = RunSpec(model, target, method, config["seed"], lmbda=round(float(config["lmbda"]), 8))
            results[spec] = metrics
        else:
            results[RunSpec(model, target, method, config["seed"], config["layerwise"])] = metrics
    bisections = {
        key: [(lmbda, m) for _, lmbda, m in sorted(runs, key=lambda e: e[0])]
        for key, runs in penalized.items()
    }
    table = summarize(results, bisections)
    atomic_write_text(root / "table.md", table)
    return table
