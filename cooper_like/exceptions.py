"""Exception classes that keep ``except`` clauses written for Cooper 1.0 working.

Where this library raises a more precise type than Cooper for the same bad input, the class derives
from both, so code that catches Cooper's type catches ours.
"""

from __future__ import annotations


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type or dtype (Cooper raises ``ValueError`` for these)."""


class NotExtrapolatingError(TypeError, RuntimeError):
    """An optimizer without ``extrapolation()`` given to the extragradient scheme (Cooper: ``RuntimeError``)."""


class UnregisteredConstraintError(ValueError):
    """A constraint measured in ``compute_cmp_state`` that is not registered on the problem."""
