"""Command line of feasible learning: ``python -m problems.feasible train --epsilon ... --out DIR``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from problems.feasible.config import FeasibleConfig
from problems.scaffold.cli import Command, run_cli

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


def train(config: FeasibleConfig) -> dict[str, Any]:
    from problems.feasible.train import train_feasible

    return train_feasible(config)


COMMANDS = (
    Command(
        "train",
        "fit every training example to loss <= epsilon",
        config=FeasibleConfig,
        run=train,
        summary=SUMMARY_KEYS,
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, train, print a JSON summary; invalid values exit with status 2."""
    return run_cli("python -m problems.feasible", __doc__, COMMANDS, argv)
