"""Loaders for the bundled data sets and their deterministic train/test splits.

The bundled files are package data of ``problems.data`` read through :mod:`importlib.resources`,
so an installed copy of the package works without the repository. Every split is stratified by
class and depends only on its own ``seed`` (0 by default) through a fixed integer hash, never on a
global random number generator or on NumPy's random streams: changing the training seed, or the
NumPy version, never changes the test set.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.resources
import io
import numbers
import os
import zlib
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "MNIST5K_FILE",
    "MNIST5K_SHA256",
    "DataSplit",
    "DatasetError",
    "load_digits_split",
    "load_mnist5k",
    "mnist5k_split",
    "stratified_split",
]

MNIST5K_FILE = "mnist_5k.csv.gz"
"""File name of the bundled MNIST subset inside ``problems.data``."""
MNIST5K_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
"""SHA-256 of the bundled ``mnist_5k.csv.gz`` (verified whenever the bundled copy is read)."""

_MNIST_PIXELS = 28 * 28
_MNIST_CLASSES = 10
_UINT64_MASK = (1 << 64) - 1


class DatasetError(ValueError):
    """A data file is unreadable or malformed (bad gzip, wrong column count, non-numeric...)."""


class DataSplit(NamedTuple):
    """A train/test split: features are float32 ``[n, d]``, labels int64 ``[n]``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _read_bundled(name: str) -> tuple[bytes, str]:
    resource = importlib.resources.files("problems.data") / name
    where = f"problems.data/{name}"
    try:
        return resource.read_bytes(), where
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"bundled data file {where!r} is missing from the installation") from exc


def _read_path(path: str | os.PathLike[str]) -> tuple[bytes, str]:
    where = os.fspath(path)
    if not os.path.isfile(where):
        raise FileNotFoundError(f"data file not found: {where!r}")
    with open(where, "rb") as handle:
        return handle.read(), where


def _parse_numeric_csv(raw: bytes, where: str, columns: int) -> np.ndarray:
    """Decompresses (if gzip) and parses a header-less numeric CSV with ``columns`` columns."""
    text = raw
    if raw[:2] == b"\x1f\x8b" or where.endswith(".gz"):
        try:
            text = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{where!r} is not a valid gzip file: {exc}") from exc
    if not text.strip():
        raise DatasetError(f"{where!r} holds no rows")
    try:
        array = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError:
        try:  # not all integers: accept real numbers, checked below
            array = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.float64, ndmin=2)
        except ValueError as exc:
            raise DatasetError(f"{where!r} is not a numeric CSV with {columns} columns: {exc}") from exc
    if array.shape[1] != columns:
        raise DatasetError(f"{where!r} has {array.shape[1]} columns, expected {columns}")
    if not np.all(np.isfinite(array)):
        raise DatasetError(f"{where!r} contains non-finite values")
    return array


def _validate_mnist(array: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    pixels, labels = array[:, :_MNIST_PIXELS], array[:, _MNIST_PIXELS]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DatasetError(
            f"{where!r}: pixel values must lie in [0, 255], got range [{pixels.min()}, {pixels.max()}]"
        )
    if np.any(labels != np.round(labels)) or labels.min() < 0 or labels.max() >= _MNIST_CLASSES:
        raise DatasetError(f"{where!r}: labels (last column) must be integers in 0..9")
    return pixels.astype(np.float32) / np.float32(255.0), labels.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _bundled_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    raw, where = _read_bundled(MNIST5K_FILE)
    _check_sha256(raw, where, MNIST5K_SHA256)
    return _validate_mnist(_parse_numeric_csv(raw, where, _MNIST_PIXELS + 1), where)


def _check_sha256(raw: bytes, where: str, expected: str) -> None:
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected.lower():
        raise DatasetError(
            f"{where!r} has sha256 {actual}, expected {expected}: the file is altered or corrupt"
        )


def load_mnist5k(
    path: str | os.PathLike[str] | None = None, *, sha256: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loads the 5,000-digit MNIST subset: ``X`` float32 ``[n, 784]`` in ``[0, 1]``, ``y`` int64 ``[n]``.

    Args:
        path: A CSV (optionally gzip-compressed) with 784 pixel values in 0-255 then the label
            0-9 per row, no header. ``None`` (default) reads the bundled copy, whose SHA-256 is
            checked against :data:`MNIST5K_SHA256`; it is parsed once per process and cached.
        sha256: Optional expected SHA-256 of the file at ``path``.

    Raises:
        FileNotFoundError: The file does not exist (the message names it).
        DatasetError: Bad gzip data, wrong column count, non-numeric or out-of-range values, or a
            checksum mismatch (the message names the file).
    """
    if path is None:
        if sha256 is not None:
            raise ValueError(f"sha256 applies to a given path only; got sha256={sha256!r} with path=None")
        pixels, labels = _bundled_mnist5k()
    else:
        raw, where = _read_path(path)
        if sha256 is not None:
            _check_sha256(raw, where, sha256)
        pixels, labels = _validate_mnist(_parse_numeric_csv(raw, where, _MNIST_PIXELS + 1), where)
    return torch.tensor(pixels), torch.tensor(labels)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, elementwise on uint64 (wrapping arithmetic): a fixed, portable hash."""
    z = values + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def stratified_split(
    labels: np.ndarray | torch.Tensor, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split; returns sorted ``(train_indices, test_indices)``.

    In each class with ``n_c`` rows, the rows are ordered by ``splitmix64(splitmix64(seed) ^ i)``
    (``i`` the row index) and the first ``floor(test_fraction * n_c + 1/2)`` go to the test set.
    The result depends only on ``labels``, ``test_fraction`` and ``seed``.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= _UINT64_MASK:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {tuple(y.shape)}")
    seed_key = _splitmix64(np.array([seed], dtype=np.uint64))
    keys = _splitmix64(np.arange(len(y), dtype=np.uint64) ^ seed_key)
    test_parts = []
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        n_test = int(np.floor(test_fraction * len(members) + 0.5))
        order = members[np.argsort(keys[members], kind="stable")]
        test_parts.append(order[:n_test])
    test = np.sort(np.concatenate(test_parts)) if test_parts else np.empty(0, dtype=np.int64)
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _split(x: torch.Tensor, y: torch.Tensor, test_fraction: float, seed: int) -> DataSplit:
    train, test = stratified_split(y, test_fraction, seed)
    train_t, test_t = torch.from_numpy(train), torch.from_numpy(test)
    return DataSplit(x[train_t], y[train_t], x[test_t], y[test_t])


def validation_split(data: DataSplit, fraction: float = 0.2, seed: int = 1) -> DataSplit:
    """The training part of ``data`` split again, stratified: train on the rest, evaluate on the held-out
    ``fraction`` (MNIST-5k: 3,200 / 800). The test part is dropped, so that settings can be chosen
    without looking at it."""
    return _split(data.x_train, data.y_train, fraction, seed)


def mnist5k_split(seed: int = 0, path: str | os.PathLike[str] | None = None) -> DataSplit:
    """The fixed 4,000/1,000 train/test split of MNIST-5k, 400/100 digits per class.

    ``seed`` is the *split* seed (default 0), deliberately separate from the training seed, so all
    runs of all problems evaluate on the same 1,000 test digits. See :func:`stratified_split`.
    """
    x, y = load_mnist5k(path)
    return _split(x, y, 0.2, seed)


def load_digits_split(seed: int = 0) -> DataSplit:
    """scikit-learn's 8x8 digits (1,797 images, features scaled to ``[0, 1]``), split 80/20 by class.

    A tiny alternative to MNIST-5k for quick runs and tests; ``x`` is float32 ``[n, 64]``.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - scikit-learn is in the 'problems' extra
        message = "load_digits_split needs scikit-learn: pip install 'cooper-like[problems]'"
        raise ImportError(message) from exc
    digits = load_digits()
    x = torch.tensor(np.asarray(digits.data, dtype=np.float32) / np.float32(16.0))
    y = torch.tensor(np.asarray(digits.target, dtype=np.int64))
    return _split(x, y, 0.2, seed)
