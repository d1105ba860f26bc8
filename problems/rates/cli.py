"""Command line of the rate-constrained problems: ``python -m problems.rates neyman-pearson ...``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from problems.rates.config import NeymanPearsonConfig
from problems.scaffold.config import build_parser, config_from_namespace

SUMMARY_KEYS = (
    "alpha",
    "test_false_positive_rate",
    "test_false_negative_rate",
    "test_accuracy",
    "train_false_positive_rate",
    "train_false_negative_rate",
    "returned",
    "wall_time_s",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, train, print a JSON summary; invalid values exit with status 2."""
    parser = argparse.ArgumentParser(prog="python -m problems.rates", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser(
        NeymanPearsonConfig,
        commands.add_parser("neyman-pearson", help="minimise the false-negative rate s.t. FPR <= alpha"),
    )
    arguments = parser.parse_args(argv)
    config = config_from_namespace(NeymanPearsonConfig, arguments, parser)
    from problems.rates.train_np import train_neyman_pearson

    metrics = train_neyman_pearson(config)
    json.dump({key: metrics[key] for key in SUMMARY_KEYS}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
