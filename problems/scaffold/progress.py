"""Progress bars that appear only for a person at a terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = ["progress", "progress_enabled"]

T = TypeVar("T")


def progress_enabled() -> bool:
    """True when stderr is a terminal and the ``CI`` environment variable is not set."""
    if "CI" in os.environ:
        return False
    stream = sys.stderr
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def progress(iterable: Iterable[T], *, enabled: bool | None = None, **kwargs: Any) -> Iterable[T]:
    """Wraps ``iterable`` in a ``tqdm`` bar when :func:`progress_enabled` (or ``enabled=True``).

    Otherwise, or when ``tqdm`` is not installed, returns ``iterable`` itself unchanged, so logs
    and CI output stay free of carriage returns. ``kwargs`` go to ``tqdm`` (``desc``, ``total``...).
    """
    if enabled is None:
        enabled = progress_enabled()
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    bar: Iterable[T] = tqdm(iterable, **kwargs)
    return bar
