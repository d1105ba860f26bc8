"""Fair classification: cross-entropy subject to demographic parity, equal opportunity or equalized odds.

- ``problem``: :class:`FairClassification`, one rate-parity constraint per compared rate.
- ``config``: :class:`FairnessConfig`, every flag of ``python -m problems.fairness train``.
- ``train``: the run (Adult by default): the shared loop with candidate iterates, returned model,
  ``metrics.json``, plots.

The rate toolkit it builds on (proxy and true rates, groups, Adult, model choice) is
:mod:`problems.common.rates`.
"""

from problems.fairness.config import FairnessConfig
from problems.fairness.problem import CRITERIA, Criterion, FairClassification

__all__ = ["CRITERIA", "Criterion", "FairClassification", "FairnessConfig"]
