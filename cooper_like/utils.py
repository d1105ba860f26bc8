"""Cooper-compatible location of :class:`ConstraintType` (the same object as ``cooper_like.ConstraintType``)."""

from cooper_like.constraint_state import ConstraintType

__all__ = ["ConstraintType"]
