"""What two or more problems share that is not training plumbing.

- ``rates``: the rate toolkit of :mod:`problems.fairness` and :mod:`problems.rates` (Neyman-Pearson):
  proxy and true rates, groups, grouped data sets and Adult, scoring models, candidate iterates and the
  choice of the returned model, the configuration fields and the run both trainers share.

The training loop, configurations, logs, checkpoints and plots every problem uses are in
:mod:`problems.scaffold`.
"""
