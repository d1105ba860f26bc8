"""Neyman-Pearson classification: minimise the false-negative rate s.t. FPR <= alpha.

- ``neyman_pearson``: :class:`NeymanPearson`, the problem.
- ``config``: :class:`~problems.rates.config.NeymanPearsonConfig`, every flag of
  ``python -m problems.rates neyman-pearson``.
- ``train_np``: the run (Adult or breast cancer): the shared loop with candidate iterates, the
  returned model, ``metrics.json``, plots.

The rate toolkit it builds on (proxy and true rates, groups, Adult, model choice) is
:mod:`problems.common.rates`; its names are re-exported here.
"""

from problems.common import rates as _toolkit
from problems.common.rates import *  # noqa: F403 - the toolkit's names, listed in its __all__
from problems.rates.neyman_pearson import NeymanPearson as NeymanPearson

__all__ = sorted([*_toolkit.__all__, "NeymanPearson"])
