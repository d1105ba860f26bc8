"""cooper_like: constrained learning in PyTorch, name- and behaviour-compatible with Cooper 1.0.

``import cooper_like as cooper`` runs scripts written for Cooper 1.0.1.
"""

from cooper_like import (
    distributed,
    exceptions,
    formulations,
    multipliers,
    optim,
    penalty_coefficients,
    reporting,
    utils,
)
from cooper_like.constraint_state import ConstraintState, ConstraintType
from cooper_like.constraints import Constraint
from cooper_like.problem import CMPState, ConstrainedMinimizationProblem, LagrangianStore

__version__ = "0.1.0"

__all__ = [
    "CMPState",
    "ConstrainedMinimizationProblem",
    "Constraint",
    "ConstraintState",
    "ConstraintType",
    "LagrangianStore",
    "__version__",
    "distributed",
    "exceptions",
    "formulations",
    "multipliers",
    "optim",
    "penalty_coefficients",
    "reporting",
    "utils",
]
