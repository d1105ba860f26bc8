"""Tests of the bundled data sets and their splits."""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from problems.scaffold import datasets
from problems.scaffold.datasets import (
    MNIST5K_SHA256,
    DatasetError,
    load_digits_split,
    load_mnist5k,
    mnist5k_split,
    stratified_split,
    validation_split,
)


def _write_csv(path: Path, rows: Sequence[Sequence[object]], compress: bool = True) -> Path:
    text = "\n".join(",".join(str(v) for v in row) for row in rows) + "\n"
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())
    return path


def _digit_row(label: int, value: int = 0) -> list[int]:
    return [value] * 784 + [label]


def test_bundled_file_matches_provenance() -> None:
    data = (importlib.resources.files("problems.data") / "mnist_5k.csv.gz").read_bytes()
    assert hashlib.sha256(data).hexdigest() == MNIST5K_SHA256
    provenance = (importlib.resources.files("problems.data") / "PROVENANCE.md").read_text()
    assert MNIST5K_SHA256 in provenance and "CC BY-SA 3.0" in provenance and "BSD-3" in provenance


def test_load_mnist5k_shapes_and_range() -> None:
    x, y = load_mnist5k()
    assert x.shape == (5000, 784) and x.dtype == torch.float32
    assert y.shape == (5000,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.bincount(y).tolist() == [500] * 10
    # Callers get their own tensors: mutating them does not alter the cached copy.
    x[0] = 5.0
    assert float(load_mnist5k()[0].max()) == 1.0


def test_mnist5k_split_is_stratified_and_deterministic() -> None:
    split = mnist5k_split()
    assert split.x_train.shape == (4000, 784) and split.x_test.shape == (1000, 784)
    assert torch.bincount(split.y_train).tolist() == [400] * 10
    assert torch.bincount(split.y_test).tolist() == [100] * 10
    again = mnist5k_split(seed=0)
    assert torch.equal(split.x_test, again.x_test) and torch.equal(split.y_train, again.y_train)
    # Independent of the global (training) random state.
    torch.manual_seed(123)
    np.random.seed(123)
    assert torch.equal(mnist5k_split().y_test, split.y_test)
    other = mnist5k_split(seed=1)
    assert not torch.equal(other.x_test, split.x_test)
    # Train and test are disjoint and cover everything.
    x, _ = load_mnist5k()
    train_idx, test_idx = stratified_split(load_mnist5k()[1])
    assert len(np.intersect1d(train_idx, test_idx)) == 0 and len(train_idx) + len(test_idx) == len(x)
    torch.testing.assert_close(x[torch.from_numpy(test_idx)], split.x_test)


def test_validation_split_holds_out_a_fifth_of_the_training_digits() -> None:
    split = mnist5k_split()
    held = validation_split(split)
    assert (len(held.y_train), len(held.y_test)) == (3200, 800)
    assert torch.bincount(held.y_test).tolist() == [80] * 10  # stratified: 80 per class
    rows = {tuple(row.tolist()) for row in split.x_train[:, ::7]}
    assert all(tuple(row.tolist()) in rows for row in held.x_test[:50, ::7])  # drawn from training digits
    assert torch.equal(validation_split(split).y_test, held.y_test)  # deterministic


def test_stratified_split_on_hand_labels() -> None:
    labels = np.array([0] * 10 + [1] * 5 + [2] * 1)
    train, test = stratified_split(labels, test_fraction=0.2, seed=3)
    assert np.bincount(labels[test], minlength=3).tolist() == [2, 1, 0]
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    train_t, test_t = stratified_split(torch.from_numpy(labels), test_fraction=0.2, seed=3)
    assert np.array_equal(train, train_t) and np.array_equal(test, test_t)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_fraction": 0.0}, r"test_fraction must lie in \(0, 1\), got 0.0"),
        ({"test_fraction": 1.0}, r"test_fraction must lie in \(0, 1\), got 1.0"),
        ({"seed": -1}, r"seed must be an int in \[0, 2\*\*64\), got -1"),
        ({"seed": 0.5}, r"seed must be an int in \[0, 2\*\*64\), got 0.5"),
    ],
)
def test_stratified_split_validates(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stratified_split(np.zeros(5), **kwargs)  # type: ignore[arg-type]


def test_stratified_split_rejects_2d_labels() -> None:
    with pytest.raises(ValueError, match=r"labels must be one-dimensional, got shape \(2, 2\)"):
        stratified_split(np.zeros((2, 2)))


def test_load_digits_split() -> None:
    split = load_digits_split()
    assert split.x_train.shape[1] == 64 and split.x_train.dtype == torch.float32
    n_train, n_test = len(split.y_train), len(split.y_test)
    assert n_train + n_test == 1797
    assert abs(n_test / 1797 - 0.2) < 0.01
    assert float(split.x_train.max()) <= 1.0
    assert torch.equal(load_digits_split().y_test, split.y_test)
    train_counts = torch.bincount(split.y_train).double()
    test_counts = torch.bincount(split.y_test).double()
    assert torch.allclose(
        test_counts / (train_counts + test_counts), torch.full((10,), 0.2, dtype=torch.float64), atol=0.02
    )


def test_load_mnist5k_from_a_path(tmp_path: Path) -> None:
    rows = [_digit_row(3, 255), _digit_row(7, 0)]
    x, y = load_mnist5k(_write_csv(tmp_path / "small.csv.gz", rows))
    assert x.shape == (2, 784) and y.tolist() == [3, 7] and float(x[0].min()) == 1.0
    plain = _write_csv(tmp_path / "small.csv", rows, compress=False)
    assert torch.equal(load_mnist5k(plain)[0], x)
    # Real-valued pixels are accepted as long as they are in range.
    x_real, _ = load_mnist5k(_write_csv(tmp_path / "real.csv", [[127.5] * 784 + [1]], compress=False))
    assert float(x_real[0, 0]) == pytest.approx(0.5)
    digest = hashlib.sha256(plain.read_bytes()).hexdigest()
    assert load_mnist5k(plain, sha256=digest)[1].tolist() == [3, 7]


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.csv\.gz"):
        load_mnist5k(tmp_path / "nowhere.csv.gz")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.csv.gz", b"this is not gzip data", "is not a valid gzip file"),
        ("truncated.csv.gz", gzip.compress(b"1,2,3\n" * 1000, mtime=0)[:40], "is not a valid gzip file"),
        ("empty.csv", b"\n\n", "holds no rows"),
        ("columns.csv", b"1,2,3\n4,5,6\n", "has 3 columns, expected 785"),
        ("ragged.csv", ("0," * 784 + "1\n" + "1,2\n").encode(), "is not a numeric CSV with 785 columns"),
        ("text.csv", ("0," * 783 + "abc,1\n").encode(), "is not a numeric CSV with 785 columns"),
        ("nan.csv", ("0," * 783 + "nan,1\n").encode(), "contains non-finite values"),
        ("pixels.csv", ("0," * 783 + "256,1\n").encode(), r"pixel values must lie in \[0, 255\]"),
        ("labels.csv", ("0," * 784 + "10\n").encode(), r"labels \(last column\) must be integers in 0..9"),
        ("fraction.csv", ("0," * 784 + "1.5\n").encode(), r"labels \(last column\) must be integers in 0..9"),
    ],
)
def test_corrupt_files_raise_naming_the_path(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message) as info:
        load_mnist5k(path)
    assert name in str(info.value)


def test_checksum_mismatch_names_the_path(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "small.csv.gz", [_digit_row(1)])
    with pytest.raises(DatasetError, match=r"small\.csv\.gz.*has sha256 .*expected 00"):
        load_mnist5k(path, sha256="00" * 32)
    with pytest.raises(ValueError, match="sha256 applies to a given path only"):
        load_mnist5k(sha256="00" * 32)


def test_altered_bundled_file_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "_read_bundled", lambda name: (b"altered", f"problems.data/{name}"))
    datasets._bundled_mnist5k.cache_clear()
    try:
        with pytest.raises(DatasetError, match=r"problems\.data/mnist_5k\.csv\.gz.*altered or corrupt"):
            load_mnist5k()
    finally:
        datasets._bundled_mnist5k.cache_clear()


def test_missing_bundled_file_names_the_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"bundled data file 'problems\.data/absent\.csv\.gz' is missing"
    ):
        datasets._read_bundled("absent.csv.gz")
