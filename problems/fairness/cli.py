"""Command line of the fairness problem: ``python -m problems.fairness train ...``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from problems.fairness.config import FairnessConfig
from problems.scaffold.config import build_parser, config_from_namespace

SUMMARY_KEYS = (
    "test_accuracy",
    "test_dp_difference",
    "test_tpr_difference",
    "test_fpr_difference",
    "test_eo_difference",
    "test_dp_max_deviation",
    "test_eo_max_deviation",
    "train_accuracy",
    "train_dp_difference",
    "train_eo_difference",
    "returned",
    "wall_time_s",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, train, print a JSON summary; invalid values exit with status 2."""
    parser = argparse.ArgumentParser(prog="python -m problems.fairness", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser(FairnessConfig, commands.add_parser("train", help="train one fair classifier on Adult"))
    arguments = parser.parse_args(argv)
    config = config_from_namespace(FairnessConfig, arguments, parser)
    from problems.fairness.train import train

    metrics = train(config)
    json.dump({key: metrics[key] for key in SUMMARY_KEYS}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
