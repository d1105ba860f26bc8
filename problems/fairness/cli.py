"""Command line of the fairness problem: ``python -m problems.fairness train ...``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from problems.fairness.config import FairnessConfig
from problems.scaffold.cli import Command, run_cli

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


def train(config: FairnessConfig) -> dict[str, Any]:
    from problems.fairness.train import train as train_fair_classifier

    return train_fair_classifier(config)


COMMANDS = (
    Command(
        "train",
        "train one fair classifier on Adult",
        config=FairnessConfig,
        run=train,
        summary=SUMMARY_KEYS,
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, train, print a JSON summary; invalid values exit with status 2."""
    return run_cli("python -m problems.fairness", __doc__, COMMANDS, argv)
