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

from pydantic import BaseModel

from problems.scaffold.config import build_parser, config_from_namespace
from problems.scaffold.metrics_log import MetricsLogger

__all__ = ["main"]


def _config(parser: argparse.ArgumentParser, model: type[BaseModel], arguments: argparse.Namespace) -> Any:
    return config_from_namespace(model, arguments, parser)


def main(argv: Sequence[str] | None = None) -> int:
    from problems.l1.config import PathConfig, TargetConfig

    parser = argparse.ArgumentParser(
        prog="python -m problems.l1",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser(TargetConfig, commands.add_parser("target", help="reach a prescribed density"))
    build_parser(PathConfig, commands.add_parser("path", help="trace the regularization path"))
    compare = commands.add_parser("compare", help="overlay path runs and compute their hypervolumes")
    compare.add_argument(
        "--runs", type=Path, nargs="+", required=True, help="output directories of path runs"
    )
    compare.add_argument("--out", type=Path, required=True, help="output directory")
    arguments = parser.parse_args(argv)

    if arguments.command == "compare":
        from problems.l1.report import compare_paths

        try:
            summary = compare_paths(arguments.runs, arguments.out)
        except (FileNotFoundError, ValueError, KeyError) as error:
            parser.error(f"compare: {error}")
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0

    from problems.l1.data import load_split

    if arguments.command == "target":
        from problems.l1.report import write_target
        from problems.l1.target import run_target

        target_config: TargetConfig = _config(parser, TargetConfig, arguments)
        data = load_split(target_config.dataset)
        with MetricsLogger(target_config.out, tensorboard=False) as logger:
            counter = iter(range(1, 10**9))
            result = run_target(target_config, data, lambda row: logger.log(next(counter), **row))
        metrics = write_target(target_config.out, target_config, result)
        keys = (
            "method",
            "target_density",
            "density",
            "layer_densities",
            "test_accuracy",
            "runs",
            "gradient_evaluations",
            "wall_time_s",
        )
    else:
        from problems.l1.path import run_path
        from problems.l1.report import write_path

        path_config: PathConfig = _config(parser, PathConfig, arguments)
        data = load_split(path_config.dataset)
        with MetricsLogger(path_config.out, tensorboard=False) as logger:
            path_result = run_path(path_config, data, lambda row: logger.log(int(row["index"]), **row))
        metrics = write_path(path_config.out, path_config, path_result)
        keys = (
            "method",
            "hypervolume_self_normalised",
            "monotone",
            "non_dominated_points",
            "runs",
            "gradient_evaluations",
            "loss_evaluations",
            "wall_time_s",
        )
    json.dump({key: metrics[key] for key in keys}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
