r"""Choosing the model to return from the iterates of a primal-dual run.

Gradient descent-ascent on a non-convex (or merely non-strictly convex) Lagrangian does not promise that
its *last* iterate is feasible: the iterates orbit the constrained optimum. TensorFlow Constrained
Optimization (Cotter et al., 2019) therefore keeps candidate iterates :math:`\theta_1, \dots, \theta_K`
(say one per epoch), measures on held-out data their objective :math:`f_k` and constraint values
:math:`g_{kj}` (feasible when :math:`g_{kj} \le 0`), and returns either

* the **best candidate** (:func:`best_candidate`): the feasible candidate with the smallest objective;
  when none is feasible, the one with the smallest largest violation (ties broken by objective); or
* the **"m+1 stochastic" mixture** (:func:`best_mixture`): the distribution :math:`p` over candidates
  solving the linear program

  .. math::
      \min_{p \in \Delta_K} \ \sum_k p_k f_k \quad \text{s.t.} \quad \sum_k p_k g_{kj} \le 0 \ \ (j = 1..m),

  whose basic optimal solutions have at most :math:`m + 1` non-zero weights. Rates are linear in
  :math:`p` (the expected rate of the randomized classifier), so its objective and constraints are
  exact. When the program is infeasible, the largest violation is minimised first, then the objective.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["Candidate", "Choice", "SelectionMode", "best_candidate", "best_mixture", "choose"]

SelectionMode = Literal["best-feasible", "last", "mixture"]


@dataclass
class Candidate:
    """One kept iterate.

    Attributes:
        step: Optimisation step after which it was taken.
        objective: Objective on the selection split (e.g. the error rate).
        violations: Constraint values on the selection split, ``<= 0`` where satisfied.
        state: A copy of the model's ``state_dict``.
        metrics: Anything else measured (for logs).
    """

    step: int
    objective: float
    violations: np.ndarray
    state: dict[str, Any] = field(repr=False)
    metrics: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class Choice:
    """The returned model: one candidate, or a distribution over candidates.

    Attributes:
        mode: ``"best-feasible"`` (the best feasible candidate, or the least violating one when
            ``feasible`` is False), ``"last"`` or ``"mixture"``.
        indices: Indices of the chosen candidates (one unless a mixture).
        probabilities: Their probabilities (sum to 1).
        feasible: Whether the choice satisfies every constraint on the selection split.
        objective: Its (expected) objective on the selection split.
        max_violation: Its (expected) largest constraint value on the selection split.
    """

    mode: SelectionMode
    indices: list[int]
    probabilities: list[float]
    feasible: bool
    objective: float
    max_violation: float

    def describe(self, candidates: list[Candidate]) -> dict[str, Any]:
        """A JSON-ready record: mode, steps and probabilities, feasibility on the selection split."""
        kind = self.mode
        if self.mode == "best-feasible" and not self.feasible:
            kind = "least-violating"  # type: ignore[assignment]
        return {
            "kind": kind,
            "steps": [candidates[index].step for index in self.indices],
            "probabilities": self.probabilities,
            "feasible_on_selection_split": self.feasible,
            "selection_objective": self.objective,
            "selection_max_violation": self.max_violation,
            "num_candidates": len(candidates),
        }


def _as_arrays(objectives: Any, violations: Any) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(objectives, dtype=np.float64).reshape(-1)
    g = np.asarray(violations, dtype=np.float64)
    if g.ndim == 1:
        g = g[:, None]
    if f.size == 0:
        raise ValueError("no candidates to choose from")
    if g.shape[0] != f.size:
        raise ValueError(f"{f.size} objectives but {g.shape[0]} rows of violations")
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(g))):
        raise ValueError("objectives and violations must be finite")
    return f, g


def best_candidate(objectives: Any, violations: Any, tolerance: float = 0.0) -> tuple[int, bool]:
    """Index of the best feasible candidate (smallest objective), else of the least violating one.

    Args:
        objectives: ``(K,)`` objective values.
        violations: ``(K, m)`` constraint values (feasible when ``<= tolerance``).
        tolerance: Slack on feasibility.

    Returns:
        ``(index, feasible)``; ties go to the earliest candidate.
    """
    f, g = _as_arrays(objectives, violations)
    worst = g.max(axis=1) if g.shape[1] else np.zeros_like(f)
    feasible = worst <= tolerance
    if feasible.any():
        index = int(np.flatnonzero(feasible)[np.argmin(f[feasible])])
        return index, True
    least = worst.min()
    near = np.flatnonzero(worst <= least + 1e-12)
    return int(near[np.argmin(f[near])]), False


def best_mixture(objectives: Any, violations: Any, prune: float = 1e-9) -> tuple[np.ndarray, bool]:
    """The "m+1 stochastic" distribution over candidates (see the module docstring).

    Solved with :func:`scipy.optimize.linprog` (HiGHS dual simplex, so the solution is basic: at most
    ``m + 1`` non-zero weights). Weights below ``prune`` are dropped and the rest renormalised.

    Returns:
        ``(probabilities, feasible)``: ``(K,)`` probabilities, and whether the expected constraints hold.
    """
    from scipy.optimize import linprog

    f, g = _as_arrays(objectives, violations)
    k, m = g.shape
    equality = (np.ones((1, k)), np.ones(1))
    bounds = [(0.0, None)] * k
    feasible = True
    result = linprog(
        f,
        A_ub=g.T if m else None,
        b_ub=np.zeros(m) if m else None,
        A_eq=equality[0],
        b_eq=equality[1],
        bounds=bounds,
        method="highs-ds",
    )
    if result.status == 2:  # infeasible: minimise the largest expected violation t first
        feasible = False
        phase_one = linprog(
            np.concatenate([np.zeros(k), [1.0]]),
            A_ub=np.concatenate([g.T, -np.ones((m, 1))], axis=1),
            b_ub=np.zeros(m),
            A_eq=np.concatenate([np.ones((1, k)), np.zeros((1, 1))], axis=1),
            b_eq=np.ones(1),
            bounds=[*bounds, (None, None)],
            method="highs-ds",
        )
        if phase_one.status != 0:  # pragma: no cover - phase one is always feasible and bounded
            raise RuntimeError(f"linprog failed on the least-violation program: {phase_one.message}")
        slack = float(phase_one.x[-1]) + 1e-12
        result = linprog(
            f,
            A_ub=g.T,
            b_ub=np.full(m, slack),
            A_eq=equality[0],
            b_eq=equality[1],
            bounds=bounds,
            method="highs-ds",
        )
    if result.status != 0:  # pragma: no cover - the program is feasible and bounded here
        raise RuntimeError(f"linprog failed to find the best mixture: {result.message}")
    probabilities = np.where(result.x > prune, result.x, 0.0)
    probabilities = probabilities / probabilities.sum()
    return probabilities, feasible


def choose(candidates: list[Candidate], mode: SelectionMode) -> Choice:
    """Apply a selection ``mode`` to the kept candidates."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    objectives = np.array([candidate.objective for candidate in candidates])
    violations = np.stack(
        [np.asarray(candidate.violations, dtype=np.float64).reshape(-1) for candidate in candidates]
    )
    if mode == "last":
        index = len(candidates) - 1
        worst = float(violations[index].max()) if violations.shape[1] else 0.0
        return Choice(mode, [index], [1.0], worst <= 0.0, float(objectives[index]), worst)
    if mode == "best-feasible":
        index, feasible = best_candidate(objectives, violations)
        worst = float(violations[index].max()) if violations.shape[1] else 0.0
        return Choice(mode, [index], [1.0], feasible, float(objectives[index]), worst)
    if mode == "mixture":
        probabilities, feasible = best_mixture(objectives, violations)
        support = [int(i) for i in np.flatnonzero(probabilities)]
        expected = probabilities @ violations
        worst = float(expected.max()) if expected.size else 0.0
        return Choice(
            mode,
            support,
            [float(probabilities[i]) for i in support],
            feasible,
            float(probabilities @ objectives),
            worst,
        )
    raise ValueError(f"selection mode must be 'best-feasible', 'last' or 'mixture', got {mode!r}")
