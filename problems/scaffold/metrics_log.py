"""Scalar metrics logging to CSV, JSON lines and (optionally) TensorBoard, and the reader of those files.

:class:`MetricsLogger` writes ``metrics.jsonl`` and ``metrics.csv``; :func:`read_metrics` reads either
back as rows (one dict per logged step), ready for the trajectory plots of ``cooper_like.reporting``
(``plot_multipliers(read_metrics(run_dir))``).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import numbers
import os
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import torch

from problems.scaffold.checkpoints import atomic_write_text

__all__ = ["MetricsLogger", "read_metrics", "tensorboard_available"]

Scalar = bool | int | float | str


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (needed by ``torch.utils.tensorboard``) is importable."""
    return importlib.util.find_spec("tensorboard") is not None


def _to_scalar(key: str, value: Any) -> Scalar:
    """Converts a logged value to a Python scalar; tensors and arrays must hold one element."""
    if isinstance(value, torch.Tensor | np.ndarray | np.generic):
        numel = value.numel() if isinstance(value, torch.Tensor) else int(np.size(value))
        if numel != 1:
            raise ValueError(f"metric {key!r} must be a scalar, got a tensor/array with {numel} elements")
        value = value.item()
    if isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(
        f"metric {key!r} must be a number, a string or a one-element tensor, got {type(value).__name__}"
    )


def _json_safe(value: Scalar) -> Scalar | None:
    """NaN and infinities are not valid JSON: they are written as ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLogger:
    """Writes one row per :meth:`log` call to ``metrics.jsonl``, ``metrics.csv`` and TensorBoard.

    Files written in ``out_dir`` (created if needed; existing files are overwritten):

    * ``metrics.jsonl``: one JSON object per call, ``{"step": ..., key: value, ...}``, appended
      and flushed immediately, so it is complete even after a crash. Non-finite floats are
      written as ``null`` (strict JSON).
    * ``metrics.csv``: column policy — the header is ``step`` plus the keys of the *first* row, in
      order, and rows are streamed with exactly those columns (a missing key gives an empty cell),
      so the file is a valid CSV at every moment. Keys that first appear in a later row are kept
      in memory; if there are any, :meth:`close` rewrites the CSV atomically with the union of all
      columns (in order of first appearance) from all rows. A CSV is therefore never corrupted by
      new keys, and after ``close`` it holds every value that the JSON lines hold.
    * TensorBoard event files under ``out_dir/tensorboard`` through
      ``torch.utils.tensorboard.SummaryWriter``, numeric values only.

    Args:
        out_dir: Directory for the files.
        tensorboard: ``True`` to require TensorBoard output (``ImportError`` if the ``tensorboard``
            package is missing), ``False`` to disable it, ``None`` (default) to use it only when
            the package is importable.
        csv_name: File name of the CSV.
        jsonl_name: File name of the JSON-lines file.

    Example:
        >>> with MetricsLogger(tmp_dir, tensorboard=False) as logger:  # doctest: +SKIP
        ...     logger.log(step=0, loss=1.5, density=0.8)
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        tensorboard: bool | None = None,
        *,
        csv_name: str = "metrics.csv",
        jsonl_name: str = "metrics.jsonl",
    ) -> None:
        if tensorboard not in (None, True, False):
            raise ValueError(f"tensorboard must be True, False or None, got {tensorboard!r}")
        if csv_name == jsonl_name:
            raise ValueError(f"csv_name and jsonl_name must differ, both are {csv_name!r}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.out_dir / csv_name
        self.jsonl_path = self.out_dir / jsonl_name
        if tensorboard is None:
            tensorboard = tensorboard_available()
        elif tensorboard and not tensorboard_available():
            raise ImportError(
                "tensorboard=True but the 'tensorboard' package is not installed; "
                "install it or pass tensorboard=None/False"
            )
        self._writer: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))
        self._rows: list[dict[str, Scalar]] = []
        self._columns: list[str] = []
        self._extra_columns: list[str] = []
        self._jsonl: IO[str] | None = open(self.jsonl_path, "w", encoding="utf-8")  # noqa: SIM115
        self._csv_file: IO[str] | None = open(self.csv_path, "w", encoding="utf-8", newline="")  # noqa: SIM115
        self._csv = csv.writer(self._csv_file)
        self.closed = False

    @property
    def tensorboard(self) -> bool:
        """Whether TensorBoard output is being written."""
        return self._writer is not None

    @property
    def rows(self) -> list[dict[str, Scalar]]:
        """Copies of the rows logged so far, each including its ``step``."""
        return [dict(row) for row in self._rows]

    @property
    def columns(self) -> list[str]:
        """All column names seen so far, ``step`` first, in order of first appearance."""
        return self._columns + self._extra_columns

    def log(self, step: int, **scalars: Any) -> None:
        """Records the scalar metrics of optimisation step ``step`` (an int >= 0)."""
        if self.closed:
            raise RuntimeError(f"MetricsLogger for {str(self.out_dir)!r} is closed")
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        if not scalars:
            raise ValueError(f"log(step={step}) needs at least one metric")
        row: dict[str, Scalar] = {"step": int(step)}
        for key, value in scalars.items():
            row[key] = _to_scalar(key, value)
        self._rows.append(row)

        assert self._jsonl is not None
        self._jsonl.write(json.dumps({k: _json_safe(v) for k, v in row.items()}) + "\n")
        self._jsonl.flush()

        if not self._columns:
            self._columns = list(row)
            self._csv.writerow(self._columns)
        for key in row:
            if key not in self._columns and key not in self._extra_columns:
                self._extra_columns.append(key)
        self._csv.writerow([row.get(column, "") for column in self._columns])
        assert self._csv_file is not None
        self._csv_file.flush()

        if self._writer is not None:
            for key, value in row.items():
                if key != "step" and not isinstance(value, str):
                    self._writer.add_scalar(key, float(value), global_step=int(step))

    def flush(self) -> None:
        """Flushes the open files (rows are already flushed after every call) and TensorBoard."""
        for handle in (self._jsonl, self._csv_file):
            if handle is not None:
                handle.flush()
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flushes and closes every output; rewrites the CSV if later rows added columns. Idempotent."""
        if self.closed:
            return
        self.closed = True
        for handle in (self._jsonl, self._csv_file):
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
        self._jsonl = self._csv_file = None
        if self._extra_columns:
            atomic_write_text(self.csv_path, self._csv_text(self.columns))
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    def _csv_text(self, columns: list[str]) -> str:
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(columns)
        for row in self._rows:
            writer.writerow([row.get(column, "") for column in columns])
        return buffer.getvalue()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._rows)} rows"
        return f"MetricsLogger({str(self.out_dir)!r}, tensorboard={self.tensorboard}, {state})"


def _csv_value(text: str) -> Any:
    """A CSV cell as the value it was logged as: ``None`` (empty), int, float, bool or str."""
    if text == "":
        return None
    try:
        number = float(text)
    except ValueError:
        return {"True": True, "False": False}.get(text, text)
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def read_metrics(source: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a metrics log written by :class:`MetricsLogger` (one dict per logged row, in order).

    Args:
        source: ``metrics.jsonl``, ``metrics.csv`` (any file ending in ``.jsonl`` / ``.csv``), or a run
            directory holding one of them (the JSON-lines file is preferred: it is complete even after
            a crash).

    Returns:
        The rows; missing values (an empty CSV cell, a JSON ``null``) are ``None``.

    Raises:
        FileNotFoundError: Neither file exists.
        ValueError: The file is neither JSON lines nor CSV, or a JSON line is malformed.
    """
    path = Path(source)
    if path.is_dir():
        for name in ("metrics.jsonl", "metrics.csv"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"no metrics.jsonl or metrics.csv in {str(source)!r}")
    if not path.is_file():
        raise FileNotFoundError(f"no metrics log at {str(source)!r}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON object ({error})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
        return rows
    if path.suffix == ".csv":
        return [
            {key: _csv_value(value) for key, value in row.items()}
            for row in csv.DictReader(text.splitlines())
        ]
    raise ValueError(f"read_metrics: expected a .jsonl or .csv file, got {str(path)!r}")
