"""Command line of the l1 problems: ``target``, ``path`` and ``compare``.

``python -m problems.l1 target --target-density 0.1 --method constrained --dataset mnist5k --out DIR``
``python -m problems.l1 path --method epsilon-constraint --points 30 --dataset iris --out DIR``
``python -m problems.l1 compare --runs DIR1 DIR2 DIR3 --out DIR``

Invalid option values exit with status 2 and a message naming the field.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from problems.l1.config import PathConfig, TargetConfig
from problems.scaffold.cli import Command, run_cli
from problems.scaffold.metrics_log import MetricsLogger

__all__ = ["main"]

TARGET_SUMMARY = (
    "method",
    "target_density",
    "density",
    "layer_densities",
    "test_accuracy",
    "runs",
    "gradient_evaluations",
    "wall_time_s",
)
PATH_SUMMARY = (
    "method",
    "hypervolume_self_normalised",
    "monotone",
    "non_dominated_points",
    "runs",
    "gradient_evaluations",
    "loss_evaluations",
    "wall_time_s",
)


def target(config: TargetConfig) -> dict[str, Any]:
    """One target run; its rows are numbered 1, 2, ... in ``metrics.csv``."""
    from problems.l1.data import load_split
    from problems.l1.report import write_target
    from problems.l1.target import run_target

    data = load_split(config.dataset)
    with MetricsLogger(config.out, tensorboard=False) as logger:
        counter = iter(range(1, 10**9))
        result = run_target(config, data, lambda row: logger.log(next(counter), **row))
    return write_target(config.out, config, result)


def path(config: PathConfig) -> dict[str, Any]:
    """One path run; its rows are numbered by the point's index in ``metrics.csv``."""
    from problems.l1.data import load_split
    from problems.l1.path import run_path
    from problems.l1.report import write_path

    data = load_split(config.dataset)
    with MetricsLogger(config.out, tensorboard=False) as logger:
        result = run_path(config, data, lambda row: logger.log(int(row["index"]), **row))
    return write_path(config.out, config, result)


def add_compare_arguments(compare: argparse.ArgumentParser) -> None:
    compare.add_argument(
        "--runs", type=Path, nargs="+", required=True, help="output directories of path runs"
    )
    compare.add_argument("--out", type=Path, required=True, help="output directory")


def compare(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from problems.l1.report import compare_paths

    try:
        summary = compare_paths(arguments.runs, arguments.out)
    except (FileNotFoundError, ValueError, KeyError) as error:
        parser.error(f"compare: {error}")
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


COMMANDS = (
    Command("target", "reach a prescribed density", config=TargetConfig, run=target, summary=TARGET_SUMMARY),
    Command("path", "trace the regularization path", config=PathConfig, run=path, summary=PATH_SUMMARY),
    Command(
        "compare",
        "overlay path runs and compute their hypervolumes",
        arguments=add_compare_arguments,
        handle=compare,
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli("python -m problems.l1", __doc__, COMMANDS, argv)
