"""Command line of the sparsity problem: ``train``, ``export`` and ``sweep``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from problems.scaffold.config import build_parser, config_from_namespace
from problems.sparsity.config import SparsityConfig


def comma_list(kind: type) -> object:
    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError as error:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind.__name__} values, got {text!r}"
            ) from error

    return parse


def add_sweep_parser(commands: argparse._SubParsersAction) -> None:
    sweep = commands.add_parser(
        "sweep", help="run a grid of targets x methods x seeds and write a markdown table"
    )
    sweep.add_argument("--models", type=comma_list(str), default=["mlp", "lenet"])
    sweep.add_argument("--targets", type=comma_list(float), default=[0.1, 0.2, 0.3, 0.5, 0.7])
    sweep.add_argument("--seeds", type=comma_list(int), default=[0, 1, 2])
    sweep.add_argument("--methods", type=comma_list(str), default=["constrained", "penalized", "magnitude"])
    sweep.add_argument("--layerwise", choices=["off", "on", "both"], default="both")
    sweep.add_argument("--epochs", type=int, default=None, help="override the default number of epochs")
    sweep.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    sweep.add_argument(
        "--no-bisect", action="store_true", help="skip the λ bisection of the penalized method"
    )
    sweep.add_argument("--report-only", action="store_true", help="only tabulate the runs finished so far")
    sweep.add_argument("--out", type=Path, required=True)


def add_export_parser(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="write a physically smaller dense model from a checkpoint")
    export.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt of a training run")
    export.add_argument("--out", type=Path, required=True, help="file for the exported model")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m problems.sparsity", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser(SparsityConfig, commands.add_parser("train", help="train one model"))
    add_export_parser(commands)
    add_sweep_parser(commands)
    arguments = parser.parse_args(argv)
    if arguments.command == "train":
        config = config_from_namespace(SparsityConfig, arguments, parser)
        from problems.sparsity.train import train

        metrics = train(config)
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
            keys = ("test_accuracy", "test_time_density", "expected_density", "target_density", "wall_time_s")
            json.dump({key: metrics[key] for key in keys}, sys.stdout, indent=2)
            sys.stdout.write("\n")
    elif arguments.command == "export":
        from problems.sparsity.export_run import export_checkpoint

        export_checkpoint(arguments.checkpoint, arguments.out)
    else:
        from problems.sparsity.sweep import report, sweep

        if arguments.report_only:
            sys.stdout.write(report(arguments.out))
            return 0
        unknown = sorted(set(arguments.methods) - {"constrained", "penalized", "magnitude"})
        if unknown:
            parser.error(f"--methods: unknown method(s) {unknown}")
        layerwise = {"off": [False], "on": [True], "both": [False, True]}[arguments.layerwise]
        table = sweep(
            arguments.out,
            arguments.models,
            arguments.targets,
            arguments.seeds,
            arguments.methods,
            layerwise,
            epochs=arguments.epochs,
            jobs=arguments.jobs,
            bisect=not arguments.no_bisect,
        )
        sys.stdout.write(table)
    return 0
