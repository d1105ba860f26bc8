"""``python -m problems.sparsity {train,export,sweep} ...``."""

from problems.sparsity.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
