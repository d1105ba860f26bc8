"""Labelled, grouped data for rate-constrained problems: the containers and the validation split.

A :class:`LabeledSplit` holds features, binary labels and the boolean group memberships of one split;
a :class:`RateDataset` holds the train / validation / test splits with the :class:`GroupSpec` that
names the groups. The validation split is carved out of the training data, stratified by group and
label, with its own fixed seed (never the training seed), so every run sees the same examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from problems.common.rates.groups import GroupSpec, check_groups_nonempty
from problems.common.rates.kinds import RateKind
from problems.scaffold.datasets import stratified_split

__all__ = ["LabeledSplit", "RateDataset", "load_breast_cancer_rates", "stratify_keys", "validation_split"]


class LabeledSplit(NamedTuple):
    """One split: ``x`` float32 ``(n, d)``, ``y`` float32 ``(n,)`` in {0, 1}, ``membership`` bool ``(G, n)``."""

    x: torch.Tensor
    y: torch.Tensor
    membership: torch.Tensor

    def subset(self, indices: torch.Tensor | np.ndarray) -> LabeledSplit:
        """The rows ``indices`` (membership columns follow)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return LabeledSplit(self.x[index], self.y[index], self.membership[:, index])

    @property
    def num_examples(self) -> int:
        """Number of examples (rows of ``x``)."""
        return int(self.y.shape[0])


@dataclass
class RateDataset:
    """Train, validation (optional) and test splits of a binary task with groups.

    Attributes:
        name: Data-set name, e.g. ``"adult"``.
        train: The examples the model is fitted on.
        validation: Held-out training examples used to choose the returned iterate, or ``None``
            (then the training split is used for the choice).
        test: The test split (reported only, never used for a choice).
        groups: The groups (names, attributes, partitions).
        feature_names: One name per feature column.
    """

    name: str
    train: LabeledSplit
    validation: LabeledSplit | None
    test: LabeledSplit
    groups: GroupSpec
    feature_names: list[str]

    @property
    def num_features(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def selection_split(self) -> LabeledSplit:
        """The split used to choose the returned iterate (validation, or train without one)."""
        return self.validation if self.validation is not None else self.train

    def splits(self) -> dict[str, LabeledSplit]:
        named = {"train": self.train, "test": self.test}
        if self.validation is not None:
            named["validation"] = self.validation
        return named

    def check_groups(self, kinds: list[RateKind]) -> None:
        """Raise :class:`~problems.common.rates.groups.GroupError` if a group is empty for a rate in a split."""
        for split_name, split in self.splits().items():
            check_groups_nonempty(split.membership, split.y, self.groups.names, kinds, split_name)


def stratify_keys(split: LabeledSplit) -> np.ndarray:
    """One integer per example identifying its (group memberships, label) cell."""
    columns = np.concatenate(
        [split.membership.numpy().T.astype(np.int64), split.y.numpy().astype(np.int64)[:, None]], axis=1
    )
    _, keys = np.unique(columns, axis=0, return_inverse=True)
    return np.asarray(keys).reshape(-1)


def validation_split(
    split: LabeledSplit, fraction: float, seed: int = 0
) -> tuple[LabeledSplit, LabeledSplit | None]:
    """Split off a validation set stratified by group and label; ``fraction=0`` returns ``(split, None)``.

    Deterministic: a fixed hash of ``(seed, row index)`` orders each (group, label) cell
    (:func:`problems.scaffold.datasets.stratified_split`).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must lie in [0, 1), got {fraction!r}")
    if fraction == 0.0:
        return split, None
    keep, held_out = stratified_split(stratify_keys(split), fraction, seed)
    return split.subset(keep), split.subset(held_out)


def load_breast_cancer_rates(validation_fraction: float = 0.2, split_seed: int = 0) -> RateDataset:
    """scikit-learn's breast-cancer data (569 tumours) with label 1 = malignant, standardised features.

    A small, fast data set for Neyman-Pearson classification (miss few malignant tumours while keeping
    false alarms under a bound). Test: 20% stratified; validation: ``validation_fraction`` of the rest.
    One trivial group ``all=all`` (the data have no sensitive attribute).
    """
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError as exc:  # pragma: no cover - scikit-learn is in the 'problems' extra
        raise ImportError("the breast-cancer data set needs scikit-learn: pip install scikit-learn") from exc
    bunch = load_breast_cancer()
    features = np.asarray(bunch.data, dtype=np.float64)
    labels = (np.asarray(bunch.target) == 0).astype(np.float32)  # sklearn: 0 = malignant
    train_index, test_index = stratified_split(labels.astype(np.int64), 0.2, split_seed)
    mean, std = features[train_index].mean(0), features[train_index].std(0)
    x = torch.tensor((features - mean) / np.where(std > 0, std, 1.0), dtype=torch.float32)
    y = torch.tensor(labels)
    groups = GroupSpec(("all",), "intersectional", ((("all", "all"),),))
    everyone = torch.ones(1, len(y), dtype=torch.bool)
    full = LabeledSplit(x, y, everyone)
    train, validation = validation_split(full.subset(train_index), validation_fraction, split_seed)
    names = [str(name) for name in bunch.feature_names]
    return RateDataset("breast-cancer", train, validation, full.subset(test_index), groups, names)
