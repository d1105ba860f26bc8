"""Command line of Neyman-Pearson classification: ``python -m problems.rates neyman-pearson ...``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from problems.rates.config import NeymanPearsonConfig
from problems.scaffold.cli import Command, run_cli

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


def neyman_pearson(config: NeymanPearsonConfig) -> dict[str, Any]:
    from problems.rates.train_np import train_neyman_pearson

    return train_neyman_pearson(config)


COMMANDS = (
    Command(
        "neyman-pearson",
        "minimise the false-negative rate s.t. FPR <= alpha",
        config=NeymanPearsonConfig,
        run=neyman_pearson,
        summary=SUMMARY_KEYS,
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, train, print a JSON summary; invalid values exit with status 2."""
    return run_cli("python -m problems.rates", __doc__, COMMANDS, argv)
