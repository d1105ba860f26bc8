"""The command line every problem shares: ``python -m problems.NAME COMMAND [flags]``.

A problem declares its commands (:class:`Command`) and its ``cli.main`` calls :func:`run_cli`. A
command with a pydantic ``config`` gets one flag per field (:func:`~problems.scaffold.config.build_parser`),
is validated (an invalid value exits with status 2 and a one-line message naming the field), runs
``run(config)`` and prints the ``summary`` keys of the returned metrics as JSON (under ``torchrun``, rank
0 only). Any other command adds its own arguments (``arguments``) and handles them (``handle``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from problems.scaffold.config import build_parser, config_from_namespace

__all__ = ["Command", "run_cli"]


@dataclass(frozen=True)
class Command:
    """One subcommand of a problem's command line.

    Attributes:
        name: The subcommand (``train``).
        help: Its one-line help.
        config: The pydantic config whose fields are the flags; with it, ``run(config)`` returns the
            metrics and ``summary`` names the keys printed.
        run: Called with the validated config (import heavy modules inside it: ``--help`` stays fast).
        summary: Keys of the metrics printed as JSON.
        arguments: Without ``config``: adds the command's own arguments to its parser.
        handle: Without ``config``: runs the command from the parsed arguments (``parser.error`` for
            bad input); returns the exit status.
    """

    name: str
    help: str
    config: type[BaseModel] | None = None
    run: Callable[[Any], dict[str, Any]] | None = None
    summary: Sequence[str] = ()
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    handle: Callable[[argparse.Namespace, argparse.ArgumentParser], int] | None = None


def run_cli(
    prog: str, description: str | None, commands: Sequence[Command], argv: Sequence[str] | None
) -> int:
    """Parse ``argv`` into one of ``commands`` and run it; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in commands:
        sub = subparsers.add_parser(command.name, help=command.help)
        if command.config is not None:
            build_parser(command.config, sub)
        elif command.arguments is not None:
            command.arguments(sub)
    arguments = parser.parse_args(argv)
    command = next(command for command in commands if command.name == arguments.command)
    if command.config is None:
        assert command.handle is not None, f"command {command.name!r} has neither a config nor a handler"
        return command.handle(arguments, parser)
    assert command.run is not None, f"command {command.name!r} has a config but nothing to run"
    metrics = command.run(config_from_namespace(command.config, arguments, parser))
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        json.dump({key: metrics[key] for key in command.summary}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0
