"""Command line of the rate-constrained problems: ``python -m problems.rates neyman-pearson ...``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from problems.rates.config import NeymanPearsonConfig
from problems.scaffold.config import ConfigError, build_parser, parse_config

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
    values = {key: value for key, value in vars(arguments).items() if key in NeymanPearsonConfig.model_fields}
    try:
        config = parse_config(NeymanPearsonConfig, values)
    except ConfigError as error:
        parser.error(str(error))
    from problems.rates.train_np import train_neyman_pearson

    metrics = train_neyman_pearson(config)
    json.dump({key: metrics[key] for key in SUMMARY_KEYS}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
