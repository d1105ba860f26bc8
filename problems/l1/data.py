"""The two data sets of the l1 problems: Iris (full batch) and MNIST-5k (mini-batches)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from problems.scaffold.datasets import DataSplit, mnist5k_split, stratified_split

__all__ = ["Dataset", "iris_split", "load_split"]

Dataset = Literal["iris", "mnist5k"]


def iris_split(seed: int = 0) -> DataSplit:
    """scikit-learn's bundled Iris (150 flowers, 4 features, 3 classes), split 120/30 by class.

    Features are standardised with the mean and standard deviation of the *training* rows, so the
    first-layer weights of every model share one scale (the l1 norm treats all weights alike).
    """
    from sklearn.datasets import load_iris

    iris = load_iris()
    x = torch.tensor(np.asarray(iris.data, dtype=np.float32))
    y = torch.tensor(np.asarray(iris.target, dtype=np.int64))
    train, test = (torch.from_numpy(part) for part in stratified_split(y, 0.2, seed))
    mean, std = x[train].mean(0), x[train].std(0)
    x = (x - mean) / std
    return DataSplit(x[train], y[train], x[test], y[test])


def load_split(dataset: Dataset) -> DataSplit:
    """The fixed train/test split of ``dataset`` (``"iris"``: 120/30, ``"mnist5k"``: 4,000/1,000)."""
    if dataset == "iris":
        return iris_split()
    if dataset == "mnist5k":
        return mnist5k_split()
    raise ValueError(f"dataset must be 'iris' or 'mnist5k', got {dataset!r}")
