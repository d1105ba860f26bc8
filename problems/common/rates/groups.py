"""Groups of examples defined by one or several sensitive attributes, as boolean membership masks.

With one attribute (``sex``) each value is a group. With several (``sex`` and ``race``) there are two
ways to form groups:

* ``"intersectional"`` (default, fairlearn's semantics for several sensitive features): one group per
  combination of values that occurs, e.g. ``sex=Female & race=Black``; the groups partition the data.
* ``"marginal"``: the groups of each attribute separately (``sex=Female``, ..., ``race=Black``, ...);
  every example belongs to one group per attribute, and constraints hold for every attribute.

Memberships are a boolean matrix ``(num_groups, num_examples)``, so overlapping groups need no special
case anywhere. :attr:`GroupSpec.partitions` lists the groups that partition the data (one list per
attribute in marginal mode), which is what the max-minus-min metrics compare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from problems.common.rates.kinds import RateKind, denominator_mask

__all__ = ["GroupError", "GroupMode", "GroupSpec", "check_groups_nonempty"]

GroupMode = Literal["intersectional", "marginal"]


class GroupError(ValueError):
    """A group is unusable: it has no member (with the required label) in a whole split."""


@dataclass(frozen=True)
class GroupSpec:
    """The groups of a problem.

    Attributes:
        attributes: The sensitive attributes, in the order given.
        mode: ``"intersectional"`` or ``"marginal"`` (see the module docstring).
        values: Per group, its ``(attribute, value)`` pairs (one pair per attribute when
            intersectional, a single pair when marginal).
    """

    attributes: tuple[str, ...]
    mode: GroupMode
    values: tuple[tuple[tuple[str, str], ...], ...]

    @property
    def names(self) -> list[str]:
        """Readable names such as ``"sex=Female"`` or ``"sex=Female&race=Black"``."""
        return ["&".join(f"{attribute}={value}" for attribute, value in group) for group in self.values]

    @property
    def num_groups(self) -> int:
        return len(self.values)

    @property
    def partitions(self) -> list[list[int]]:
        """Indices of groups that partition the data: one list, or one per attribute when marginal."""
        if self.mode == "intersectional":
            return [list(range(self.num_groups))]
        return [
            [index for index, group in enumerate(self.values) if group[0][0] == attribute]
            for attribute in self.attributes
        ]

    @classmethod
    def from_columns(
        cls,
        columns: Sequence[Mapping[str, np.ndarray]],
        attributes: Sequence[str],
        mode: GroupMode = "intersectional",
    ) -> GroupSpec:
        """Groups over the union of the values found in ``columns`` (e.g. the train and test tables).

        Args:
            columns: One or more tables, each mapping an attribute name to a 1-D array of strings.
            attributes: Sensitive attributes (at least one, no repeats); each must be a key of every table.
            mode: ``"intersectional"`` or ``"marginal"``.

        Raises:
            ValueError: No attribute, a repeated attribute, an unknown attribute (the message lists the
                known ones), or an unknown mode.
        """
        attributes = tuple(attributes)
        if not attributes:
            raise ValueError("give at least one sensitive attribute")
        if len(set(attributes)) != len(attributes):
            raise ValueError(f"sensitive attributes must not repeat, got {list(attributes)}")
        if mode not in ("intersectional", "marginal"):
            raise ValueError(f"group mode must be 'intersectional' or 'marginal', got {mode!r}")
        for table in columns:
            unknown = [attribute for attribute in attributes if attribute not in table]
            if unknown:
                raise ValueError(f"unknown sensitive attribute(s) {unknown}; choose from {sorted(table)}")
        groups: list[tuple[tuple[str, str], ...]]
        if mode == "marginal" or len(attributes) == 1:
            groups = [
                ((attribute, str(value)),)
                for attribute in attributes
                for value in sorted({str(v) for table in columns for v in table[attribute]})
            ]
            return cls(attributes, mode, tuple(groups))
        combinations: set[tuple[str, ...]] = set()
        for table in columns:
            stacked = np.stack([np.asarray(table[attribute]).astype(str) for attribute in attributes], axis=1)
            combinations.update(tuple(row) for row in np.unique(stacked, axis=0))
        groups = [tuple(zip(attributes, combination)) for combination in sorted(combinations)]
        return cls(attributes, mode, tuple(groups))

    def membership(self, table: Mapping[str, np.ndarray]) -> torch.Tensor:
        """Boolean membership matrix ``(num_groups, n)`` of the rows of ``table``."""
        masks = []
        for group in self.values:
            mask = np.ones(len(np.asarray(table[self.attributes[0]])), dtype=bool)
            for attribute, value in group:
                mask &= np.asarray(table[attribute]).astype(str) == value
            masks.append(mask)
        return torch.from_numpy(np.stack(masks))


def check_groups_nonempty(
    membership: torch.Tensor,
    labels: torch.Tensor,
    names: Sequence[str],
    kinds: Sequence[RateKind],
    split: str,
) -> None:
    """Raise :class:`GroupError` if a group has no member in the denominator of one of ``kinds``.

    Args:
        membership: ``(num_groups, n)`` boolean memberships.
        labels: ``(n,)`` labels in {0, 1}.
        names: Group names (for the message).
        kinds: The rates that will be measured per group.
        split: Name of the split (for the message), e.g. ``"train"``.
    """
    if membership.shape[0] != len(names):
        raise ValueError(f"{membership.shape[0]} membership rows but {len(names)} group names")
    for kind in dict.fromkeys(RateKind(kind) for kind in kinds):
        counts = (membership & denominator_mask(kind, labels)).sum(dim=1)
        for name, count in zip(names, counts.tolist()):
            if count == 0:
                need = {
                    RateKind.POSITIVE_PREDICTION: "member",
                    RateKind.ERROR: "member",
                    RateKind.TRUE_POSITIVE: "member with label 1",
                    RateKind.FALSE_NEGATIVE: "member with label 1",
                    RateKind.FALSE_POSITIVE: "member with label 0",
                }[kind]
                raise GroupError(
                    f"group {name!r} has no {need} in the {split} split, so its {kind.value} rate is "
                    "undefined; drop the group (merge rare values) or choose another sensitive attribute"
                )
