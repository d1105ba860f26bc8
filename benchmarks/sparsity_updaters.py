"""Compare multiplier updaters on the flagship sparsity problem (MLP 784-300-100-10, one target).

For each updater (GDA, nuPI, extragradient, augmented Lagrangian; gates trained from the first step,
``--warmup-epochs 0 --gate-init droprate``, so that the multiplier has a descent from the dense start
to control; everything else at the CLI defaults) this trains one model and reads its epoch-by-epoch test-time density: the largest excursion
above and below the target after the density first came within ±1 point, the number of epochs until
it *stays* within ±1 point, the final density, accuracy and wall time (extragradient costs two
passes per step).

    python benchmarks/sparsity_updaters.py --target 0.3 --out-dir /tmp/updaters [--epochs 30] [--write]

``--write`` stores the table in ``benchmarks/results/sparsity_updaters.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import environment_lines

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from problems.scaffold.checkpoints import atomic_write_text  # noqa: E402
from problems.sparsity.config import SparsityConfig  # noqa: E402
from problems.sparsity.train import train  # noqa: E402

UPDATERS = {
    "GDA (SGD ascent, default)": {},
    "nuPI (Kp=1)": {"dual_optimizer": "nupi"},
    "extragradient (ExtraAdam/ExtraSGD)": {"scheme": "extrapolation"},
    "augmented Lagrangian (c = dual lr)": {"formulation": "augmented-lagrangian"},
}


def trajectory_summary(
    history: list[dict], target: float, tolerance: float = 0.01
) -> dict[str, float | int | None]:
    densities = [row["test_time_density"] for row in history]
    first_inside = next((i for i, d in enumerate(densities) if abs(d - target) <= tolerance), None)
    after = densities[first_inside:] if first_inside is not None else []
    settled = None
    for i in range(len(densities)):
        if all(abs(d - target) <= tolerance for d in densities[i:]):
            settled = i + 1
            break
    return {
        "max_above_pts": 100 * max((d - target for d in after), default=float("nan")),
        "max_below_pts": 100 * max((target - d for d in after), default=float("nan")),
        "epochs_until_stays_within_1pt": settled,
        "final_density": densities[-1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", type=float, default=0.3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--write", action="store_true")
    arguments = parser.parse_args()
    lines = [
        f"# Multiplier updaters on controlled sparsity ({arguments.model}, target {arguments.target}, seed {arguments.seed})",
        "",
        "| updater | final test-time density | max above target after first within ±1 pt (pts) | "
        "max below (pts) | epochs until it stays within ±1 pt | test accuracy | wall time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, overrides in UPDATERS.items():
        out = arguments.out_dir / label.split(" ")[0].lower()
        config = SparsityConfig(
            model=arguments.model,
            target_density=[arguments.target],
            epochs=arguments.epochs,
            seed=arguments.seed,
            out=out,
            warmup_epochs=0,
            gate_init="droprate",
            **overrides,
        )
        metrics = train(config)
        history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        summary = trajectory_summary(history, arguments.target)
        lines.append(
            f"| {label} | {summary['final_density']:.4f} | {summary['max_above_pts']:.2f} | {summary['max_below_pts']:.2f} | "
            f"{summary['epochs_until_stays_within_1pt']} | {100 * metrics['test_accuracy']:.2f} | {metrics['wall_time_s']:.1f} |"
        )
        print(lines[-1], flush=True)
    lines += [
        "",
        *environment_lines(
            [
                "densities are read at the end of every epoch (deterministic test-time gates); "
                "gates trained from the first step (--warmup-epochs 0 --gate-init droprate)"
            ]
        ),
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    if arguments.write:
        atomic_write_text(ROOT / "benchmarks" / "results" / "sparsity_updaters.md", table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
