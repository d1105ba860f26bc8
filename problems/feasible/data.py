"""Data of the feasible-learning problem: MNIST-5k, and a synthetic set of any size (up to 10^6 and more).

The synthetic set is a ``classes``-class problem in ``num_features`` dimensions: Gaussian inputs
labelled by a fixed random linear teacher, with a fraction ``label_noise`` of labels redrawn at
random (those examples can only be fit by memorising them). It is generated in chunks from a
:class:`torch.Generator` seeded by ``seed``, so the same arguments give the same data.
"""

from __future__ import annotations

import torch

from problems.scaffold.datasets import DataSplit, load_digits_split, mnist5k_split

__all__ = ["ClassificationData", "load_feasible_data", "synthetic_classification"]


class ClassificationData(DataSplit):
    """Train/test features (float32) and labels (int64): a :class:`~problems.scaffold.datasets.DataSplit`
    that knows its number of classes.
    """

    __slots__ = ()

    @property
    def num_classes(self) -> int:
        return int(max(int(self.y_train.max()), int(self.y_test.max())) + 1)


def synthetic_classification(
    num_examples: int,
    num_features: int = 20,
    classes: int = 4,
    label_noise: float = 0.05,
    num_test: int = 2000,
    seed: int = 0,
    chunk: int = 262_144,
) -> ClassificationData:
    """A teacher-labelled Gaussian data set with ``num_examples`` training and ``num_test`` test examples.

    Raises:
        ValueError: Non-positive sizes, fewer than 2 classes or ``label_noise`` outside [0, 1).
    """
    if num_examples < 1 or num_test < 1 or num_features < 1:
        raise ValueError(
            f"num_examples, num_test and num_features must be >= 1, got {num_examples}, {num_test}, {num_features}"
        )
    if classes < 2:
        raise ValueError(f"classes must be >= 2, got {classes}")
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise must lie in [0, 1), got {label_noise}")
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(num_features, classes, generator=generator)
    total = num_examples + num_test
    x = torch.empty(total, num_features)
    y = torch.empty(total, dtype=torch.long)
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        block = torch.randn(stop - start, num_features, generator=generator)
        labels = (block @ teacher).argmax(dim=1)
        noisy = torch.rand(stop - start, generator=generator) < label_noise
        random_labels = torch.randint(0, classes, (stop - start,), generator=generator)
        x[start:stop] = block
        y[start:stop] = torch.where(noisy, random_labels, labels)
    return ClassificationData(x[:num_examples], y[:num_examples], x[num_examples:], y[num_examples:])


def load_feasible_data(dataset: str, num_examples: int = 1_000_000, seed: int = 0) -> ClassificationData:
    """``"mnist5k"`` (4,000 / 1,000), ``"digits"`` (scikit-learn, 1,437 / 360) or ``"synthetic"`` (``num_examples``)."""
    if dataset == "mnist5k":
        return ClassificationData(*mnist5k_split())
    if dataset == "digits":
        return ClassificationData(*load_digits_split())
    if dataset == "synthetic":
        return synthetic_classification(num_examples, seed=seed)
    raise ValueError(f"dataset must be 'mnist5k', 'digits' or 'synthetic', got {dataset!r}")
