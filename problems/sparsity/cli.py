"""Command line of the sparsity problem: ``train``, ``export`` and ``sweep``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from problems.scaffold.cli import Command, run_cli
from problems.sparsity.config import SparsityConfig


def comma_list(kind: type) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError as error:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind.__name__} values, got {text!r}"
            ) from error

    return parse


def add_sweep_arguments(sweep: argparse.ArgumentParser) -> None:
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


def add_export_arguments(export: argparse.ArgumentParser) -> None:
    export.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt of a training run")
    export.add_argument("--out", type=Path, required=True, help="file for the exported model")


def train(config: SparsityConfig) -> dict[str, Any]:
    from problems.sparsity.train import train as train_run

    return train_run(config)


def export(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from problems.sparsity.export_run import export_checkpoint

    export_checkpoint(arguments.checkpoint, arguments.out)
    return 0


def sweep(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from problems.sparsity.sweep import report
    from problems.sparsity.sweep import sweep as run_sweep

    if arguments.report_only:
        sys.stdout.write(report(arguments.out))
        return 0
    unknown = sorted(set(arguments.methods) - {"constrained", "penalized", "magnitude"})
    if unknown:
        parser.error(f"--methods: unknown method(s) {unknown}")
    layerwise = {"off": [False], "on": [True], "both": [False, True]}[arguments.layerwise]
    table = run_sweep(
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


COMMANDS = (
    Command(
        "train",
        "train one model",
        config=SparsityConfig,
        run=train,
        summary=("test_accuracy", "test_time_density", "expected_density", "target_density", "wall_time_s"),
    ),
    Command(
        "export",
        "write a physically smaller dense model from a checkpoint",
        arguments=add_export_arguments,
        handle=export,
    ),
    Command(
        "sweep",
        "run a grid of targets x methods x seeds and write a markdown table",
        arguments=add_sweep_arguments,
        handle=sweep,
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli("python -m problems.sparsity", __doc__, COMMANDS, argv)
