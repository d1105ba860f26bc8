"""Command line of feasible learning: ``python -m problems.feasible train --epsilon ... --out DIR``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from problems.feasible.config import FeasibleConfig
from problems.scaffold.config import build_parser, config_from_namespace

SUMMARY_KEYS = (
    "train_fraction_feasible",
    "train_max_loss",
    "train_accuracy",
    "test_accuracy",
    "multiplier_fraction_positive",
    "num_constraints",
    "step_time_median_us",
    "wall_time_s",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, train, print a JSON summary; invalid values exit with status 2."""
    parser = argparse.ArgumentParser(prog="python -m problems.feasible", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser(
        FeasibleConfig, commands.add_parser("train", help="fit every training example to loss <= epsilon")
    )
    arguments = parser.parse_args(argv)
    config = config_from_namespace(FeasibleConfig, arguments, parser)
    from problems.feasible.train import train_feasible

    metrics = train_feasible(config)
    json.dump({key: metrics[key] for key in SUMMARY_KEYS}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
