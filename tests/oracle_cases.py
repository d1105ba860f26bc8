"""The combination space of the differential oracle: axes, admissibility (with reasons) and a pair cover.

A *case* is one value per axis. Axes that do not apply to a case (``sparse_grad`` for a dense
multiplier, the dual optimizer of the unconstrained scheme, ...) take a canonical value, so every case
is listed once. :data:`EXCLUSIONS` states why each excluded combination is excluded.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import NamedTuple

AXES: dict[str, tuple[str, ...]] = {
    "multiplier": (
        "dense",
        "indexed_random",
        "indexed_all",
        "indexed_repeated",
        "indexed_buffer",
        "implicit",
    ),
    "sparse_grad": ("off", "on"),
    "constraint": ("inequality", "equality"),
    "formulation": ("lagrangian", "quadratic_penalty", "augmented_lagrangian", "user_dual_override"),
    "scheme": (
        "simultaneous",
        "alt_primal_dual",
        "alt_primal_dual_class_violations",
        "alt_primal_dual_instance_violations",
        "alt_dual_primal",
        "extrapolation",
        "unconstrained",
    ),
    "dual_optimizer": (
        "sgd",
        "sgd_momentum",
        "adam",
        "nupi_zeros",
        "nupi_sgd",
        "extra_sgd",
        "extra_adam",
        "data_writer",
        "none",
    ),
    "restarts": ("off", "on"),
    "strict": ("absent", "present"),
    "penalty_updater": ("off", "on"),
    "primal_store": ("as_built", "modified"),
    "dtype": ("float32", "float64"),
}

Case = NamedTuple("Case", [(name, str) for name in AXES])  # type: ignore[misc]

INDEXED = {"indexed_random", "indexed_all", "indexed_repeated", "indexed_buffer"}
EXTRA = {"extra_sgd", "extra_adam"}

#: Why a combination is left out (each rule below cites one of these).
EXCLUSIONS = {
    "penalty_only": "QuadraticPenalty has no multiplier: it runs under UnconstrainedOptimizer only, and that "
    "scheme takes only multiplier-free formulations",
    "extragradient": "ExtrapolationConstrainedOptimizer requires optimizers with extrapolation(); ExtraSGD/"
    "ExtraAdam require it (step() without a preceding extrapolation() raises)",
    "sparse_rejected": "torch.optim.Adam and ExtraAdam reject sparse gradients",
    "restarts": "dual restarts reset explicit inequality multipliers only",
    "no_coefficient": "a penalty updater needs a penalty coefficient (QuadraticPenalty, AugmentedLagrangian) "
    "and a scheme that applies it (UnconstrainedOptimizer takes none)",
    "implicit_penalty": "QuadraticPenalty has no multiplier, so the implicit multiplier does not apply",
}


def canonical(case: Case) -> Case:
    """The case with every axis that does not apply set to its first value (``none`` for no dual optimizer)."""
    values = case._asdict()
    if values["multiplier"] not in INDEXED:
        values["sparse_grad"] = "off"
    if values["formulation"] == "quadratic_penalty":
        values["sparse_grad"] = "off"
    if values["scheme"] != "unconstrained" and values["dual_optimizer"] == "none":
        values["dual_optimizer"] = "sgd"
    if values["scheme"] == "unconstrained":
        values["dual_optimizer"] = "none"
    return Case(**values)


def exclusion(case: Case) -> str | None:
    """The key of :data:`EXCLUSIONS` that excludes ``case``, or ``None`` if it is admissible."""
    penalty_only = case.formulation == "quadratic_penalty"
    if penalty_only != (case.scheme == "unconstrained"):
        return "penalty_only"
    if penalty_only and case.multiplier == "implicit":
        return "implicit_penalty"
    if (case.scheme == "extrapolation") != (case.dual_optimizer in EXTRA):
        return "extragradient"
    if case.sparse_grad == "on" and case.dual_optimizer in {"adam", "extra_adam"}:
        return "sparse_rejected"
    if case.restarts == "on" and (
        case.constraint == "equality" or case.multiplier == "implicit" or penalty_only
    ):
        return "restarts"
    if case.penalty_updater == "on" and case.formulation != "augmented_lagrangian":
        return "no_coefficient"
    return None


def admissible_cases() -> list[Case]:
    """Every admissible case, once, in a fixed order."""
    seen: dict[Case, None] = {}
    for values in itertools.product(*AXES.values()):
        case = canonical(Case(*values))
        if exclusion(case) is None:
            seen.setdefault(case, None)
    return list(seen)


def pairs_of(case: Case) -> Iterator[tuple[int, str, int, str]]:
    for (i, a), (j, b) in itertools.combinations(enumerate(case), 2):
        yield (i, a, j, b)


def pair_cover(cases: list[Case], seed: int = 0, sample: int = 64) -> list[Case]:
    """A small subset of ``cases`` holding every pair of axis values that some case holds (greedy)."""
    rng = random.Random(seed)
    holders: dict[tuple[int, str, int, str], list[int]] = {}
    for index, case in enumerate(cases):
        for pair in pairs_of(case):
            holders.setdefault(pair, []).append(index)
    uncovered = set(holders)
    chosen: list[Case] = []
    for pair in sorted(holders):
        if pair not in uncovered:
            continue
        candidates = holders[pair]
        picks = candidates if len(candidates) <= sample else rng.sample(candidates, sample)
        best = max(picks, key=lambda index: sum(p in uncovered for p in pairs_of(cases[index])))
        chosen.append(cases[best])
        uncovered.difference_update(pairs_of(cases[best]))
    return chosen


def case_id(case: Case) -> str:
    return "-".join(case)
