"""l1 sparsity at a prescribed density, and the l1 regularization path (``python -m problems.l1``).

- ``problem``: the density-constrained and l1-ball-constrained problems (multiplier = soft-threshold level).
- ``target``: constrained / lambda-selection (Shen et al.) / bisection to reach a density.
- ``path``: continuation (Amakor et al.) / epsilon-constraint / weighted-sum fronts; ``mopg`` and
  ``front`` hold their kernels (MOPG direction, dominance, hypervolume).
- ``report`` and ``cli``: metrics.json, CSV, PNG plots and the command line.
"""
