"""Constrained optimizers (one scheme per module) and the dual updaters nuPI and extragradient."""

from cooper_like.optim.alternating import AlternatingDualPrimalOptimizer, AlternatingPrimalDualOptimizer
from cooper_like.optim.constrained_optimizer import ConstrainedOptimizer
from cooper_like.optim.cooper_optimizer import CooperOptimizer, CooperOptimizerState, RollOut
from cooper_like.optim.extragradient import ExtraAdam, ExtragradientOptimizer, ExtraSGD
from cooper_like.optim.extrapolation import ExtrapolationConstrainedOptimizer
from cooper_like.optim.non_finite import NonFiniteError, NonFiniteGuard, NonFinitePolicy
from cooper_like.optim.nupi import NuPI, nuPI, nuPIInitType
from cooper_like.optim.proximal import L1Strength, ProximalL1, soft_threshold, soft_threshold_
from cooper_like.optim.simultaneous import SimultaneousOptimizer
from cooper_like.optim.unconstrained import UnconstrainedOptimizer

__all__ = [
    "AlternatingDualPrimalOptimizer",
    "AlternatingPrimalDualOptimizer",
    "ConstrainedOptimizer",
    "CooperOptimizer",
    "CooperOptimizerState",
    "ExtraAdam",
    "ExtraSGD",
    "ExtragradientOptimizer",
    "ExtrapolationConstrainedOptimizer",
    "L1Strength",
    "NonFiniteError",
    "NonFiniteGuard",
    "NonFinitePolicy",
    "NuPI",
    "ProximalL1",
    "RollOut",
    "SimultaneousOptimizer",
    "UnconstrainedOptimizer",
    "nuPI",
    "nuPIInitType",
    "soft_threshold",
    "soft_threshold_",
]
