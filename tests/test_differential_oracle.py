"""Differential oracle: the library against a reference written from the update equations.

Every parameter, multiplier, penalty coefficient and dual-optimizer state entry after a few steps of a
random small problem must match the reference (rtol 1e-6 / atol 1e-9 in float64, rtol 1e-4 / atol 1e-6
in float32), over the combination space of ``tests/oracle_cases.py``.

By default the cases are a pair cover: every pair of axis values that an admissible case holds is held
by some case run here (checked below). ``COOPER_LIKE_ORACLE=deep`` runs every admissible case.
"""

from __future__ import annotations

import itertools
import os
import warnings

import pytest
import torch

from tests.oracle_cases import (
    AXES,
    EXCLUSIONS,
    Case,
    admissible_cases,
    case_id,
    exclusion,
    pair_cover,
    pairs_of,
)
from tests.oracle_reference import library_run, make_data, reference_run

ALL_CASES = admissible_cases()
DEEP = os.environ.get("COOPER_LIKE_ORACLE") == "deep"
CASES = ALL_CASES if DEEP else pair_cover(ALL_CASES, seed=0) + pair_cover(ALL_CASES, seed=1)
TOLERANCES = {"float64": {"rtol": 1e-6, "atol": 1e-9}, "float32": {"rtol": 1e-4, "atol": 1e-6}}


def test_the_default_cases_hold_every_admissible_pair() -> None:
    admissible_pairs = {pair for case in ALL_CASES for pair in pairs_of(case)}
    covered = {pair for case in CASES for pair in pairs_of(case)}
    assert admissible_pairs <= covered
    # every axis value appears in some admissible case (no axis value is excluded outright)
    for index, values in enumerate(AXES.values()):
        assert {case[index] for case in ALL_CASES} == set(values)


def test_every_exclusion_has_a_stated_reason() -> None:
    reasons = {exclusion(Case(*values)) for values in itertools.product(*AXES.values())}
    assert reasons - {None} == set(EXCLUSIONS)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_library_matches_the_reference(case: Case, device: str) -> None:
    seed = ALL_CASES.index(case)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning of any kind in a valid combination
        got = library_run(case, make_data(case, seed), device)
    expected = reference_run(case, make_data(case, seed))
    assert set(got) == set(expected), f"state entries differ: {sorted(got)} vs {sorted(expected)}"
    for key, value in expected.items():
        if value.dtype == torch.bool:
            assert torch.equal(got[key], value), key
        else:
            torch.testing.assert_close(
                got[key], value, **TOLERANCES[case.dtype], msg=lambda m, k=key: f"{k}: {m}"
            )
