r"""Convergence of ``cooper_like`` to *exact* primal and dual solutions of small convex problems.

Ground truth
------------
Every problem is a (strongly) convex QP or an LP whose solution is computed outside ``cooper_like``:

* the primal by ``scipy.optimize.minimize(method="SLSQP")``; the active set read off it; then the exact
  solution by solving the KKT system restricted to that active set with ``numpy.linalg.solve``. The
  result is *certified* (stationarity, primal feasibility, complementary slackness, dual feasibility,
  strict complementarity with a margin), so it is the unique optimum to ~1e-13;
* cross-checked against ``trust-constr`` (``res.v`` uses the convention
  :math:`\nabla f + J^\top v = 0`, i.e. the same signs as ``cooper_like``'s
  :math:`f + \mu^\top h + \lambda^\top g`) and against ``numpy.linalg.lstsq`` on the stationarity
  equations at the SLSQP point (P4, with 100 constraints: the dual problem solved by L-BFGS-B instead
  of trust-constr, which takes seconds there);
* the simplex projection (problem 3) from the sort-based closed form, multipliers from KKT
  (:math:`\mu = \tau`, :math:`\lambda_i = \tau - y_i` off the support);
* the LP from ``scipy.optimize.linprog`` (HiGHS marginals) and the vertex equations.

Problems: P1 equality QP (4 variables, 2 equalities); P2 inequality QP (4 variables, 5 inequalities,
3 active, 2 inactive); P3 Euclidean projection onto the probability simplex (6 variables, ``sum = 1``
and ``x >= 0`` as one vector inequality with a size-6 ``DenseMultiplier``); P4 projection of a point
onto 100 random halfspaces (5 variables, 4 active); LP: 2 variables, 6 halfspaces (box included).

Which combinations are meant to converge (and are tested)
---------------------------------------------------------
Hyper-parameters: primal ``torch.optim.SGD(lr=0.05)`` (``ExtraSGD`` in the extrapolation scheme);
Lagrangian dual lr 0.05; augmented Lagrangian ``DensePenaltyCoefficient(0.5)`` with dual lr = c = 0.5
(Cooper's convention: SGD with lr = c is the classical update :math:`[\lambda + c g]_+`); nuPI with
``Kp=0.5, Ki=1, ema_nu=0.1``. SGD rather than Adam on the primal side everywhere: with a constant step
Adam does not converge exactly (see the ExtraAdam row).

=====================  =====================  ===================  =======================================
formulation            scheme                 dual updater         on the strongly convex QPs P1-P4
=====================  =====================  ===================  =======================================
Lagrangian             Simultaneous           SGD(maximize)        converges (linear rate)       TESTED
Lagrangian             Simultaneous           nuPI(Kp>0)           converges                     TESTED
Lagrangian             AlternatingPrimalDual  SGD / nuPI           converges                     TESTED
Lagrangian             AlternatingDualPrimal  SGD / nuPI           converges                     TESTED
Lagrangian             Extrapolation          ExtraSGD             converges                     TESTED
AugmentedLagrangian    Simultaneous           SGD / nuPI           converges                     TESTED
AugmentedLagrangian    AlternatingPrimalDual  SGD / nuPI           converges                     TESTED
AugmentedLagrangian    AlternatingDualPrimal  SGD / nuPI           converges                     TESTED
AugmentedLagrangian    Extrapolation          ExtraSGD (lr=c)      converges                     TESTED
QuadraticPenalty       Unconstrained          none (no mult.)      converges to the penalty minimiser x_c,
                                                                   *not* to x*: infeasibility = Θ(1/c),
                                                                   c·violation -> multipliers    TESTED
any                    Extrapolation          torch SGD / nuPI     n/a: rejected (no ``extrapolation()``)
                                                                                                 TESTED
any                    Simult./Alternating    ExtraSGD/ExtraAdam   n/a: ``step()`` without extrapolation
                                                                   raises                        TESTED
Lagrangian             Extrapolation          ExtraSGD dual,       NOT claimed: reaches 1e-12 on P1 then
                                              ExtraAdam primal     drifts back to 1e-3 (Adam, constant
                                                                   lr, vanishing gradients); identical to
                                                                   a torch.optim.Adam reference  TESTED
                                                                   (equivalence only)
AugmentedLagrangian    any                    lr = c, too large c  NOT claimed: needs primal lr
                       (e.g. Simult.+nuPI)    or Kp                < 2/(L_f + c||J||^2); c=1, Kp=1 gives
                                                                   a period-5 limit cycle on P4
=====================  =====================  ===================  =======================================

The LP (bilinear Lagrangian, no strong convexity):

=====================  ======================  ==========  ==============================================
Lagrangian             Extrapolation           ExtraSGD    converges (linear rate)               TESTED
Lagrangian             Alternating (both)      nuPI Kp>0   converges                             TESTED
Lagrangian             Simultaneous            SGD         does NOT converge: oscillates, amplitude ~1
                                                           in x, never closer than 0.3           TESTED
Lagrangian             Alternating (both)      SGD         does NOT converge: bounded cycle      TESTED
Lagrangian             Simultaneous            nuPI Kp=.5  does not converge within the budget (observed)
=====================  ======================  ==========  ==============================================

Dual restarts (``restart_on_feasible=True``): after every dual step, each entry whose measured violation
is <= 0 is exactly 0, and so is its nuPI state (TESTED, every scheme, Dense and Indexed multipliers).
They preserve convergence only when no constraint that is active at the optimum is ever transiently
satisfied along the way: true on P3 with a small dual lr (TESTED: converges exactly); false on P2 and
P4, whose coupled active constraints take turns being marginally satisfied, get reset and re-grow — a
limit cycle for every scheme, formulation and dual lr (0.005-0.05) tried (TESTED on P2 as
non-convergent). This is the documented behaviour of dual restarts, not a bug.

IndexedMultiplier on P4: when the *dual* observes a random 30 % of the rows per step
(``strict_constraint_features``) and the primal all rows, every scheme converges exactly, with the
Lagrangian and with the augmented Lagrangian (``IndexedPenaltyCoefficient``) (TESTED).
When primal and dual both observe the same random 80 % (``constraint_features`` = observed ids,
importance-weighted violation), the fixed point is (x*, λ*) only in expectation: with decaying steps and
iterate averaging the same solution is reached within the sampling noise (TESTED, loose tolerance).

Tolerances
----------
Deterministic runs: 1e-6 on x, on the multipliers and on feasibility. The ground truth is exact to
~1e-13 and the iterations converge linearly; step counts are chosen so that the observed errors are
<= 1e-8 (most are ~1e-13), leaving a factor >= 100 of headroom, while any non-converged run is off by
>= 1e-3. Multipliers of constraints inactive at the optimum must be exactly 0 (the projection
:math:`[\cdot]_+` clamps them once their violation stays negative). Looser, stated per test: the
quadratic penalty (compares with its own exact minimiser x_c) and the stochastic indexed variant.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import scipy.optimize
import torch

import cooper_like as cooper
from cooper_like import ConstraintType
from cooper_like.formulations import AugmentedLagrangian, Formulation, Lagrangian, QuadraticPenalty
from cooper_like.multipliers import DenseMultiplier, IndexedMultiplier
from cooper_like.optim import (
    AlternatingDualPrimalOptimizer,
    AlternatingPrimalDualOptimizer,
    ConstrainedOptimizer,
    CooperOptimizer,
    ExtraAdam,
    ExtrapolationConstrainedOptimizer,
    ExtraSGD,
    RollOut,
    SimultaneousOptimizer,
    UnconstrainedOptimizer,
    nuPI,
)
from cooper_like.optim.non_finite import NonFiniteError
from cooper_like.penalty_coefficients import DensePenaltyCoefficient, IndexedPenaltyCoefficient

DTYPE = torch.float64

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled")

# Deterministic tolerance (see the module docstring).
TOL = 1e-6

LR_PRIMAL = 0.05
LR_DUAL = 0.05
AL_PENALTY = 0.5  # augmented-Lagrangian coefficient c; its dual lr is c (Cooper's convention)
NUPI_KWARGS: dict[str, Any] = {"Kp": 0.5, "Ki": 1.0, "ema_nu": 0.1}


@pytest.fixture(autouse=True)
def _single_thread_float64_hygiene() -> Iterator[None]:
    """One intra-op thread (tiny tensors; two xdist workers on two cores) and no dtype leak."""
    threads = torch.get_num_threads()
    default_dtype = torch.get_default_dtype()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        assert torch.get_default_dtype() == default_dtype, "a test changed the default dtype"


# ---------------------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QPData:
    r"""min ½xᵀQx + cᵀx  s.t.  Ax = b, Gx <= h, with its certified solution (x, μ, λ)."""

    name: str
    Q: np.ndarray
    c: np.ndarray
    A: np.ndarray | None
    b: np.ndarray | None
    G: np.ndarray | None
    h: np.ndarray | None
    x: np.ndarray
    mu: np.ndarray | None
    lam: np.ndarray | None

    @property
    def n(self) -> int:
        return len(self.c)

    @property
    def active(self) -> np.ndarray:
        assert self.lam is not None
        return self.lam > 0

    def objective(self, x: np.ndarray) -> float:
        return float(0.5 * x @ self.Q @ x + self.c @ x)

    def max_infeasibility(self, x: np.ndarray) -> float:
        eq = np.abs(self.A @ x - self.b).max() if self.A is not None else 0.0
        ineq = max((self.G @ x - self.h).max(), 0.0) if self.G is not None else 0.0
        return float(max(eq, ineq))


def _or_empty(matrix: np.ndarray | None, n: int) -> np.ndarray:
    return np.zeros((0, n)) if matrix is None else matrix


def kkt_ground_truth(
    name: str,
    Q: np.ndarray,
    c: np.ndarray,
    A: np.ndarray | None = None,
    b: np.ndarray | None = None,
    G: np.ndarray | None = None,
    h: np.ndarray | None = None,
    margin: float = 0.05,
    trust_constr: bool = True,
) -> QPData:
    """SLSQP -> active set -> exact KKT solve -> certificate -> cross-checks (lstsq, trust-constr).

    ``trust_constr=False`` skips the trust-constr cross-check (seconds with 100 constraints); the caller
    then cross-checks otherwise.
    """
    n = len(c)
    A_, G_ = _or_empty(A, n), _or_empty(G, n)
    b_ = np.zeros(0) if b is None else b
    h_ = np.zeros(0) if h is None else h

    def f(x: np.ndarray) -> float:
        return float(0.5 * x @ Q @ x + c @ x)

    def grad(x: np.ndarray) -> np.ndarray:
        return Q @ x + c

    slsqp_constraints = []
    if len(b_):
        slsqp_constraints.append({"type": "eq", "fun": lambda x: A_ @ x - b_, "jac": lambda x: A_})
    if len(h_):
        slsqp_constraints.append({"type": "ineq", "fun": lambda x: h_ - G_ @ x, "jac": lambda x: -G_})
    slsqp = scipy.optimize.minimize(
        f,
        np.zeros(n),
        jac=grad,
        method="SLSQP",
        constraints=slsqp_constraints,
        options={"ftol": 1e-12, "maxiter": 1000},
    )
    assert slsqp.success, slsqp.message

    # Exact solution of the KKT system on the active set read off SLSQP.
    active = h_ - G_ @ slsqp.x < 1e-7
    G_active = G_[active]
    m_eq, m_act = len(b_), int(active.sum())
    kkt = np.block(
        [
            [Q, A_.T, G_active.T],
            [A_, np.zeros((m_eq, m_eq + m_act))],
            [G_active, np.zeros((m_act, m_eq + m_act))],
        ]
    )
    solution = np.linalg.solve(kkt, np.concatenate([-c, b_, h_[active]]))
    x, mu, lam_active = solution[:n], solution[n : n + m_eq], solution[n + m_eq :]
    lam = np.zeros(len(h_))
    lam[active] = lam_active

    # Certificate: the KKT conditions of a convex problem (sufficient), with strict complementarity.
    assert np.abs(Q @ x + c + A_.T @ mu + G_.T @ lam).max() < 1e-11, "stationarity"
    assert np.abs(A_ @ x - b_).max(initial=0.0) < 1e-11, "equality feasibility"
    assert np.abs((G_ @ x - h_)[active]).max(initial=0.0) < 1e-11, "active constraints"
    assert (h_ - G_ @ x)[~active].min(initial=np.inf) > margin, "inactive constraints have slack"
    assert lam_active.min(initial=np.inf) > margin, "active multipliers are positive"

    # Cross-check 1: SLSQP's point; multipliers by least squares on the stationarity equations there.
    assert np.abs(x - slsqp.x).max() < 1e-6
    jacobian_t = np.hstack([A_.T, G_active.T])
    lstsq = np.linalg.lstsq(jacobian_t, -grad(slsqp.x), rcond=None)[0]
    assert np.abs(lstsq - np.concatenate([mu, lam_active])).max(initial=0.0) < 1e-5

    result = QPData(name, Q, c, A, b, G, h, x, mu if m_eq else None, lam if len(h_) else None)
    if not trust_constr:
        return result

    # Cross-check 2: trust-constr (an interior-point method: ~1e-7 accurate), its multipliers res.v.
    trust_constraints = []
    if len(b_):
        trust_constraints.append(scipy.optimize.LinearConstraint(A_, b_, b_))
    if len(h_):
        trust_constraints.append(scipy.optimize.LinearConstraint(G_, -np.inf, h_))
    trust = scipy.optimize.minimize(
        f,
        np.zeros(n),
        jac=grad,
        hess=lambda x: Q,
        method="trust-constr",
        constraints=trust_constraints,
        options={"gtol": 1e-12, "xtol": 1e-14, "maxiter": 5000},
    )
    assert np.abs(trust.x - x).max() < 1e-5
    trust_v = np.concatenate([np.atleast_1d(v) for v in trust.v])
    assert np.abs(trust_v - np.concatenate([mu, lam])).max() < 1e-4
    return result


@functools.cache
def equality_qp() -> QPData:
    """P1: 4 variables, Q ≻ 0 (eigenvalues 4.1-13.2), 2 equalities."""
    rng = np.random.default_rng(0)
    n = 4
    M = rng.normal(size=(n, n))
    Q = M @ M.T + n * np.eye(n)
    c = rng.normal(size=n)
    A = rng.normal(size=(2, n))
    b = rng.normal(size=2)
    data = kkt_ground_truth("equality_qp", Q, c, A=A, b=b)
    # Closed form: the KKT system of an equality QP is linear.
    closed = np.linalg.solve(np.block([[Q, A.T], [A, np.zeros((2, 2))]]), np.concatenate([-c, b]))
    np.testing.assert_allclose(np.concatenate([data.x, data.mu]), closed, atol=1e-12)
    return data


@functools.cache
def inequality_qp() -> QPData:
    """P2: 4 variables, 5 inequalities: 3 active (λ ∈ [0.31, 0.55]), 2 inactive (slack >= 0.05)."""
    rng = np.random.default_rng(1)
    n = 4
    M = rng.normal(size=(n, n))
    Q = M @ M.T / n + np.eye(n)
    c = 3 * rng.normal(size=n)
    G = rng.normal(size=(5, n))
    h = rng.uniform(0.2, 1.0, size=5)
    data = kkt_ground_truth("inequality_qp", Q, c, G=G, h=h)
    assert data.active.sum() == 3
    return data


SIMPLEX_POINT = np.array([0.9, 0.5, -0.2, 0.3, -0.5, 0.1])


def project_onto_simplex(y: np.ndarray) -> tuple[np.ndarray, float]:
    """Sort-based Euclidean projection onto {x >= 0, sum x = 1}; returns (x, threshold τ)."""
    u = np.sort(y)[::-1]
    cumulative = np.cumsum(u)
    k = np.arange(1, len(y) + 1)
    rho = np.nonzero(u - (cumulative - 1) / k > 0)[0][-1]
    tau = (cumulative[rho] - 1) / (rho + 1)
    return np.maximum(y - tau, 0.0), float(tau)


@functools.cache
def simplex_projection() -> QPData:
    r"""P3: min ½‖x - y‖² s.t. 1ᵀx = 1 (μ), -x <= 0 (λ, one vector constraint of size 6)."""
    y = SIMPLEX_POINT
    n = len(y)
    x, tau = project_onto_simplex(y)
    # KKT: x - y + μ 1 - λ = 0, λ >= 0, λ_i x_i = 0  =>  μ = τ and λ_i = τ - y_i where x_i = 0.
    mu = np.array([tau])
    lam = np.where(x > 0, 0.0, tau - y)
    assert np.abs(x - y + mu - lam).max() < 1e-15 and lam.min() >= 0 and abs(x.sum() - 1) < 1e-15
    data = QPData("simplex", np.eye(n), -y, np.ones((1, n)), np.ones(1), -np.eye(n), np.zeros(n), x, mu, lam)
    # The generic solver (SLSQP + KKT + trust-constr) agrees with the closed form.
    generic = kkt_ground_truth("simplex", data.Q, data.c, A=data.A, b=data.b, G=data.G, h=data.h)
    np.testing.assert_allclose(generic.x, x, atol=1e-12)
    np.testing.assert_allclose(generic.mu, mu, atol=1e-12)
    np.testing.assert_allclose(generic.lam, lam, atol=1e-12)
    return data


@functools.cache
def halfspaces_qp() -> QPData:
    """P4: min ‖x - x0‖² s.t. Gx <= h, 100 random halfspaces around the origin, 5 variables."""
    rng = np.random.default_rng(7)
    n, m = 5, 100
    G = rng.normal(size=(m, n))
    h = rng.uniform(0.5, 1.5, size=m)
    x0 = rng.normal(size=n)
    x0 *= 3 / np.linalg.norm(x0)
    # ‖x - x0‖² = ½xᵀ(2I)x - 2x0ᵀx + const.
    data = kkt_ground_truth("halfspaces", 2 * np.eye(n), -2 * x0, G=G, h=h, margin=0.05, trust_constr=False)
    assert data.active.sum() == 4
    # Cross-check 2, instead of trust-constr: the dual problem max_{λ>=0} λᵀ(Gx0 - h) - ¼‖Gᵀλ‖², a
    # bound-constrained QP solved by L-BFGS-B; then x = x0 - Gᵀλ/2.
    q = G @ x0 - h

    def negative_dual(lam: np.ndarray) -> tuple[float, np.ndarray]:
        v = G.T @ lam
        return float(0.25 * v @ v - lam @ q), 0.5 * G @ v - q

    dual = scipy.optimize.minimize(
        negative_dual,
        np.zeros(m),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, None)] * m,
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000},
    )
    assert np.abs(dual.x - data.lam).max() < 1e-6
    assert np.abs(x0 - G.T @ dual.x / 2 - data.x).max() < 1e-6
    return data


PROBLEMS: dict[str, Callable[[], QPData]] = {
    "P1_equality_qp": equality_qp,
    "P2_inequality_qp": inequality_qp,
    "P3_simplex": simplex_projection,
    "P4_halfspaces": halfspaces_qp,
}


# ---------------------------------------------------------------------------------------------------
# The problem as a Cooper user writes it
# ---------------------------------------------------------------------------------------------------


def _tensor(array: np.ndarray | None) -> torch.Tensor | None:
    return None if array is None else torch.tensor(array, dtype=DTYPE)


class QuadraticProgram(cooper.ConstrainedMinimizationProblem):
    """``QPData`` as a CMP: one equality constraint ``eq`` and one inequality constraint ``ineq``."""

    def __init__(
        self,
        data: QPData,
        formulation: type[Formulation] = Lagrangian,
        penalty: float | None = None,
        restart_on_feasible: bool = False,
    ) -> None:
        super().__init__()
        self.Q, self.c = _tensor(data.Q), _tensor(data.c)
        self.A, self.b, self.G, self.h = _tensor(data.A), _tensor(data.b), _tensor(data.G), _tensor(data.h)
        self.last_ineq_violation: torch.Tensor | None = None

        def constraint(size: int, kind: ConstraintType, restart: bool = False) -> cooper.Constraint:
            multiplier = None
            if formulation is not QuadraticPenalty:
                multiplier = DenseMultiplier(size, dtype=DTYPE, restart_on_feasible=restart)
            coefficient = None
            if formulation is not Lagrangian:
                assert penalty is not None
                coefficient = DensePenaltyCoefficient(torch.tensor(penalty, dtype=DTYPE))
            return cooper.Constraint(
                kind, formulation, multiplier=multiplier, penalty_coefficient=coefficient
            )

        if data.A is not None:
            self.eq = constraint(data.A.shape[0], ConstraintType.EQUALITY)
        if data.G is not None:
            self.ineq = constraint(data.G.shape[0], ConstraintType.INEQUALITY, restart_on_feasible)

    def _observe(self, x: torch.Tensor) -> dict[cooper.Constraint, cooper.ConstraintState]:
        observed = {}
        if self.A is not None:
            observed[self.eq] = cooper.ConstraintState(violation=self.A @ x - self.b)
        if self.G is not None:
            violation = self.G @ x - self.h
            self.last_ineq_violation = violation.detach().clone()
            observed[self.ineq] = cooper.ConstraintState(violation=violation)
        return observed

    def compute_cmp_state(self, x: torch.Tensor) -> cooper.CMPState:
        loss = 0.5 * x @ self.Q @ x + self.c @ x
        return cooper.CMPState(loss=loss, observed_constraints=self._observe(x))

    def compute_violations(self, x: torch.Tensor) -> cooper.CMPState:
        return cooper.CMPState(observed_constraints=self._observe(x))


def multiplier_values(constraint: cooper.Constraint) -> np.ndarray:
    assert constraint.multiplier is not None
    weight = constraint.multiplier.weight
    assert weight.dtype == DTYPE
    return weight.detach().reshape(-1).numpy().copy()


SCHEMES: dict[str, type[ConstrainedOptimizer]] = {
    "simultaneous": SimultaneousOptimizer,
    "alt_primal_dual": AlternatingPrimalDualOptimizer,
    "alt_dual_primal": AlternatingDualPrimalOptimizer,
    "extrapolation": ExtrapolationConstrainedOptimizer,
}

# (scheme, dual updater): the extragradient optimizers belong to the extrapolation scheme only.
SCHEME_UPDATERS = [
    ("simultaneous", "sgd"),
    ("simultaneous", "nupi"),
    ("alt_primal_dual", "sgd"),
    ("alt_primal_dual", "nupi"),
    ("alt_dual_primal", "sgd"),
    ("alt_dual_primal", "nupi"),
    ("extrapolation", "extrasgd"),
]
SCHEME_UPDATER_IDS = [f"{scheme}-{updater}" for scheme, updater in SCHEME_UPDATERS]


def make_optimizer(
    cmp: cooper.ConstrainedMinimizationProblem,
    x: torch.nn.Parameter,
    scheme: str,
    updater: str,
    lr_primal: float = LR_PRIMAL,
    lr_dual: float = LR_DUAL,
    nupi_kwargs: dict[str, Any] | None = None,
) -> ConstrainedOptimizer:
    dual_parameters = list(cmp.dual_parameters())
    primal_optimizer: torch.optim.Optimizer
    dual_optimizer: torch.optim.Optimizer
    if scheme == "extrapolation":
        assert updater == "extrasgd"
        primal_optimizer = ExtraSGD([x], lr=lr_primal)
        dual_optimizer = ExtraSGD(dual_parameters, lr=lr_dual, maximize=True)
    else:
        primal_optimizer = torch.optim.SGD([x], lr=lr_primal)
        if updater == "sgd":
            dual_optimizer = torch.optim.SGD(dual_parameters, lr=lr_dual, maximize=True)
        else:
            assert updater == "nupi"
            dual_optimizer = nuPI(dual_parameters, lr=lr_dual, maximize=True, **(nupi_kwargs or NUPI_KWARGS))
    return SCHEMES[scheme](cmp, primal_optimizer, dual_optimizer)


def roll(optimizer: CooperOptimizer, x: torch.Tensor) -> RollOut:
    """One ``roll()``, passing the primal variable the way a Cooper user passes model and batch."""
    if isinstance(optimizer, AlternatingPrimalDualOptimizer):
        return optimizer.roll(compute_cmp_state_kwargs={"x": x}, compute_violations_kwargs={"x": x})
    return optimizer.roll(compute_cmp_state_kwargs={"x": x})


def run(
    optimizer: CooperOptimizer, x: torch.Tensor, steps: int, callback: Callable[[RollOut], None] | None = None
) -> RollOut:
    out = None
    for _ in range(steps):
        out = roll(optimizer, x)
        if callback is not None:
            callback(out)
    assert out is not None
    return out


def new_primal(n: int) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.zeros(n, dtype=DTYPE))


def assert_solution(data: QPData, cmp: QuadraticProgram, x: torch.Tensor, tol: float = TOL) -> None:
    """Primal, multipliers, feasibility to ``tol``; inactive multipliers exactly zero."""
    x_np = x.detach().numpy()
    assert np.isfinite(x_np).all()
    np.testing.assert_allclose(x_np, data.x, rtol=0, atol=tol, err_msg="primal solution")
    assert data.max_infeasibility(x_np) <= tol, "feasibility"
    if data.mu is not None:
        np.testing.assert_allclose(multiplier_values(cmp.eq), data.mu, rtol=0, atol=tol, err_msg="μ")
    if data.lam is not None:
        lam = multiplier_values(cmp.ineq)
        np.testing.assert_allclose(lam, data.lam, rtol=0, atol=tol, err_msg="λ")
        assert (lam[~data.active] == 0).all(), "multipliers of inactive constraints must be exactly 0"


# ---------------------------------------------------------------------------------------------------
# 1. Lagrangian and augmented Lagrangian x every scheme x every dual updater, on P1-P4
# ---------------------------------------------------------------------------------------------------

# Steps per (problem, formulation): observed errors at these counts are <= 1e-8 (see module docstring).
STEPS = {
    ("P1_equality_qp", "lagrangian"): 1250,
    ("P2_inequality_qp", "lagrangian"): 750,
    ("P3_simplex", "lagrangian"): 1250,
    ("P4_halfspaces", "lagrangian"): 750,
    ("P1_equality_qp", "augmented_lagrangian"): 250,
    ("P2_inequality_qp", "augmented_lagrangian"): 600,
    ("P3_simplex", "augmented_lagrangian"): 750,
    ("P4_halfspaces", "augmented_lagrangian"): 500,
}


@pytest.mark.parametrize(("scheme", "updater"), SCHEME_UPDATERS, ids=SCHEME_UPDATER_IDS)
@pytest.mark.parametrize("formulation", ["lagrangian", "augmented_lagrangian"])
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_converges_to_exact_primal_dual_solution(
    problem: str, formulation: str, scheme: str, updater: str
) -> None:
    data = PROBLEMS[problem]()
    if formulation == "lagrangian":
        cmp = QuadraticProgram(data, Lagrangian)
        lr_dual = LR_DUAL
    else:
        cmp = QuadraticProgram(data, AugmentedLagrangian, penalty=AL_PENALTY)
        lr_dual = AL_PENALTY  # dual SGD lr = c: the classical method-of-multipliers step [λ + c g]_+
    x = new_primal(data.n)
    optimizer = make_optimizer(cmp, x, scheme, updater, lr_dual=lr_dual)
    out = run(optimizer, x, STEPS[problem, formulation])
    assert_solution(data, cmp, x)
    # The reported loss is f at the last measured point (θ_t, or θ_{t+1} for alt. primal-dual).
    assert out.loss is not None
    assert abs(out.loss.item() - data.objective(data.x)) <= TOL


def test_not_applicable_scheme_updater_pairs_are_rejected() -> None:
    """The "n/a" rows of the table: extragradient optimizers and the extrapolation scheme go together."""
    data = equality_qp()
    cmp = QuadraticProgram(data)
    x = new_primal(data.n)
    with pytest.raises(TypeError, match="extrapolation"):
        ExtrapolationConstrainedOptimizer(
            cmp,
            ExtraSGD([x], lr=LR_PRIMAL),
            torch.optim.SGD(cmp.dual_parameters(), lr=LR_DUAL, maximize=True),
        )
    with pytest.raises(TypeError, match="extrapolation"):
        ExtrapolationConstrainedOptimizer(
            cmp, ExtraSGD([x], lr=LR_PRIMAL), nuPI(cmp.dual_parameters(), lr=LR_DUAL, maximize=True)
        )
    optimizer = SimultaneousOptimizer(
        cmp, torch.optim.SGD([x], lr=LR_PRIMAL), ExtraSGD(cmp.dual_parameters(), lr=LR_DUAL, maximize=True)
    )
    with pytest.raises(RuntimeError, match="extrapolation"):
        roll(optimizer, x)


# ---------------------------------------------------------------------------------------------------
# 2. Quadratic penalty: no multipliers, converges to the penalty minimiser; infeasibility = Θ(1/c)
# ---------------------------------------------------------------------------------------------------


def penalty_minimiser(data: QPData, c: float) -> np.ndarray:
    r"""Exact minimiser of f + c/2 (‖Ax - b‖² + ‖[Gx - h]_+‖²).

    For large c the violated inequalities are those active at x* (λ* > 0), so x_c solves a linear
    system; the guess is certified by checking the signs of the inequality violations at x_c.
    """
    rows = [data.A] if data.A is not None else []
    rhs = [data.b] if data.b is not None else []
    if data.G is not None:
        rows.append(data.G[data.active])
        rhs.append(data.h[data.active])
    J, d = np.vstack(rows), np.concatenate(rhs)
    x_c = np.linalg.solve(data.Q + c * J.T @ J, -data.c + c * J.T @ d)
    if data.G is not None:
        g = data.G @ x_c - data.h
        assert (g[data.active] > 0).all() and (g[~data.active] < 0).all(), "active-set guess certified"
    return x_c


@pytest.mark.parametrize("problem", ["P1_equality_qp", "P2_inequality_qp", "P3_simplex"])
def test_quadratic_penalty_infeasibility_shrinks_like_one_over_c(problem: str) -> None:
    data = PROBLEMS[problem]()
    multipliers = np.concatenate([v for v in (data.mu, data.lam) if v is not None])
    J = np.vstack([m for m in (data.A, data.G) if m is not None])
    infeasibility, estimate_error = {}, {}
    for c in (10.0, 100.0, 1000.0):
        cmp = QuadraticProgram(data, QuadraticPenalty, penalty=c)
        assert list(cmp.multipliers()) == []
        # Heavy-ball SGD tuned to the condition number of the penalised Hessian (plain SGD would need
        # O(c) steps): lr = 4/(√L + √μ)², momentum = ((√κ - 1)/(√κ + 1))².
        L = np.linalg.eigvalsh(data.Q + c * J.T @ J).max()
        mu_f = np.linalg.eigvalsh(data.Q).min()
        kappa = L / mu_f
        x = new_primal(data.n)
        optimizer = UnconstrainedOptimizer(
            cmp,
            torch.optim.SGD(
                [x],
                lr=4 / (math.sqrt(L) + math.sqrt(mu_f)) ** 2,
                momentum=((math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)) ** 2,
            ),
        )
        run(optimizer, x, 1500 if c == 1000.0 else 600)  # the momentum (hence the rate) depends on c
        x_np = x.detach().numpy()
        # The iterates reach the exact penalty minimiser (linear convergence, ~1e-11 observed).
        np.testing.assert_allclose(x_np, penalty_minimiser(data, c), rtol=0, atol=1e-8)
        # ... which is not x*: it is infeasible by Θ(1/c), and c·violation estimates the multipliers.
        infeasibility[c] = data.max_infeasibility(x_np)
        violations = []
        if data.A is not None:
            violations.append(data.A @ x_np - data.b)
        if data.G is not None:
            violations.append(np.maximum(data.G @ x_np - data.h, 0.0))
            assert (data.G @ x_np - data.h)[~data.active].max() < 0, "inactive constraints stay satisfied"
        estimate_error[c] = np.abs(c * np.concatenate(violations) - multipliers).max()
        assert 0.5 * np.abs(multipliers).max() <= c * infeasibility[c] <= 1.5 * np.abs(multipliers).max()
    for c in (10.0, 100.0):
        # Ten times the coefficient, a tenth of the infeasibility (observed ratios 8.1-10.0).
        assert 7.0 <= infeasibility[c] / infeasibility[10 * c] <= 13.0
        # The multiplier estimate converges at rate O(1/c) too (observed ratios 8.1-9.9).
        assert estimate_error[10 * c] <= estimate_error[c] / 5


# ---------------------------------------------------------------------------------------------------
# 3. Linear program: extragradient (and alternating nuPI) converge; plain GDA oscillates
# ---------------------------------------------------------------------------------------------------


@functools.cache
def linear_program() -> QPData:
    """min -x1 - x2 s.t. x1 + 2 x2 <= 4, 3 x1 + x2 <= 6, 0 <= x <= 2: vertex (1.6, 1.2), λ = (0.4, 0.2)."""
    c = np.array([-1.0, -1.0])
    G = np.array([[1.0, 2.0], [3.0, 1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    h = np.array([4.0, 6.0, 2.0, 2.0, 0.0, 0.0])
    result = scipy.optimize.linprog(c, A_ub=G, b_ub=h, method="highs")
    assert result.status == 0
    lam_highs = -result.ineqlin.marginals  # HiGHS marginals are ∂(optimal value)/∂h <= 0
    active = lam_highs > 1e-9
    # Exact vertex and multipliers: G_A x = h_A and c + G_Aᵀ λ_A = 0 (two independent active rows).
    x = np.linalg.solve(G[active], h[active])
    lam = np.zeros(len(h))
    lam[active] = np.linalg.solve(G[active].T, -c)
    np.testing.assert_allclose(x, result.x, atol=1e-9)
    np.testing.assert_allclose(lam, lam_highs, atol=1e-9)
    np.testing.assert_allclose(x, [1.6, 1.2], atol=1e-12)
    np.testing.assert_allclose(lam[active], [0.4, 0.2], atol=1e-12)
    assert (h - G @ x)[~active].min() > 0.1
    return QPData("lp", np.zeros((2, 2)), c, None, None, G, h, x, None, lam)


LP_LR = 0.1
LP_STEPS = 2000


def lp_error(data: QPData, cmp: QuadraticProgram, x: torch.Tensor) -> float:
    return max(
        np.abs(x.detach().numpy() - data.x).max(), np.abs(multiplier_values(cmp.ineq) - data.lam).max()
    )


@pytest.mark.parametrize(
    ("scheme", "updater", "steps"),
    [
        ("extrapolation", "extrasgd", LP_STEPS),
        ("alt_primal_dual", "nupi", 3500),
        ("alt_dual_primal", "nupi", 3500),
    ],
)
def test_linear_program_converges(scheme: str, updater: str, steps: int) -> None:
    data = linear_program()
    cmp = QuadraticProgram(data)
    x = new_primal(2)
    optimizer = make_optimizer(cmp, x, scheme, updater, lr_primal=LP_LR, lr_dual=LP_LR)
    run(optimizer, x, steps)
    assert_solution(data, cmp, x)


@pytest.mark.parametrize(
    ("scheme", "updater"), [("simultaneous", "sgd"), ("alt_primal_dual", "sgd"), ("alt_dual_primal", "sgd")]
)
def test_linear_program_plain_gda_does_not_converge(scheme: str, updater: str) -> None:
    """Documents the known failure: GDA on a bilinear Lagrangian cycles (same budget as extragradient)."""
    data = linear_program()
    cmp = QuadraticProgram(data)
    x = new_primal(2)
    optimizer = make_optimizer(cmp, x, scheme, updater, lr_primal=LP_LR, lr_dual=LP_LR)
    errors, iterates = [], []

    def record(_: RollOut) -> None:
        errors.append(lp_error(data, cmp, x))
        iterates.append(x.detach().numpy().copy())

    run(optimizer, x, LP_STEPS, record)
    tail_errors, tail_iterates = np.array(errors[-500:]), np.array(iterates[-500:])
    assert np.isfinite(tail_iterates).all()
    # Never close to the solution in the last 500 steps (observed minimum: 0.35 simultaneous, 0.11
    # alternating) ...
    assert tail_errors.min() > 0.05
    # ... and not stuck elsewhere either: the iterates keep oscillating (observed amplitude 0.3-1.0).
    assert (tail_iterates.max(axis=0) - tail_iterates.min(axis=0)).max() > 0.2
    # Bounded oscillation rather than divergence.
    assert np.abs(tail_iterates).max() < 10


# ---------------------------------------------------------------------------------------------------
# 4. Many inequality constraints with an IndexedMultiplier observing random subsets
# ---------------------------------------------------------------------------------------------------


class SampledHalfspaces(cooper.ConstrainedMinimizationProblem):
    """P4 with an ``IndexedMultiplier``; each evaluation observes ``batch`` random constraint ids.

    ``mode="dual"``: the primal Lagrangian uses every row (``constraint_features`` = all ids), the dual
    update only the sampled rows (``strict_violation``/``strict_constraint_features``).
    ``mode="both"``: primal and dual both see only the sampled rows (``constraint_features`` = observed
    ids); the primal violation is importance-weighted by m/batch so that its expectation is the full
    Lagrangian gradient (without the weight the multipliers would converge to λ*·m/batch).
    """

    def __init__(
        self,
        data: QPData,
        batch: int,
        mode: str,
        seed: int,
        formulation: str = "lagrangian",
        restart_on_feasible: bool = False,
    ) -> None:
        super().__init__()
        assert data.G is not None and data.h is not None
        self.G, self.h = torch.tensor(data.G, dtype=DTYPE), torch.tensor(data.h, dtype=DTYPE)
        self.Q, self.c = torch.tensor(data.Q, dtype=DTYPE), torch.tensor(data.c, dtype=DTYPE)
        self.m, self.batch, self.mode = len(data.h), batch, mode
        self.generator = torch.Generator().manual_seed(seed)
        multiplier = IndexedMultiplier(self.m, dtype=DTYPE, restart_on_feasible=restart_on_feasible)
        if formulation == "lagrangian":
            self.ineq = cooper.Constraint(ConstraintType.INEQUALITY, Lagrangian, multiplier=multiplier)
        else:
            coefficient = IndexedPenaltyCoefficient(torch.full((self.m,), AL_PENALTY, dtype=DTYPE))
            self.ineq = cooper.Constraint(
                ConstraintType.INEQUALITY, AugmentedLagrangian, multiplier, coefficient
            )
        self.last_observed: tuple[torch.Tensor, torch.Tensor] | None = None  # (ids, strict violation)

    def _state(self, x: torch.Tensor) -> cooper.ConstraintState:
        ids = torch.randperm(self.m, generator=self.generator)[: self.batch]
        if self.mode == "dual":
            violation = self.G @ x - self.h
            self.last_observed = (ids, violation.detach()[ids])
            return cooper.ConstraintState(
                violation=violation,
                constraint_features=torch.arange(self.m),
                strict_violation=violation.detach()[ids],
                strict_constraint_features=ids,
            )
        violation = self.G[ids] @ x - self.h[ids]
        self.last_observed = (ids, violation.detach())
        return cooper.ConstraintState(
            violation=violation * (self.m / self.batch),
            constraint_features=ids,
            strict_violation=violation.detach(),
        )

    def compute_cmp_state(self, x: torch.Tensor) -> cooper.CMPState:
        loss = 0.5 * x @ self.Q @ x + self.c @ x
        return cooper.CMPState(loss=loss, observed_constraints={self.ineq: self._state(x)})

    def compute_violations(self, x: torch.Tensor) -> cooper.CMPState:
        return cooper.CMPState(observed_constraints={self.ineq: self._state(x)})


INDEXED_SCHEME_UPDATERS = [
    ("simultaneous", "sgd"),
    ("simultaneous", "nupi"),
    ("alt_primal_dual", "sgd"),
    ("alt_dual_primal", "nupi"),
    ("extrapolation", "extrasgd"),
]


@pytest.mark.parametrize(("scheme", "updater"), INDEXED_SCHEME_UPDATERS)
@pytest.mark.parametrize("formulation", ["lagrangian", "augmented_lagrangian"])
def test_indexed_multiplier_random_dual_subsets_reach_dense_solution(
    formulation: str, scheme: str, updater: str
) -> None:
    """Random 30 % of the multipliers updated per step (sparse gradients): the dense solution, exactly.

    The augmented Lagrangian uses an ``IndexedPenaltyCoefficient`` (c = 0.5 per row, dual lr = c).
    """
    data = halfspaces_qp()
    cmp = SampledHalfspaces(data, batch=30, mode="dual", seed=0, formulation=formulation)
    x = new_primal(data.n)
    lr_dual = LR_DUAL if formulation == "lagrangian" else AL_PENALTY
    optimizer = make_optimizer(cmp, x, scheme, updater, lr_dual=lr_dual)
    # Observed errors: Lagrangian 1e-13 - 7e-12 at 1250 steps; augmented Lagrangian 2e-8 at 250 steps.
    run(optimizer, x, 1250 if formulation == "lagrangian" else 500)
    x_np, lam = x.detach().numpy(), multiplier_values(cmp.ineq)
    np.testing.assert_allclose(x_np, data.x, rtol=0, atol=TOL)
    np.testing.assert_allclose(lam, data.lam, rtol=0, atol=TOL)
    assert (lam[~data.active] == 0).all()
    assert data.max_infeasibility(x_np) <= TOL


@pytest.mark.parametrize("updater", ["sgd", "nupi"])
def test_indexed_multiplier_random_subsets_reach_dense_solution_in_expectation(updater: str) -> None:
    """Primal and dual see the same random 80 of the 100 rows: a stochastic game whose mean field has
    the fixed point (x*, λ*). Constant steps keep a noise ball of radius ~0.1 around it, so the steps
    decay like 1/t after 200 steps and the iterates of the second half are averaged.

    Tolerances: 2e-2 on x, 6e-2 on λ (λ*_active ∈ [0.36, 1.0]; the unweighted variant would be off by
    0.09-0.25), 1e-2 on the averaged inactive λ. Over 20 sampling seeds the largest averaged errors
    were 9.4e-3 (x), 3.2e-2 (λ) and 2.9e-3 (inactive λ), for SGD and nuPI alike.
    """
    data = halfspaces_qp()
    cmp = SampledHalfspaces(data, batch=80, mode="both", seed=0)
    x = new_primal(data.n)
    optimizer = make_optimizer(cmp, x, "simultaneous", updater)
    schedulers = [
        torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, 200 / (t + 1)))
        for opt in (*optimizer.primal_optimizers, *(optimizer.dual_optimizers or ()))
    ]
    steps = 3000
    x_sum, lam_sum = np.zeros(data.n), np.zeros(len(data.lam))

    for step in range(steps):
        roll(optimizer, x)
        for scheduler in schedulers:
            scheduler.step()
        if step >= steps // 2:
            x_sum += x.detach().numpy()
            lam_sum += multiplier_values(cmp.ineq)
    x_avg, lam_avg = x_sum / (steps - steps // 2), lam_sum / (steps - steps // 2)
    np.testing.assert_allclose(x_avg, data.x, rtol=0, atol=2e-2)
    np.testing.assert_allclose(lam_avg, data.lam, rtol=0, atol=6e-2)
    assert lam_avg[~data.active].max() <= 1e-2
    assert lam_avg[data.active].min() >= 0.25  # the active set is identified


# ---------------------------------------------------------------------------------------------------
# 5. Dual restarts
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("scheme", "updater"), SCHEME_UPDATERS, ids=SCHEME_UPDATER_IDS)
def test_dual_restarts_zero_every_feasible_entry_after_each_step(scheme: str, updater: str) -> None:
    """After each dual step, entries whose violation (at the point that drove the step) is <= 0 are
    exactly 0, and so is their nuPI error average; restarts of positive multipliers do happen.
    """
    data = inequality_qp()
    cmp = QuadraticProgram(data, restart_on_feasible=True)
    x = new_primal(data.n)
    optimizer = make_optimizer(cmp, x, scheme, updater)
    weight = cmp.ineq.multiplier.weight
    restarts = 0
    for _ in range(300):
        before = weight.detach().clone()
        roll(optimizer, x)
        # The last measurement is the one that drove the final dual step: θ_t (simultaneous,
        # dual-primal), θ_{t+1} (primal-dual, via compute_violations), θ_{t+1/2} (extrapolation).
        violation = cmp.last_ineq_violation
        assert violation is not None
        feasible = violation <= 0
        assert (weight.detach()[feasible] == 0).all()
        assert (weight.detach() >= 0).all()
        if updater == "nupi":
            xi = optimizer.dual_optimizers[0].state[weight]["xi"]
            assert (xi[feasible] == 0).all()
        restarts += int(((before > 0) & feasible).sum())
    assert restarts > 0


@pytest.mark.parametrize(("scheme", "updater"), INDEXED_SCHEME_UPDATERS)
def test_dual_restarts_of_indexed_multiplier_zero_observed_feasible_rows(scheme: str, updater: str) -> None:
    """Same invariant with sparse gradients: observed rows with strict violation <= 0 are exactly 0
    after the step, and so is their nuPI error average. (Like P2, P4 does not converge with restarts.)
    """
    data = halfspaces_qp()
    cmp = SampledHalfspaces(data, batch=30, mode="dual", seed=0, restart_on_feasible=True)
    x = new_primal(data.n)
    optimizer = make_optimizer(cmp, x, scheme, updater)
    weight = cmp.ineq.multiplier.weight
    restarts = 0
    for _ in range(300):
        before = weight.detach().clone()
        roll(optimizer, x)
        assert cmp.last_observed is not None
        ids, strict_violation = cmp.last_observed
        feasible_rows = ids[strict_violation <= 0]
        assert (weight.detach()[feasible_rows] == 0).all()
        assert (weight.detach() >= 0).all()
        if updater == "nupi":
            xi = optimizer.dual_optimizers[0].state[weight]["xi"]
            assert (xi[feasible_rows] == 0).all()
        restarts += int((before[feasible_rows] > 0).sum())
    assert restarts > 0


@pytest.mark.parametrize(("scheme", "updater"), SCHEME_UPDATERS, ids=SCHEME_UPDATER_IDS)
def test_dual_restarts_converge_when_active_constraints_are_approached_from_outside(
    scheme: str, updater: str
) -> None:
    """P3 with a small dual lr (0.02): the active constraints x_i >= 0 are never transiently satisfied,
    so restarts only ever hit inactive entries and the exact solution is reached.
    """
    data = simplex_projection()
    cmp = QuadraticProgram(data, restart_on_feasible=True)
    x = new_primal(data.n)
    optimizer = make_optimizer(cmp, x, scheme, updater, lr_dual=0.02)
    run(optimizer, x, 1500)  # observed errors: ~1e-8 at 1500 steps, 4e-15 at 2000
    assert_solution(data, cmp, x)


def test_dual_restarts_cycle_when_coupled_active_constraints_are_transiently_satisfied() -> None:
    """Documents the limit of dual restarts on P2 (observed for every scheme, dual lr 0.005-0.05, with
    the Lagrangian and the augmented Lagrangian): while the multipliers grow, one of the three coupled
    active constraints becomes marginally satisfied (violation ~ -1e-3), its multiplier is reset to 0,
    the constraint is violated again, and so on.
    """
    data = inequality_qp()
    cmp = QuadraticProgram(data, restart_on_feasible=True)
    x = new_primal(data.n)
    optimizer = make_optimizer(cmp, x, "simultaneous", "sgd")
    weight = cmp.ineq.multiplier.weight
    errors, active_resets = [], 0
    for step in range(1500):
        before = weight.detach().clone()
        roll(optimizer, x)
        if step >= 1000:
            x_error = np.abs(x.detach().numpy() - data.x).max()
            errors.append(max(x_error, np.abs(multiplier_values(cmp.ineq) - data.lam).max()))
            reset = (before > 0) & (weight.detach() == 0)
            active_resets += int(reset[torch.from_numpy(data.active)].sum())
    assert active_resets > 0
    assert min(errors) > 1e-2  # observed: 0.1-0.6
    # Without restarts the same run converges (see test_converges_to_exact_primal_dual_solution).


# ---------------------------------------------------------------------------------------------------
# 6. contributes_to_dual_update=False and AugmentedLagrangian(c=0) == Lagrangian
# ---------------------------------------------------------------------------------------------------


class PartlyFrozenProblem(cooper.ConstrainedMinimizationProblem):
    """P1 plus an inequality ``frozen`` (satisfied, multiplier 0.25 and restarts enabled) whose
    measurement never contributes to the dual update.
    """

    def __init__(self, data: QPData, formulation: type[Formulation], penalty: float | None) -> None:
        super().__init__()
        self.Q, self.c, self.A, self.b = (
            torch.tensor(a, dtype=DTYPE) for a in (data.Q, data.c, data.A, data.b)
        )
        coefficient = (
            (lambda: None)
            if penalty is None
            else (lambda: DensePenaltyCoefficient(torch.tensor(penalty, dtype=DTYPE)))
        )
        self.eq = cooper.Constraint(
            ConstraintType.EQUALITY, formulation, DenseMultiplier(2, dtype=DTYPE), coefficient()
        )
        frozen_init = torch.tensor([0.25, 0.5], dtype=DTYPE)
        self.frozen = cooper.Constraint(
            ConstraintType.INEQUALITY,
            formulation,
            DenseMultiplier(init=frozen_init, dtype=DTYPE, restart_on_feasible=True),
            coefficient(),
        )

    def compute_cmp_state(self, x: torch.Tensor) -> cooper.CMPState:
        loss = 0.5 * x @ self.Q @ x + self.c @ x
        frozen = torch.stack([x.sum() - 10.0, x[0] - 10.0])  # feasible: would be restarted if observed
        return cooper.CMPState(
            loss=loss,
            observed_constraints={
                self.eq: cooper.ConstraintState(violation=self.A @ x - self.b),
                self.frozen: cooper.ConstraintState(violation=frozen, contributes_to_dual_update=False),
            },
        )


@pytest.mark.parametrize(("scheme", "updater"), SCHEME_UPDATERS, ids=SCHEME_UPDATER_IDS)
@pytest.mark.parametrize("formulation", ["lagrangian", "augmented_lagrangian"])
def test_constraint_not_contributing_to_dual_update_keeps_its_multiplier(
    formulation: str, scheme: str, updater: str
) -> None:
    data = equality_qp()
    form, penalty = (Lagrangian, None) if formulation == "lagrangian" else (AugmentedLagrangian, AL_PENALTY)
    cmp = PartlyFrozenProblem(data, form, penalty)
    x = new_primal(data.n)
    optimizer = make_optimizer(cmp, x, scheme, updater)
    frozen, eq = cmp.frozen.multiplier.weight, cmp.eq.multiplier.weight
    initial = frozen.detach().clone()
    eq_initial = eq.detach().clone()
    for _ in range(30):
        out = optimizer.roll(compute_cmp_state_kwargs={"x": x})
        assert torch.equal(frozen.detach(), initial)
        assert frozen.grad is None
        assert cmp.frozen not in out.dual_lagrangian_store.multiplier_values
    assert not torch.equal(eq.detach(), eq_initial)  # the other multiplier did move
    for dual_optimizer in optimizer.dual_optimizers or ():
        assert not dual_optimizer.state.get(frozen)  # no optimizer state was ever created for it


@pytest.mark.parametrize(("scheme", "updater"), SCHEME_UPDATERS, ids=SCHEME_UPDATER_IDS)
@pytest.mark.parametrize("problem", ["P1_equality_qp", "P2_inequality_qp", "P3_simplex"])
def test_augmented_lagrangian_with_zero_penalty_matches_lagrangian(
    problem: str, scheme: str, updater: str
) -> None:
    """Same seed, same optimizers: AugmentedLagrangian(c=0) and Lagrangian produce identical iterates."""
    data = PROBLEMS[problem]()
    generator = torch.Generator().manual_seed(1234)
    x_init = torch.randn(data.n, generator=generator, dtype=DTYPE)
    trajectories = []
    for formulation, penalty in ((Lagrangian, None), (AugmentedLagrangian, 0.0)):
        cmp = QuadraticProgram(data, formulation, penalty=penalty)
        x = torch.nn.Parameter(x_init.clone())
        optimizer = make_optimizer(cmp, x, scheme, updater)
        trajectory = []
        for _ in range(100):
            out = roll(optimizer, x)
            assert out.primal_lagrangian_store.lagrangian is not None
            state = [x.detach().clone(), out.primal_lagrangian_store.lagrangian.detach().clone()]
            state += [p.detach().clone() for p in cmp.dual_parameters()]
            assert all(torch.isfinite(t).all() for t in state)
            trajectory.append(state)
        trajectories.append(trajectory)
    for step, (lagrangian, augmented) in enumerate(zip(*trajectories)):
        for a, b in zip(lagrangian, augmented):
            assert torch.equal(a, b), f"step {step}: {a} != {b}"


# ---------------------------------------------------------------------------------------------------
# 7. ExtraAdam on the primal side: identical to an extragradient built from torch.optim.Adam
# ---------------------------------------------------------------------------------------------------


def test_extra_adam_primal_matches_torch_adam_extragradient_reference() -> None:
    """Why ExtraAdam is not in the convergent set: the drift after ~2000 steps on P1 is Adam's, as this
    reference built from ``torch.optim.Adam`` (two Adam steps per iteration, the second from the
    remembered point) reproduces the library's trajectory to round-off.
    """
    data = equality_qp()
    Q, c, A, b = (torch.tensor(a, dtype=DTYPE) for a in (data.Q, data.c, data.A, data.b))
    cmp = QuadraticProgram(data)
    x = new_primal(data.n)
    optimizer = ExtrapolationConstrainedOptimizer(
        cmp, ExtraAdam([x], lr=0.01), ExtraSGD(cmp.dual_parameters(), lr=LR_DUAL, maximize=True)
    )
    x_ref = new_primal(data.n)
    mu_ref = torch.zeros(2, dtype=DTYPE)
    adam = torch.optim.Adam([x_ref], lr=0.01)

    def reference_gradients(mu: torch.Tensor) -> torch.Tensor:
        x_ref.grad = None
        (0.5 * x_ref @ Q @ x_ref + c @ x_ref + mu @ (A @ x_ref - b)).backward()
        return (A @ x_ref - b).detach()

    for _ in range(400):
        roll(optimizer, x)
        x_origin, mu_origin = x_ref.detach().clone(), mu_ref.clone()
        violation = reference_gradients(mu_ref)
        adam.step()  # extrapolation
        mu_half = mu_origin + LR_DUAL * violation
        violation = reference_gradients(mu_half)
        with torch.no_grad():
            x_ref.copy_(x_origin)
        adam.step()  # update from the remembered point with the extrapolated gradient
        mu_ref = mu_origin + LR_DUAL * violation
        torch.testing.assert_close(x.detach(), x_ref.detach(), rtol=0, atol=1e-12)
        torch.testing.assert_close(cmp.eq.multiplier.weight.detach(), mu_ref, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# 8. Divergence diagnostics (found while mapping the non-convergent step sizes)
# ---------------------------------------------------------------------------------------------------


class NaNAfterPrimalStep(QuadraticProgram):
    """P1 whose re-measurement (``compute_violations``) is NaN, as after a diverging primal step."""

    def compute_violations(self, x: torch.Tensor) -> cooper.CMPState:
        violation = (self.A @ x - self.b) * float("nan")
        return cooper.CMPState(observed_constraints={self.eq: cooper.ConstraintState(violation=violation)})


def test_alternating_primal_dual_non_finite_error_tells_the_truth_about_the_primal_step() -> None:
    data = equality_qp()
    cmp = NaNAfterPrimalStep(data)
    x = new_primal(data.n)
    optimizer = make_optimizer(cmp, x, "alt_primal_dual", "sgd")
    before = x.detach().clone()
    with pytest.raises(NonFiniteError) as error:
        roll(optimizer, x)
    primal_step_applied = not torch.equal(x.detach(), before)
    assert primal_step_applied  # the scheme's documented order: primal step first, then re-measure
    assert "nothing was updated" not in str(error.value)
    assert "the primal step was applied" in str(error.value)
