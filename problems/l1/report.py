"""Outputs of the l1 runs: ``metrics.json``, CSV (through ``MetricsLogger``), checkpoints and PNG plots.

``compare`` overlays several path runs (the three methods) and computes their hypervolumes on the
common normalisation of the issue: both objectives scaled to [0, 1] by the extremes of the union of
the fronts, reference point (1.1, 1.1).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from problems.l1.config import PathConfig, TargetConfig
from problems.l1.front import hypervolume_2d, is_monotone, non_dominated_mask, normalise_fronts
from problems.l1.path import PathResult
from problems.l1.target import TargetResult
from problems.scaffold.checkpoints import atomic_write_text, save_checkpoint
from problems.scaffold.plots import pyplot

__all__ = ["compare_paths", "path_metrics", "target_metrics", "write_path", "write_target"]

REFERENCE = (1.1, 1.1)


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: write ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(_finite(payload), indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------
# Target runs
# ---------------------------------------------------------------------------------------------------


def target_metrics(config: TargetConfig, result: TargetResult) -> dict[str, Any]:
    measures = result.evaluation
    return {
        "method": result.method,
        "dataset": config.dataset,
        "target_density": config.target_density,
        "layerwise": config.layerwise,
        "density": measures.density,
        "layer_densities": list(measures.layer_densities),
        "density_error_points": 100 * (measures.density - config.target_density),
        "test_accuracy": measures.test_accuracy,
        "train_accuracy": measures.train_accuracy,
        "train_loss": measures.train_loss,
        "l1_norm": measures.l1_norm,
        "strengths": result.strengths,
        **result.budget.as_dict(),
        "density_definition": "fraction of exactly-zero entries of the nn.Linear weights (biases excluded)",
        "gradient_evaluations_definition": "per-example gradients (a batch of B examples counts B)",
        "config": config.model_dump(mode="json"),
    }


def write_target(out: Path, config: TargetConfig, result: TargetResult) -> dict[str, Any]:
    """``metrics.json``, ``model.pt`` and ``target.png`` (density and multiplier / lambda over training)."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = target_metrics(config, result)
    _write_json(out / "metrics.json", metrics)
    save_checkpoint({"model": result.model_state, "config": config.model_dump(mode="json")}, out / "model.pt")
    plt = pyplot()
    if plt is not None and result.history:
        key = "epoch" if "epoch" in result.history[0] else "run"
        xs = [row[key] for row in result.history]
        figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
        left.plot(xs, [row["density"] for row in result.history], marker="." if key == "run" else None)
        left.axhline(config.target_density, color="black", linestyle=":", linewidth=0.8, label="target")
        left.set(xlabel=key, ylabel="density", title=f"{result.method}: density")
        left.legend()
        prefix = "multiplier/" if key == "epoch" else "lambda/"
        for name in sorted({k for row in result.history for k in row if k.startswith(prefix)}):
            right.plot(xs, [row.get(name, float("nan")) for row in result.history], label=name)
        right.set(xlabel=key, ylabel="lambda", title="soft-threshold level")
        right.legend()
        figure.tight_layout()
        figure.savefig(out / "target.png", dpi=100)
        plt.close(figure)
    return metrics


# ---------------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------------


def path_metrics(config: PathConfig, result: PathResult) -> dict[str, Any]:
    front = np.asarray(result.front())
    own = normalise_fronts({"self": front})["self"]
    return {
        "method": result.method,
        "dataset": config.dataset,
        "points": result.points,
        "hypervolume_self_normalised": hypervolume_2d(own, REFERENCE),
        "non_dominated_points": int(non_dominated_mask(front).sum()),
        "monotone": is_monotone(front),
        **result.budget.as_dict(),
        **result.extra,
        "front_definition": "(l1 norm of the nn.Linear weights, mean training cross-entropy)",
        "gradient_evaluations_definition": "per-example gradients (a batch of B examples counts B); "
        "loss_evaluations: per-example forward passes of line searches",
        "config": config.model_dump(mode="json"),
    }


def _plot_fronts(out: Path, fronts: dict[str, list[dict[str, Any]]], title: str) -> None:
    plt = pyplot()
    if plt is None:
        return
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, points in fronts.items():
        ordered = sorted(points, key=lambda p: p["l1_norm"])
        left.plot([p["l1_norm"] for p in ordered], [p["train_loss"] for p in ordered], marker=".", label=name)
        by_density = sorted(points, key=lambda p: p["density"])
        right.plot(
            [p["density"] for p in by_density],
            [p["test_accuracy"] for p in by_density],
            marker=".",
            label=name,
        )
    left.set(xlabel="‖θ‖₁", ylabel="training loss", title=f"{title}: front")
    right.set(
        xlabel="density (fraction of non-zero weights)", ylabel="test accuracy", title="accuracy vs density"
    )
    left.legend()
    right.legend()
    figure.tight_layout()
    figure.savefig(out / "front.png", dpi=100)
    plt.close(figure)


def write_path(out: Path, config: PathConfig, result: PathResult) -> dict[str, Any]:
    """``metrics.json`` (every point, hypervolume) and ``front.png``."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = path_metrics(config, result)
    _write_json(out / "metrics.json", metrics)
    _plot_fronts(out, {result.method: result.points}, result.method)
    return metrics


def compare_paths(runs: Sequence[Path], out: Path) -> dict[str, Any]:
    """Overlay path runs; hypervolumes on the union's normalisation; ``compare.json``, ``.md``, ``front.png``."""
    loaded: dict[str, dict[str, Any]] = {}
    for run in runs:
        metrics = json.loads((Path(run) / "metrics.json").read_text())
        if "points" not in metrics:
            raise ValueError(f"{run}: metrics.json is not the output of a path run")
        name = str(metrics["method"])
        if name in loaded:
            name = f"{name} ({Path(run).name})"
        loaded[name] = metrics
    fronts = {
        name: np.asarray([(p["l1_norm"], p["train_loss"]) for p in m["points"]]) for name, m in loaded.items()
    }
    normalised = normalise_fronts(fronts)
    summary = {
        name: {
            "hypervolume": hypervolume_2d(normalised[name], REFERENCE),
            "points": len(metrics["points"]),
            "gradient_evaluations": metrics["gradient_evaluations"],
            "loss_evaluations": metrics["loss_evaluations"],
            "runs": metrics["runs"],
            "wall_time_s": metrics["wall_time_s"],
            "monotone": metrics["monotone"],
            "non_dominated_points": metrics["non_dominated_points"],
        }
        for name, metrics in loaded.items()
    }
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "compare.json", {"reference": list(REFERENCE), "methods": summary})
    lines = [
        "| method | points | hypervolume | gradient evaluations | line-search losses | runs | wall time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        lines.append(
            f"| {name} | {row['points']} | {row['hypervolume']:.4f} | {row['gradient_evaluations']:,} | "
            f"{row['loss_evaluations']:,} | {row['runs']} | {row['wall_time_s']:.1f} |"
        )
    atomic_write_text(out / "compare.md", "\n".join(lines) + "\n")
    _plot_fronts(out, {name: m["points"] for name, m in loaded.items()}, "three methods")
    return summary
