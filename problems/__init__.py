"""Ready-made constrained-learning problems built on ``cooper_like``'s public API.

Each sub-package (``sparsity``, ...) holds one problem; ``scaffold`` holds the trainer pieces they
share (configs, metrics logging, atomic checkpoints, seeding, progress bars, bundled data sets)
and ``data`` the bundled data files.
"""
