"""Feasible learning (Ramirez et al., AISTATS 2025): one loss constraint, and one multiplier, per example.

- ``problem``: :class:`FeasibleLearning` (``cross_entropy_i <= epsilon`` for every training example,
  an :class:`~cooper_like.multipliers.IndexedMultiplier` row per example).
- ``data``: MNIST-5k, scikit-learn's digits, and a synthetic set of any size (10^6 examples and more).
- ``config`` / ``train``: the run behind ``python -m problems.feasible train``.
"""

from problems.feasible.config import FeasibleConfig
from problems.feasible.data import ClassificationData, synthetic_classification
from problems.feasible.problem import FeasibleLearning

__all__ = ["ClassificationData", "FeasibleConfig", "FeasibleLearning", "synthetic_classification"]
