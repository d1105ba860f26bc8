"""Atomic writes of checkpoints and result files, and safe checkpoint loading.

A write goes to a temporary file in the destination's directory, is flushed and ``fsync``-ed, and
only then renamed over the destination with :func:`os.replace` (atomic on POSIX and Windows). A
crash or an exception at any point leaves either the old file or the new one at ``path``, never a
half-written file, and the temporary file is removed on failure. Loading always uses
``torch.load(weights_only=True)``: a checkpoint holds tensors and plain containers, never
arbitrary pickled objects.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeAlias

import torch

__all__ = [
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_text",
    "load_checkpoint",
    "save_checkpoint",
]

PathLike: TypeAlias = str | os.PathLike[str]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe later.
_UMASK = _read_umask()


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be loaded (truncated, corrupt, or not weights-only)."""


def _atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Calls ``write(handle)`` on a temporary file next to ``path``, then renames it to ``path``."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"cannot write to {str(target)!r}: it is a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~_UMASK)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(target.parent)
    return target


def _fsync_directory(directory: Path) -> None:
    """Makes the rename durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Atomically replaces the content of ``path`` with ``data``; creates parent directories."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    payload = bytes(data)

    def write(handle: IO[bytes]) -> None:
        handle.write(payload)

    return _atomic_write(path, write)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Atomically replaces the content of ``path`` with ``text`` (e.g. ``metrics.json``, a CSV)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return atomic_write_bytes(path, text.encode(encoding))


def save_checkpoint(obj: Any, path: PathLike) -> Path:
    """Atomically saves ``obj`` with :func:`torch.save`; returns the path written.

    ``obj`` should hold only what ``torch.load(weights_only=True)`` accepts (tensors, state dicts,
    dicts/lists/tuples of numbers and strings), otherwise :func:`load_checkpoint` refuses it.
    If serialisation fails, the previous file at ``path`` (if any) is left untouched.
    """

    def write(handle: IO[bytes]) -> None:
        torch.save(obj, handle)

    return _atomic_write(path, write)


def load_checkpoint(path: PathLike, map_location: str | torch.device | None = "cpu") -> Any:
    """Loads a checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is empty, truncated or corrupt, or holds objects that a
            weights-only load refuses; the message names the path.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"checkpoint not found: {str(source)!r}")
    if source.stat().st_size == 0:
        raise CheckpointError(f"cannot load checkpoint {str(source)!r}: the file is empty")
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"cannot load checkpoint {str(source)!r} with weights_only=True (corrupt file, or it holds "
            f"objects other than tensors and plain containers): {exc}"
        ) from exc
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"cannot load checkpoint {str(source)!r}: the file is truncated or corrupt ({exc})"
        ) from exc
