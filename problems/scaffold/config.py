"""Training configurations as pydantic models, and their command-line front end.

Every problem describes its knobs as a pydantic v2 model deriving from :class:`TrainConfig`.
Out-of-range values raise :class:`pydantic.ValidationError` naming the field, both at
construction and on attribute assignment. :func:`build_parser` derives an ``argparse`` parser from
the model's fields and :func:`parse_config` / :func:`config_from_argv` turn validation errors into
one readable :class:`ConfigError` message (the CLI prints it and exits with status 2).
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import pydantic
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ConfigError",
    "TrainConfig",
    "build_parser",
    "config_from_argv",
    "config_from_namespace",
    "format_validation_error",
    "parse_config",
]

ModelT = TypeVar("ModelT", bound=BaseModel)


class TrainConfig(BaseModel):
    """Fields shared by every trainer in ``problems``.

    Unknown fields are rejected (``extra="forbid"``) and assignments are validated, so a typo in a
    field name or an out-of-range value never passes silently.

    Attributes:
        seed: Seed of the training run (initialisation, mini-batch order, gate noise). Data splits
            use their own fixed seed, so changing it never changes the test set.
        epochs: Number of passes over the training set.
        batch_size: Mini-batch size.
        out: Output directory for metrics, checkpoints and the final results.
        log_every: Log training metrics every this many optimisation steps.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    seed: int = Field(default=0, ge=0, lt=2**32, description="seed of the training run")
    epochs: int = Field(default=10, ge=1, description="number of passes over the training set")
    batch_size: int = Field(default=128, ge=1, description="mini-batch size")
    out: Path = Field(default=Path("runs/default"), description="output directory")
    log_every: int = Field(default=50, ge=1, description="log metrics every this many steps")


class ConfigError(ValueError):
    """A configuration failed validation; the message names every offending field and value.

    Attributes:
        errors: The pydantic error records, as returned by ``ValidationError.errors()``.
    """

    def __init__(self, message: str, errors: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)


def format_validation_error(error: pydantic.ValidationError) -> str:
    """One line per problem: ``field: message (got value)``."""
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "<config>"
        if item["type"] == "extra_forbidden":
            lines.append(f"{field}: unknown option")
        else:
            lines.append(f"{field}: {item['msg']} (got {item.get('input')!r})")
    return "; ".join(lines)


def parse_config(model_cls: type[ModelT], values: Mapping[str, Any]) -> ModelT:
    """Validates ``values`` (e.g. ``vars(argparse_namespace)``) into a ``model_cls`` instance.

    Entries whose value is ``None`` are dropped, so options left unset on the command line fall
    back to the model's defaults. Raises :class:`ConfigError` naming the invalid fields.
    """
    if not (isinstance(model_cls, type) and issubclass(model_cls, BaseModel)):
        raise TypeError(f"model_cls must be a pydantic BaseModel subclass, got {model_cls!r}")
    given = {key: value for key, value in values.items() if value is not None}
    try:
        return model_cls.model_validate(given)
    except pydantic.ValidationError as exc:
        message = f"invalid {model_cls.__name__}: {format_validation_error(exc)}"
        raise ConfigError(message, exc.errors()) from exc


def _option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _strip_optional(annotation: Any) -> Any:
    """``X | None`` -> ``X``; other annotations unchanged."""
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _literal_converter(choices: Sequence[Any]) -> Callable[[str], Any]:
    by_text = {str(choice): choice for choice in choices}

    def convert(text: str) -> Any:
        if text not in by_text:
            raise argparse.ArgumentTypeError(f"invalid choice {text!r} (choose from {sorted(by_text)})")
        return by_text[text]

    return convert


def comma_separated(value: object) -> object:
    """A ``field_validator(mode="before")`` helper: ``"a, b"`` -> ``["a", "b"]``; other values unchanged."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def build_parser(
    model_cls: type[BaseModel],
    parser: argparse.ArgumentParser | None = None,
    *,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Adds one ``--field-name`` option per field of ``model_cls`` to ``parser`` (or a new one).

    Every option defaults to ``None`` (meaning "use the model default"), so that
    :func:`parse_config` sees only the values given on the command line. Booleans become
    ``--flag/--no-flag`` pairs, ``Literal`` fields get ``choices``; every other value is passed
    to pydantic as text, which converts and range-checks it and names the field on failure.
    """
    if not (isinstance(model_cls, type) and issubclass(model_cls, BaseModel)):
        raise TypeError(f"model_cls must be a pydantic BaseModel subclass, got {model_cls!r}")
    if parser is None:
        parser = argparse.ArgumentParser(description=description or model_cls.__doc__)
    for name, info in model_cls.model_fields.items():
        annotation = _strip_optional(info.annotation)
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        help_text = info.description or ""
        if info.is_required():
            help_text += " (required)"
        elif default is not None or "default" not in help_text:  # else the description names it
            help_text += f" (default: {default})"
        option = _option_name(name)
        if annotation is bool:
            parser.add_argument(
                option, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif typing.get_origin(annotation) is Literal:
            choices = typing.get_args(annotation)
            parser.add_argument(
                option,
                dest=name,
                type=_literal_converter(choices),
                default=None,
                metavar="{" + ",".join(str(c) for c in choices) + "}",
                help=help_text,
            )
        else:
            parser.add_argument(option, dest=name, type=str, default=None, help=help_text)
    return parser


def config_from_argv(
    model_cls: type[ModelT],
    argv: Sequence[str] | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> ModelT:
    """Parses ``argv`` into a validated ``model_cls``; on invalid values exits with status 2.

    ``parser`` defaults to ``build_parser(model_cls)``; pass your own (built with
    :func:`build_parser`, then extended) to add options that are not config fields: they are
    ignored here. The error message (printed by ``parser.error``) names each invalid field, e.g.
    ``invalid TrainConfig: batch_size: Input should be greater than or equal to 1 (got '0')``.
    """
    if parser is None:
        parser = build_parser(model_cls)
    return config_from_namespace(model_cls, parser.parse_args(argv), parser)


def config_from_namespace(
    model_cls: type[ModelT], namespace: argparse.Namespace, parser: argparse.ArgumentParser
) -> ModelT:
    """Validates the ``model_cls`` fields of a parsed namespace (other options are ignored).

    On invalid values, ``parser.error`` prints the fields at fault and exits with status 2.
    """
    values = {key: value for key, value in vars(namespace).items() if key in model_cls.model_fields}
    try:
        return parse_config(model_cls, values)
    except ConfigError as exc:
        parser.error(str(exc))
