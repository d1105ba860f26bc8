"""UCI Adult (census income), bundled, with the preprocessing of the fairlearn comparison.

Files (package data of ``problems.data``, read through :mod:`importlib.resources`, SHA-256 checked):
``adult.data.gz`` (32,561 training rows) and ``adult.test.gz`` (16,281 test rows; its first line is a
comment and its labels end with a period). Preprocessing, as in the fairlearn benchmark:

* label: income ``>50K`` -> 1, ``<=50K`` -> 0;
* features: every column except the sensitive attribute(s) and ``income`` (``fnlwgt`` included, and
  ``race`` when only ``sex`` is sensitive);
* categorical columns one-hot encoded over the categories of train and test together (sorted), with the
  missing value ``?`` kept as a category of its own;
* numerical columns standardised with the mean and (population) standard deviation of the training file.

The validation split, when asked for, is carved out of the training file (stratified by group and
label, fixed seed), after the standardisation, so the features of an example never depend on it.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.resources
import zlib
from collections.abc import Sequence

import numpy as np
import torch

from problems.common.rates.data import LabeledSplit, RateDataset, validation_split
from problems.common.rates.groups import GroupMode, GroupSpec
from problems.scaffold.datasets import DatasetError

__all__ = [
    "ADULT_COLUMNS",
    "ADULT_FILES",
    "ADULT_SENSITIVE_ATTRIBUTES",
    "NUMERIC_COLUMNS",
    "load_adult",
    "read_adult_tables",
]

ADULT_COLUMNS = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
)
NUMERIC_COLUMNS = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
ADULT_SENSITIVE_ATTRIBUTES = ("sex", "race")
"""Attributes that may be chosen as sensitive."""
ADULT_FILES = {
    "train": ("adult.data.gz", "0929e9d9c7845175493be1a8fd071b8e746a6b9f66d8bf359daabaac44713023", 32561),
    "test": ("adult.test.gz", "fcd5bcc9b18515fd2fd314e2bbd8444263ad0f2a0e638c060c34b0151555aaa2", 16281),
}
"""Per split: bundled file name, its SHA-256 and its number of rows."""

Table = dict[str, np.ndarray]


def _parse_rows(text: str, where: str) -> Table:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("|"):
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != len(ADULT_COLUMNS):
            raise DatasetError(
                f"{where!r} line {number}: {len(fields)} fields, expected {len(ADULT_COLUMNS)}"
            )
        rows.append(fields)
    if not rows:
        raise DatasetError(f"{where!r} holds no rows")
    columns = np.array(rows, dtype=object).T
    table = {name: np.asarray(column, dtype=str) for name, column in zip(ADULT_COLUMNS, columns)}
    table["income"] = np.char.rstrip(table["income"], ".")
    unknown = sorted(set(table["income"].tolist()) - {"<=50K", ">50K"})
    if unknown:
        raise DatasetError(f"{where!r}: unexpected income labels {unknown}")
    for name in NUMERIC_COLUMNS:
        try:
            table[name].astype(np.float64)
        except ValueError as exc:
            raise DatasetError(f"{where!r}: column {name!r} is not numeric ({exc})") from exc
    return table


@functools.lru_cache(maxsize=2)
def _bundled_table(split: str) -> Table:
    name, sha256, rows = ADULT_FILES[split]
    where = f"problems.data/{name}"
    try:
        raw = (importlib.resources.files("problems.data") / name).read_bytes()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"bundled data file {where!r} is missing from the installation") from exc
    actual = hashlib.sha256(raw).hexdigest()
    if actual != sha256:
        raise DatasetError(
            f"{where!r} has sha256 {actual}, expected {sha256}: the file is altered or corrupt"
        )
    try:
        text = gzip.decompress(raw).decode("utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:  # pragma: no cover - checksum passed
        raise DatasetError(f"{where!r} is not a valid gzip text file: {exc}") from exc
    table = _parse_rows(text, where)
    if len(table["income"]) != rows:
        raise DatasetError(f"{where!r} has {len(table['income'])} rows, expected {rows}")
    return table


def read_adult_tables() -> tuple[Table, Table]:
    """The raw training and test tables: column name -> array of strings (labels without the period)."""
    return {k: v.copy() for k, v in _bundled_table("train").items()}, {
        k: v.copy() for k, v in _bundled_table("test").items()
    }


def _encode(
    train: Table, test: Table, feature_columns: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One-hot (over train and test) and standardised (on train) feature matrices."""
    train_parts, test_parts, names = [], [], []
    for column in feature_columns:
        if column in NUMERIC_COLUMNS:
            train_values = train[column].astype(np.float64)
            test_values = test[column].astype(np.float64)
            mean, std = train_values.mean(), train_values.std()
            std = std if std > 0 else 1.0
            train_parts.append(((train_values - mean) / std)[:, None])
            test_parts.append(((test_values - mean) / std)[:, None])
            names.append(column)
        else:
            categories = sorted(set(train[column].tolist()) | set(test[column].tolist()))
            train_parts.append((train[column][:, None] == np.array(categories)[None, :]).astype(np.float64))
            test_parts.append((test[column][:, None] == np.array(categories)[None, :]).astype(np.float64))
            names.extend(f"{column}={category}" for category in categories)
    return np.concatenate(train_parts, axis=1), np.concatenate(test_parts, axis=1), names


def load_adult(
    sensitive: Sequence[str] = ("sex",),
    group_mode: GroupMode = "intersectional",
    validation_fraction: float = 0.2,
    split_seed: int = 0,
) -> RateDataset:
    """Adult with the standard split and fairlearn's preprocessing (see the module docstring).

    Args:
        sensitive: Sensitive attribute(s), among :data:`ADULT_SENSITIVE_ATTRIBUTES`; dropped from the
            features and used to form the groups.
        group_mode: How several attributes form groups (see :mod:`problems.common.rates.groups`).
        validation_fraction: Fraction of the training file held out to choose the returned iterate
            (0: none, the choice is made on the training data).
        split_seed: Seed of the validation split (independent of any training seed).

    Raises:
        ValueError: An unknown sensitive attribute (the message lists the valid ones) or bad fraction.
        DatasetError: A bundled file is corrupt.
    """
    attributes = [sensitive] if isinstance(sensitive, str) else list(sensitive)
    unknown = [attribute for attribute in attributes if attribute not in ADULT_SENSITIVE_ATTRIBUTES]
    if unknown:
        raise ValueError(
            f"unknown sensitive attribute(s) {unknown} for adult; choose from {list(ADULT_SENSITIVE_ATTRIBUTES)}"
        )
    train, test = _bundled_table("train"), _bundled_table("test")
    groups = GroupSpec.from_columns([train, test], attributes, group_mode)
    features = [c for c in ADULT_COLUMNS if c != "income" and c not in attributes]
    x_train, x_test, names = _encode(train, test, features)

    def split(table: Table, x: np.ndarray) -> LabeledSplit:
        y = torch.tensor((table["income"] == ">50K").astype(np.float32))
        return LabeledSplit(torch.tensor(x, dtype=torch.float32), y, groups.membership(table))

    fitted, validation = validation_split(split(train, x_train), validation_fraction, split_seed)
    return RateDataset("adult", fitted, validation, split(test, x_test), groups, names)
